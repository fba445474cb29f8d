"""Normalise whatever image a user hands us to RGB uint8 (H, W, 3), the face stack's input."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DenseFaceInputError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})


def is_image_file(path) -> bool:
    """An image by its name; hidden files (macOS ``._photo.jpg`` resource forks) are not."""
    p = Path(path)
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def to_rgb_uint8(image, name: str = "image") -> np.ndarray:
    """Accept gray, gray+alpha, RGB, RGBA; uint8, uint16 or float in [0, 1]; return RGB uint8.

    Alpha is dropped (the colour under it is kept), 16-bit is scaled by 1/257, floats are
    clipped to [0, 1]. Anything else is a :class:`DenseFaceInputError` naming ``name``.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise DenseFaceInputError(
            f"{name}: expected an image of shape (H, W), (H, W, 1|2|3|4), got {tuple(np.shape(image))}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise DenseFaceInputError(f"{name}: image is empty ({arr.shape[0]}x{arr.shape[1]})")
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.uint16:
        out = (arr.astype(np.uint32) * 255 + 32767) // 65535
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise DenseFaceInputError(f"{name}: image contains NaN or infinite values")
        out = np.rint(np.clip(arr, 0.0, 1.0) * 255.0)
    elif arr.dtype == np.bool_:
        out = arr.astype(np.uint8) * 255
    else:
        raise DenseFaceInputError(f"{name}: unsupported pixel type {arr.dtype}; use uint8, uint16 or float")
    out = out.astype(np.uint8, copy=False)
    channels = out.shape[2]
    if channels in (1, 2):
        out = np.repeat(out[:, :, :1], 3, axis=2)
    elif channels == 4:
        out = out[:, :, :3]
    return np.ascontiguousarray(out)


def to_float01(image_uint8: np.ndarray) -> np.ndarray:
    return image_uint8.astype(np.float32) / 255.0


def read_image(path) -> np.ndarray:
    """Read a photo as RGB uint8, honouring EXIF orientation; 16-bit and gray/RGBA files are converted."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im).astype(np.uint16, copy=False)
            elif im.mode in ("RGB", "RGBA", "L", "LA"):
                arr = np.asarray(im)
            else:
                arr = np.asarray(im.convert("RGBA" if "A" in im.getbands() else "RGB"))
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise DenseFaceInputError(f"could not read image {path}: {exc}") from exc
    return to_rgb_uint8(arr, str(path))
