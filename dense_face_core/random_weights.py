"""Every random-weight model the pack makes, defined once: geometry, fill rule, files, labels.

Real Stable Diffusion, ArcFace and Dense-Face weights are not always at hand (CI, a laptop
without downloads), yet every graph must run and every speed must be measurable. Tests,
the demo set, the trainer's ``tiny_random`` base and the benchmarks all build their
untrained models from what is here:

- the tiny SD-shaped geometry (family ``tiny``) and the UNet / CLIP-text configs of any
  family, as plain dicts (ComfyUI's ldm ``UNetModel`` kwargs, a transformers CLIP config);
- the one fill rule (fan-in-scaled normals, near-1 norms), seeded;
- complete Dense-Face weight sets, and an ArcFace-shaped ONNX (1x3x112x112 -> 512);
- the names that label them as random.

Runtimes that build their own module classes (ComfyUI's in ``headless/random_sd.py``,
diffusers' in ``train/base_models.py``) only instantiate and call :func:`fill_random_`.
Nothing here produces a meaningful image or identity.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from .dense_head import DEFAULT_OUTPUT_SIZE, DEFAULT_WIDTH, DenseHead
from .families import BaseFamily, attention_layers, get_family, register_family
from .identity import ID_DELTA, ID_EMBED_DIM, IdentityProjector
from .pc_adapter import DEFAULT_DELTA, PCAdapterLayer
from .pose_branch import PoseBranch

# ---------------------------------------------------------------- labels
DEMO_CHECKPOINT = "dense_face_demo_sd15_RANDOM_WEIGHTS.safetensors"
DEMO_DENSE_FACE = "dense_face_demo_RANDOM_WEIGHTS.safetensors"
DEMO_ID_PACK = "dense_face_demo_RANDOM_WEIGHTS"
DEMO_ID_MODEL = f"insightface/{DEMO_ID_PACK}"
RANDOM_ARCFACE_FILE = "arcface_RANDOM_WEIGHTS.onnx"
DEMO_NOTE = ("RANDOM WEIGHTS - a demo model made by `dense-face demo-weights`; it is not trained and "
             "its images are not faces or likenesses")

# ---------------------------------------------------------------- geometry
TINY = BaseFamily("tiny", context_dim=32, model_channels=32, channel_mult=(1, 2, 2, 2), num_heads=4)
# the tests' tiny CLIP text tower: the real SD1 vocabulary, 2 layers of width TINY.context_dim
TINY_TEXT_CONFIG = {
    "architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0,
    "eos_token_id": 2, "hidden_act": "quick_gelu", "hidden_size": TINY.context_dim, "initializer_factor": 1.0,
    "initializer_range": 0.02, "intermediate_size": 64, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
    "model_type": "clip_text_model", "num_attention_heads": 2, "num_hidden_layers": 2, "pad_token_id": 1,
    "projection_dim": TINY.context_dim, "torch_dtype": "float32", "vocab_size": 49408,
}


def tiny_family() -> BaseFamily:
    """The tiny geometry, registered (idempotently) so weight files can be made and checked for it."""
    return register_family(TINY)


def ldm_unet_config(family: str | BaseFamily = "sd15", dtype: torch.dtype | None = torch.float32) -> dict:
    """The original-layout (ldm ``UNetModel``) config of a family, as ComfyUI's UNetModel takes it."""
    fam = get_family(family)
    levels, nrb, ds, attn = len(fam.channel_mult), fam.num_res_blocks, 1, []
    for _ in range(levels):
        attn.append(1 if ds in fam.attention_ds else 0)
        ds *= 2
    cfg = {
        "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": fam.model_channels,
        "num_res_blocks": [nrb] * levels, "channel_mult": list(fam.channel_mult),
        "transformer_depth": [d for d in attn for _ in range(nrb)],
        # ComfyUI pops this list from the end while building output blocks 0, 1, 2, ...
        "transformer_depth_output": [d for d in attn for _ in range(nrb + 1)],
        "transformer_depth_middle": 1, "context_dim": fam.context_dim,
        "num_heads": fam.num_heads if fam.num_heads else -1,
        "num_head_channels": fam.num_head_channels or -1,
        "use_linear_in_transformer": fam.use_linear_in_transformer, "adm_in_channels": None,
        "use_temporal_attention": False, "use_temporal_resblock": False, "use_checkpoint": False,
        "use_spatial_transformer": True, "legacy": False,
    }
    if dtype is not None:
        cfg["dtype"] = dtype
    return cfg


