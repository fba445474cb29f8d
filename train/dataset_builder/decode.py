"""Photo bytes -> RGB array, with the skip outcomes (too large, unreadable, grey) that the
manifest counts; reasons are worded so that failures of one kind group together."""
from __future__ import annotations

import io
import math
import re

import numpy as np

MAX_DECODE_SIDE = 4096     # bigger photos are decoded reduced (JPEG DCT scaling) then shrunk


class Skip(Exception):
    """An image left out of the build, with the outcome it is counted under."""

    def __init__(self, outcome: str, reason: str):
        super().__init__(reason)
        self.outcome, self.reason = outcome, reason


def failure_reason(exc: BaseException) -> str:
    """A failure reason that groups in the manifest: no object reprs, paths or numbers."""
    msg = re.sub(r"<[^>]*>", "", str(exc))
    msg = re.sub(r"(?:[A-Za-z]:)?(?:[\\/][^\s:'\"]+)+", "PATH", msg)
    msg = re.sub(r"\d+", "N", " ".join(msg.split()))[:120]
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def is_grayscale(rgb: np.ndarray) -> bool:
    """True for grey photos stored as RGB (channel differences are JPEG chroma noise only)."""
    step = max(1, int(math.sqrt(rgb.shape[0] * rgb.shape[1] / 65536)))
    a = rgb[::step, ::step].astype(np.int16)
    d = np.maximum(np.maximum(np.abs(a[..., 0] - a[..., 1]), np.abs(a[..., 1] - a[..., 2])),
                   np.abs(a[..., 0] - a[..., 2]))
    return float(d.mean()) < 3.0 and float((d > 24).mean()) < 0.001


def decode_source(data: bytes, max_pixels: int, max_side: int = MAX_DECODE_SIDE):
    """Bytes -> (RGB uint8, original (w, h) after EXIF orientation, grey mode?).

    Photos above ``max_side`` are decoded reduced (JPEG draft) and shrunk with INTER_AREA:
    a face big enough to matter survives, and a 24 MP photo costs a fraction of a full decode.
    """
    import cv2

    rgb, (w0, h0), grey_mode = _open_oriented(data, max_pixels, max_side)
    if rgb.ndim != 3 or rgb.shape[0] < 8 or rgb.shape[1] < 8:
        raise Skip("unreadable", f"image too small to hold a face ({rgb.shape[1]}x{rgb.shape[0]})")
    h, w = rgb.shape[:2]
    if max(h, w) > max_side:
        k = max_side / max(h, w)
        rgb = cv2.resize(rgb, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb), (w0, h0), grey_mode


def _open_oriented(data: bytes, max_pixels: int, max_side: int):
    """PIL decode (reduced for big JPEGs) turned upright by its EXIF tag; errors become Skip."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = None  # our own limit below, checked before any decoding
    try:
        im = Image.open(io.BytesIO(data))
        w0, h0 = im.size
        if w0 * h0 > max_pixels:
            raise Skip("too_large", f"more than {max_pixels // 1_000_000} MP")
        if max(w0, h0) > max_side and im.format == "JPEG":
            k = max_side / max(w0, h0)
            im.draft("RGB", (math.ceil(w0 * k), math.ceil(h0 * k)))
        orientation = im.getexif().get(0x0112, 1) if hasattr(im, "getexif") else 1
        im = ImageOps.exif_transpose(im)
        if orientation in (5, 6, 7, 8):
            w0, h0 = h0, w0
        mode = im.mode
        grey_mode = mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
        if mode in ("I;16", "I;16B", "I;16L", "I"):
            from ...dense_face_core.images import to_rgb_uint8

            rgb = to_rgb_uint8(np.asarray(im).astype(np.uint16, copy=False))
        else:
            rgb = np.asarray(im if mode == "RGB" else im.convert("RGB"))
    except Skip:
        raise
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise Skip("unreadable", failure_reason(exc)) from exc
    return rgb, (w0, h0), grey_mode
