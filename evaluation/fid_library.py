"""Importing torch-fidelity: whether it is installed, and a hollow torchvision where torchvision is unusable."""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys

from ..dense_face_core.errors import MissingModelError
from ..headless.import_stubs import hollow_modules, torchvision_works

FIDELITY_INSTALL = "pip install --no-deps torch-fidelity  (its FID path needs torch, numpy, scipy, pillow, tqdm)"


@contextlib.contextmanager
def _torchvision_import_stub():
    """Hollow torchvision modules while torch_fidelity imports.

    torch-fidelity's package ``__init__`` imports its dataset, CLIP, VGG and DINOv2 helpers,
    which import torchvision; the FID path (its InceptionV3 and Frechet distance) uses none
    of it.
    """
    with hollow_modules(("torchvision", "torchvision.datasets", "torchvision.transforms",
                         "torchvision.transforms.functional", "torchvision.models")) as mods:
        for cls in ("CIFAR10", "CIFAR100", "STL10"):
            setattr(mods["torchvision.datasets"], cls, type(cls, (), {}))
        yield


def load_torch_fidelity():
    """``import torch_fidelity``, with the torchvision import stand-in where torchvision is unusable."""
    if "torch_fidelity" in sys.modules:
        return sys.modules["torch_fidelity"]
    if importlib.util.find_spec("torch_fidelity") is None:
        raise MissingModelError(f"FID needs the torch-fidelity package: {FIDELITY_INSTALL}")
    if torchvision_works():
        return importlib.import_module("torch_fidelity")
    print("dense-face eval: torchvision is not usable here; torch-fidelity is imported with a hollow torchvision "
          "stand-in (its FID path does not use torchvision)", file=sys.stderr)
    with _torchvision_import_stub():
        return importlib.import_module("torch_fidelity")


def fid_unavailable_reason() -> str | None:
    """Why FID cannot be computed here (None: it can), so the table can say so instead of failing."""
    if importlib.util.find_spec("torch_fidelity") is None:
        return f"torch-fidelity is not installed ({FIDELITY_INSTALL})"
    return None
