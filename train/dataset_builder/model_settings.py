"""The model options checked before any image is read, and what of them the shards depend on."""
from __future__ import annotations

import hashlib
from pathlib import Path

from ...dense_face_core.errors import DenseFaceInputError, MissingModelError
from .units import sha256_file


def _captioners(args) -> list[str]:
    return list(getattr(args, "captioner", None) or [])


def check_model_options(args) -> None:
    """One-line errors for model options that cannot work, before the build starts."""
    from ..caption_models import local_model_folder

    caps = _captioners(args)
    for path in caps:
        local_model_folder(path, "--captioner", "image-to-text model")
    clip = getattr(args, "clip_model", None)
    if clip:
        local_model_folder(clip, "--clip-model", "CLIP model")
        if not caps:
            raise DenseFaceInputError("--clip-model scores the captions the captioners write: give at least one "
                                      "--captioner (the authors' caption files bring their own scores)")
    if len(caps) > 1 and not clip:
        raise DenseFaceInputError(f"{len(caps)} --captioner models need --clip-model to rank their captions "
                                  "(a local folder of a transformers CLIP model)")
    if len({Path(c).expanduser().name for c in caps}) != len(caps):
        raise DenseFaceInputError("--captioner: two models share a folder name; the name is what each sample "
                                  "records, so give them distinct folder names")
    restore = getattr(args, "restore_model", None)
    if restore and not (Path(restore).expanduser().is_file() and str(restore).lower().endswith(".onnx")):
        raise MissingModelError(f"--restore-model {restore}: expected a face-restoration .onnx file (GFPGAN or "
                                "CodeFormer export); models are never downloaded")
    if not 0.0 <= float(getattr(args, "restore_fidelity", 0.5)) <= 1.0:
        raise DenseFaceInputError("--restore-fidelity must be within 0..1")
    if restore:  # its interface, checked here once rather than as a failure in every worker
        from ..restoration import OnnxRestorer

        OnnxRestorer(restore)


def _folder_id(path) -> dict:
    """A model folder's name and the hash of its config (hashing gigabytes of weights per build is not worth it)."""
    p = Path(path).expanduser()
    return {"name": p.name, "config_sha256": hashlib.sha256((p / "config.json").read_bytes()).hexdigest()}


def model_settings(args) -> dict:
    """The fingerprint's share of the model options: the same models and settings give the same bytes."""
    caps = [_folder_id(c) for c in _captioners(args)]
    clip = getattr(args, "clip_model", None)
    restore = getattr(args, "restore_model", None)
    return {
        "captioner": ",".join(c["name"] for c in caps) or None,
        "captioners": caps,
        "clip_model": _folder_id(clip) if clip else None,
        "caption_top_k": int(getattr(args, "captions_top_k", 3)),
        "restoration": ({"model": Path(restore).stem, "sha256": sha256_file(restore),
                         "fidelity": float(getattr(args, "restore_fidelity", 0.5))} if restore else None),
    }


def model_worker_config(args) -> dict:
    """The model options as the stages read them."""
    restore = getattr(args, "restore_model", None)
    clip = getattr(args, "clip_model", None)
    return {"captioners": [str(Path(c).expanduser()) for c in _captioners(args)],
            "clip_model": str(Path(clip).expanduser()) if clip else None,
            "caption_top_k": int(getattr(args, "captions_top_k", 3)),
            "restore_model": str(Path(restore).expanduser()) if restore else None,
            "restore_fidelity": float(getattr(args, "restore_fidelity", 0.5)),
            "device": getattr(args, "device", "auto"), "model_threads": 1}
