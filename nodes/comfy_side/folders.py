"""Model folders in ComfyUI: ours registered beside the user's own paths, and one lookup for every kind.

``folder_paths.add_model_folder_path`` keeps what ``extra_model_paths.yaml`` and other packs
configured (it appends); ``get_filename_list`` raises for a kind nobody registered, which
here means "no files" rather than an error at the canvas.
"""
from __future__ import annotations

import inspect
import os

import folder_paths

EMBEDDINGS = "dense_face_embeddings"
EMBEDDING_SUFFIXES = (".pth", ".pt", ".npy", ".safetensors")
INPUT_MARK = " [input]"
# kind -> (folder under models/, extensions); insightface keeps its own layout (models/insightface/models/<pack>/)
MODEL_FOLDERS = {
    "dense_face": ("dense_face", {".safetensors"}),
    EMBEDDINGS: (os.path.join("dense_face", "embeddings"), set(EMBEDDING_SUFFIXES)),
    "mediapipe": ("mediapipe", {".task"}),
    "insightface": ("insightface", {".onnx"}),
}
_DEFAULT_FLAG = "is_default" in inspect.signature(folder_paths.add_model_folder_path).parameters


def register_model_folders() -> None:
    """Register ``models/<folder>`` for our model kinds through ComfyUI's own call, after the paths the user
    configured (extra_model_paths.yaml is read before custom nodes load), and add our file extensions."""
    for kind, (folder, extensions) in MODEL_FOLDERS.items():
        path = os.path.join(folder_paths.models_dir, folder)
        if _DEFAULT_FLAG:
            folder_paths.add_model_folder_path(kind, path, is_default=False)
        else:  # 2024 builds: no is_default; the call appends as well
            folder_paths.add_model_folder_path(kind, path)
        _paths, exts = folder_paths.folder_names_and_paths[kind]
        if isinstance(exts, set):  # a kind first named in extra_model_paths.yaml starts with none (= any file)
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


def embedding_choices() -> list[str]:
    """Embedding files ComfyUI knows: models/dense_face/embeddings/ (as named there) and the input folder."""
    stored = [f for f in filenames(EMBEDDINGS) if f.lower().endswith(EMBEDDING_SUFFIXES)]
    root = folder_paths.get_input_directory()
    uploaded = []
    for folder, dirs, files in os.walk(root):  # uploads may go to subfolders ("dense-face/<hash>.pth")
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(folder, root)
        uploaded += [f if rel == "." else f"{rel}/{f}".replace(os.sep, "/") for f in sorted(files)
                     if f.lower().endswith(EMBEDDING_SUFFIXES)]
    return stored + [f + INPUT_MARK for f in uploaded]


def embedding_path(choice: str) -> str | None:
    """The file of a choice from :func:`embedding_choices`, only ever inside those folders (None if absent)."""
    if choice.endswith(INPUT_MARK):
        roots, name = [folder_paths.get_input_directory()], choice[: -len(INPUT_MARK)]
    else:
        roots, name = model_dirs(EMBEDDINGS), choice
    for root in roots:
        path = os.path.realpath(os.path.join(root, name))
        if os.path.commonpath([path, os.path.realpath(root)]) == os.path.realpath(root) and os.path.isfile(path):
            return path
    return None
