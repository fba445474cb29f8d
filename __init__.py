"""Dense-Face for ComfyUI.

ComfyUI imports this folder as a package under a name of its own choosing (the folder
name in 2024 builds, a path-derived name in newer ones); installed with pip the same tree
is the package ``dense_face``, used by the ``dense-face`` command line and the trainer.
Importing the tree under two names would give two copies of every module in one process
(two family registries, two model caches), so whatever name ComfyUI uses, the code is
loaded once, as ``dense_face``, and this module only hands ComfyUI its node mappings.

The node classes are loaded only when ComfyUI's ``comfy`` package is already imported, so
the command line and training never need ComfyUI.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys

CANONICAL_NAME = "dense_face"
_HERE = os.path.dirname(os.path.realpath(__file__))


def _folder_of(module_or_spec) -> str | None:
    origin = getattr(module_or_spec, "origin", None) or getattr(module_or_spec, "__file__", None)
    return os.path.dirname(os.path.realpath(origin)) if origin else None


def _canonical_package():
    """This folder imported as ``dense_face`` (once per process); None if another folder holds that name."""
    loaded = sys.modules.get(CANONICAL_NAME)
    if loaded is not None:
        return loaded if _folder_of(loaded) == _HERE else None
    spec = importlib.util.find_spec(CANONICAL_NAME)
    if spec is not None and _folder_of(spec) == _HERE:  # pip-installed from this very folder
        return importlib.import_module(CANONICAL_NAME)
    spec = importlib.util.spec_from_file_location(CANONICAL_NAME, os.path.join(_HERE, "__init__.py"),
                                                  submodule_search_locations=[_HERE])
    module = importlib.util.module_from_spec(spec)
    sys.modules[CANONICAL_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(CANONICAL_NAME, None)
        raise
    return module


NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

if "comfy" in sys.modules:
    if __name__ == CANONICAL_NAME:
        from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: F811
    elif _canonical_package() is None:
        logging.warning("Dense-Face: another copy of the pack is already loaded from %s; this copy (%s) is "
                        "skipped. Remove one of the two folders.", _folder_of(sys.modules[CANONICAL_NAME]), _HERE)
    else:
        __path__ = []  # noqa: F811 - submodules under this name would be second copies: import dense_face.*
        _nodes = importlib.import_module(CANONICAL_NAME + ".nodes")
        NODE_CLASS_MAPPINGS = _nodes.NODE_CLASS_MAPPINGS
        NODE_DISPLAY_NAME_MAPPINGS = _nodes.NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
