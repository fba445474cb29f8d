"""``dense-face demo-weights``: a clearly labelled RANDOM-WEIGHT model set in ComfyUI's models layout.

Real Stable Diffusion, ArcFace and Dense-Face weights are large downloads; the demo set
lets every shipped workflow run end to end on any machine, to show the graph works. The
pictures it makes are not faces and not likenesses: every file name says RANDOM and every
file carries a ``dense_face_demo`` note.

- ``checkpoints/``  a full-size SD1.5-shaped checkpoint (UNet, CLIP-L, VAE; fp16), in the
  original layout, so ComfyUI's own CheckpointLoaderSimple detects and loads it;
- ``dense_face/``   Dense-Face weights for SD1.5 whose identity network is the demo one (float16, as
  the authors' release and ``dense-face export`` store them);
- ``insightface/models/<DEMO_ID_PACK>/`` an ArcFace-shaped ONNX (112x112 -> 512).
"""
from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path

import torch

from ..dense_face_core.random_weights import (DEMO_CHECKPOINT, DEMO_DENSE_FACE, DEMO_ID_MODEL, DEMO_ID_PACK,
                                             DEMO_NOTE, RANDOM_ARCFACE_FILE, build_random_weights,
                                             export_random_arcface)
from ..dense_face_core.weight_file import save_safetensors_atomic, save_weight_file

MARKER = "dense_face_demo.json"
__all__ = ["DEMO_CHECKPOINT", "DEMO_DENSE_FACE", "DEMO_ID_MODEL", "DEMO_ID_PACK", "DEMO_NOTE", "MARKER",
           "checkpoint_state_dict", "write_demo_models", "main"]


def checkpoint_state_dict(model, clip, vae, dtype=torch.float16) -> dict[str, torch.Tensor]:
    """ComfyUI modules -> the original SD1.5 single-file layout that checkpoint loaders detect."""
    out = {}
    for k, v in model.model.diffusion_model.state_dict().items():
        out["model.diffusion_model." + k] = v
    for k, v in clip.cond_stage_model.state_dict().items():
        if k.startswith("clip_l.transformer.text_model."):
            out["cond_stage_model.transformer." + k[len("clip_l.transformer."):]] = v
    for k, v in vae.first_stage_model.state_dict().items():
        out["first_stage_model." + k] = v
    return {k: v.detach().to(dtype).contiguous() for k, v in out.items()}


def write_demo_models(models_dir: str | Path, seed: int = 0, host=None, log=print) -> dict[str, Path]:
    """Write (or reuse) the demo set under ``models_dir``; returns the files by kind."""
    models_dir = Path(models_dir)
    paths = {
        "checkpoints": models_dir / "checkpoints" / DEMO_CHECKPOINT,
        "dense_face": models_dir / "dense_face" / DEMO_DENSE_FACE,
        "insightface": models_dir / "insightface" / "models" / DEMO_ID_PACK / RANDOM_ARCFACE_FILE,
    }
    if all(p.is_file() for p in paths.values()):
        log(f"demo models: reusing the random-weight set in {models_dir}")
        return paths
    from .comfy_host import InProcessComfy

    host = host or InProcessComfy()  # ComfyUI imported (and its log set up) before any model class is built
    with comfy_log_quiet():
        _build_missing(paths, seed, log)
    (models_dir / MARKER).write_text(json.dumps({"note": DEMO_NOTE, "files": {k: str(v) for k, v in paths.items()}},
                                                indent=1))
    for kind, p in paths.items():
        log(f"demo models: {kind:11s} {p}  (RANDOM WEIGHTS)")
    return paths


@contextlib.contextmanager
def comfy_log_quiet(level: int = logging.ERROR):
    """ComfyUI reports through the root logger (``logging.warning("Missing VAE keys [...]")``, some 10 KB for
    models built empty and then filled); while the demo set is built they are expected, not failures, so
    only errors pass. Our own progress goes through ``log``, not ``logging``."""
    root = logging.getLogger()
    before = root.level
    root.setLevel(max(before, level))
    try:
        yield
    finally:
        root.setLevel(before)


def _build_missing(paths: dict[str, Path], seed: int, log) -> None:
    from . import random_sd as rm

    if not paths["insightface"].is_file():
        export_random_arcface(paths["insightface"], seed)
    if not paths["dense_face"].is_file():
        w = build_random_weights("sd15", seed=seed, id_embedding_model=DEMO_ID_MODEL, dtype=torch.float16)
        meta = w.metadata.to_dict()
        meta["source"] = DEMO_NOTE
        save_weight_file(paths["dense_face"], w.tensors(), meta)
    if not paths["checkpoints"].is_file():
        log("demo models: building a full-size SD1.5-shaped checkpoint with random weights (about 2 GB) ...")
        model, clip, vae = rm.build_unet(seed=seed), rm.build_clip(seed=seed), rm.build_vae(seed=seed)
        sd = checkpoint_state_dict(model, clip, vae)
        del model, clip, vae
        save_safetensors_atomic(paths["checkpoints"], sd, {"dense_face_demo": DEMO_NOTE})


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="dense-face demo-weights", description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", required=True, help="a ComfyUI-style models folder to write into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_demo_models(args.models_dir, args.seed)
    print(f"wrote the demo model set: {DEMO_NOTE}", file=sys.stderr)
    return 0
