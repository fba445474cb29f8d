"""Checks of node inputs that ComfyUI's own validation does not make (values set by links or the API)."""
from __future__ import annotations

import torch

from ...dense_face_core.errors import DenseFaceInputError


def check_latent(latent, model) -> torch.Tensor:
    if not isinstance(latent, dict) or not isinstance(latent.get("samples"), torch.Tensor):
        raise DenseFaceInputError("latent_image: expected a LATENT (connect VAE Encode of the face crop)")
    samples = latent["samples"]
    fmt = getattr(getattr(model, "model", None), "latent_format", None)
    channels = int(getattr(fmt, "latent_channels", 4))
    if samples.ndim != 4:
        raise DenseFaceInputError(f"latent_image: expected an image latent (batch, {channels}, height, width), "
                                  f"got shape {tuple(samples.shape)}")
    if samples.shape[1] != channels:
        raise DenseFaceInputError(f"latent_image: has {samples.shape[1]} channels but the model expects "
                                  f"{channels} (encode the crop with this model's VAE)")
    if samples.shape[0] == 0 or samples.shape[2] == 0 or samples.shape[3] == 0:
        raise DenseFaceInputError(f"latent_image: empty latent {tuple(samples.shape)}")
    if not torch.isfinite(samples).all():
        raise DenseFaceInputError("latent_image: contains NaN or infinite values")
    return samples


def check_choice(value, options, name):
    if value not in options:
        shown = ", ".join(map(str, options[:12])) + (" ..." if len(options) > 12 else "")
        raise DenseFaceInputError(f"{name}: unknown value {value!r}; this ComfyUI offers {shown}")


def check_number(value, name, lo, hi):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DenseFaceInputError(f"{name}: expected a number, got {value!r}") from None
    if not (lo <= v <= hi):
        raise DenseFaceInputError(f"{name}: expected a value in [{lo:g}, {hi:g}], got {value!r}")
    return v
