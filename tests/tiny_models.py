"""Tiny SD1.5-shaped models built inside a real ComfyUI, with random weights.

ComfyUI's checkpoint loaders only accept exact SD configs, so tests build tiny models with
the product's random-model builders (``random_models``) at a small width. The geometry is
registered as the Dense-Face family ``tiny`` so that Dense-Face weight files can be made
and validated for it.
"""
from __future__ import annotations

import json
from pathlib import Path

from dense_face import random_models

TINY_CONTEXT = 32
TINY_CHANNELS = 32
TINY_MULT = (1, 2, 2, 2)  # widths 32/64/64/64: divisible by 32 groups
fill_random = random_models.fill_random_
encode = random_models.encode


def tiny_unet_config() -> dict:
    return random_models.unet_config(TINY_CHANNELS, TINY_MULT, TINY_CONTEXT, num_heads=4)



def full_size_unet_config(family: str) -> dict:
    """ComfyUI UNetModel kwargs of a full-size SD1.5 / SD2.1 UNet (no dtype: build it on the meta device)."""
    cfg = tiny_unet_config()
    cfg.update(model_channels=320, channel_mult=[1, 2, 4, 4], context_dim=768 if family == "sd15" else 1024)
    if family == "sd21":
        cfg.update(num_heads=-1, num_head_channels=64, use_linear_in_transformer=True)
    else:
        cfg.update(num_heads=8)
    cfg.pop("dtype")
    return cfg

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


def tiny_model(seed: int = 0):
    """A tiny SD1.5-type MODEL (ModelPatcher) with random weights."""
    return random_models.build_unet(tiny_unet_config(), seed)


def tiny_clip(workdir: Path, seed: int = 0):
    """A tiny CLIP (the real SD1 tokenizer, a 2-layer text model of width 32)."""
    cfg_path = Path(workdir) / "tiny_clip_config.json"
    cfg = {"architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0,
           "eos_token_id": 2, "hidden_act": "quick_gelu", "hidden_size": TINY_CONTEXT, "initializer_factor": 1.0,
           "initializer_range": 0.02, "intermediate_size": 64, "layer_norm_eps": 1e-05,
           "max_position_embeddings": 77, "model_type": "clip_text_model", "num_attention_heads": 2,
           "num_hidden_layers": 2, "pad_token_id": 1, "projection_dim": TINY_CONTEXT, "torch_dtype": "float32",
           "vocab_size": 49408}
    cfg_path.write_text(json.dumps(cfg))
    return random_models.build_clip(seed, str(cfg_path))


def tiny_vae(seed: int = 0):
    return random_models.build_vae(seed, ch=32)
