"""Tiny SD1.5-shaped models built inside a real ComfyUI, with random weights.

ComfyUI's checkpoint loaders only accept exact SD configs, so tests build tiny models with
the product's random-model builders at the core's tiny geometry
(``dense_face_core.random_weights.TINY``, registered as the Dense-Face family ``tiny`` so
that Dense-Face weight files can be made and validated for it).
"""
from __future__ import annotations

import json
from pathlib import Path

from dense_face.dense_face_core import random_weights as RW
from dense_face.headless import random_sd

TINY_CONTEXT = RW.TINY.context_dim
TINY_CHANNELS = RW.TINY.model_channels
TINY_MULT = RW.TINY.channel_mult
random_models = random_sd
fill_random = RW.fill_random_
encode = random_sd.encode


def tiny_unet_config() -> dict:
    return RW.ldm_unet_config(RW.TINY)


def full_size_unet_config(family: str) -> dict:
    """ComfyUI UNetModel kwargs of a full-size SD1.5 / SD2.1 UNet (no dtype: build it on the meta device)."""
    return RW.ldm_unet_config(family, dtype=None)


def tiny_family():
    """Register (once) and return the Dense-Face family describing the tiny UNet."""
    return RW.tiny_family()


def tiny_model(seed: int = 0):
    """A tiny SD1.5-type MODEL (ModelPatcher) with random weights."""
    return random_sd.build_unet(tiny_unet_config(), seed)


def tiny_clip(workdir: Path, seed: int = 0):
    """A tiny CLIP (the real SD1 tokenizer, a 2-layer text model of width 32)."""
    cfg_path = Path(workdir) / "tiny_clip_config.json"
    cfg_path.write_text(json.dumps(RW.TINY_TEXT_CONFIG))
    return random_sd.build_clip(seed, str(cfg_path))


def tiny_vae(seed: int = 0):
    return random_sd.build_vae(seed, ch=32)
