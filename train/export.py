"""``dense-face export``: a training checkpoint -> the node pack's weight file.

    dense-face export --checkpoint RUN/checkpoints/checkpoint-00001000 --out model.safetensors
    dense-face export --checkpoint RUN --out model.safetensors      # the run's latest checkpoint

The checkpoint carries the family geometry and every metadata field, so neither the base
model nor the dataset is needed; names are mapped diffusers -> ldm by the core families map
and the file is validated and written atomically by the core's ``save_weight_file``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..dense_face_core.errors import DenseFaceInputError, MissingModelError, run_reporting_errors
from ..dense_face_core.weight_file import (INIT_EMBEDDING_PART, REQUIRED_PARTS, WeightMetadata,
                                           save_weight_file)
from .checkpoints import CHECKPOINT_META, find_checkpoint

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
          "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _model_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    """accelerate's first model file (safetensors, or its pickle fallback read weights_only)."""
    st = ckpt / "model.safetensors"
    if st.is_file():
        from safetensors.torch import load_file

        return load_file(str(st))
    for name in ("pytorch_model.bin", "model.bin"):
        if (ckpt / name).is_file():
            return torch.load(str(ckpt / name), map_location="cpu", weights_only=True)
    raise MissingModelError(f"{ckpt} holds no model weights (model.safetensors)")


def net_from_checkpoint(ckpt: str | Path):
    """(DenseFaceNet with the checkpoint's trained tensors, checkpoint metadata)."""
    from .base_models import resolve_family
    from .model import DenseFaceNet

    ckpt = find_checkpoint(ckpt)
    meta = json.loads((ckpt / CHECKPOINT_META).read_text())
    fam = resolve_family(meta["family"] if meta["family"]["name"] not in ("sd15", "sd21") else meta["family"]["name"])
    head = meta["dense_head"]
    net = DenseFaceNet(fam, id_dim=int(meta["id_dim"]), delta=float(meta["delta"]), id_delta=float(meta["id_delta"]),
                       dense_head=bool(head["enabled"]), head_width=int(head["width"]),
                       head_size=int(head["output_size"]), placeholder_token=meta["placeholder_token"],
                       init_word=meta["init_word"])
    sd = _model_weights(ckpt)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    net.load_state_dict(sd, strict=True)
    return net, meta


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, dtype: str = "float16",
                      include_dense_head: bool = True) -> Path:
    if dtype not in DTYPES:
        raise DenseFaceInputError(f"--dtype must be one of {', '.join(DTYPES)}")
    net, meta = net_from_checkpoint(checkpoint)
    with_head = include_dense_head and net.dense_head is not None
    tensors = net.weight_file_tensors(include_dense_head=with_head, dtype=DTYPES[dtype])
    parts = REQUIRED_PARTS + (("dense_head",) if with_head else ()) + (INIT_EMBEDDING_PART,)
    cfg = meta.get("config") or {}
    extra = {
        "source": "dense-face train",
        "train_steps": str(meta["step"]),
        "base_model": str(meta.get("base_model", "")),
        "dataset": str(meta.get("dataset", "")),
        "train_config": json.dumps({k: cfg.get(k) for k in ("model", "train", "loss")}, sort_keys=True),
    }
    metadata = WeightMetadata.for_family(
        net.family, meta["id_embedding_model"], id_embedding_dim=net.id_dim, delta=net.delta,
        id_delta=float(meta["id_delta"]), placeholder_token=meta["placeholder_token"], init_word=meta["init_word"],
        parts=parts, dense_head_width=net.head_width if with_head else None,
        dense_head_output_size=net.head_size if with_head else None, extra=extra)
    out = Path(out).expanduser()
    save_weight_file(out, tensors, metadata)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dense-face export", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a checkpoint folder, or a run folder (its latest checkpoint)")
    p.add_argument("--out", required=True, help="the .safetensors to write (ComfyUI/models/dense_face/...)")
    p.add_argument("--dtype", default="float16", choices=sorted(DTYPES), help="tensor dtype in the file")
    p.add_argument("--no-dense-head", action="store_true", help="leave the dense annotation head out")
    args = p.parse_args(sys.argv[1:] if argv is None else list(argv))

    def body() -> int:
        path = export_checkpoint(args.checkpoint, args.out, dtype=args.dtype,
                                 include_dense_head=not args.no_dense_head)
        print(f"dense-face export: wrote {path}")
        return 0

    return run_reporting_errors("dense-face export", body)


if __name__ == "__main__":
    sys.exit(main())
