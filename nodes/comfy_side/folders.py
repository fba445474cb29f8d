"""Model folders in ComfyUI: ours registered beside the user's own paths, and one lookup for every kind.

``folder_paths.add_model_folder_path`` keeps what ``extra_model_paths.yaml`` and other packs
configured (it appends); ``get_filename_list`` raises for a kind nobody registered, which
here means "no files" rather than an error at the canvas.
"""
from __future__ import annotations

import os

import folder_paths

# folder name -> extensions; insightface keeps its own layout (models/insightface/models/<pack>/*.onnx)
MODEL_FOLDERS = {
    "dense_face": {".safetensors"},
    "mediapipe": {".task"},
    "insightface": {".onnx"},
}


def register_model_folders() -> None:
    """Add ``models/<name>`` for our model kinds, keeping any paths users configured already."""
    for name, extensions in MODEL_FOLDERS.items():
        path = os.path.join(folder_paths.models_dir, name)
        entry = folder_paths.folder_names_and_paths.get(name)
        if entry is None:
            folder_paths.folder_names_and_paths[name] = ([path], set(extensions))
            continue
        paths, exts = entry
        if path not in paths:
            paths.append(path)
        if isinstance(exts, set):
            exts.update(extensions)


def model_dirs(name: str) -> list[str]:
    try:
        return list(folder_paths.get_folder_paths(name))
    except KeyError:
        return [os.path.join(folder_paths.models_dir, name)]


def filenames(kind: str) -> list[str]:
    """Files ComfyUI knows under ``models/<kind>`` (every configured path), [] for an unknown kind."""
    try:
        return list(folder_paths.get_filename_list(kind))
    except KeyError:
        return []


def full_path(kind: str, name: str) -> str | None:
    return folder_paths.get_full_path(kind, name)
