"""FID: torch-fidelity's own TF-compatible InceptionV3 and Frechet distance (``torch_fidelity.calculate_metrics``).

The weight file is the user's (nothing is downloaded); images are resized and centre-cropped
to one size first, so sets of mixed sizes can be compared.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..dense_face_core.errors import DenseFaceInputError
from .fid_library import load_torch_fidelity
from .inception_weights import checked_inception_weights


def _resize_center_crop(img, size: int):
    """Shorter side to ``size`` (bicubic), then the central ``size`` x ``size`` square."""
    from PIL import Image

    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def _image_dataset(paths: Sequence[Path], size: int | None):
    """A torch Dataset of uint8 CHW tensors, what torch-fidelity's image folders give its extractor."""
    import torch
    from PIL import Image
    from torch.utils.data import Dataset

    class Images(Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            with Image.open(paths[i]) as im:
                im = im.convert("RGB")
                if size:
                    im = _resize_center_crop(im, size)
                arr = np.asarray(im, np.uint8)
            return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()

    return Images()


def frechet_inception_distance(generated: Sequence[str | os.PathLike], reference: Sequence[str | os.PathLike],
                               inception_weights: str | os.PathLike, size: int | None = 299,
                               batch_size: int = 32, cuda: bool | None = None, features: str = "2048") -> float:
    """FID between two image sets with ``torch_fidelity.calculate_metrics`` (InceptionV3 pool3, 2048-d).

    ``features`` is the library's ``feature_layer_fid``: "2048" (pool3, the standard FID)
    or one of its smaller pools "64", "192", "768" (cheaper; comparable only with itself).

    Images are read as RGB uint8; with ``size`` each is resized (shorter side, bicubic) and
    centre-cropped to ``size`` square first (the sets may mix sizes), then the library's
    extractor resizes to 299 as TensorFlow did and computes the Frechet distance of the
    two Gaussians fitted to the features.
    """
    import torch

    generated, reference = [Path(p) for p in generated], [Path(p) for p in reference]
    if len(generated) < 2 or len(reference) < 2:
        raise DenseFaceInputError(f"FID needs at least 2 images on each side (got {len(generated)} generated, "
                                  f"{len(reference)} reference)")
    tf = load_torch_fidelity()
    if cuda is None:
        cuda = torch.cuda.is_available()
    with checked_inception_weights(inception_weights) as weights:
        result = tf.calculate_metrics(
            input1=_image_dataset(generated, size), input2=_image_dataset(reference, size), fid=True,
            feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(weights),
            feature_layer_fid=str(features), batch_size=batch_size, cuda=cuda, cache=False, save_cpu_ram=True, verbose=False)
    return float(result["frechet_inception_distance"])
