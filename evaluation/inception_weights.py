"""The InceptionV3 weight file FID uses, proven to hold tensors only before torch-fidelity unpickles it."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from ..dense_face_core.errors import DenseFaceInputError, MissingModelError


@contextlib.contextmanager
def checked_inception_weights(path: str | os.PathLike):
    """Yield a ``.pth`` path torch-fidelity can load, after proving it holds tensors only.

    torch-fidelity reads the file with ``torch.load(weights_only=False)``; this project only
    unpickles with ``weights_only=True``, so the file is read that way first and refused if
    it holds anything but tensors (then the library's own load executes nothing else).
    A ``.safetensors`` copy of the same state dict is accepted and converted to a temporary
    ``.pth``.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingModelError(f"--inception: {p} not found (torch-fidelity's InceptionV3 FID weights, "
                                f"weights-inception-2015-12-05-6726825d.pth)")
    if p.suffix.lower() == ".safetensors":
        with _safetensors_as_pth(p) as out:
            yield out
        return
    _check_tensor_state_dict(p)
    yield p


@contextlib.contextmanager
def _safetensors_as_pth(path: Path):
    """A temporary ``.pth`` copy of a ``.safetensors`` state dict (safetensors holds tensors only)."""
    import torch
    from safetensors.torch import load_file

    state = load_file(str(path))
    with tempfile.TemporaryDirectory(prefix="dense-face-inception-") as tmp:
        out = Path(tmp) / "inception.pth"
        torch.save(state, out)
        yield out


def _check_tensor_state_dict(path: Path) -> None:
    """Refuse a ``.pth`` that ``torch.load(weights_only=True)`` cannot read or that holds more than tensors."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DenseFaceInputError(f"--inception: {path} is not a plain tensor state dict (refused to unpickle it "
                                  f"fully: {exc.__class__.__name__}); save it as a state dict or .safetensors") from exc
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise DenseFaceInputError(f"--inception: {path} is not a state dict of tensors")
