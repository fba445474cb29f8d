"""Face analysis with MediaPipe FaceLandmarker (Tasks API): 478 landmarks, box, head pose.

The model bundle is looked up in this order: an explicit path, the
``DENSE_FACE_LANDMARKER`` environment variable, then the given folders (ComfyUI's
``models/mediapipe``). Head pose comes from ``solvePnP`` of the 468 mesh landmarks
against MediaPipe's canonical face under a near-orthographic camera (focal length
10x the image size), converted with :func:`pose.euler_from_matrix`; on the authors'
CASIA sample this reproduces their 6DRepNet labels (see ``tests/test_face_analysis.py``
for the measured errors).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .canonical_face import load_canonical_face
from .errors import DenseFaceInputError, MissingModelError, NoFaceError
from .images import to_rgb_uint8
from .pose import euler_from_matrix

LANDMARKER_ENV = "DENSE_FACE_LANDMARKER"
LANDMARKER_FILENAME = "face_landmarker.task"
LANDMARKER_URL = ("https://storage.googleapis.com/mediapipe-models/face_landmarker/"
                  "face_landmarker/float16/latest/face_landmarker.task")
NUM_LANDMARKS = 478
MIN_FACE_PX = 64
# MediaPipe resizes to 256x256 for landmarks anyway; bigger inputs only cost time.
MAX_ANALYSIS_SIDE = 2048
PNP_FOCAL_FACTOR = 10.0
TILE_FRACTIONS = (0.5, 0.25)
MIN_TILE_SIDE = 160
# Converts OpenCV's camera frame (y down, z forward) to the canonical face's (y up, z back).
_CV_TO_CANONICAL = np.diag([1.0, -1.0, -1.0])


def landmarks_to_pixels(landmarks: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """MediaPipe-normalised (x, y[, z]) -> (N, 2) OpenCV pixel-centre coordinates (``n * W - 0.5``).

    The one pixel convention of the project: the centre of pixel (col, row) is the point
    (col, row), which is what ``cv2.warpAffine`` and ``solvePnP`` assume.
    """
    w, h = image_size
    lm = np.asarray(landmarks, np.float64)
    return lm[:, :2] * np.array([w, h], np.float64) - 0.5


def pixels_to_landmarks(points: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`landmarks_to_pixels` for x, y (z, if present, is passed through)."""
    w, h = image_size
    pts = np.asarray(points, np.float64)
    out = pts.copy()
    out[:, :2] = (pts[:, :2] + 0.5) / np.array([w, h], np.float64)
    return out


def find_landmarker_model(path: str | os.PathLike | None = None,
                          search_dirs: Iterable[str | os.PathLike] = ()) -> Path:
    """Locate the FaceLandmarker ``.task`` bundle or raise a :class:`MissingModelError` saying where it goes."""
    if path:
        p = Path(path).expanduser()
        if p.is_file():
            return p
        raise MissingModelError(f"MediaPipe face landmarker model not found at {p}. "
                                f"Download {LANDMARKER_FILENAME} from {LANDMARKER_URL}")
    env = os.environ.get(LANDMARKER_ENV)
    if env:
        p = Path(env).expanduser()
        if p.is_file():
            return p
        raise MissingModelError(f"{LANDMARKER_ENV}={env} does not point at a file. "
                                f"Download {LANDMARKER_FILENAME} from {LANDMARKER_URL}")
    dirs = [Path(d).expanduser() for d in search_dirs]
    for d in dirs:
        if not d.is_dir():
            continue
        preferred = d / LANDMARKER_FILENAME
        if preferred.is_file():
            return preferred
        found = sorted(d.glob("face_landmarker*.task"))
        if found:
            return found[0]
    where = ", ".join(str(d) for d in dirs) or "ComfyUI/models/mediapipe/"
    raise MissingModelError(
        f"MediaPipe face landmarker model '{LANDMARKER_FILENAME}' not found (looked in: {where}). "
        f"Download it from {LANDMARKER_URL} and put it in ComfyUI/models/mediapipe/, "
        f"or set {LANDMARKER_ENV} to its path.")


