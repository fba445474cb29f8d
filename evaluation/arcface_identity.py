"""Identity: cosine similarity of insightface ArcFace embeddings, faces aligned as the ID encoder node aligns them.

The model is an ``.onnx`` recognition file or an insightface pack folder; the alignment is
:class:`~dense_face.dense_face_core.id_embedding.ArcFaceEncoder` on our MediaPipe landmarks.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..dense_face_core.errors import DenseFaceInputError, MissingModelError
from ..dense_face_core.id_embedding import ArcFaceEncoder, average_embeddings, find_insightface_recognition
from ..dense_face_core.images import to_rgb_uint8
from ..dense_face_core.landmarker import Face
from .photos import face_in_file, largest_face
from .stats import cosine


def resolve_arcface_model(path: str | os.PathLike) -> Path:
    """An ArcFace recognition ``.onnx``: the file itself, or the one inside an insightface pack folder."""
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix.lower() != ".onnx":
            raise DenseFaceInputError(f"--insightface-model: {p} is not an .onnx file or a model pack folder")
        return p
    if p.is_dir():
        return find_insightface_recognition(p.name, [p.parent])
    raise MissingModelError(f"--insightface-model: {p} not found (give an insightface recognition .onnx, e.g. "
                            f"antelopev2/glintr100.onnx, or the unzipped pack folder)")


def onnx_providers() -> list[str]:
    """CUDA when onnxruntime has it, else the CPU: embedding many images should use the GPU."""
    try:
        import onnxruntime

        available = onnxruntime.get_available_providers()
    except Exception:
        return ["CPUExecutionProvider"]
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available] or available


class ArcFaceIdentity:
    """insightface ArcFace embeddings of detected faces (aligned on MediaPipe's five points)."""

    def __init__(self, model_path: str | os.PathLike, providers: Sequence[str] | None = None):
        self.path = resolve_arcface_model(model_path)
        self.encoder = ArcFaceEncoder(self.path, f"insightface/{self.path.parent.name}",
                                      providers=list(providers or onnx_providers()))
        self.name = f"{self.path.parent.name}/{self.path.name}"

    def embed(self, image, face: Face) -> np.ndarray:
        return self.encoder.embed(to_rgb_uint8(image), face.points)

    def embed_photos(self, analyzer, paths: Iterable[str | os.PathLike]) -> list[np.ndarray]:
        """Embeddings of the largest face of each photo (photos without a face are left out)."""
        out = []
        for p in paths:
            img, face = face_in_file(analyzer, p)
            if face is not None:
                out.append(self.embed(img, face))
        return out


def identity_cosine(encoder: ArcFaceIdentity, analyzer, generated, reference) -> float | None:
    """ArcFace cosine similarity of the largest faces of two images; None when either has no face."""
    gen, ref = to_rgb_uint8(generated), to_rgb_uint8(reference)
    fg, fr = largest_face(analyzer, gen, "generated"), largest_face(analyzer, ref, "reference")
    if fg is None or fr is None:
        return None
    return cosine(encoder.embed(gen, fg), encoder.embed(ref, fr))


def mean_embedding(embeddings: Sequence[np.ndarray]) -> np.ndarray | None:
    """Mean of unit embeddings, renormalised (how the ID encoder averages several photos)."""
    if not embeddings:
        return None
    return average_embeddings(embeddings, "eval").embedding
