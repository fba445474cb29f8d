"""The aligned face crop: one similarity transform shared by nodes, dataset builder and paste-back.

Geometry is the authors' FFHQ/StyleGAN quad (``alignedFaceParsingUtils.py``), fed with
MediaPipe landmarks instead of their 68 NUFace3D points: eye centres are the means of
MediaPipe's eye-contour landmarks, mouth corners are landmarks 61 and 291. Because the
quad is a rotated square, it is an exact similarity transform, stored as a 2x3 affine.

Pixel convention (everywhere in this module): OpenCV's pixel-centre coordinates, i.e. the
centre of pixel (col, row) is the point (col, row) and an image of width W spans
[-0.5, W - 0.5]. That is what ``cv2.warpAffine`` uses, so ``FaceCrop.matrix`` can be
handed to OpenCV as is. MediaPipe-normalised landmarks ``n`` map to ``n * W - 0.5`` in
this convention (:func:`landmarker.landmarks_to_pixels`, also behind ``Face.points``).

All functions work on one image; for a batch, loop over its images (each one has its own
faces and therefore its own :class:`FaceCrop`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import DenseFaceInputError
from .landmarker import head_pose_from_points, landmarks_to_pixels, pixels_to_landmarks  # noqa: F401 (re-exported)

NUM_LANDMARKS = 478
MIN_CROP_SIZE = 64
MAX_CROP_SIZE = 4096
# MediaPipe FACE_LANDMARKS_RIGHT_EYE / LEFT_EYE contours. "Right" is the subject's right
# eye, which is on the image's left in a non-mirrored photo (FFHQ's lm[36:42]).
EYE_IMAGE_LEFT = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
EYE_IMAGE_RIGHT = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
MOUTH_IMAGE_LEFT = 61
MOUTH_IMAGE_RIGHT = 291
# Below this warp scale a bilinear warp aliases visibly; shrink with INTER_AREA first.
AREA_PRESHRINK_BELOW = 0.75
# Reflection gives the generator plausible context where the crop leaves the image.
CROP_BORDER = "reflect101"


@dataclass(frozen=True, eq=False)
class FaceCrop:
    """One aligned square crop of one face.

    ``matrix`` maps source pixels to crop pixels (pixel-centre convention, 2x3, usable
    by ``cv2.warpAffine``), ``inverse`` the other way. ``landmarks`` are the face's 478
    landmarks normalised to the crop the way MediaPipe normalises (x/size, y/size, z
    scaled like x). ``box`` is the landmarks' bounding box in source pixels
    (x0, y0, x1, y1), pixel-centre convention (``Face.box`` minus half a pixel). The
    pose is that of the crop-space landmarks, in degrees.
    """

    matrix: np.ndarray
    inverse: np.ndarray
    size: int
    source_size: tuple[int, int]  # (width, height)
    landmarks: np.ndarray
    box: tuple[float, float, float, float]
    pitch: float
    yaw: float
    roll: float
    has_face: bool = True
    source_index: int = 0  # which image of the batch the face is in (paste-back puts it there)
    face_number: int = 0   # its number in that image, left to right (dense_face_core.face_batch)

    def __post_init__(self) -> None:
        for arr in (self.matrix, self.inverse, self.landmarks):
            arr.flags.writeable = False

    @property
    def scale(self) -> float:
        """Crop pixels per source pixel."""
        return float(math.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    @property
    def angle(self) -> float:
        """Rotation of the crop's x axis in the source image, degrees (positive = clockwise on screen)."""
        return float(math.degrees(math.atan2(self.inverse[1, 0], self.inverse[0, 0])))

    @property
    def quad(self) -> np.ndarray:
        """(4, 2) source-pixel corners of the crop square: top-left, bottom-left, bottom-right, top-right."""
        e = self.size - 0.5
        corners = np.array([[-0.5, -0.5], [-0.5, e], [e, e], [e, -0.5]])
        return apply_affine(corners, self.inverse)

    @property
    def points(self) -> np.ndarray:
        """(478, 2) crop-space landmark pixels (pixel-centre convention)."""
        return landmarks_to_pixels(self.landmarks, (self.size, self.size))


# ---------------------------------------------------------------- validation helpers

def check_crop_size(crop_size, name: str = "crop_size") -> int:
    try:
        size = int(crop_size)
    except (TypeError, ValueError):
        raise DenseFaceInputError(f"{name}: expected an integer number of pixels, got {crop_size!r}") from None
    if size != crop_size or not MIN_CROP_SIZE <= size <= MAX_CROP_SIZE:
        raise DenseFaceInputError(f"{name}: expected an integer between {MIN_CROP_SIZE} and "
                                  f"{MAX_CROP_SIZE} pixels (256 or 512 for Dense-Face), got {crop_size!r}")
    return size


