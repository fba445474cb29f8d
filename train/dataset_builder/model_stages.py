"""The model stages on one chunk's states: restoration, ArcFace, a captioner, CLIP scoring.

Each runs its model once on the batch of the chunk's images that need it (in chunk order),
so a batch is the same in any engine. A model failing on a batch costs those images
(outcome ``error``), as a bad photo does, not the build.
"""
from __future__ import annotations

import numpy as np

from .. import shards as S
from .worker import failed


def _ok(states: list[dict], need=None) -> list[dict]:
    return [s for s in states if s["outcome"] == "ok" and (need is None or need(s))]


def _guarded(batch: list[dict], fn) -> None:
    if not batch:
        return
    try:
        fn(batch)
    except Exception as exc:  # noqa: BLE001 (e.g. one odd batch; the reason is counted in the manifest)
        for s in batch:
            failed(s, exc)


def restore_states(states: list[dict], restorer) -> None:
    """The largest crop restored; the smaller crops shrunk from it (INTER_AREA)."""
    import cv2

    def run(batch):
        big = max(batch[0]["crops"])
        restored = restorer([s["crops"][big] for s in batch])
        for s, img in zip(batch, restored):
            s["crops"] = {size: img if size == big else cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
                          for size in s["crops"]}
            s["restoration"] = restorer.record()

    _guarded(_ok(states), run)


def embed_states(states: list[dict], encoder) -> None:
    """``embedding.npy``: ArcFace on the faces aligned from the photo (the identity as photographed)."""
    def run(batch):
        vecs = encoder.embed_aligned([s.pop("arcface_input") for s in batch])
        for s, v in zip(batch, vecs):
            s["files"]["embedding.npy"] = S.encode_npy(np.asarray(v, np.float32))

    _guarded(_ok(states, lambda s: "arcface_input" in s), run)


def _needs_caption(s: dict) -> bool:
    return s["caption"]["caption_source"] == "template"


def caption_states(states: list[dict], captioner) -> None:
    """One caption per image from ``captioner`` for the images with no usable caption file or CSV text."""
    def run(batch):
        big = max(batch[0]["crops"])
        texts = captioner(np.stack([s["crops"][big] for s in batch]))
        for s, text in zip(batch, texts):
            s.setdefault("generated", []).append({"text": " ".join(str(text).split()), "score": None,
                                                  "model": captioner.name})

    _guarded(_ok(states, _needs_caption), run)


def score_states(states: list[dict], scorer) -> None:
    """Each generated caption's CLIP score against its image's crop."""
    def run(batch):
        big = max(batch[0]["crops"])
        scores = scorer.score([s["crops"][big] for s in batch], [[g["text"] for g in s["generated"]] for s in batch])
        for s, row in zip(batch, scores):
            for g, score in zip(s["generated"], row):
                g["score"] = score

    _guarded(_ok(states, lambda s: bool(s.get("generated"))), run)


MODEL_STAGES = {"restore": restore_states, "embed": embed_states, "caption": caption_states, "score": score_states}
