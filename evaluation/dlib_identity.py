"""A second opinion on identity: dlib's 128-d ResNet face descriptor, independent of the ArcFace that conditions.

Needs ``dlib`` (or ``dlib-bin``) and the ``face_recognition_models`` package's ``.dat`` files.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from ..dense_face_core.errors import MissingModelError
from ..dense_face_core.images import to_rgb_uint8
from ..dense_face_core.landmarker import box_iou

DLIB_MATCH_THRESHOLD = 0.6  # dlib's / face_recognition's same-person distance threshold
DLIB_MODELS_ENV = "DENSE_FACE_DLIB_MODELS"
DLIB_FILES = ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat")


def dlib_models_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """Folder with dlib's shape_predictor_5 and ResNet .dat files: explicit, $DENSE_FACE_DLIB_MODELS,
    or the installed ``face_recognition_models`` package (found without importing it: its
    ``__init__`` needs ``pkg_resources``, gone from setuptools >= 81)."""
    for cand in (explicit, os.environ.get(DLIB_MODELS_ENV)):
        if cand:
            return Path(cand).expanduser()
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]) / "models"
    return None


def dlib_unavailable_reason(models_dir: str | os.PathLike | None = None) -> str | None:
    """Why dlib cannot run here (None: it can): the table names it instead of failing."""
    if importlib.util.find_spec("dlib") is None:
        return "dlib is not installed (pip install dlib-bin face_recognition_models)"
    d = dlib_models_dir(models_dir)
    if d is None:
        return "dlib's model files are not installed (pip install face_recognition_models)"
    missing = [n for n in DLIB_FILES if not (d / n).is_file()]
    if missing:
        return f"dlib model files missing in {d}: {', '.join(missing)}"
    return None


def _rect_box(rect) -> tuple[float, float, float, float]:
    """A dlib rectangle as an (x0, y0, x1, y1) box."""
    return rect.left(), rect.top(), rect.right(), rect.bottom()


class DlibIdentity:
    """dlib's face recognition ResNet (128-d, distance < 0.6 = same person on LFW's protocol)."""

    FILES = DLIB_FILES

    def __init__(self, models_dir: str | os.PathLike | None = None):
        reason = dlib_unavailable_reason(models_dir)
        if reason:
            raise MissingModelError(reason)
        import dlib

        d = dlib_models_dir(models_dir)
        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(d / self.FILES[0]))
        self.net = dlib.face_recognition_model_v1(str(d / self.FILES[1]))

    def descriptor(self, image, box: tuple[float, float, float, float] | None = None) -> np.ndarray | None:
        """128-d descriptor of the face dlib's HOG detector finds nearest ``box`` (largest without one);
        where it finds none, ``box`` itself is used; None when neither exists."""
        rgb = np.ascontiguousarray(to_rgb_uint8(image))
        rect = self._face_rect(rgb, box)
        if rect is None:
            return None
        shape = self.predictor(rgb, rect)
        return np.asarray(self.net.compute_face_descriptor(rgb, shape, 0), np.float64)

    def _face_rect(self, rgb: np.ndarray, box):
        """dlib's own detection of our face (IoU >= 0.2 with ``box``), so its alignment sees what it expects."""
        dets = list(self.detector(rgb, 1))
        rect = None
        if dets:
            if box is None:
                rect = max(dets, key=lambda r: r.area())
            else:
                rect = max(dets, key=lambda r: box_iou(_rect_box(r), box))
                if box_iou(_rect_box(rect), box) < 0.2:
                    rect = None
        if rect is None and box is not None:
            rect = self.dlib.rectangle(*(round(v) for v in box))
        return rect

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))
