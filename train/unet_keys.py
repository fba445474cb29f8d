"""diffusers UNet2DConditionModel keys <-> the original ldm (``openaimodel.UNetModel``) keys.

The weight file and ComfyUI speak ldm, the trainer speaks diffusers. Attention paths come
from the core families mapping; this module adds the rest of the UNet (ResBlocks, up- and
downsamplers, embeddings), which the trainer needs to seed the pose branch from the UNet
encoder and to hand a diffusers base model to ldm-layout consumers (tests prove it against
``comfy.utils.unet_to_diffusers``).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from torch import Tensor

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
          "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
BASIC = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
         "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}

_RES = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.resnets\.(\d+)\.([a-z_0-9]+)\.(.+)$")
_ATT = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.attentions\.(\d+)\.(.+)$")
_DOWN = re.compile(r"^down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$")
_UP = re.compile(r"^up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$")
_MID_RES = re.compile(r"^mid_block\.resnets\.(\d+)\.([a-z_0-9]+)\.(.+)$")
_MID_ATT = re.compile(r"^mid_block\.attentions\.0\.(.+)$")


def diffusers_to_ldm_unet_map(keys: Iterable[str], layers_per_block: int) -> dict[str, str]:
    """``{diffusers key: ldm key}`` for every key of an SD1/SD2-style diffusers UNet state dict."""
    keys = list(keys)
    nrb = int(layers_per_block)
    up_with_attention = {int(m.group(2)) for k in keys if (m := _ATT.match(k)) and m.group(1) == "up_blocks"}
    out: dict[str, str] = {}
    for k in keys:
        out[k] = _map_key(k, nrb, up_with_attention)
    return out


def _ldm_block(kind: str, i: int, j: int, nrb: int) -> str:
    """diffusers ``down_blocks``/``up_blocks`` i, layer j -> ldm ``input_blocks``/``output_blocks`` n."""
    if kind == "down_blocks":
        return f"input_blocks.{1 + i * (nrb + 1) + j}"
    return f"output_blocks.{i * (nrb + 1) + j}"


def _map_key(k: str, nrb: int, up_with_attention: set[int]) -> str:
    for prefix, ldm in BASIC.items():
        if k.startswith(prefix + "."):
            return ldm + k[len(prefix):]
    if m := _RES.match(k):
        return f"{_ldm_block(m.group(1), int(m.group(2)), int(m.group(3)), nrb)}.0.{RESNET[m.group(4)]}.{m.group(5)}"
    if m := _ATT.match(k):
        return f"{_ldm_block(m.group(1), int(m.group(2)), int(m.group(3)), nrb)}.1.{m.group(4)}"
    if m := _DOWN.match(k):
        return f"input_blocks.{(int(m.group(1)) + 1) * (nrb + 1)}.0.op.{m.group(2)}"
    if m := _UP.match(k):
        i = int(m.group(1))
        return f"output_blocks.{i * (nrb + 1) + nrb}.{2 if i in up_with_attention else 1}.conv.{m.group(2)}"
    if m := _MID_RES.match(k):
        return f"middle_block.{0 if m.group(1) == '0' else 2}.{RESNET[m.group(2)]}.{m.group(3)}"
    if m := _MID_ATT.match(k):
        return f"middle_block.1.{m.group(1)}"
    raise KeyError(f"no ldm name for diffusers UNet key {k!r}")


def unet_state_dict_to_ldm(state_dict: Mapping[str, Tensor], layers_per_block: int) -> dict[str, Tensor]:
    """A diffusers UNet state dict renamed to the ldm layout (same tensors)."""
    mapping = diffusers_to_ldm_unet_map(state_dict.keys(), layers_per_block)
    return {mapping[k]: v for k, v in state_dict.items()}


def pose_branch_from_unet(ldm_unet: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The pose-branch tensors a ControlNet copies from its UNet: time embedding, the input
    blocks' ResBlocks/downsamplers/conv_in, and the middle block's two ResBlocks (ldm middle 0
    and 2 become the branch's middle 0 and 1). Hint encoder and zero convs are not included."""
    out = {}
    for k, v in ldm_unet.items():
        if k.startswith("time_embed.") or re.match(r"^input_blocks\.\d+\.0\.", k):
            out[k] = v
        elif k.startswith("middle_block.0."):
            out[k] = v
        elif k.startswith("middle_block.2."):
            out["middle_block.1." + k[len("middle_block.2."):]] = v
    return out
