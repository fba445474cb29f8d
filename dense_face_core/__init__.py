"""Dense-Face core: the model pieces and face geometry in plain torch/numpy/OpenCV/MediaPipe.

Everything that the ComfyUI nodes and the trainer must agree on is defined here once.
This package never imports ``comfy`` or ``diffusers``.
"""


def __getattr__(name: str):
    """``dense_face_core.<module>`` without importing every module up front."""
    import importlib

    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
