"""The authors' attention-free ControlNet pose branch (official-code-facts sections 4, 8).

ComfyUI's own cldm ControlNet cannot hold it (its middle block would be one ResBlock, the
authors' has two), so it is written out here in plain torch with exactly the ldm/cldm key
layout: the authors' ``control_model.*`` tensors load 1:1 and the forward has the cldm
signature that ``comfy.controlnet.ControlNet`` calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cpu_conv import Conv2d
from .families import get_family

HINT_WIDTHS = (16, 16, 32, 32, 96, 96, 256)
HINT_STRIDES = (1, 1, 2, 1, 2, 1, 2)


def timestep_embedding(timesteps: Tensor, dim: int, max_period: int = 10000) -> Tensor:
    """ldm's sinusoidal embedding: cos half first, then sin; float32."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period)
        * torch.arange(half, dtype=torch.float32, device=timesteps.device)
        / half
    )
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """Normalises in float32 whatever the weights' dtype, like ldm (fp16 variance underflows)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(
            x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps
        ).type(x.dtype)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """ldm ResBlock without scale-shift norm or up/down (the SD1/SD2 configuration)."""

    def __init__(
        self, channels: int, emb_channels: int, out_channels: int, groups: int = 32
    ) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            GroupNorm32(groups, channels),
            nn.SiLU(),
            Conv2d(channels, out_channels, 3, padding=1),
        )
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, out_channels)
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(groups, out_channels),
            nn.SiLU(),
            nn.Dropout(0.0),
            _zero(Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        self.skip_connection: nn.Module = (
            nn.Identity()
            if out_channels == channels
            else Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).type(h.dtype)[..., None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class EmbSequential(nn.Sequential):
    """ldm's TimestepEmbedSequential: hands the time embedding to the ResBlocks only."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class PoseBranch(nn.Module):
    """Half a UNet (input blocks + a two-ResBlock middle) with zero convs and a hint encoder."""

    @classmethod
    def for_family(cls, family, **kwargs) -> "PoseBranch":
        """The branch at a base family's geometry (a name or a ``BaseFamily``)."""
        fam = get_family(family)
        return cls(fam.model_channels, fam.channel_mult, fam.num_res_blocks, **kwargs)

    def __init__(
        self,
        model_channels: int = 320,
        channel_mult: Sequence[int] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        in_channels: int = 4,
        hint_channels: int = 3,
        norm_groups: int = 32,
    ) -> None:
        super().__init__()
        mc = model_channels
        self.model_channels = mc
        emb_dim = 4 * mc
        self.time_embed = nn.Sequential(
            nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )

        hint: list[nn.Module] = []
        prev = hint_channels
        for width, stride in zip(HINT_WIDTHS, HINT_STRIDES):
            hint += [Conv2d(prev, width, 3, stride=stride, padding=1), nn.SiLU()]
            prev = width
        hint.append(_zero(Conv2d(prev, mc, 3, padding=1)))
        self.input_hint_block = nn.Sequential(*hint)

        self.input_blocks = nn.ModuleList(
            [EmbSequential(Conv2d(in_channels, mc, 3, padding=1))]
        )
        self.zero_convs = nn.ModuleList([self._zero_conv(mc)])
        ch = mc
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                out = mult * mc
                self.input_blocks.append(
                    EmbSequential(ResBlock(ch, emb_dim, out, norm_groups))
                )
                ch = out
                self.zero_convs.append(self._zero_conv(ch))
            if level != len(channel_mult) - 1:
                self.input_blocks.append(EmbSequential(Downsample(ch)))
                self.zero_convs.append(self._zero_conv(ch))
        self.middle_block = EmbSequential(
            ResBlock(ch, emb_dim, ch, norm_groups),
            ResBlock(ch, emb_dim, ch, norm_groups),
        )
        self.middle_block_out = self._zero_conv(ch)

    @staticmethod
    def _zero_conv(ch: int) -> nn.Sequential:
        return nn.Sequential(_zero(Conv2d(ch, ch, 1)))

    @property
    def dtype(self) -> torch.dtype:
        """ComfyUI's ControlNet wrapper reads ``control_model.dtype``."""
        return self.time_embed[0].weight.dtype

    def encode_hint(self, hint: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """The hint encoder's output: a function of the pose image alone, so a caller may
        compute it once per image and pass it to every step as ``guided_hint``."""
        return self.input_hint_block(hint.to(dtype or self.dtype))

    def forward(
        self,
        x: Tensor,
        hint: Tensor,
        timesteps: Tensor,
        context: Tensor | None = None,
        y: Tensor | None = None,
        guided_hint: Tensor | None = None,
        **kwargs,
    ) -> list[Tensor]:
        """13 residuals: one per skip connection in input-block order, then the middle one.

        ``context`` and ``y`` are accepted for the cldm signature and ignored: the branch
        reads neither text nor identity, which is why CFG halves can share one evaluation.
        """
        emb = self.time_embed(
            timestep_embedding(timesteps, self.model_channels).to(x.dtype)
        )
        if guided_hint is None:
            guided_hint = self.encode_hint(hint, x.dtype)
        outs: list[Tensor] = []
        h = x
        for module, zero_conv in zip(self.input_blocks, self.zero_convs):
            h = module(h, emb)
            if guided_hint is not None:
                h = h + guided_hint
                guided_hint = None
            outs.append(zero_conv(h))
        h = self.middle_block(h, emb)
        outs.append(self.middle_block_out(h))
        return outs
