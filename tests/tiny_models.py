"""Tiny SD1.5-shaped models built inside a real ComfyUI, with random weights.

ComfyUI's checkpoint loaders only accept exact SD configs, so tests build tiny models the
way ComfyUI itself does (``supported_models.SD15(unet_config).get_model`` ->
``ModelPatcher``). The geometry is registered as the Dense-Face family ``tiny`` so that
Dense-Face weight files can be made and validated for it.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch

TINY_CONTEXT = 32
TINY_CHANNELS = 32
TINY_MULT = (1, 2, 2, 2)  # widths 32/64/64/64: divisible by 32 groups


def tiny_unet_config() -> dict:
    levels, nrb = len(TINY_MULT), 2
    return {
        "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": TINY_CHANNELS,
        "num_res_blocks": [nrb] * levels, "channel_mult": list(TINY_MULT),
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "transformer_depth_middle": 1, "context_dim": TINY_CONTEXT, "num_heads": 4, "num_head_channels": -1,
        "use_linear_in_transformer": False, "adm_in_channels": None, "use_temporal_attention": False,
        "use_temporal_resblock": False, "use_checkpoint": False, "use_spatial_transformer": True,
        "legacy": False, "dtype": torch.float32,
    }


def tiny_family(core):
    """Register (once) and return the Dense-Face family describing the tiny UNet."""
    families = core.families
    try:
        return families.get_family("tiny")
    except Exception:
        pass
    fam = families.BaseFamily("tiny", context_dim=TINY_CONTEXT, model_channels=TINY_CHANNELS,
                              channel_mult=TINY_MULT, num_heads=4)
    families.register_family(fam)
    return fam


def fill_random(module: torch.nn.Module, seed: int) -> None:
    """comfy.ops layers are created uninitialised: fill fan-in-scaled random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5)
            elif name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))


def tiny_model(seed: int = 0):
    """A tiny SD1.5-type MODEL (ModelPatcher) with random weights."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    with torch.no_grad():
        config = comfy.supported_models.SD15(tiny_unet_config())
        model = config.get_model({}, "")
        fill_random(model.diffusion_model, seed)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu"))


def tiny_clip(workdir: Path, seed: int = 0):
    """A tiny CLIP (the real SD1 tokenizer, a 2-layer text model of width 32)."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base

    cfg_path = Path(workdir) / "tiny_clip_config.json"
    cfg = {"architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0,
           "eos_token_id": 2, "hidden_act": "quick_gelu", "hidden_size": TINY_CONTEXT, "initializer_factor": 1.0,
           "initializer_range": 0.02, "intermediate_size": 64, "layer_norm_eps": 1e-05,
           "max_position_embeddings": 77, "model_type": "clip_text_model", "num_attention_heads": 2,
           "num_hidden_layers": 2, "pad_token_id": 1, "projection_dim": TINY_CONTEXT, "torch_dtype": "float32",
           "vocab_size": 49408}
    cfg_path.write_text(json.dumps(cfg))
    target = comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    # newer ComfyUI defaults to a checkpoint-only CLIP class and fp16 text encoders on CPU
    target.params = {"textmodel_json_config": str(cfg_path), "clip_model": comfy.sd1_clip.SDClipModel}
    kwargs = {}
    if "model_options" in inspect.signature(comfy.sd.CLIP.__init__).parameters:
        kwargs["model_options"] = {"dtype": torch.float32}
    with torch.no_grad():
        clip = comfy.sd.CLIP(target, **kwargs)
        fill_random(clip.cond_stage_model, seed)
    return clip


def encode(clip, text: str):
    """CONDITIONING for ``text``, as CLIPTextEncode makes it."""
    tokens = clip.tokenize(text)
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    return [[cond, {"pooled_output": pooled}]]
