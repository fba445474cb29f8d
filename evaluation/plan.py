"""What to generate: the identities (one photo folder each), the seeds, and one RunSpec per identity x prompt x seed."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..dense_face_core.errors import DenseFaceInputError
from ..headless.overrides import parse_seeds  # noqa: F401 (one definition, shared with dense-face run)
from .messages import log
from .photos import list_images
from .prompts import fill_prompt


@dataclass
class Identity:
    name: str
    photos: list[Path]
    reference: Path


@dataclass
class RunSpec:
    identity: Identity
    prompt_index: int
    template: str
    prompt: str
    seed: int

    @property
    def key(self) -> str:
        """The run's folder under OUT/runs: ``<identity>/p<prompt#>_s<seed>``."""
        return f"{self.identity.name}/p{self.prompt_index:03d}_s{self.seed}"


def discover_identities(root: str | os.PathLike, reference_index: int = 0) -> list[Identity]:
    """One identity per sub-folder of ``root``; its photos sorted by name, the ``reference_index``-th conditions."""
    root = Path(root)
    if not root.is_dir():
        raise DenseFaceInputError(f"--identities: {root} is not a folder")
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        photos = list_images(folder)
        if not photos:
            log(f"identities: {folder.name} has no photos; skipped")
            continue
        if not -len(photos) <= reference_index < len(photos):
            raise DenseFaceInputError(f"--reference-index {reference_index}: {folder.name} has {len(photos)} photo(s)")
        out.append(Identity(folder.name, photos, photos[reference_index]))
    if not out:
        raise DenseFaceInputError(f"--identities: no sub-folder of {root} holds photos (one folder per identity)")
    return out


def build_plan(identities: list[Identity], prompts: list[str], seeds: list[int], subject: str) -> list[RunSpec]:
    """Every identity with every prompt and seed, the paper's protocol."""
    return [RunSpec(ident, i, tpl, fill_prompt(tpl, ident.name, subject), seed)
            for ident in identities for i, tpl in enumerate(prompts) for seed in seeds]
