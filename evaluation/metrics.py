"""Metric functions of the evaluation protocol (``dense-face eval``), each usable on its own.

Every metric runs a standard model from a local file; nothing is downloaded. Each lives in
its own module, re-exported here:

- identity (:mod:`.arcface_identity`): cosine similarity of insightface ArcFace embeddings
  (an ``.onnx`` recognition model or an insightface pack folder), faces aligned on our
  MediaPipe landmarks exactly as the ID encoder node aligns them;
- head pose error (:mod:`.pose_error`): our estimator (MediaPipe landmarks + solvePnP, the
  pose the workflows condition on) on the generated face against the requested pose, in degrees;
- CLIP-T / CLIP-I (:mod:`.clip_score`): cosine similarity of a transformers ``CLIPModel``'s
  projected image and text (CLIP-T) or image and reference-image (CLIP-I) embeddings;
- FID (:mod:`.fid`): torch-fidelity's own TF-compatible InceptionV3 and Frechet distance
  (``torch_fidelity.calculate_metrics``), with the weight file given by the user;
- a second opinion on identity (:mod:`.dlib_identity`): dlib's 128-d ResNet face descriptor
  (``dlib`` / ``dlib-bin`` + the ``face_recognition_models`` package), when installed;
- the photo listing and face pick (:mod:`.photos`) and mean ± std (:mod:`.stats`) they share.
"""
from __future__ import annotations

from .arcface_identity import ArcFaceIdentity, identity_cosine, mean_embedding, onnx_providers, resolve_arcface_model
from .clip_score import ClipScorer
from .dlib_identity import (
    DLIB_MATCH_THRESHOLD,
    DLIB_MODELS_ENV,
    DlibIdentity,
    dlib_models_dir,
    dlib_unavailable_reason,
)
from .fid import frechet_inception_distance
from .fid_library import FIDELITY_INSTALL, fid_unavailable_reason, load_torch_fidelity
from .inception_weights import checked_inception_weights
from .photos import face_in_file, largest_face, list_images
from .pose_error import ANGLES, angle_error, face_pose, pose_errors
from .stats import Stat, cosine, summarize

__all__ = [
    "ANGLES", "ArcFaceIdentity", "ClipScorer", "DLIB_MATCH_THRESHOLD", "DLIB_MODELS_ENV", "DlibIdentity",
    "FIDELITY_INSTALL", "Stat", "angle_error", "checked_inception_weights", "cosine", "dlib_models_dir",
    "dlib_unavailable_reason", "face_in_file", "face_pose", "fid_unavailable_reason", "frechet_inception_distance",
    "identity_cosine", "largest_face", "list_images", "load_torch_fidelity", "mean_embedding", "onnx_providers",
    "pose_errors", "resolve_arcface_model", "summarize",
]
