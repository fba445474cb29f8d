"""The numbers metrics reduce to: cosine similarity of embeddings, mean ± std over images."""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors (each L2-normalised first)."""
    a = np.asarray(a, np.float64).reshape(-1)
    b = np.asarray(b, np.float64).reshape(-1)
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@dataclass
class Stat:
    """One table cell: mean, sample std and how many values they come from."""

    mean: float | None
    std: float | None
    n: int

    def as_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n": self.n}

    def text(self, digits: int = 3) -> str:
        if self.n == 0 or self.mean is None:
            return "-"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} ({self.n})"


def summarize(values: Iterable[float | None]) -> Stat:
    """Mean and sample standard deviation (ddof=1; 0 for one value) of the values that exist."""
    v = np.array([float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))],
                 np.float64)
    if v.size == 0:
        return Stat(None, None, 0)
    return Stat(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size))
