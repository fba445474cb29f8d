"""What every node file shares: model-folder registration and IMAGE/MASK tensor conversions.

ComfyUI images are float32 [0, 1] tensors (B, H, W, C); masks (B, H, W), 1 = region to
generate. The core works on numpy per image, so conversions live here once.
"""
from __future__ import annotations

import os

import numpy as np
import torch

import folder_paths

CATEGORY = "Dense-Face"

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


def image_to_numpy(images: torch.Tensor) -> list[np.ndarray]:
    """IMAGE (B,H,W,C) -> list of float32 (H,W,C) arrays."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"expected an IMAGE tensor (batch, height, width, channels), got "
                         f"{getattr(images, 'shape', type(images))}")
    return [img for img in images.detach().cpu().float().numpy()]


def rgb_channels(image: np.ndarray) -> np.ndarray:
    """(H,W,C) float -> (H,W,3): alpha dropped, gray repeated (IMAGE tensors may carry 1 or 4 channels)."""
    if image.shape[-1] >= 3:
        return np.ascontiguousarray(image[..., :3])
    return np.repeat(image[..., :1], 3, axis=-1)


def numpy_to_image(arrays) -> torch.Tensor:
    """list of (H,W,3) float [0,1] or uint8 arrays (same size) -> IMAGE."""
    out = []
    for a in arrays:
        a = np.asarray(a)
        if a.dtype == np.uint8:
            a = a.astype(np.float32) / 255.0
        out.append(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)))
    return torch.stack(out, dim=0)


def numpy_to_mask(arrays) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in arrays], dim=0)
