"""Paste a generated face back into the image it was cropped from.

The authors' release stops at the 256 face (official-code-facts.md, section 6.5); this
is our design. The face and its mask go back through ``crop.inverse`` (the same
transform that made the crop), the warped mask is feathered *inwards* (eroded by the
feather radius, then blurred by it) so the blend never reaches past the crop square or
the mask, and the blend is written with ``np.where`` so every pixel whose final weight is
0 is the base pixel, bit for bit.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .crop import FaceCrop, warp_affine
from .errors import DenseFaceInputError
from .face_mask import gaussian_feather

# Default feather: this fraction of the crop square's side in source pixels.
AUTO_FEATHER_FRACTION = 0.02


def _check_rgb01(image, name: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise DenseFaceInputError(f"{name}: expected one float RGB image of shape (H, W, 3), got "
                                  f"{tuple(arr.shape)}; for a batch, paste each image separately")
    if not np.issubdtype(arr.dtype, np.floating):
        raise DenseFaceInputError(f"{name}: expected float32 pixels in [0, 1], got {arr.dtype}")
    if not np.isfinite(arr).all():
        raise DenseFaceInputError(f"{name}: contains NaN or infinite values")
    return arr.astype(np.float32, copy=False)


def _to_crop_size(image: np.ndarray, size: int) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    if (w, h) == (size, size):
        return image
    interp = cv2.INTER_AREA if w > size or h > size else cv2.INTER_CUBIC
    out = cv2.resize(image, (size, size), interpolation=interp)
    return np.clip(out, 0.0, 1.0) if interp == cv2.INTER_CUBIC else out


def _check_mask(mask, size: int) -> np.ndarray:
    if mask is None:
        return np.ones((size, size), np.float32)
    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise DenseFaceInputError(f"mask: expected one (H, W) crop-space mask, got {tuple(np.shape(mask))}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise DenseFaceInputError("mask: contains NaN or infinite values")
    return np.clip(_to_crop_size(arr, size), 0.0, 1.0)


def auto_feather(crop: FaceCrop) -> float:
    """A feather that scales with the face: 2% of the crop square's side in source pixels."""
    return AUTO_FEATHER_FRACTION * crop.size / crop.scale


def _erode(mask: np.ndarray, radius: float) -> np.ndarray:
    """Erode by ``radius``; OpenCV's default border does not erode from the image edge, so a
    face cut by the edge keeps its new pixels up to that edge."""
    import cv2

    r = math.ceil(radius)
    if r <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.erode(mask, kernel)


def _roi(crop: FaceCrop) -> tuple[int, int, int, int]:
    """Source-pixel window holding the crop square plus a band of zeros (x0, y0, x1, y1).

    Warping, eroding and blurring in this window gives the same numbers as doing it on the
    whole image (all three stay inside the warped mask's support), at the face's cost.
    """
    margin = 4
    w, h = crop.source_size
    q = crop.quad
    x0 = max(0, math.floor(q[:, 0].min()) - margin)
    y0 = max(0, math.floor(q[:, 1].min()) - margin)
    x1 = min(w, math.ceil(q[:, 0].max()) + margin + 1)
    y1 = min(h, math.ceil(q[:, 1].max()) + margin + 1)
    return x0, y0, max(x0, x1), max(y0, y1)


def _to_roi(inverse: np.ndarray, roi: tuple[int, int, int, int]) -> np.ndarray:
    m = np.array(inverse, np.float64)
    m[:, 2] -= (roi[0], roi[1])
    return m


def _weight(mask: np.ndarray, crop: FaceCrop, feather: float, roi) -> np.ndarray:
    x0, y0, x1, y1 = roi
    # Bilinear: a mask must not ring; constant 0 outside the crop square.
    warped = warp_affine(mask, _to_roi(crop.inverse, roi), (x1 - x0, y1 - y0), border="constant",
                         interpolation="linear")
    return gaussian_feather(_erode(np.clip(warped, 0.0, 1.0), feather), feather)


def warp_mask_back(mask: np.ndarray, crop: FaceCrop, feather: float) -> np.ndarray:
    """The blend weight paste-back uses: the crop-space mask in source pixels, feathered
    inwards by ``feather`` source pixels, exactly 0 outside the crop square."""
    mask = _check_mask(mask, crop.size)
    w, h = crop.source_size
    out = np.zeros((h, w), np.float32)
    roi = _roi(crop)
    if roi[2] > roi[0] and roi[3] > roi[1]:
        out[roi[1]:roi[3], roi[0]:roi[2]] = _weight(mask, crop, float(feather), roi)
    return out


def paste_back(base, face, crop: FaceCrop, mask=None, feather: float | None = None) -> np.ndarray:
    """Blend ``face`` (the crop, any size; resized to crop.size) into ``base`` through ``crop``.

    ``base`` and ``face`` are float RGB in [0, 1] (H, W, 3); ``mask`` is crop-space,
    1 = take the face (None = the whole crop square); ``feather`` is in source pixels
    (None = :func:`auto_feather`). Returns a new float32 image the size of ``base``; for a
    crop without a face (:func:`~.crop.passthrough_crop`) that is ``base`` unchanged.
    """
    if not isinstance(crop, FaceCrop):
        raise DenseFaceInputError(f"crop: expected a FaceCrop, got {type(crop).__name__}")
    base = _check_rgb01(base, "base")
    face = _check_rgb01(face, "face")
    h, w = base.shape[:2]
    if (w, h) != tuple(crop.source_size):
        sw, sh = crop.source_size
        raise DenseFaceInputError(f"base image is {w}x{h} but the face crop was made from a {sw}x{sh} "
                                  f"image; paste into the image the face was cropped from")
    if feather is None:
        feather = auto_feather(crop)
    feather = float(feather)
    if not (math.isfinite(feather) and 0.0 <= feather <= 1024.0):
        raise DenseFaceInputError(f"feather: expected 0..1024 source pixels, got {feather!r}")

    face = _to_crop_size(face, crop.size)
    mask = _check_mask(mask, crop.size)
    out = base.copy()
    if not crop.has_face:
        return out
    roi = _roi(crop)
    x0, y0, x1, y1 = roi
    if x1 <= x0 or y1 <= y0:
        return out
    wgt = _weight(mask, crop, feather, roi)[:, :, None]
    # Replicate: pixels on the crop square's edge must not blend with black.
    face_src = warp_affine(face, _to_roi(crop.inverse, roi), (x1 - x0, y1 - y0), border="replicate")
    face_src = np.clip(face_src, 0.0, 1.0)
    window = base[y0:y1, x0:x1]
    blended = window + (face_src - window) * wgt
    out[y0:y1, x0:x1] = np.where(wgt > 0.0, blended, window)
    return out


def paste_faces(base, faces: Sequence, crops: Sequence[FaceCrop], masks: Sequence | None = None,
                feather: float | None = None) -> np.ndarray:
    """Every face into ``base``, in the given order (a later face is composited over an earlier one
    where their masks overlap). Each paste leaves the pixels outside its own feathered mask bit-identical,
    so everything outside the union of the masks is the base, bit for bit."""
    out = _check_rgb01(base, "base")
    for i, (face, crop) in enumerate(zip(faces, crops)):
        out = paste_back(out, face, crop, mask=None if masks is None else masks[i], feather=feather)
    return out
