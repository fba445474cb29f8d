"""``dense-face run``: the checks of the user's own inputs that take seconds, made before ComfyUI and the models load.

A mistake in an option (a NaN angle, an output folder that is a file, a text file named
``.jpg``, a reference photo without a face, an embedding of the wrong size) is reported as
one line naming the option and the user's path as given, not minutes later by a node that
sees only the temporary copy of the file. Nothing is created here.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from ..dense_face_core.errors import DenseFaceError, DenseFaceInputError, MissingModelError
from ..dense_face_core.io_utils import check_output_path

PHOTO_KINDS = "a photo (JPEG, PNG, WebP, BMP or TIFF)"


def preflight(args) -> None:
    """Check the namespace of ``dense-face run`` (see :func:`headless.runner.build_parser`); raise a
    :class:`DenseFaceInputError` on the first unusable input. Attributes it lacks count as not given."""
    def opt(name):
        return getattr(args, name, None)

    angles = [opt(name) for name in ("yaw", "pitch", "roll")]
    if any(v is not None for v in angles):
        from ..dense_face_core.pose import check_angles

        try:
            check_angles(*(0.0 if v is None else v for v in angles))  # an angle not given is not overridden
        except DenseFaceInputError as exc:
            raise DenseFaceInputError(f"--{exc}") from exc  # "yaw must be ..." -> "--yaw must be ..."
    if opt("out") is not None:
        check_output_path(opt("out"), "--out", folder=True)
    embedding = opt("reference_embedding")
    references = opt("reference") or []
    references = [references] if isinstance(references, (str, os.PathLike)) else list(references)
    if opt("target"):
        _read_photo(opt("target"), "--target")
    if embedding:  # with an embedding the reference photos are not used (the ID Encoder is replaced)
        _check_embedding(embedding)
        return
    for given in references:
        _check_face(_read_photo(given, "--reference"), f"--reference {given}", opt("landmarker"))


def _existing_file(given, option: str) -> Path:
    if not str(given).strip():
        raise DenseFaceInputError(f"{option}: expected the path of a file, got an empty name")
    path = Path(given).expanduser()
    if not path.exists():
        raise DenseFaceInputError(f"{option}: no such file {given!s}")
    if not path.is_file():
        raise DenseFaceInputError(f"{option} {given}: is {'a folder' if path.is_dir() else 'not a regular file'}; "
                                  f"expected a file")
    return path


def _read_photo(given, option: str):
    from ..dense_face_core.images import read_image

    path = _existing_file(given, option)
    try:
        return read_image(path)
    except DenseFaceInputError as exc:  # names the file as read_image saw it; say which option and what was wanted
        cause = exc.__cause__
        why = (cause.strerror if isinstance(cause, OSError) and cause.strerror else cause) or exc
        raise DenseFaceInputError(f"{option} {given}: not a readable image ({why}); expected {PHOTO_KINDS}") from exc


def _check_embedding(given) -> None:
    from ..dense_face_core.id_embedding import EMBEDDING_DIM, load_feature_file

    path = _existing_file(given, "--reference-embedding")
    try:
        load_feature_file(path, "ir_se50")
    except DenseFaceError as exc:
        raise DenseFaceInputError(f"--reference-embedding: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any reader's complaint about a damaged file is the user's input
        raise DenseFaceInputError(
            f"--reference-embedding {given}: could not be read ({exc.__class__.__name__}: {exc}); expected an "
            f"identity embedding of {EMBEDDING_DIM} values (.npy, .safetensors, or the authors' .pth)") from exc


def _check_face(rgb, name: str, landmarker) -> None:
    """A reference photo must show a face; without a findable landmarker model the node reports that later."""
    from ..dense_face_core.landmarker import FaceAnalyzer, find_landmarker_model, select_face
    from ..dense_face_core.model_folders import comfyui_models_dirs

    try:
        model = find_landmarker_model(landmarker, comfyui_models_dirs("mediapipe"))
    except MissingModelError:
        return
    with _native_stderr_silenced(), FaceAnalyzer(model) as analyzer:  # the largest face chosen, as the nodes do
        faces = analyzer.detect(rgb, name=name)
    select_face(faces, "largest", name=name)


@contextlib.contextmanager
def _native_stderr_silenced():
    """MediaPipe's C++ side (absl/glog, TF Lite) logs start-up notes straight to file descriptor 2, which no
    Python setting reaches; a check whose only answer is our one line keeps them off the terminal."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to protect
        yield
        return
    try:
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
