"""``dense-face demo-weights``: a clearly labelled RANDOM-WEIGHT model set in ComfyUI's models layout.

Real Stable Diffusion, ArcFace and Dense-Face weights are large downloads; the demo set
lets every shipped workflow run end to end on any machine, to show the graph works. The
pictures it makes are not faces and not likenesses: every file name says RANDOM and every
file carries a ``dense_face_demo`` note.

- ``checkpoints/``  a full-size SD1.5-shaped checkpoint (UNet, CLIP-L, VAE; fp16), in the
  original layout, so ComfyUI's own CheckpointLoaderSimple detects and loads it;
- ``dense_face/``   Dense-Face weights for SD1.5 whose identity network is the demo one;
- ``insightface/models/<DEMO_ID_PACK>/`` an ArcFace-shaped ONNX (112x112 -> 512).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

DEMO_CHECKPOINT = "dense_face_demo_sd15_RANDOM_WEIGHTS.safetensors"
DEMO_DENSE_FACE = "dense_face_demo_RANDOM_WEIGHTS.safetensors"
DEMO_ID_PACK = "dense_face_demo_RANDOM_WEIGHTS"
DEMO_ID_MODEL = f"insightface/{DEMO_ID_PACK}"
DEMO_NOTE = ("RANDOM WEIGHTS - a demo model made by `dense-face demo-weights`; it is not trained and "
             "its images are not faces or likenesses")
MARKER = "dense_face_demo.json"


def export_random_arcface(path: Path, seed: int = 0) -> Path:
    """A small network with ArcFace's interface (1x3x112x112 -> 512) exported to ONNX."""
    gen = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), torch.nn.PReLU(16),
                              torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.PReLU(32),
                              torch.nn.AdaptiveAvgPool2d(7), torch.nn.Flatten(), torch.nn.Linear(32 * 49, 512))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    kwargs = {"dynamo": False} if "dynamo" in torch.onnx.export.__code__.co_varnames else {}
    torch.onnx.export(net.eval(), torch.zeros(1, 3, 112, 112), str(tmp), input_names=["data"],
                      output_names=["fc1"], dynamic_axes={"data": {0: "batch"}}, **kwargs)
    tmp.replace(path)
    return path


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
        "insightface": models_dir / "insightface" / "models" / DEMO_ID_PACK / "arcface_RANDOM_WEIGHTS.onnx",
    }
    if all(p.is_file() for p in paths.values()):
        log(f"demo models: reusing the random-weight set in {models_dir}")
        return paths
    from .comfy_host import InProcessComfy
    from . import random_models as rm

    host = host or InProcessComfy()
    core = host.core
    if not paths["insightface"].is_file():
        export_random_arcface(paths["insightface"], seed)
    if not paths["dense_face"].is_file():
        w = core.weight_file.build_random_weights("sd15", seed=seed, id_embedding_model=DEMO_ID_MODEL)
        meta = w.metadata.to_dict()
        meta["source"] = DEMO_NOTE
        core.weight_file.save_weight_file(paths["dense_face"], w.tensors(), meta)
    if not paths["checkpoints"].is_file():
        log("demo models: building a full-size SD1.5-shaped checkpoint with random weights (about 2 GB) ...")
        model, clip, vae = rm.build_unet(seed=seed), rm.build_clip(seed=seed), rm.build_vae(seed=seed)
        sd = checkpoint_state_dict(model, clip, vae)
        del model, clip, vae
        core.weight_file.save_safetensors_atomic(paths["checkpoints"], sd, {"dense_face_demo": DEMO_NOTE})
    (models_dir / MARKER).write_text(json.dumps({"note": DEMO_NOTE, "files": {k: str(v) for k, v in paths.items()}},
                                                indent=1))
    for kind, p in paths.items():
        log(f"demo models: {kind:11s} {p}  (RANDOM WEIGHTS)")
    return paths


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="dense-face demo-weights", description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", required=True, help="a ComfyUI-style models folder to write into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_demo_models(args.models_dir, args.seed)
    print(f"wrote the demo model set: {DEMO_NOTE}", file=sys.stderr)
    return 0
