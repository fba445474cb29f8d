"""Pictures of the dense annotations for people: parsing, depth, landmarks, heatmaps, tiles.

Every function returns RGB uint8 (H, W, 3), what both ComfyUI (after /255) and image
files want. Parsing uses the authors' palette, so our picture and their ``masks/*.png``
can be compared by eye.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .dense_prediction import DensePrediction
from .dense_targets import DenseTargets, as_landmarks, parsing_to_color
from .errors import DenseFaceInputError
from .images import to_rgb_uint8

_NAMED_COLORS = {"black": (0, 0, 0), "white": (255, 255, 255)}


def _rgb(color, name: str) -> tuple[int, int, int]:
    if isinstance(color, str):
        if color not in _NAMED_COLORS:
            raise DenseFaceInputError(f"{name}: expected 'black', 'white' or an (R, G, B) triple, got {color!r}")
        return _NAMED_COLORS[color]
    try:
        r, g, b = (int(v) for v in color)
    except (TypeError, ValueError):
        raise DenseFaceInputError(f"{name}: expected 'black', 'white' or an (R, G, B) triple, got {color!r}") from None
    return r, g, b


def parsing_image(class_map, image=None, alpha: float = 0.5) -> np.ndarray:
    """The class map in the authors' palette; with ``image``, blended over it (resized to fit)."""
    import cv2

    color = parsing_to_color(class_map)
    if image is None:
        return color
    base = to_rgb_uint8(image, "image")
    if color.shape[:2] != base.shape[:2]:
        color = cv2.resize(color, (base.shape[1], base.shape[0]), interpolation=cv2.INTER_NEAREST)
    a = float(np.clip(alpha, 0.0, 1.0))
    return np.rint(base * (1.0 - a) + color * a).astype(np.uint8)


def depth_image(depth, mask=None, background="black", colormap: str | None = None) -> np.ndarray:
    """Depth normalised over the face: nearest = white (or the colormap's top), farthest = dark.

    Stretching over the face's own range (not a fixed one) shows the relief of any face.
    ``mask`` defaults to the pixels that differ from the authors' background 1.0.
    Background pixels get ``background`` ('black' by default, 'white', or an RGB triple).
    ``colormap``: None for grey, or an OpenCV name such as 'turbo' or 'viridis'.
    """
    import cv2

    d = np.asarray(depth, np.float64)
    if d.ndim != 2:
        raise DenseFaceInputError(f"depth: expected an (H, W) map, got {tuple(d.shape)}")
    m = (d != 1.0) if mask is None else np.asarray(mask, bool)
    if m.shape != d.shape:
        raise DenseFaceInputError(f"depth mask: shape {m.shape} differs from depth {d.shape}")
    m = m & np.isfinite(d)
    out = np.empty(d.shape + (3,), np.uint8)
    out[:] = _rgb(background, "background")
    if not m.any():
        return out
    lo, hi = d[m].min(), d[m].max()
    near = (hi - d) / (hi - lo) if hi > lo else np.ones_like(d)  # smaller z = nearer = brighter
    g = np.rint(np.clip(near, 0.0, 1.0) * 255.0).astype(np.uint8)
    if colormap is None:
        face = np.repeat(g[:, :, None], 3, axis=2)
    else:
        code = getattr(cv2, f"COLORMAP_{str(colormap).upper()}", None)
        if code is None:
            raise DenseFaceInputError(f"colormap: unknown OpenCV colormap {colormap!r}")
        face = cv2.applyColorMap(g, code)[:, :, ::-1]
    out[m] = face[m]
    return out


def draw_landmarks(image, landmarks, color=(0, 255, 0), radius: int | None = None) -> np.ndarray:
    """A copy of ``image`` with each normalised landmark drawn as a small filled dot.

    ``radius`` defaults to 1 px per 256 px of the shorter side (at least 1).
    """
    import cv2

    out = to_rgb_uint8(image, "image").copy()
    pts = as_landmarks(landmarks, min_points=1)[:, :2]
    h, w = out.shape[:2]
    r = max(1, round(min(h, w) / 256)) if radius is None else int(radius)
    if r < 1:
        raise DenseFaceInputError(f"radius must be >= 1, got {radius!r}")
    c = _rgb(color, "color")
    px = np.round((pts * np.array([w, h]) - 0.5) * 4).astype(np.int64)  # pixel centres, 2 fractional bits
    keep = (px[:, 0] >= -4 * r) & (px[:, 0] < 4 * (w + r)) & (px[:, 1] >= -4 * r) & (px[:, 1] < 4 * (h + r))
    for x, y in px[keep]:
        cv2.circle(out, (int(x), int(y)), r * 4, c, -1, lineType=cv2.LINE_AA, shift=2)
    return out


def heatmaps_image(heatmaps, size: int | None = None) -> np.ndarray:
    """The channel-wise maximum of (N, H, W) heatmaps as a 'inferno' picture (e.g. predictions)."""
    import cv2

    hm = np.asarray(heatmaps.detach().float().cpu().numpy() if hasattr(heatmaps, "detach") else heatmaps,
                    np.float64)
    if hm.ndim == 2:
        hm = hm[None]
    if hm.ndim != 3:
        raise DenseFaceInputError(f"heatmaps: expected (N, H, W), got {tuple(hm.shape)}")
    top = np.nan_to_num(hm.max(axis=0), nan=0.0)
    g = np.rint(np.clip(top / max(float(top.max()), 1e-6), 0, 1) * 255).astype(np.uint8)
    out = cv2.applyColorMap(g, cv2.COLORMAP_INFERNO)[:, :, ::-1]
    if size:
        out = cv2.resize(out, (int(size), int(size)), interpolation=cv2.INTER_NEAREST)
    return np.ascontiguousarray(out)


