"""Dense annotation head: UNet decoder features -> 478 landmark heatmaps, 10-class face
parsing, depth (paper Eq. 8). The authors' release has no head (official-code-facts section
5), so this design is ours: a light FPN-style fusion, because the targets are 64x64 and the
decoder already carries the spatial detail; the head must stay small next to the UNet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import DenseFaceInputError
from .families import BaseFamily, get_family

NUM_LANDMARKS = 478
NUM_PARSING_CLASSES = 10
# 128 keeps the dense losses within ~10 % of a training step at SD1.5 / 256 px (bench train);
# the width is stored in every weight file, so heads of other widths load too.
DEFAULT_WIDTH = 128
DEFAULT_OUTPUT_SIZE = 64


class FeatureTap(NamedTuple):
    """Where a decoder feature is taken: the output of ldm ``output_blocks.<n>`` equals the
    output of diffusers ``up_blocks.<i>`` (after its upsampler). ``level`` is the UNet
    resolution level the block belongs to (its width is ``channel_mult[level]``)."""

    ldm_output_block: int
    diffusers_up_block: int
    level: int


# The one definition of the captured features (coarse to fine): the last block of up
# levels 1, 2 and 3 (ldm levels 2, 1, 0 of a 4-level SD UNet).
FEATURE_TAPS = (FeatureTap(5, 1, 2), FeatureTap(8, 2, 1), FeatureTap(11, 3, 0))


def feature_channels(family: str | BaseFamily) -> tuple[int, ...]:
    fam = get_family(family)
    return tuple(fam.model_channels * fam.channel_mult[t.level] for t in FEATURE_TAPS)


def _groups(ch: int) -> int:
    for g in (32, 16, 8, 4, 2):
        if ch % g == 0:
            return g
    return 1


def _conv_block(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2),
        nn.GroupNorm(_groups(cout), cout),
        nn.SiLU(),
    )


class DenseHead(nn.Module):
    """forward(features) -> {"landmarks": (B,478,S,S), "parsing": (B,10,S,S) logits, "depth": (B,1,S,S)}."""

    def __init__(
        self,
        in_channels: Sequence[int] = (1280, 640, 320),
        width: int = DEFAULT_WIDTH,
        output_size: int = DEFAULT_OUTPUT_SIZE,
        num_landmarks: int = NUM_LANDMARKS,
        num_classes: int = NUM_PARSING_CLASSES,
    ) -> None:
        super().__init__()
        self.in_channels = tuple(in_channels)
        self.output_size = output_size
        self.reduce = nn.ModuleList(
            [_conv_block(c, width, 1) for c in self.in_channels]
        )
        self.trunk = nn.Sequential(
            _conv_block(width * len(self.in_channels), width, 3),
            _conv_block(width, width, 3),
        )
        self.landmarks = nn.Conv2d(width, num_landmarks, 1)
        self.parsing = nn.Conv2d(width, num_classes, 1)
        self.depth = nn.Conv2d(width, 1, 1)

    @classmethod
    def for_family(cls, family: str | BaseFamily, **kwargs) -> DenseHead:
        return cls(feature_channels(family), **kwargs)

    def forward(self, features: Sequence[Tensor]) -> dict[str, Tensor]:
        if len(features) != len(self.reduce):
            raise DenseFaceInputError(
                f"dense head expects {len(self.reduce)} feature maps, got {len(features)}"
            )
        dtype = self.landmarks.weight.dtype
        size = (self.output_size, self.output_size)
        maps = []
        for f, reduce, c in zip(features, self.reduce, self.in_channels):
            if f.ndim != 4 or f.shape[1] != c:
                raise DenseFaceInputError(
                    f"dense head feature must be (B, {c}, H, W), got {tuple(f.shape)}"
                )
            maps.append(
                F.interpolate(
                    reduce(f.to(dtype)), size=size, mode="bilinear", align_corners=False
                )
            )
        h = self.trunk(torch.cat(maps, dim=1))
        return {
            "landmarks": self.landmarks(h),
            "parsing": self.parsing(h),
            "depth": self.depth(h),
        }


def dense_losses(
    pred: Mapping[str, Tensor],
    target: Mapping[str, Tensor | None],
    lambda_landmark: float = 1.0,
    lambda_parsing: float = 1.0,
    lambda_depth: float = 1.0,
) -> dict[str, Tensor]:
    """Eq. 8 terms; a target that is absent or None skips its term.

    - ``landmarks`` (B,478,S,S) Gaussian heatmaps, max 1: mean squared error.
    - ``parsing``: class indices (B,S,S) long, or the dataset's multi-hot (B,10,S,S) masks;
      pixels with no class (pooled boundaries) are ignored by the cross-entropy.
    - ``depth`` (B,1,S,S) or (B,S,S): squared error averaged over ``face_mask`` (B,[1,]S,S)
      only, because background depth is a constant fill, not geometry; no mask = all pixels.
    Returns each term unweighted plus ``total`` = sum of lambda * term.
    """
    terms: dict[str, Tensor] = {}
    if target.get("landmarks") is not None:
        terms["landmark"] = F.mse_loss(
            pred["landmarks"].float(), target["landmarks"].float()
        )
    if target.get("parsing") is not None:
        terms["parsing"] = F.cross_entropy(
            pred["parsing"].float(), _class_map(target["parsing"]), ignore_index=-100
        )
    if target.get("depth") is not None:
        p = pred["depth"].float()
        t = target["depth"].float().reshape(p.shape)
        m = target.get("face_mask")
        m = torch.ones_like(p) if m is None else m.float().reshape(p.shape)
        terms["depth"] = (m * (p - t) ** 2).sum() / m.sum().clamp_min(1.0)
    weights = {
        "landmark": lambda_landmark,
        "parsing": lambda_parsing,
        "depth": lambda_depth,
    }
    if not terms:
        raise DenseFaceInputError(
            "dense_losses needs at least one of landmarks, parsing, depth targets"
        )
    terms["total"] = sum(weights[k] * v for k, v in terms.items())
    return terms


def _class_map(t: Tensor) -> Tensor:
    if t.ndim == 3:
        return t.long()
    if t.ndim == 4:
        labels = t.argmax(dim=1)
        return torch.where(t.amax(dim=1) > 0, labels, torch.full_like(labels, -100))
    raise DenseFaceInputError(
        f"parsing target must be (B,H,W) indices or (B,C,H,W) masks, got {tuple(t.shape)}"
    )
