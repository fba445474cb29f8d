"""The soft face mask in crop space: 1 = the face region the generator repaints.

The authors repaint the union of a face parser's skin, brow, eye, nose and lip classes;
MediaPipe's face-oval polygon covers the same region (forehead to chin, cheek to cheek,
no ears, hair or neck) without a second model. The polygon's edge is anti-aliased with a
signed distance, which also makes ``grow`` exact to sub-pixel amounts.

``grow`` and ``feather`` are given in pixels *of a 512 crop* and scaled with the crop,
so one setting gives the same mask at 256 and 512.
"""
from __future__ import annotations

import math

import numpy as np

from .crop import FaceCrop, check_crop_size, check_landmarks, landmarks_to_pixels
from .errors import DenseFaceInputError

# MediaPipe FACE_LANDMARKS_FACE_OVAL as one closed loop (forehead top, clockwise on screen).
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
REFERENCE_CROP = 512
# Gaussian sigma = radius / 3, kernel cut at 3 sigma (the tail it drops is < 1.2 %).
_SIGMAS_PER_RADIUS = 3.0


def _check_amount(value, name: str, lo: float, hi: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DenseFaceInputError(f"{name}: expected a number of pixels, got {value!r}") from None
    if not (math.isfinite(v) and lo <= v <= hi):
        raise DenseFaceInputError(f"{name}: expected a number of pixels between {lo:g} and {hi:g}, got {value!r}")
    return v


def gaussian_feather(mask: np.ndarray, radius: float) -> np.ndarray:
    """Blur a float32 mask with a Gaussian that reaches ``radius`` pixels (sigma = radius/3).

    Zero stays exactly zero beyond ``radius`` of any non-zero pixel, which paste-back's
    bit-identical background relies on.
    """
    import cv2

    if radius <= 0:
        return mask.astype(np.float32, copy=False)
    r = math.ceil(radius)
    sigma = radius / _SIGMAS_PER_RADIUS
    out = cv2.GaussianBlur(mask.astype(np.float32, copy=False), (2 * r + 1, 2 * r + 1), sigma,
                           borderType=cv2.BORDER_REPLICATE)
    return np.clip(out, 0.0, 1.0)


def polygon_mask(polygon_px: np.ndarray, size: int, grow: float = 0.0) -> np.ndarray:
    """Anti-aliased (size, size) float32 fill of a pixel-centre polygon, grown by ``grow`` px.

    Coverage is clip(0.5 + signed distance + grow): 0.5 on the polygon's edge, 1 px ramp.
    """
    import cv2

    hard = np.zeros((size, size), np.uint8)
    shift = 4
    pts = np.round(np.asarray(polygon_px, np.float64) * (1 << shift)).astype(np.int32)
    cv2.fillPoly(hard, [pts], 1, lineType=cv2.LINE_8, shift=shift)
    inside = cv2.distanceTransform(hard, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    outside = cv2.distanceTransform(1 - hard, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    # distanceTransform measures to the nearest other-class pixel centre: half a pixel more
    # than the distance to the boundary between them.
    signed = np.where(hard > 0, inside - 0.5, 0.5 - outside)
    return np.clip(signed + grow + 0.5, 0.0, 1.0).astype(np.float32)


def face_mask_from_landmarks(landmarks: np.ndarray, size: int, grow: float = 0.0,
                             feather: float = 0.0) -> np.ndarray:
    """(size, size) float32 mask from landmarks normalised to a square crop of ``size``."""
    size = check_crop_size(size, "size")
    lm = check_landmarks(landmarks)
    k = size / REFERENCE_CROP
    grow_px = _check_amount(grow, "grow", -256.0, 256.0) * k
    feather_px = _check_amount(feather, "feather", 0.0, 256.0) * k
    polygon = landmarks_to_pixels(lm[list(FACE_OVAL)], (size, size))
    return gaussian_feather(polygon_mask(polygon, size, grow_px), feather_px)


def face_mask(crop: FaceCrop, grow: float = 0.0, feather: float = 0.0) -> np.ndarray:
    """The crop's face mask, (crop.size, crop.size) float32 in [0, 1], 1 = regenerate.

    ``grow`` dilates (+) or erodes (-) and ``feather`` is the Gaussian feather radius,
    both in pixels of a 512 crop (scaled to crop.size).
    """
    if not isinstance(crop, FaceCrop):
        raise DenseFaceInputError(f"crop: expected a FaceCrop, got {type(crop).__name__}")
    return face_mask_from_landmarks(crop.landmarks, crop.size, grow, feather)