# ---------------------------------------------------------------- the fill rule
def fill_random_(module: torch.nn.Module, seed: int, scale: float = 1.0) -> torch.nn.Module:
    """Fan-in-scaled normals for weights, near-1 norm scales, small biases, from ``seed`` alone.

    Layers created uninitialised (comfy.ops) or with tiny default outputs (diffusers) get
    values that give every layer a visible effect; denormals are flushed, since they distort
    CPU timings by orders of magnitude.
    """
    torch.set_flush_denormal(True)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * (scale / p[0].numel() ** 0.5))
            elif name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    return module


# ---------------------------------------------------------------- Dense-Face weights
def build_random_weights(
    family: str | BaseFamily = "sd15",
    seed: int = 0,
    *,
    with_dense_head: bool = True,
    dense_head_width: int = DEFAULT_WIDTH,
    dense_head_output_size: int = DEFAULT_OUTPUT_SIZE,
    id_embedding_model: str = "insightface/antelopev2",
    id_embedding_dim: int = ID_EMBED_DIM,
    delta: float = DEFAULT_DELTA,
    id_delta: float = ID_DELTA,
    dtype: torch.dtype = torch.float32,
):
    """A complete, valid, UNTRAINED Dense-Face set. Zero-initialised layers get small random
    values instead, so every part has a visible, testable effect."""
    from .weight_file import REQUIRED_PARTS, DenseFaceWeights, WeightMetadata

    fam = get_family(family)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pose = PoseBranch.for_family(fam)
        for m in pose.modules():
            if isinstance(m, torch.nn.Conv2d) and not m.weight.any():
                m.reset_parameters()
                with torch.no_grad():
                    m.weight.mul_(0.1)
        adapter: dict[str, Tensor] = {}
        for layer in attention_layers(fam):
            sd = PCAdapterLayer.for_layer(fam, layer, id_embedding_dim).state_dict()
            adapter.update({f"{layer.ldm_path}.{k}": v for k, v in sd.items()})
        proj = IdentityProjector.for_family(fam, id_embedding_dim, id_delta)
        with torch.no_grad():
            n = proj.norm
            n.weight.copy_(1 + 0.1 * torch.randn_like(n.weight))
            n.bias.copy_(0.1 * torch.randn_like(n.bias))
            n.running_mean.copy_(0.1 * torch.randn_like(n.running_mean))
            n.running_var.copy_(1 + 0.1 * torch.rand_like(n.running_var))
        head = (DenseHead.for_family(fam, width=dense_head_width, output_size=dense_head_output_size)
                if with_dense_head else None)

    def cast(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}

    meta = WeightMetadata.for_family(
        fam, id_embedding_model, id_embedding_dim=id_embedding_dim, delta=delta, id_delta=id_delta,
        parts=REQUIRED_PARTS + (("dense_head",) if with_dense_head else ()),
        dense_head_width=dense_head_width if with_dense_head else None,
        dense_head_output_size=dense_head_output_size if with_dense_head else None,
        extra={"source": f"build_random_weights(seed={seed}): random, untrained"},
    )
    return DenseFaceWeights(
        metadata=meta, family=fam, pose_branch=cast(pose.state_dict()), pc_adapter=cast(adapter),
        id_projector=cast(proj.state_dict()), dense_head=cast(head.state_dict()) if head is not None else None,
    )


# ---------------------------------------------------------------- identity network
def export_random_arcface(path: str | Path, seed: int = 0) -> Path:
    """A small network with ArcFace's interface (1x3x112x112 -> 512) exported to ONNX, atomically."""
    from .io_utils import atomic_path

    gen = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), torch.nn.PReLU(16),
                              torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.PReLU(32),
                              torch.nn.AdaptiveAvgPool2d(7), torch.nn.Flatten(), torch.nn.Linear(32 * 49, 512))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    path = Path(path)
    kwargs = {"dynamo": False} if "dynamo" in torch.onnx.export.__code__.co_varnames else {}
    with atomic_path(path, ".onnx") as tmp:
        torch.onnx.export(net.eval(), torch.zeros(1, 3, 112, 112), str(tmp), input_names=["data"],
                          output_names=["fc1"], dynamic_axes={"data": {0: "batch"}}, **kwargs)
    return path