def _as_float_array(value, name: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DenseFaceInputError(f"{name}: expected an array of numbers, got {type(value).__name__}") from None


def check_landmarks(landmarks, name: str = "landmarks") -> np.ndarray:
    arr = _as_float_array(landmarks, name)
    if arr.ndim != 2 or arr.shape[0] < NUM_LANDMARKS or arr.shape[1] not in (2, 3):
        raise DenseFaceInputError(f"{name}: expected {NUM_LANDMARKS} MediaPipe landmarks of shape "
                                  f"({NUM_LANDMARKS}, 3) or ({NUM_LANDMARKS}, 2), got {tuple(arr.shape)}")
    arr = arr[:NUM_LANDMARKS]
    if not np.isfinite(arr).all():
        raise DenseFaceInputError(f"{name}: landmarks contain NaN or infinite values")
    if arr.shape[1] == 2:
        arr = np.concatenate([arr, np.zeros((NUM_LANDMARKS, 1))], axis=1)
    return arr


def check_image_size(image_size, name: str = "image_size") -> tuple[int, int]:
    try:
        w, h = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise DenseFaceInputError(f"{name}: expected (width, height), got {image_size!r}") from None
    if w < 1 or h < 1:
        raise DenseFaceInputError(f"{name}: expected a positive (width, height), got {image_size!r}")
    return w, h


def check_points(points, name: str = "points") -> np.ndarray:
    arr = _as_float_array(points, name)
    if arr.ndim < 1 or arr.shape[-1] not in (2, 3):
        raise DenseFaceInputError(f"{name}: expected points of shape (N, 2) or (N, 3), got {tuple(arr.shape)}")
    if not np.isfinite(arr).all():
        raise DenseFaceInputError(f"{name}: points contain NaN or infinite values")
    return arr


def check_image_matches(image: np.ndarray, crop: FaceCrop, name: str = "image") -> None:
    h, w = image.shape[:2]
    if (w, h) != tuple(crop.source_size):
        sw, sh = crop.source_size
        raise DenseFaceInputError(f"{name} is {w}x{h} but the face crop was computed on a {sw}x{sh} "
                                  f"image; crop the same image the face was detected in")


# ---------------------------------------------------------------- coordinates

def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, np.float64)
    return pts[..., :2] @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    A = matrix[:, :2]
    Ai = np.linalg.inv(A)
    return np.concatenate([Ai, -(Ai @ matrix[:, 2])[:, None]], axis=1)


def crop_points(points_px, crop: FaceCrop) -> np.ndarray:
    """Source pixels -> crop pixels. A third column (depth, in pixels) is scaled with the crop."""
    pts = check_points(points_px, "points_px")
    out = pts.copy()
    out[..., :2] = apply_affine(pts, crop.matrix)
    if pts.shape[-1] == 3:
        out[..., 2] = pts[..., 2] * crop.scale
    return out


def uncrop_points(points_crop, crop: FaceCrop) -> np.ndarray:
    """Crop pixels -> source pixels (inverse of :func:`crop_points`)."""
    pts = check_points(points_crop, "points_crop")
    out = pts.copy()
    out[..., :2] = apply_affine(pts, crop.inverse)
    if pts.shape[-1] == 3:
        out[..., 2] = pts[..., 2] / crop.scale
    return out


# ---------------------------------------------------------------- the crop itself

