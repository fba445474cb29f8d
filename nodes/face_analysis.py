"""One shared MediaPipe FaceAnalyzer per model file, found in ComfyUI's models/mediapipe."""
from __future__ import annotations

import threading

from ..dense_face_core.errors import MissingModelError
from ..dense_face_core.landmarker import LANDMARKER_FILENAME, LANDMARKER_URL, FaceAnalyzer, find_landmarker_model
from .comfy_glue import model_dirs

AUTO = "auto"
_lock = threading.Lock()
_cache: dict[str, FaceAnalyzer] = {}
MAX_FACES = 8


def landmarker_choices() -> list[str]:
    import folder_paths

    try:
        files = folder_paths.get_filename_list("mediapipe")
    except KeyError:
        files = []
    return [AUTO] + [f for f in files if f.endswith(".task")]


def landmarker_input() -> tuple:
    return (landmarker_choices(), {"default": AUTO, "tooltip":
            "MediaPipe face_landmarker.task in ComfyUI/models/mediapipe/ ('auto' also honours "
            "the DENSE_FACE_LANDMARKER environment variable)."})


def get_analyzer(choice: str = AUTO) -> FaceAnalyzer:
    import folder_paths

    explicit = None
    if choice and choice != AUTO:
        explicit = folder_paths.get_full_path("mediapipe", choice)
        if explicit is None:
            raise MissingModelError(
                f"landmarker '{choice}' not found in {', '.join(model_dirs('mediapipe'))}. Put "
                f"{LANDMARKER_FILENAME} (download: {LANDMARKER_URL}) in ComfyUI/models/mediapipe/ "
                f"or choose 'auto'.")
    path = str(find_landmarker_model(explicit, model_dirs("mediapipe")))
    with _lock:
        analyzer = _cache.get(path)
        if analyzer is None:
            analyzer = _cache[path] = FaceAnalyzer(path, max_faces=MAX_FACES)
        return analyzer
