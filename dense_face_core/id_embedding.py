"""Identity embeddings for the identity projector: insightface ArcFace, or the authors' IR-SE50.

A projector only understands the embedding space it was trained in, so every embedding
carries the name of the network that made it (``FaceID.model``) and the weight file
names the one it expects; :func:`check_id_model` turns a mismatch into a clear error.
Model names: ``insightface/<pack>`` (e.g. ``insightface/antelopev2``) or ``ir_se50``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import DenseFaceInputError, MissingModelError, WeightFileError

EMBEDDING_DIM = 512
ARCFACE_INPUT = 112  # insightface's recognition models take 112x112 aligned faces
IR_SE50 = "ir_se50"
INSIGHTFACE_PACKS = {"antelopev2": "glintr100.onnx", "buffalo_l": "w600k_r50.onnx"}
INSIGHTFACE_URL = "https://github.com/deepinsight/insightface/tree/master/python-package#model-zoo"
# MediaPipe indices for insightface's five points, in its order: the eye on the image's
# left, the other eye (iris centres), nose tip, left and right mouth corners.
FIVE_POINT_LANDMARKS = (468, 473, 4, 61, 291)


@dataclass(frozen=True)
class FaceID:
    """An L2-normalised identity embedding (averaged over ``count`` reference images)."""

    embedding: np.ndarray  # (512,) float32
    model: str
    count: int = 1

    def __post_init__(self):
        emb = np.asarray(self.embedding, np.float32).reshape(-1)
        if emb.shape != (EMBEDDING_DIM,):
            raise DenseFaceInputError(f"identity embedding must have {EMBEDDING_DIM} values, got {emb.size}")
        object.__setattr__(self, "embedding", normalise_embedding(emb, "identity embedding"))


def normalise_embedding(x: np.ndarray, name: str = "embedding") -> np.ndarray:
    x = np.asarray(x, np.float32)
    if not np.isfinite(x).all():
        raise DenseFaceInputError(f"{name} contains NaN or infinite values")
    norm = float(np.linalg.norm(x))
    if norm < 1e-8:
        raise DenseFaceInputError(f"{name} is all zeros")
    return x / norm


@dataclass(frozen=True)
class FaceIDBatch:
    """Several identities from one identity network: face i of a group gets one of them."""

    items: tuple[FaceID, ...]

    def __post_init__(self):
        if not self.items:
            raise DenseFaceInputError("an identity batch needs at least one identity")
        models = {f.model for f in self.items}
        if len(models) > 1:
            raise DenseFaceInputError(f"identities from different networks cannot go together: {sorted(models)}")

    @property
    def model(self) -> str:
        return self.items[0].model


def as_identities(value) -> tuple[FaceID, ...]:
    """A FACE_ID (one identity, or a batch of them) as a tuple of identities."""
    if isinstance(value, FaceID):
        return (value,)
    if isinstance(value, FaceIDBatch):
        return value.items
    raise DenseFaceInputError("face_id: connect Dense-Face ID Encoder or Load ID Embedding")


def identities_value(items: Sequence[FaceID]) -> FaceID | FaceIDBatch:
    """One identity stays a FaceID (what single-face graphs always got); several make a batch."""
    return items[0] if len(items) == 1 else FaceIDBatch(tuple(items))


def average_embeddings(embeddings: Sequence[np.ndarray], model: str) -> FaceID:
    """Average unit embeddings of several reference photos, then renormalise."""
    if len(embeddings) == 0:
        raise DenseFaceInputError("no reference embeddings to average")
    stacked = np.stack([normalise_embedding(e, f"reference {i}") for i, e in enumerate(embeddings)])
    return FaceID(stacked.mean(axis=0), model=model, count=len(embeddings))


def check_id_model(face_id_model: str, weights_model: str) -> None:
    if face_id_model != weights_model:
        raise WeightFileError(
            f"this Dense-Face weight file was trained on '{weights_model}' identity embeddings but the "
            f"FACE_ID was made with '{face_id_model}'. Encode the reference with the matching model "
            f"(set the ID encoder's model to '{weights_model}').")


def five_points(points: np.ndarray) -> np.ndarray:
    """insightface's 5 alignment points (pixels) from 478 MediaPipe landmarks (pixels)."""
    pts = np.asarray(points, np.float64)[list(FIVE_POINT_LANDMARKS), :2]
    if pts[0, 0] > pts[1, 0]:  # keep insightface's order (image-left eye first) for mirrored faces
        pts[[0, 1]] = pts[[1, 0]]
        pts[[3, 4]] = pts[[4, 3]]
    return pts.astype(np.float32)


def align_for_arcface(image_rgb: np.ndarray, points: np.ndarray, size: int = ARCFACE_INPUT) -> np.ndarray:
    """The face as ArcFace sees it: BGR ``size`` square, warped onto insightface's five-point template.

    Apart from the network so that a dataset build can align beside the photo and run the
    network batched elsewhere (a GPU actor) with the same numbers."""
    from insightface.utils import face_align

    bgr = np.ascontiguousarray(image_rgb[:, :, ::-1])
    return face_align.norm_crop(bgr, landmark=five_points(points), image_size=int(size))


