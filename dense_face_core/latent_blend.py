"""Dense-Face latent blending: the mask at latent size and the blend of one step, defined once.

The authors' blend sampler (official-code-facts.md section 6, items 3-4) regenerates only the
face: before every denoising step, including the first, the latent outside the face is
replaced by the original latent noised to that step's level,

    img = q_sample(x0, t, fresh_noise) * keep + img * (1 - keep)

and after the last step nothing is blended. Their ``keep`` mask is their 32x32 PNG
(background 255, face 0) INTER_AREA-resized to the latent size, divided by 255 and
thresholded: ``keep = resized >= 0.75``. Its soft edge is therefore regenerated.

Conventions here
----------------
* Input masks follow ComfyUI's MASK convention: float in [0, 1], shape (B, H, W) or (H, W),
  **1 = face to regenerate**, in crop (pixel) space, any size.
* :func:`mask_to_latent` returns the *regenerate* weight ``r`` at latent size,
  shape (B, 1, h, w): 1 = regenerate (the sampler's result is kept), 0 = keep the original.
  ``keep = 1 - r``.
* Polarity of the threshold. With ``m`` our mask and ``k = 1 - m`` the authors' keep value,
  area averaging is linear, so ``area(k) = 1 - area(m)``. The authors keep a latent pixel
  iff ``area(k) >= 0.75``; we compute exactly ``keep = (1 - area(m)) >= threshold`` (default
  0.75), i.e. we regenerate where ``area(m) > 1 - threshold`` = 0.25. A latent pixel whose
  8x8 block is only partly face (the soft edge) is regenerated, as in the authors' code.
* Sampling space (ComfyUI, "EPS" convention, also used by v-prediction models):
  ``x_t = x0 + sigma * noise`` where ``x0`` is the latent after ``process_latent_in`` (for SD1.5
  the VAE latent times 0.18215). This is ComfyUI's ``model_sampling.noise_scaling(sigma,
  noise, x0)`` in the 2024 build and in 0.3.x. The authors' DDPM form ``q_sample =
  sqrt(a) x0 + sqrt(1 - a) noise`` with ``a = alphas_cumprod[t]`` is the same point scaled by
  ``sqrt(a)``, with ``sigma = sqrt((1 - a) / a)`` (see :func:`ddpm_to_sampling_space`).

Pure torch/numpy: nothing here imports ComfyUI.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .errors import DenseFaceInputError

AUTHORS_KEEP_THRESHOLD = 0.75  # INF:198-200: resized/255 >= 0.75 -> keep
_SEED_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


# --------------------------------------------------------------------------------------
# mask -> latent size
# --------------------------------------------------------------------------------------
def area_weights(src: int, dst: int) -> np.ndarray:
    """(dst, src) matrix averaging source cells over each destination cell's footprint.

    Destination cell ``i`` covers source coordinates ``[i*s, (i+1)*s)`` with ``s = src/dst``;
    each source cell contributes its overlap with that interval, divided by ``s``. For a
    reduction this is OpenCV's INTER_AREA exactly (integer and fractional factors); for an
    enlargement each destination cell takes the source cell it lies in (or the overlap-
    weighted mean of the two it straddles). ``src == dst`` gives the identity.
    """
    if src <= 0 or dst <= 0:
        raise DenseFaceInputError(f"area resize: sizes must be positive, got {src} -> {dst}")
    scale = src / dst
    w = np.zeros((dst, src), np.float64)
    for i in range(dst):
        lo, hi = i * scale, (i + 1) * scale
        j0, j1 = math.floor(lo), min(src, math.ceil(hi))
        for j in range(j0, j1):
            overlap = min(hi, j + 1) - max(lo, j)
            if overlap > 0:
                w[i, j] = overlap
        w[i] /= w[i].sum()
    return w


def area_resize(masks: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Area-average (B, H, W) float arrays to (B, h, w) float64 (separable, exact weights)."""
    masks = np.asarray(masks, np.float64)
    h, w = int(size_hw[0]), int(size_hw[1])
    wy = area_weights(masks.shape[1], h)
    wx = area_weights(masks.shape[2], w)
    return np.einsum("yi,bij,xj->byx", wy, masks, wx)