def alignment_quad(points_px: np.ndarray, padding: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The FFHQ quad from (478, 2) pixel landmarks: (centre c, half-side vector x).

    The crop square is c +- x +- y with y = x rotated by +90 degrees (pointing down the face).
    """
    eye_left = points_px[list(EYE_IMAGE_LEFT)].mean(axis=0)
    eye_right = points_px[list(EYE_IMAGE_RIGHT)].mean(axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (points_px[MOUTH_IMAGE_LEFT] + points_px[MOUTH_IMAGE_RIGHT]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * np.array([-1.0, 1.0])
    norm = float(np.hypot(*x))
    half = max(2.0 * float(np.hypot(*eye_to_eye)), 1.8 * float(np.hypot(*eye_to_mouth))) * (1.0 + padding)
    if not (norm > 1e-6 and half > 1e-6):
        raise DenseFaceInputError("landmarks: eyes and mouth coincide; these are not a face's landmarks")
    x = x / norm * half
    c = eye_avg + 0.1 * eye_to_mouth
    return c, x


def similarity_from_quad(c: np.ndarray, x: np.ndarray, crop_size: int) -> np.ndarray:
    """2x3 source->crop matrix mapping the quad's outer edges onto the crop's outer pixel edges."""
    half = float(np.hypot(*x))
    u = x / half
    s = crop_size / (2.0 * half)
    R = s * np.array([[u[0], u[1]], [-u[1], u[0]]])
    centre = (crop_size - 1) / 2.0
    t = np.array([centre, centre]) - R @ c
    return np.concatenate([R, t[:, None]], axis=1)


def _canonical_array(canonical_vertices) -> np.ndarray:
    verts = getattr(canonical_vertices, "vertices", canonical_vertices)
    if verts is None:
        raise DenseFaceInputError("canonical_vertices: required to compute the crop's head pose; pass "
                                  "FaceAnalyzer.canonical.vertices (468x3)")
    arr = np.asarray(verts, np.float64)
    if arr.ndim != 2 or arr.shape[0] < 468 or arr.shape[1] != 3:
        raise DenseFaceInputError(f"canonical_vertices: expected MediaPipe's canonical face (468, 3), "
                                  f"got {tuple(arr.shape)}")
    return arr


def crop_from_landmarks(landmarks, image_size: tuple[int, int], crop_size: int = 512,
                        padding: float = 0.0, *, canonical_vertices) -> FaceCrop:
    """:func:`compute_face_crop` for raw MediaPipe-normalised landmarks (e.g. a dataset CSV)."""
    lm = check_landmarks(landmarks)
    size = check_crop_size(crop_size)
    w, h = check_image_size(image_size)
    padding = float(padding)
    if not (math.isfinite(padding) and -0.5 <= padding <= 4.0):
        raise DenseFaceInputError(f"padding: expected a fraction between -0.5 and 4.0, got {padding!r}")
    verts = _canonical_array(canonical_vertices)

    src_px = landmarks_to_pixels(lm, (w, h))
    c, x = alignment_quad(src_px, padding)
    matrix = similarity_from_quad(c, x, size)
    crop_px = apply_affine(src_px, matrix)
    crop_lm = np.empty((NUM_LANDMARKS, 3), np.float64)
    crop_lm[:, :2] = (crop_px + 0.5) / size
    # MediaPipe's z is in units of the image width; rescale it to the crop's width.
    crop_lm[:, 2] = lm[:, 2] * (w * (size / (2.0 * float(np.hypot(*x))))) / size
    pitch, yaw, roll, _ = head_pose_from_points(crop_px, (size, size), verts)
    box = (float(src_px[:, 0].min()), float(src_px[:, 1].min()),
           float(src_px[:, 0].max()), float(src_px[:, 1].max()))
    return FaceCrop(matrix=matrix, inverse=invert_affine(matrix), size=size, source_size=(w, h),
                    landmarks=crop_lm.astype(np.float32), box=box,
                    pitch=float(pitch), yaw=float(yaw), roll=float(roll))


def compute_face_crop(face, crop_size: int = 512, padding: float = 0.0, *,
                      canonical_vertices) -> FaceCrop:
    """The aligned crop of a detected :class:`~.landmarker.Face`.

    ``padding`` enlarges the square's side by that fraction (0 = the authors' crop).
    ``canonical_vertices`` is ``FaceAnalyzer.canonical.vertices`` (or the CanonicalFace),
    passed in so that this stays a pure function that never opens the model file.
    """
    for attr in ("landmarks", "image_size"):
        if not hasattr(face, attr):
            raise DenseFaceInputError(f"face: expected a detected Face (with .landmarks and .image_size), "
                                      f"got {type(face).__name__}")
    return crop_from_landmarks(face.landmarks, face.image_size, crop_size, padding,
                               canonical_vertices=canonical_vertices)


def resize_crop(crop: FaceCrop, crop_size: int) -> FaceCrop:
    """The same square at another pixel size (e.g. the 512 crop's 256 twin for the model)."""
    size = check_crop_size(crop_size)
    k = size / crop.size
    # Pixel-centre convention: p' = (p + 0.5) * k - 0.5.
    S = np.array([[k, 0.0, 0.5 * k - 0.5], [0.0, k, 0.5 * k - 0.5]])
    matrix = S[:, :2] @ crop.matrix
    matrix[:, 2] += S[:, 2]
    return FaceCrop(matrix=matrix, inverse=invert_affine(matrix), size=size, source_size=crop.source_size,
                    landmarks=np.array(crop.landmarks), box=crop.box,
                    pitch=crop.pitch, yaw=crop.yaw, roll=crop.roll, has_face=crop.has_face)


def passthrough_crop(image_size: tuple[int, int], crop_size: int = 512) -> FaceCrop:
    """The centred square of an image where no face was found (``has_face`` False, no landmarks).

    It lets a graph run on without a face: the crop still shows the image, the mask is
    empty, and paste-back leaves the base image untouched.
    """
    size = check_crop_size(crop_size)
    w, h = check_image_size(image_size)
    side = float(min(w, h))
    k = size / side
    x0, y0 = (w - side) / 2.0, (h - side) / 2.0
    matrix = np.array([[k, 0.0, (0.5 - x0) * k - 0.5], [0.0, k, (0.5 - y0) * k - 0.5]])
    return FaceCrop(matrix=matrix, inverse=invert_affine(matrix), size=size, source_size=(w, h),
                    landmarks=np.zeros((0, 3), np.float32), box=(0.0, 0.0, 0.0, 0.0),
                    pitch=0.0, yaw=0.0, roll=0.0, has_face=False)


# ---------------------------------------------------------------- warping

_BORDERS = {"reflect101": "BORDER_REFLECT_101", "replicate": "BORDER_REPLICATE",
            "constant": "BORDER_CONSTANT"}


_INTERPOLATIONS = ("cubic", "linear", "nearest")


def warp_affine(image: np.ndarray, matrix: np.ndarray, dsize: tuple[int, int],
                border: str = CROP_BORDER, interpolation: str = "cubic") -> np.ndarray:
    """``cv2.warpAffine`` that does not alias when it shrinks.

    Below a scale of :data:`AREA_PRESHRINK_BELOW` the whole source is first shrunk with
    INTER_AREA to about the output's scale (a box filter over the pixels each output
    pixel covers), and the matrix is corrected for that exact resize; the warp left over
    is a rotation at roughly unit scale. Bicubic halves the crop -> paste round-trip error
    of bilinear on real photos; its overshoot is clipped to the input's value range.
    "nearest" (label maps) never pre-shrinks, so labels are never mixed.
    """
    import cv2

    if interpolation not in _INTERPOLATIONS:
        raise DenseFaceInputError(f"interpolation: expected one of {_INTERPOLATIONS}, got {interpolation!r}")
    src = np.ascontiguousarray(image)
    M = np.asarray(matrix, np.float64)
    s = math.sqrt(abs(np.linalg.det(M[:, :2])))
    if s < AREA_PRESHRINK_BELOW and interpolation != "nearest":
        h, w = src.shape[:2]
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        rx, ry = nw / w, nh / h
        src = cv2.resize(src, (nw, nh), interpolation=cv2.INTER_AREA)
        # resized pixel p' = r (p + 0.5) - 0.5, so p = (p' + 0.5) / r - 0.5.
        P_inv = np.array([[1.0 / rx, 0.0, 0.5 / rx - 0.5], [0.0, 1.0 / ry, 0.5 / ry - 0.5]])
        M = np.concatenate([M[:, :2] @ P_inv[:, :2], (M[:, :2] @ P_inv[:, 2] + M[:, 2])[:, None]], axis=1)
    flags = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}[interpolation]
    out = cv2.warpAffine(src, M, (int(dsize[0]), int(dsize[1])), flags=flags,
                         borderMode=getattr(cv2, _BORDERS[border]), borderValue=0)
    if interpolation == "cubic" and np.issubdtype(src.dtype, np.floating) and src.size:
        lo, hi = float(src.min()), float(src.max())
        if border == "constant":
            lo, hi = min(lo, 0.0), max(hi, 0.0)
        np.clip(out, lo, hi, out=out)
    if out.ndim == 2 and np.ndim(image) == 3:
        out = out[:, :, None]
    return out


def warp_to_crop(image: np.ndarray, crop: FaceCrop, interpolation: str = "cubic") -> np.ndarray:
    """The aligned crop (crop.size x crop.size) of one HxW[xC] image, same dtype.

    Bicubic with an INTER_AREA pre-shrink for big faces (see :func:`warp_affine`); use
    "nearest" for label maps. Where the square leaves the image the border is reflected
    (BORDER_REFLECT_101), which gives the generator plausible context instead of black
    bars or smeared edge streaks.
    """
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and not 1 <= arr.shape[2] <= 4):
        raise DenseFaceInputError(f"image: expected one image of shape (H, W) or (H, W, C), got "
                                  f"{tuple(arr.shape)}; for a batch, crop each image separately")
    check_image_matches(arr, crop, "image")
    return warp_affine(arr, crop.matrix, (crop.size, crop.size), border=CROP_BORDER,
                       interpolation=interpolation)
