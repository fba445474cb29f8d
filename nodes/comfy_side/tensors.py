"""IMAGE/MASK tensors <-> the core's numpy arrays.

ComfyUI images are float32 [0, 1] tensors (B, H, W, C); masks (B, H, W), 1 = region to
generate. The core works on numpy per image, so conversions live here once.
"""
from __future__ import annotations

import numpy as np
import torch

from ...dense_face_core.errors import DenseFaceInputError


def image_to_numpy(images: torch.Tensor) -> list[np.ndarray]:
    """IMAGE (B,H,W,C) -> list of float32 (H,W,C) arrays."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise DenseFaceInputError(f"expected an IMAGE tensor (batch, height, width, channels), got "
                                  f"{getattr(images, 'shape', type(images))}")
    return [img for img in images.detach().cpu().float().numpy()]


def rgb_channels(image: np.ndarray) -> np.ndarray:
    """(H,W,C) float -> (H,W,3): alpha dropped, gray repeated (IMAGE tensors may carry 1 or 4 channels)."""
    if image.shape[-1] >= 3:
        return np.ascontiguousarray(image[..., :3])
    return np.repeat(image[..., :1], 3, axis=-1)


def numpy_to_image(arrays) -> torch.Tensor:
    """list of (H,W,3) float [0,1] or uint8 arrays (same size) -> IMAGE."""
    out = []
    for a in arrays:
        a = np.asarray(a)
        if a.dtype == np.uint8:
            a = a.astype(np.float32) / 255.0
        out.append(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)))
    return torch.stack(out, dim=0)


def numpy_to_mask(arrays) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in arrays], dim=0)
