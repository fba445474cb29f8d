"""Dense annotation targets from MediaPipe landmarks: landmark heatmaps, face parsing, depth.

The dense head (and the annotation node) needs, per face, the three targets the authors'
dataset prepares (official-code-facts.md section 5). Their release ships the parsing PNGs
and depth maps but not the code that made them, so these are rebuilt from the 478
MediaPipe landmarks alone (normalised x/W, y/H, z):

* **heatmaps** ``(478, S, S)`` float32: one Gaussian per landmark, centred at
  ``(x*S, y*S)`` on the integer pixel grid, sigma 1 px at S = 64, each normalised to
  peak 1, as the authors' ``points_to_gaussian_heatmap((x, y), 64, 64, 1)`` fallback.
  :func:`heatmaps_to_points` inverts it with a sub-pixel log-parabola fit.
* **parsing** ``(H, W)`` uint8 with the authors' 10 classes, from filled MediaPipe mesh
  polygons. With the authors' own CSV landmarks these polygons reproduce their
  ``masks/*.png`` at mean IoU 0.98, so the index lists below are theirs in effect.
* **depth** ``(H, W)`` float32: a z-buffer of MediaPipe's 898 canonical triangles over
  the 468 mesh landmarks, with landmark z as depth (smaller = nearer the camera, in the
  units of normalised x). The authors' ``xyzmaps`` channel 2 is this very quantity
  (linear fit slope ~1.0, offset ~0.0 on casia_toy); their background is 1.0.

Rasterisation samples pixel centres: normalised ``u`` maps to pixel coordinate
``u*size - 0.5`` (this is what matches the authors' masks pixel for pixel). Outputs are
in normalised image space, so a non-square source image is stretched into the square
map (the training crops are square).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DenseFaceInputError
from .landmarker import landmarks_to_pixels

NUM_LANDMARKS = 478
NUM_MESH_LANDMARKS = 468
HEATMAP_SIZE = 64
HEATMAP_SIGMA = 1.0
DEPTH_BACKGROUND = 1.0

# ----------------------------------------------------------------------------- classes
# Class order and colours exactly as in the authors' masks/*.png. "right"/"left" are the
# subject's: the right brow/eye is on the image's LEFT (MediaPipe's RIGHT_EYEBROW /
# RIGHT_EYE), as the class centroids on casia_toy show (class 2 and 4 at x~95/256).
PARSING_CLASSES: tuple[str, ...] = (
    "background",   # 0
    "mouth",        # 1  mouth interior (a 1-px line when the lips are closed)
    "right_brow",   # 2  subject's right = image left
    "skin",         # 3  face oval
    "right_eye",    # 4  subject's right = image left
    "nose",         # 5
    "upper_lip",    # 6
    "left_brow",    # 7  subject's left = image right
    "lower_lip",    # 8
    "left_eye",     # 9  subject's left = image right
)
NUM_PARSING_CLASSES = len(PARSING_CLASSES)
# matplotlib "Paired", in the order of the classes above; the authors' code lists these
# in BGR: (227,206,166), (0,127,255), (111,191,253), ... (official-code-facts.md s.5).
PARSING_PALETTE_RGB = np.array([
    (166, 206, 227), (255, 127, 0), (253, 191, 111), (31, 120, 180), (251, 154, 153),
    (178, 223, 138), (202, 178, 214), (227, 26, 28), (106, 61, 154), (51, 160, 44),
], np.uint8)
PARSING_PALETTE_BGR = np.ascontiguousarray(PARSING_PALETTE_RGB[:, ::-1])

# ------------------------------------------------------------------- landmark polygons
# Closed loops of MediaPipe face-mesh indices. They were read off the authors' masks
# (each mesh triangle labelled by the mask class under it, then the class boundaries
# traced); the brow/eye/lip loops coincide with MediaPipe's FACE_LANDMARKS_* contours.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378,
             400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21,
             54, 103, 67, 109)
# Bridge from 168 (between the eyes) down the nose sides, round the alae, mirrored.
NOSE = (168, 193, 245, 188, 174, 236, 134, 131, 48, 219, 64, 235, 240, 97, 2, 326, 460,
        455, 294, 439, 278, 360, 363, 456, 399, 412, 465, 417)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
# Lower contour outwards-in, then the upper contour back: a thin filled brow band.
RIGHT_BROW = (46, 53, 52, 65, 55, 107, 66, 105, 63, 70)
LEFT_BROW = (276, 283, 282, 295, 285, 336, 296, 334, 293, 300)
LIPS_UPPER_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_LOWER_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_UPPER_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_LOWER_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
UPPER_LIP = LIPS_UPPER_OUTER + LIPS_UPPER_INNER[::-1]
LOWER_LIP = LIPS_LOWER_OUTER + LIPS_LOWER_INNER[::-1]
MOUTH = LIPS_UPPER_INNER + LIPS_LOWER_INNER[::-1]

# Painting order (later wins where polygons overlap), the one that matches the masks.
PARSING_POLYGONS: tuple[tuple[int, tuple[int, ...]], ...] = (
    (3, FACE_OVAL), (5, NOSE), (4, RIGHT_EYE), (9, LEFT_EYE), (2, RIGHT_BROW),
    (7, LEFT_BROW), (6, UPPER_LIP), (8, LOWER_LIP), (1, MOUTH),
)


# ------------------------------------------------------------------------ validation
def as_landmarks(landmarks, name: str = "landmarks", min_points: int = NUM_MESH_LANDMARKS,
                 need_z: bool = False, exact_points: int | None = None) -> np.ndarray:
    """Landmarks (or a Face-like with ``.landmarks``) as a finite float64 (N, 2|3) array."""
    arr = getattr(landmarks, "landmarks", landmarks)
    if hasattr(arr, "detach"):
        arr = arr.detach().cpu().numpy()
    try:
        arr = np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DenseFaceInputError(f"{name}: expected an (N, 3) array of normalised landmarks ({exc})") from exc
    cols = "3" if need_z else "2 or 3"
    if arr.ndim != 2 or arr.shape[1] not in ((3,) if need_z else (2, 3)):
        raise DenseFaceInputError(f"{name}: expected shape (N, {cols}) of normalised landmarks, "
                                  f"got {tuple(arr.shape)}")
    if exact_points is not None and arr.shape[0] != exact_points:
        raise DenseFaceInputError(f"{name}: expected {exact_points} MediaPipe landmarks, got {arr.shape[0]}")
    if arr.shape[0] < min_points:
        raise DenseFaceInputError(f"{name}: expected at least {min_points} MediaPipe landmarks, "
                                  f"got {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise DenseFaceInputError(f"{name}: contains NaN or infinite values")
    return arr


def _as_size(size, name: str) -> tuple[int, int]:
    """An int or (height, width) -> (height, width), each in 1..8192."""
    dims = np.atleast_1d(np.asarray(size, dtype=object))
    if dims.ndim != 1 or len(dims) not in (1, 2):
        raise DenseFaceInputError(f"{name}: expected an int or (height, width), got {size!r}")
    try:
        h, w = (int(dims[0]), int(dims[-1]))
    except (TypeError, ValueError):
        raise DenseFaceInputError(f"{name}: expected an int or (height, width), got {size!r}") from None
    if not (1 <= h <= 8192 and 1 <= w <= 8192):
        raise DenseFaceInputError(f"{name}: size must be within 1..8192, got {(h, w)}")
    return h, w


def _as_triangles(triangles, n_points: int) -> np.ndarray:
    tri = np.asarray(getattr(triangles, "triangles", triangles))
    if tri.ndim != 2 or tri.shape[1] != 3 or tri.shape[0] == 0 or not np.issubdtype(tri.dtype, np.integer):
        raise DenseFaceInputError(f"triangles: expected a non-empty (T, 3) integer array, got "
                                  f"{tuple(tri.shape)} {tri.dtype}")
    if tri.min() < 0 or tri.max() >= n_points:
        raise DenseFaceInputError(f"triangles: indices must be within 0..{n_points - 1}, "
                                  f"got {tri.min()}..{tri.max()}")
    return tri.astype(np.int64, copy=False)


# -------------------------------------------------------------------------- heatmaps
def landmark_heatmaps(landmarks, size: int = HEATMAP_SIZE, sigma: float = HEATMAP_SIGMA,
                      normalize: bool = True) -> np.ndarray:
    """(N, size, size) float32 Gaussians centred at ``(x*size, y*size)`` (integer pixel grid).

    Separable, so a 478x64x64 stack costs one outer product (~3 ms, mostly writing the
    7.8 MB result). With ``normalize`` each map is divided by its sampled peak (the
    authors' "normalise to max 1"), except for points whose centre lies off the map,
    which keep the raw Gaussian and fade out instead of planting a false peak on the
    border. The authors' ``.npy`` heatmaps are not public, so their x/y order could not
    be checked; here channel k peaks at row y*size, column x*size.
    """
    pts = as_landmarks(landmarks, min_points=1)[:, :2]
    requested = size
    size = _as_size(size, "heatmap size")[0] if np.ndim(size) == 0 else -1
    if size < 2:
        raise DenseFaceInputError(f"heatmap size: expected an int >= 2, got {requested!r}")
    if not (isinstance(sigma, (int, float, np.number)) and np.isfinite(sigma) and sigma > 0):
        raise DenseFaceInputError(f"sigma must be a positive number, got {sigma!r}")
    centres = pts * size  # authors' convention: no half-pixel shift
    grid = np.arange(size, dtype=np.float64)
    g = np.exp(-((grid[None, None, :] - centres[:, :, None]) ** 2) / (2.0 * sigma * sigma))  # (N,2,S)
    if normalize:
        peak = g.max(axis=2)  # (N, 2)
        inside = ((centres >= -0.5) & (centres <= size - 0.5)).all(axis=1)
        g = np.where(inside[:, None, None], g / np.maximum(peak[:, :, None], 1e-300), g)
    gx = g[:, 0, :].astype(np.float32)
    gy = g[:, 1, :].astype(np.float32)
    return np.einsum("ni,nj->nij", gy, gx)  # steadier than broadcasting, which re-faults pages


def heatmaps_to_points(heatmaps, method: str = "quadratic") -> tuple[np.ndarray, np.ndarray]:
    """Decode ``(..., N, H, W)`` heatmaps to normalised ``(..., N, 2)`` x,y and ``(..., N)`` peaks.

    Argmax, then a sub-pixel offset per axis: ``"quadratic"`` fits a parabola to the log
    of the 3 values around the peak (exact for a Gaussian, so the encode/decode round trip
    is lossless up to float error); ``"centroid"`` is a soft-argmax over the 5x5 window
    (more tolerant of noisy, non-Gaussian predictions; ~0.05 px bias on exact Gaussians).
    Inverse of :func:`landmark_heatmaps`: pixel ``(i, j)`` decodes to ``(j/W, i/H)``.
    Accepts numpy arrays or torch tensors (any device).
    """
    if hasattr(heatmaps, "detach"):
        heatmaps = heatmaps.detach().float().cpu().numpy()
    hm = np.asarray(heatmaps)
    if hm.ndim < 3 or hm.shape[-1] < 1 or hm.shape[-2] < 1:
        raise DenseFaceInputError(f"heatmaps: expected shape (..., N, H, W), got {tuple(hm.shape)}")
    if not np.isfinite(hm).all():
        raise DenseFaceInputError("heatmaps: contains NaN or infinite values")
    if method not in ("quadratic", "centroid"):
        raise DenseFaceInputError(f"method: expected 'quadratic' or 'centroid', got {method!r}")
    lead, (h, w) = hm.shape[:-2], hm.shape[-2:]
    if not np.issubdtype(hm.dtype, np.floating):
        hm = hm.astype(np.float32)
    flat = hm.reshape(-1, h, w)  # no float64 copy of the whole stack: only windows are gathered
    m = flat.shape[0]
    arg = flat.reshape(m, -1).argmax(axis=1)
    iy, ix = np.divmod(arg, w)
    rows = np.arange(m)
    peak = flat[rows, iy, ix].astype(np.float64)
    if method == "quadratic":
        def offset(v_minus, v0, v_plus, ok):
            lm, l0, lp = (np.log(np.maximum(v, 1e-12)) for v in (v_minus, v0, v_plus))
            den = 2.0 * l0 - lm - lp
            good = ok & (den > 1e-12) & (v0 > 0)
            d = np.where(good, 0.5 * (lp - lm) / np.where(good, den, 1.0), 0.0)
            return np.clip(d, -0.5, 0.5)
        xm, xp = np.clip(ix - 1, 0, w - 1), np.clip(ix + 1, 0, w - 1)
        ym, yp = np.clip(iy - 1, 0, h - 1), np.clip(iy + 1, 0, h - 1)
        def at(y, x):
            return flat[rows, y, x].astype(np.float64)
        dx = offset(at(iy, xm), peak, at(iy, xp), (ix > 0) & (ix < w - 1))
        dy = offset(at(ym, ix), peak, at(yp, ix), (iy > 0) & (iy < h - 1))
        x, y = ix + dx, iy + dy
    else:
        r = 2
        off = np.arange(-r, r + 1)
        yy = iy[:, None] + off[None, :]
        xx = ix[:, None] + off[None, :]
        vy = (yy >= 0) & (yy < h)
        vx = (xx >= 0) & (xx < w)
        win = flat[rows[:, None, None], np.clip(yy, 0, h - 1)[:, :, None], np.clip(xx, 0, w - 1)[:, None, :]]
        win = np.maximum(win.astype(np.float64), 0.0) * (vy[:, :, None] & vx[:, None, :])
        tot = win.sum(axis=(1, 2))
        safe = np.where(tot > 0, tot, 1.0)
        x = np.where(tot > 0, (win.sum(axis=1) * xx).sum(axis=1) / safe, ix)
        y = np.where(tot > 0, (win.sum(axis=2) * yy).sum(axis=1) / safe, iy)
    pts = np.stack([x / w, y / h], axis=-1).astype(np.float32)
    return pts.reshape(*lead, 2), peak.astype(np.float32).reshape(lead)


# --------------------------------------------------------------------------- parsing
def parsing_from_landmarks(landmarks, size=256, supersample: int | None = None) -> np.ndarray:
    """(H, W) uint8 class map (:data:`PARSING_CLASSES`) from filled landmark polygons.

    ``size`` is an int or (height, width). Below 256 px the polygons are drawn at
    ``supersample`` x the size (default ``round(256 / max(H, W))``, 4 at 64) and each
    block takes its most frequent class, the analogue of the authors' 4x4 pooling of
    their 256 masks; drawing thin brows straight at 64 px would alias badly.
    """
    import cv2

    pts = as_landmarks(landmarks)[:, :2]
    h, w = _as_size(size, "parsing size")
    ss = max(1, round(256 / max(h, w))) if supersample is None else int(supersample)
    if not 1 <= ss <= 16:
        raise DenseFaceInputError(f"supersample must be within 1..16, got {supersample!r}")
    H, W = h * ss, w * ss
    px = landmarks_to_pixels(pts, (W, H))
    # 4 fractional bits: cv2 needs int32 coordinates; clip keeps wild points representable.
    fixed = np.round(np.clip(px, -4 * max(H, W), 5 * max(H, W)) * 16).astype(np.int32)
    out = np.zeros((H, W), np.uint8)
    for cls, loop in PARSING_POLYGONS:
        cv2.fillPoly(out, [fixed[list(loop)]], int(cls), lineType=cv2.LINE_8, shift=4)
    if ss == 1:
        return out
    # Block-wise mode via one bincount: code = block index * classes + class.
    block = (np.arange(H)[:, None] // ss) * w + (np.arange(W)[None, :] // ss)
    codes = block * NUM_PARSING_CLASSES + np.minimum(out, NUM_PARSING_CLASSES - 1)
    counts = np.bincount(codes.ravel(), minlength=h * w * NUM_PARSING_CLASSES)
    return counts.reshape(h, w, NUM_PARSING_CLASSES).argmax(axis=2).astype(np.uint8)


def _as_class_map(class_map, name: str = "parsing") -> np.ndarray:
    cm = np.asarray(class_map)
    if cm.ndim != 2 or not np.issubdtype(cm.dtype, np.integer):
        raise DenseFaceInputError(f"{name}: expected an (H, W) integer class map, got "
                                  f"{tuple(cm.shape)} {cm.dtype}")
    return cm


def parsing_to_color(class_map) -> np.ndarray:
    """(H, W, 3) RGB uint8 in the authors' palette; values outside 0..9 become black."""
    cm = _as_class_map(class_map)
    lut = np.zeros((256, 3), np.uint8)
    lut[:NUM_PARSING_CLASSES] = PARSING_PALETTE_RGB
    return lut[np.clip(cm, 0, 255).astype(np.uint8)]


def parsing_from_color(color, strict: bool = True, bgr: bool = False) -> np.ndarray:
    """(H, W) uint8 class map from an (H, W, 3) palette image by exact colour match.

    Unknown colours raise :class:`DenseFaceInputError` when ``strict`` (the authors'
    PNGs are exact, so one means a wrong or resampled file), else they become 255.
    """
    img = np.asarray(color)
    if img.ndim != 3 or img.shape[2] not in (3, 4) or img.dtype != np.uint8:
        raise DenseFaceInputError(f"parsing colour image: expected (H, W, 3) uint8, got "
                                  f"{tuple(img.shape)} {img.dtype}")
    rgb = img[:, :, 2::-1] if bgr else img[:, :, :3]
    code = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    pal = PARSING_PALETTE_RGB.astype(np.int32)
    pal_code = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    order = np.argsort(pal_code)
    pos = np.clip(np.searchsorted(pal_code[order], code), 0, NUM_PARSING_CLASSES - 1)
    hit = pal_code[order][pos] == code
    out = np.where(hit, order[pos], 255).astype(np.uint8)
    if strict and not hit.all():
        bad = rgb[~hit][0]
        raise DenseFaceInputError(f"parsing colour image: {(~hit).sum()} pixel(s) have colours outside "
                                  f"the 10-class palette, e.g. RGB {tuple(int(v) for v in bad)}")
    return out


def load_parsing_png(path: str | Path, strict: bool = True) -> np.ndarray:
    """Read one of the authors' ``masks/*.png`` as an (H, W) uint8 class map."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DenseFaceInputError(f"parsing mask: cannot read image file {path}")
    return parsing_from_color(bgr, strict=strict, bgr=True)


def parsing_iou(pred, target, num_classes: int = NUM_PARSING_CLASSES) -> np.ndarray:
    """Per-class IoU, NaN for classes absent from both maps (so ``nanmean`` = mean over present)."""
    p, t = _as_class_map(pred, "pred"), _as_class_map(target, "target")
    if p.shape != t.shape:
        raise DenseFaceInputError(f"pred and target shapes differ: {p.shape} vs {t.shape}")
    n = num_classes + 1
    codes = np.minimum(p, num_classes).astype(np.int64) * n + np.minimum(t, num_classes)
    joint = np.bincount(codes.ravel(), minlength=n * n).reshape(n, n)
    inter = np.diag(joint)[:num_classes].astype(np.float64)
    union = joint[:num_classes].sum(1) + joint[:, :num_classes].sum(0) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


# ----------------------------------------------------------------------------- depth
def rasterize_depth(vertices_px: np.ndarray, depth: np.ndarray, triangles: np.ndarray,
                    height: int, width: int) -> np.ndarray:
    """Z-buffer of triangles: (H, W) float64 of the smallest interpolated depth, +inf where empty.

    ``vertices_px`` are pixel coordinates with pixel centres at integers. Fully
    vectorised: every (triangle, pixel-in-its-box) pair is tested at once with edge
    functions, and ``np.minimum.at`` keeps the nearest; about 2.5 ms at 256x256 for the
    898-triangle face mesh, about 0.4 ms at 64x64 (one CPU core).
    """
    P = np.asarray(vertices_px, np.float64)
    z = np.asarray(depth, np.float64)
    A, B, C = P[triangles[:, 0]], P[triangles[:, 1]], P[triangles[:, 2]]
    za, zb, zc = z[triangles[:, 0]], z[triangles[:, 1]], z[triangles[:, 2]]
    area = (B[:, 0] - A[:, 0]) * (C[:, 1] - A[:, 1]) - (B[:, 1] - A[:, 1]) * (C[:, 0] - A[:, 0])
    lo = np.minimum(np.minimum(A, B), C)
    hi = np.maximum(np.maximum(A, B), C)
    x0 = np.clip(np.ceil(lo[:, 0]), 0, width).astype(np.int64)
    y0 = np.clip(np.ceil(lo[:, 1]), 0, height).astype(np.int64)
    x1 = np.clip(np.floor(hi[:, 0]), -1, width - 1).astype(np.int64)
    y1 = np.clip(np.floor(hi[:, 1]), -1, height - 1).astype(np.int64)
    nx = np.maximum(x1 - x0 + 1, 0)
    ny = np.maximum(y1 - y0 + 1, 0)
    n = np.where(np.abs(area) > 1e-12, nx * ny, 0)
    buf = np.full(height * width, np.inf)
    total = int(n.sum())
    if total == 0:
        return buf.reshape(height, width)
    # Per triangle, the barycentric weights and the depth are affine in (x, y):
    # w = a*x + b*y + c. Precomputing the coefficients keeps per-pixel work to gathers.
    inv = np.where(n > 0, 1.0 / np.where(n > 0, area, 1.0), 0.0)
    def edge(P0, P1):  # weight of the vertex opposite the edge P0->P1
        a = (P0[:, 1] - P1[:, 1]) * inv
        b = (P1[:, 0] - P0[:, 0]) * inv
        c = (P0[:, 0] * P1[:, 1] - P0[:, 1] * P1[:, 0]) * inv
        return a, b, c
    wa, wb = edge(B, C), edge(C, A)
    da = wa[0] * za + wb[0] * zb + (-wa[0] - wb[0]) * zc
    db = wa[1] * za + wb[1] * zb + (-wa[1] - wb[1]) * zc
    dc = wa[2] * za + wb[2] * zb + (1.0 - wa[2] - wb[2]) * zc
    t = np.repeat(np.arange(len(triangles)), n)
    k = np.arange(total) - np.repeat(np.cumsum(n) - n, n)
    nxt = nx[t]
    px = x0[t] + k % nxt
    py = y0[t] + k // nxt
    fx, fy = px.astype(np.float64), py.astype(np.float64)
    w0 = wa[0][t] * fx + wa[1][t] * fy + wa[2][t]
    w1 = wb[0][t] * fx + wb[1][t] * fy + wb[2][t]
    eps = -1e-9  # closed triangles: shared edges are covered by both neighbours
    inside = (w0 >= eps) & (w1 >= eps) & (w0 + w1 <= 1.0 - eps)
    t, fx, fy = t[inside], fx[inside], fy[inside]
    d = da[t] * fx + db[t] * fy + dc[t]
    np.minimum.at(buf, py[inside] * width + px[inside], d)
    return buf.reshape(height, width)


def depth_from_landmarks(landmarks, triangles, size=256,
                         background: float = DEPTH_BACKGROUND) -> tuple[np.ndarray, np.ndarray]:
    """(depth (H, W) float32, face mask (H, W) bool) by z-buffering the face mesh.

    Depth is MediaPipe's landmark z, unchanged: smaller = nearer the camera, in units of
    the normalised image width (the authors' ``xyzmaps`` channel 2 on the same scale,
    about -0.15..0.3 over a face). Pixels off the mesh get ``background`` (authors: 1.0).
    ``triangles`` is the (T, 3) canonical mesh (``load_canonical_face(...).triangles``).
    """
    lms = as_landmarks(landmarks, need_z=True)
    tri = _as_triangles(triangles, lms.shape[0])
    h, w = _as_size(size, "depth size")
    if not np.isfinite(background):
        raise DenseFaceInputError(f"depth background must be finite, got {background!r}")
    px = landmarks_to_pixels(lms, (w, h))
    zbuf = rasterize_depth(px, lms[:, 2], tri, h, w)
    mask = np.isfinite(zbuf)
    depth = np.where(mask, zbuf, background).astype(np.float32)
    return depth, mask


# ----------------------------------------------------------------------- entry point
@dataclass
class DenseTargets:
    """The three dense-head targets for one face (see the module docstring for conventions)."""

    heatmaps: np.ndarray    # (478, Sh, Sh) float32, peak 1 per landmark
    parsing: np.ndarray     # (Sp, Sp) uint8 class ids, order PARSING_CLASSES
    depth: np.ndarray       # (Sd, Sd) float32 MediaPipe z, ``depth_background`` off the face
    depth_mask: np.ndarray  # (Sd, Sd) bool, True on the face mesh
    depth_background: float = DEPTH_BACKGROUND


def compute_dense_targets(landmarks, *, triangles, heatmap_size: int = HEATMAP_SIZE,
                          parsing_size=HEATMAP_SIZE, depth_size=HEATMAP_SIZE,
                          sigma: float = HEATMAP_SIGMA,
                          depth_background: float = DEPTH_BACKGROUND) -> DenseTargets:
    """All three targets from 478 normalised landmarks (array or a ``Face``).

    ``triangles``: MediaPipe's canonical mesh, ``load_canonical_face(task).triangles``.
    The trainer uses 64 for every size (the dense head predicts at 64x64); the annotation
    node asks for 256 parsing/depth to compare with the authors' files.
    """
    lms = as_landmarks(landmarks, need_z=True, exact_points=NUM_LANDMARKS)
    depth, mask = depth_from_landmarks(lms, triangles, depth_size, depth_background)
    return DenseTargets(
        heatmaps=landmark_heatmaps(lms, heatmap_size, sigma),
        parsing=parsing_from_landmarks(lms, parsing_size),
        depth=depth,
        depth_mask=mask,
        depth_background=float(depth_background),
    )


__all__ = [
    "DEPTH_BACKGROUND",
    "HEATMAP_SIGMA",
    "HEATMAP_SIZE",
    "NUM_LANDMARKS",
    "NUM_PARSING_CLASSES",
    "PARSING_CLASSES",
    "PARSING_PALETTE_BGR",
    "PARSING_PALETTE_RGB",
    "PARSING_POLYGONS",
    "DenseTargets",
    "as_landmarks",
    "compute_dense_targets",
    "depth_from_landmarks",
    "heatmaps_to_points",
    "landmark_heatmaps",
    "load_parsing_png",
    "parsing_from_color",
    "parsing_from_landmarks",
    "parsing_iou",
    "parsing_to_color",
    "rasterize_depth",
]
