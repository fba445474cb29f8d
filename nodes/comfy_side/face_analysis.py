"""The MediaPipe FaceAnalyzer the face nodes share, found in ComfyUI's models/mediapipe."""
from __future__ import annotations

from ...dense_face_core.errors import MissingModelError
from ...dense_face_core.landmarker import LANDMARKER_FILENAME, LANDMARKER_URL, FaceAnalyzer, find_landmarker_model
from .folders import filenames, full_path, model_dirs
from .model_cache import FileModelCache

AUTO = "auto"
MAX_FACES = 8
_analyzers = FileModelCache()


def landmarker_choices() -> list[str]:
    return [AUTO] + [f for f in filenames("mediapipe") if f.endswith(".task")]


def landmarker_input() -> tuple:
    return (landmarker_choices(), {"default": AUTO, "tooltip":
            "MediaPipe face_landmarker.task in ComfyUI/models/mediapipe/ ('auto' also honours "
            "the DENSE_FACE_LANDMARKER environment variable)."})


def get_analyzer(choice: str = AUTO) -> FaceAnalyzer:
    explicit = None
    if choice and choice != AUTO:
        explicit = full_path("mediapipe", choice)
        if explicit is None:
            raise MissingModelError(
                f"landmarker '{choice}' not found in {', '.join(model_dirs('mediapipe'))}. Put "
                f"{LANDMARKER_FILENAME} (download: {LANDMARKER_URL}) in ComfyUI/models/mediapipe/ "
                f"or choose 'auto'.")
    path = str(find_landmarker_model(explicit, model_dirs("mediapipe")))
    return _analyzers.get(path, lambda: FaceAnalyzer(path, max_faces=MAX_FACES), MAX_FACES)