def _as_mask_batch(mask, name: str) -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        arr = mask.detach().cpu().to(torch.float64).numpy()
    else:
        try:
            arr = np.asarray(mask, dtype=np.float64)
        except (TypeError, ValueError):
            raise DenseFaceInputError(f"{name}: expected a MASK tensor (batch, height, width), "
                                      f"got {type(mask).__name__}") from None
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 4 and arr.shape[1] == 1:  # (B, 1, H, W)
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise DenseFaceInputError(f"{name}: expected a MASK of shape (batch, height, width), got {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise DenseFaceInputError(f"{name}: the mask is empty (shape {tuple(arr.shape)})")
    if not np.isfinite(arr).all():
        raise DenseFaceInputError(f"{name}: contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        raise DenseFaceInputError(f"{name}: values must lie in [0, 1] (1 = face to regenerate); got "
                                  f"[{lo:g}, {hi:g}]" + (" - a 0-255 image?" if hi > 1.5 else ""))
    return np.clip(arr, 0.0, 1.0)


def mask_to_latent(mask, latent_hw: tuple[int, int], threshold: float = AUTHORS_KEEP_THRESHOLD,
                   soft: bool = False, name: str = "mask") -> torch.Tensor:
    """Crop-space MASK (1 = regenerate) -> regenerate weight at latent size, (B, 1, h, w) float32.

    The mask is area-averaged to ``latent_hw`` (each axis separately: a mask of another aspect
    ratio is stretched, like ComfyUI's own noise masks). Then

    * ``soft=False`` (the authors): ``keep = (1 - area) >= threshold``; returns ``1 - keep``
      (exactly 0 or 1). ``threshold=0.75`` reproduces ``resized_keep/255 >= 0.75``.
    * ``soft=True``: returns the area-averaged mask itself (no threshold).
    """
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise DenseFaceInputError(f"mask_threshold: expected a number in [0, 1], got {threshold!r}")
    arr = _as_mask_batch(mask, name)
    area = area_resize(arr, latent_hw)
    if soft:
        regen = np.clip(area, 0.0, 1.0)
    else:
        keep = (1.0 - area) >= threshold
        regen = (~keep).astype(np.float64)
    return torch.from_numpy(regen.astype(np.float32))[:, None]


def authors_keep_mask(keep_png: np.ndarray, latent_hw: tuple[int, int] = (32, 32),
                      threshold: float = AUTHORS_KEEP_THRESHOLD) -> np.ndarray:
    """The authors' rule on their own mask PNG (uint8, background 255 = keep): bool keep (h, w).

    ``cv2.resize(png, latent, INTER_AREA) / 255 >= 0.75`` (INF:198-200, 254-257), with our exact
    area weights in place of OpenCV (identical for reductions and for the 32 -> 32 identity).
    """
    png = np.asarray(keep_png)
    if png.ndim == 3:
        png = png[..., 0]
    resized = area_resize(png[None].astype(np.float64), latent_hw)[0]
    if png.dtype == np.uint8:  # OpenCV resizes the uint8 image, rounding to integers
        resized = np.clip(np.rint(resized), 0, 255)
    return resized / 255.0 >= threshold


def broadcast_mask(regen: torch.Tensor, batch: int, name: str = "mask") -> torch.Tensor:
    """(M, 1, h, w) -> (batch, 1, h, w): one mask for every latent, or one mask per latent."""
    m = regen.shape[0]
    if m == batch:
        return regen
    if m == 1:
        return regen.expand(batch, *regen.shape[1:])
    raise DenseFaceInputError(f"{name}: batch of {m} masks does not match the latent batch of {batch} "
                              f"(give one mask for all latents, or one per latent)")


def mask_summary(regen: torch.Tensor) -> dict:
    """Fractions of the latent that are regenerated / kept, for logs and warnings."""
    r = regen.float()
    return {"regenerate": float(r.mean()), "keep": float((1.0 - r).mean()),
            "empty": bool((r <= 0).all()), "full": bool((r >= 1).all())}


# --------------------------------------------------------------------------------------
# one blend step
# --------------------------------------------------------------------------------------
def eps_noise_scaling(sigma, noise: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """ComfyUI's EPS/V-prediction ``noise_scaling``: ``x0 + sigma * noise`` (sigma per batch item)."""
    s = torch.as_tensor(sigma, dtype=noise.dtype, device=noise.device)
    if s.ndim > 0 and s.numel() > 1:
        s = s.reshape(s.shape[:1] + (1,) * (noise.ndim - 1))
    else:
        s = s.reshape(())
    return x0 + s * noise


def blend_step(x: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, sigma, regen: torch.Tensor,
               noise_scaling: Callable | None = None) -> torch.Tensor:
    """Latent before one denoising step: the face from ``x``, elsewhere ``x0`` noised to ``sigma``.

    ``regen * x + (1 - regen) * noised(x0, sigma, noise)``; ``regen`` (B or 1, 1, h, w)
    broadcasts over channels. With a 0/1 mask the kept region equals ``noised`` bit for bit
    and the regenerated region equals ``x`` bit for bit. ``noise_scaling(sigma, noise, x0)``
    defaults to the EPS convention ``x0 + sigma * noise``; pass the model's own
    ``model_sampling.noise_scaling`` for other model types.
    """
    if noise_scaling is None:
        noised = eps_noise_scaling(sigma, noise, x0)
    else:
        noised = noise_scaling(sigma, noise, x0)
    r = regen.to(device=x.device, dtype=x.dtype)
    return r * x + (1.0 - r) * noised.to(dtype=x.dtype)


def ddpm_to_sampling_space(x_ddpm: torch.Tensor, alpha_cumprod: float) -> torch.Tensor:
    """A DDPM-space latent (``sqrt(a) x0 + sqrt(1-a) eps``) in ComfyUI's space: divide by sqrt(a)."""
    return x_ddpm / math.sqrt(alpha_cumprod)


def sigma_from_alpha_cumprod(alpha_cumprod: float) -> float:
    return math.sqrt((1.0 - alpha_cumprod) / alpha_cumprod)


# --------------------------------------------------------------------------------------
# noise and step bookkeeping
# --------------------------------------------------------------------------------------
def step_noise_seed(seed: int, step: int) -> int:
    """The generator seed of step ``step``'s fresh background noise (deterministic, 64-bit)."""
    return (int(seed) + 1 + (int(step) + 1) * _GOLDEN) & _SEED_MASK


def step_noise(shape, seed: int, step: int, dtype=torch.float32) -> torch.Tensor:
    """Fresh background noise of step ``step``: N(0, 1) on the CPU from its own generator.

    Independent of the sampler and of the order of model calls, so one seed gives the same
    background noise with every sampler.
    """
    gen = torch.Generator(device="cpu").manual_seed(step_noise_seed(seed, step))
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float32, device="cpu").to(dtype)


def blended_step_count(steps: int, blend_end: float) -> int:
    """How many of ``steps`` steps are blended: the first ``floor(blend_end * steps)`` (1.0 = all)."""
    if not (isinstance(blend_end, (int, float)) and math.isfinite(blend_end) and 0.0 <= blend_end <= 1.0):
        raise DenseFaceInputError(f"blend_end: expected a fraction in [0, 1], got {blend_end!r}")
    return max(0, min(int(steps), math.floor(blend_end * steps + 1e-9)))


def schedule_index(sigma: float, sigmas, rtol: float = 1e-4) -> int | None:
    """Index ``j`` (0 <= j < len(sigmas) - 1) with ``sigmas[j]`` equal to ``sigma``, else None.

    ``sigmas`` is the sampler's schedule (descending, last entry the end level); the last
    entry is never a step start.
    """
    for j in range(len(sigmas) - 1):
        s = float(sigmas[j])
        if abs(sigma - s) <= rtol * max(abs(s), 1e-8):
            return j
    return None


def interval_index(sigma: float, sigmas, rtol: float = 1e-4) -> int:
    """The step whose interval ``(sigmas[j+1], sigmas[j]]`` holds ``sigma`` (clamped to [0, N-1])."""
    n = len(sigmas) - 1
    j = 0
    for k in range(n):
        if float(sigmas[k]) * (1.0 + rtol) >= sigma:
            j = k
        else:
            break
    return max(0, min(n - 1, j))