def tile_images(images: Sequence, height: int | None = None, labels: Sequence[str] | None = None,
                gap: int = 4, gap_color="white") -> np.ndarray:
    """Images side by side at one height (default: the tallest), with optional captions.

    Small label-like maps are upscaled with nearest neighbour so class edges stay crisp;
    larger inputs are shrunk with area averaging.
    """
    import cv2

    if not len(images):
        raise DenseFaceInputError("tile_images: no images given")
    rgbs = [to_rgb_uint8(im, f"images[{i}]") for i, im in enumerate(images)]
    H = int(height) if height else max(im.shape[0] for im in rgbs)
    if H < 1:
        raise DenseFaceInputError(f"height must be >= 1, got {height!r}")
    if labels is not None and len(labels) != len(rgbs):
        raise DenseFaceInputError(f"labels: {len(labels)} given for {len(rgbs)} images")
    fill = _rgb(gap_color, "gap_color")
    tiles = []
    for i, im in enumerate(rgbs):
        h, w = im.shape[:2]
        if h != H:
            W = max(1, round(w * H / h))
            im = cv2.resize(im, (W, H), interpolation=cv2.INTER_NEAREST if H > h else cv2.INTER_AREA)
        if labels is not None:
            bar = np.full((max(14, H // 14), im.shape[1], 3), fill, np.uint8)
            scale = bar.shape[0] / 30.0
            cv2.putText(bar, str(labels[i]), (3, int(bar.shape[0] * 0.75)), cv2.FONT_HERSHEY_SIMPLEX,
                        scale, (0, 0, 0) if sum(fill) > 382 else (255, 255, 255), 1, cv2.LINE_AA)
            im = np.concatenate([im, bar], axis=0)
        tiles.append(im)
        if gap > 0 and i < len(rgbs) - 1:
            tiles.append(np.full((im.shape[0], int(gap), 3), fill, np.uint8))
    return np.ascontiguousarray(np.concatenate(tiles, axis=1))


def annotation_panel(image, landmarks, targets: DenseTargets, height: int = 256,
                     labels: bool = True) -> np.ndarray:
    """image+landmarks | parsing | depth | heatmaps for one face, tiled at ``height``."""
    parts = [draw_landmarks(image, landmarks), parsing_image(targets.parsing),
             depth_image(targets.depth, targets.depth_mask), heatmaps_image(targets.heatmaps)]
    names = ["landmarks", "parsing", "depth (near=white)", "heatmaps"] if labels else None
    return tile_images(parts, height=height, labels=names)


__all__ = [
    "annotation_panel",
    "depth_image",
    "draw_landmarks",
    "heatmaps_image",
    "parsing_image",
    "tile_images",
]


def render_prediction(pred: DensePrediction, num_classes: int, canvases: Sequence | None = None):
    """Per image of a decoded dense-head prediction: depth and parsing pictures, one float mask per
    class, and the landmarks drawn on the matching canvas (the last canvas is reused; white without)."""
    size = pred.parsing.shape[-1]
    depths, parsings, masks, drawn = [], [], [], []
    for b in range(pred.parsing.shape[0]):
        depths.append(depth_image(pred.depth[b], pred.face_mask[b]))
        parsings.append(parsing_image(pred.parsing[b]))
        masks.extend((pred.parsing[b] == c).astype(np.float32) for c in range(num_classes))
        canvas = canvases[min(b, len(canvases) - 1)] if canvases else np.full((size, size, 3), 255, np.uint8)
        points = np.concatenate([pred.landmarks[b], np.zeros((pred.landmarks.shape[1], 1), np.float32)], axis=1)
        drawn.append(draw_landmarks(canvas, points))
    return depths, parsings, masks, drawn


def note_image(size: int, text: str, background=(255, 255, 255)) -> np.ndarray:
    """A plain picture carrying a short message, word-wrapped (stands in for an output that cannot exist)."""
    import cv2

    img = np.full((size, size, 3), _rgb(background, "background"), np.uint8)
    scale = max(0.3, size / 640)
    thickness = max(1, int(round(size / 256)))
    words, lines, line = text.split(), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if cv2.getTextSize(trial, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][0] > size * 0.92 and line:
            lines.append(line)
            line = word
        else:
            line = trial
    lines.append(line)
    step = int(cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][1] * 1.8)
    for i, text_line in enumerate(lines):
        cv2.putText(img, text_line, (int(size * 0.04), int(size * 0.08) + step * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (60, 60, 60), thickness, cv2.LINE_AA)
    return img


def numbered_faces(image, boxes: Sequence, numbers: Sequence[int]) -> np.ndarray:
    """The photo with every chosen face boxed and numbered (the numbers the group nodes use)."""
    import cv2

    out = to_rgb_uint8(image, "image").copy()
    thickness = max(2, int(round(max(out.shape[:2]) / 400)))
    for (x0, y0, x1, y1), n in zip(boxes, numbers):
        cv2.rectangle(out, (int(x0), int(y0)), (int(x1), int(y1)), (255, 220, 0), thickness)
        scale = max(0.6, (x1 - x0) / 90)
        cv2.putText(out, str(n), (int(x0) + thickness, int(y0) + int(28 * scale)), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (255, 220, 0), thickness + 1, cv2.LINE_AA)
    return out
