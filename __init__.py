"""Dense-Face for ComfyUI.

ComfyUI imports this folder as a package (whatever it is named) and reads
``NODE_CLASS_MAPPINGS``. Installed with pip the same tree is the package ``dense_face``,
used by the ``dense-face`` command line without ComfyUI; the node classes are only
loaded when ComfyUI's ``comfy`` package is already imported, so the command line and
training never need ComfyUI.
"""
import sys

if "comfy" in sys.modules:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:  # pragma: no cover - exercised by the CLI tests
    NODE_CLASS_MAPPINGS = {}
    NODE_DISPLAY_NAME_MAPPINGS = {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