@dataclass
class Face:
    """One detected face. ``landmarks`` are MediaPipe-normalised (x/W, y/H, z)."""

    landmarks: np.ndarray
    image_size: tuple[int, int]  # (width, height)
    pitch: float
    yaw: float
    roll: float
    rotation: np.ndarray = field(repr=False)

    @property
    def points(self) -> np.ndarray:
        """(478, 2) float64 pixel-centre coordinates (:func:`landmarks_to_pixels`)."""
        return landmarks_to_pixels(self.landmarks, self.image_size)

    @property
    def box(self) -> tuple[float, float, float, float]:
        pts = self.points
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)

    @property
    def size(self) -> float:
        """Face size in pixels: the larger side of the landmark box."""
        x0, y0, x1, y1 = self.box
        return float(max(x1 - x0, y1 - y0))

    def as_dict(self) -> dict:
        return {"box": [round(v, 2) for v in self.box], "yaw": self.yaw, "pitch": self.pitch,
                "roll": self.roll, "landmarks": self.landmarks.astype(float).round(6).tolist()}


def head_pose_from_points(points: np.ndarray, image_size: tuple[int, int],
                          canonical_vertices: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """(pitch, yaw, roll, R) from >= 468 pixel-centre landmarks; R is the head rotation in the y-up camera frame."""
    import cv2

    w, h = image_size
    f = PNP_FOCAL_FACTOR * float(max(w, h))
    K = np.array([[f, 0.0, (w - 1) / 2.0], [0.0, f, (h - 1) / 2.0], [0.0, 0.0, 1.0]])
    obj = np.ascontiguousarray(canonical_vertices[:468], np.float64)
    img = np.ascontiguousarray(points[:468, :2], np.float64)
    ok, rvec, _tvec = cv2.solvePnP(obj, img, K, None, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise DenseFaceInputError("head pose: solvePnP failed on these landmarks")
    R_cv, _ = cv2.Rodrigues(rvec)
    R = R_cv.T @ _CV_TO_CANONICAL
    pitch, yaw, roll = euler_from_matrix(R)
    return pitch, yaw, roll, R


class FaceAnalyzer:
    """A MediaPipe FaceLandmarker in IMAGE mode. Use as a context manager or call :meth:`close`."""

    def __init__(self, model_path: str | os.PathLike, max_faces: int = 4,
                 min_detection_confidence: float = 0.5):
        from mediapipe.tasks.python import BaseOptions, vision

        self.model_path = Path(model_path)
        self.canonical = load_canonical_face(str(self.model_path))
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=vision.RunningMode.IMAGE,
            num_faces=int(max_faces),
            min_face_detection_confidence=float(min_detection_confidence),
            min_face_presence_confidence=float(min_detection_confidence),
        )
        self._landmarker = vision.FaceLandmarker.create_from_options(options)
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None

    def __enter__(self) -> "FaceAnalyzer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def detect(self, image, name: str = "image", tiles: bool = True) -> list[Face]:
        """All faces in ``image`` (any dtype/channels :func:`to_rgb_uint8` accepts), largest first.

        MediaPipe's detector sees the whole frame at 128x128, so faces under about a tenth
        of the frame (group photos) go unseen; when nothing is found and ``tiles`` is set,
        overlapping tiles of 1/2 then 1/4 of the longer side are searched.
        """
        rgb = to_rgb_uint8(image, name)
        h, w = rgb.shape[:2]
        found = self._landmarks_in(rgb)
        if not found and tiles:
            found = self._landmarks_in_tiles(rgb)
        faces = []
        for arr in found:
            pitch, yaw, roll, R = head_pose_from_points(landmarks_to_pixels(arr, (w, h)), (w, h),
                                                        self.canonical.vertices)
            faces.append(Face(arr, (w, h), pitch, yaw, roll, R))
        faces.sort(key=lambda f: f.size, reverse=True)
        return faces

    def _landmarks_in(self, rgb: np.ndarray) -> list[np.ndarray]:
        """MediaPipe landmarks (478, 3), normalised to ``rgb``."""
        import cv2
        import mediapipe as mp

        if self._landmarker is None:
            raise RuntimeError("FaceAnalyzer is closed")
        h, w = rgb.shape[:2]
        scale = min(1.0, MAX_ANALYSIS_SIDE / max(h, w))
        if scale < 1.0:
            rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                             interpolation=cv2.INTER_AREA)
        with self._lock:
            result = self._landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB,
                                                      data=np.ascontiguousarray(rgb)))
        out = []
        for lms in result.face_landmarks:
            arr = np.array([[p.x, p.y, p.z] for p in lms], np.float32)
            if arr.shape[0] == NUM_LANDMARKS and np.isfinite(arr).all():
                out.append(arr)
        return out

    def _landmarks_in_tiles(self, rgb: np.ndarray) -> list[np.ndarray]:
        h, w = rgb.shape[:2]
        found: list[np.ndarray] = []
        boxes: list[tuple[float, float, float, float]] = []
        for fraction in TILE_FRACTIONS:
            tile = int(max(h, w) * fraction)
            if tile < MIN_TILE_SIDE:
                break
            for y0 in _tile_starts(h, tile):
                for x0 in _tile_starts(w, tile):
                    part = rgb[y0:y0 + tile, x0:x0 + tile]
                    th, tw = part.shape[:2]
                    for arr in self._landmarks_in(part):
                        lo, hi = arr[:, :2].min(axis=0), arr[:, :2].max(axis=0)
                        cut = ((lo[0] < 0 and x0 > 0) or (lo[1] < 0 and y0 > 0)
                               or (hi[0] > 1 and x0 + tw < w) or (hi[1] > 1 and y0 + th < h))
                        if cut:  # truncated by this tile; an overlapping tile holds it whole
                            continue
                        full = arr.copy()
                        full[:, 0] = (arr[:, 0] * tw + x0) / w
                        full[:, 1] = (arr[:, 1] * th + y0) / h
                        full[:, 2] = arr[:, 2] * tw / w
                        box = (*(full[:, :2].min(axis=0) * (w, h)), *(full[:, :2].max(axis=0) * (w, h)))
                        if all(box_iou(box, b) < 0.3 for b in boxes):
                            boxes.append(box)
                            found.append(full)
            if found:
                break
        return found

    def pose_of_points(self, points: np.ndarray, image_size: tuple[int, int]) -> tuple[float, float, float]:
        """Head pose of landmarks already in pixels of some image (e.g. after a crop warp)."""
        pitch, yaw, roll, _ = head_pose_from_points(points, image_size, self.canonical.vertices)
        return pitch, yaw, roll


def _tile_starts(length: int, tile: int) -> list[int]:
    """Tile origins with 50 % overlap covering ``length``."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, max(1, tile // 2)))
    return starts + [length - tile]


def box_iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def select_face(faces: Sequence[Face], which: str | int = "largest", min_size: float = MIN_FACE_PX,
                name: str = "image") -> Face:
    """Pick one face: ``"largest"`` or a 0-based index into the largest-first list.

    Raises :class:`NoFaceError` (no face, index out of range, or every face smaller than
    ``min_size`` pixels).
    """
    if not faces:
        raise NoFaceError(f"{name}: no face found. Use a photo with a visible, roughly frontal face.")
    usable = [f for f in faces if f.size >= min_size]
    if not usable:
        raise NoFaceError(f"{name}: the largest face is {faces[0].size:.0f} px, smaller than the "
                          f"{min_size:.0f} px minimum. Use a larger or closer-up photo.")
    if which == "largest" or which is None:
        return usable[0]
    index = int(which)
    if not 0 <= index < len(usable):
        raise NoFaceError(f"{name}: face index {index} requested but only {len(usable)} usable "
                          f"face(s) of at least {min_size:.0f} px were found (indices 0..{len(usable) - 1}).")
    return usable[index]