def find_insightface_recognition(pack: str, roots: Iterable[str | os.PathLike]) -> Path:
    """The ArcFace ``.onnx`` of an insightface model pack under ``models/insightface``."""
    wanted = INSIGHTFACE_PACKS.get(pack)
    searched = []
    for root in roots:
        for folder in (Path(root) / "models" / pack, Path(root) / pack):
            searched.append(str(folder))
            if not folder.is_dir():
                continue
            if wanted and (folder / wanted).is_file():
                return folder / wanted
            for candidate in sorted(folder.glob("*.onnx")):
                if _is_recognition_onnx(candidate):
                    return candidate
    raise MissingModelError(
        f"insightface model pack '{pack}' with its recognition model "
        f"({wanted or 'an ArcFace .onnx'}) not found; looked in: {', '.join(searched) or 'nothing'}. "
        f"Put the unzipped pack in ComfyUI/models/insightface/models/{pack}/ (see {INSIGHTFACE_URL}).")


def _is_recognition_onnx(path: Path) -> bool:
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        return len(model.graph.output) == 1 and len(dims) == 4 and dims[2] == dims[3] == 112
    except Exception:
        return False


class ArcFaceEncoder:
    """insightface's ArcFace recognition model, fed crops aligned on our MediaPipe landmarks."""

    def __init__(self, onnx_path: str | os.PathLike, model_name: str, providers: Sequence[str] = ("CPUExecutionProvider",)):
        from insightface.model_zoo import get_model

        self.model_name = model_name
        self.model = get_model(str(onnx_path), providers=list(providers))
        if self.model is None or getattr(self.model, "taskname", None) != "recognition":
            raise MissingModelError(f"{onnx_path} is not an insightface recognition (ArcFace) model")

    def align(self, image_rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
        """The face as this model sees it (:func:`align_for_arcface` at its input size)."""
        return align_for_arcface(image_rgb, points, self.model.input_size[0])

    def embed_aligned(self, aligned: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 512) unit embeddings of faces from :meth:`align`, one batched forward."""
        feats = np.asarray(self.model.get_feat(list(aligned)), np.float32).reshape(len(aligned), -1)
        return np.stack([normalise_embedding(f, "ArcFace output") for f in feats])

    def embed(self, image_rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Unit embedding of the face whose 478 landmarks (pixels) are ``points``."""
        return self.embed_aligned([self.align(image_rgb, points)])[0]


class IRSE50Encoder:
    """The authors' IR-SE50 on their aligned 256 face crop (RGB in [-1, 1], pooled to 112)."""

    def __init__(self, weights_path: str | os.PathLike, device: str = "cpu"):
        import torch
        from safetensors.torch import load_file

        from .ir_se50 import IRSE50

        self.model_name = IR_SE50
        self.device = device
        self.net = IRSE50().eval().to(device)
        self.net.load_facenet_state_dict(load_file(str(weights_path)))
        self._torch = torch

    def embed_crop(self, crop_rgb: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(crop_rgb)).float().permute(2, 0, 1)[None] / 127.5 - 1.0
        with torch.inference_mode():
            out = self.net(x.to(self.device))
        return normalise_embedding(out[0].cpu().numpy(), "IR-SE50 output")


def _load_numpy_pickle(path: Path):
    """``torch.load(weights_only=True)`` with only numpy-array reconstruction allowed.

    The authors' ``feat_file_v2`` files pickle a numpy array; allowlisting exactly the
    globals that rebuild one keeps arbitrary code out while reading them.
    """
    import pickle

    import torch

    core = getattr(np, "_core", None) or np.core
    reconstruct = core.multiarray._reconstruct
    allowed = [np.ndarray, np.dtype, type(np.dtype(np.float32)),
               (reconstruct, "numpy.core.multiarray._reconstruct"),
               (reconstruct, "numpy._core.multiarray._reconstruct")]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError) as exc:
        raise DenseFaceInputError(
            f"{path}: not loaded: it holds more than tensors or numpy arrays ({exc.__class__.__name__}). "
            f"Save the embedding as .npy or .safetensors instead.") from exc


def load_feature_file(path: str | os.PathLike, model: str) -> FaceID:
    """Precomputed embedding: the authors' ``feat_file_v2/*.pth`` (numpy (1,512)), ``.npy``, or safetensors.

    ``.pth`` files are read with ``torch.load(weights_only=True)``; the authors' files
    pickle a numpy array, which that refuses, and we say how to convert them instead of
    unpickling arbitrary code.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise MissingModelError(f"identity feature file not found: {path}")
    if suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    elif suffix == ".safetensors":
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
        if len(tensors) != 1:
            raise DenseFaceInputError(f"{path}: expected one tensor (the embedding), found {sorted(tensors)}")
        arr = next(iter(tensors.values()))
    elif suffix in (".pth", ".pt"):
        obj = _load_numpy_pickle(path)
        arr = obj.numpy() if hasattr(obj, "numpy") else np.asarray(obj)
    else:
        raise DenseFaceInputError(f"{path}: unsupported feature file type '{suffix}' (use .npy, .safetensors or .pth)")
    arr = np.asarray(arr, np.float32)
    if arr.size != EMBEDDING_DIM:
        raise DenseFaceInputError(f"{path}: expected {EMBEDDING_DIM} values, got shape {arr.shape}")
    return FaceID(arr.reshape(-1), model=model)
