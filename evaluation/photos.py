"""Photos and the face on them: the listing and the face pick every metric starts from."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..dense_face_core.errors import NoFaceError
from ..dense_face_core.images import is_image_file, read_image
from ..dense_face_core.landmarker import Face, select_face


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """The image files of ``folder`` sorted by name, so identities and FID sets are read in a fixed order."""
    folder = Path(folder)
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in files if p.is_file() and is_image_file(p))


def largest_face(analyzer, image, name: str = "image", which: str | int = "largest") -> Face | None:
    """The face the workflows would pick (largest, at least 64 px), or None when there is none."""
    try:
        return select_face(analyzer.detect(image, name=name), which, name=name)
    except NoFaceError:
        return None


def face_in_file(analyzer, path: str | os.PathLike, which: str | int = "largest") -> tuple[np.ndarray, Face | None]:
    """A photo read from disk and the face picked on it (messages name the file)."""
    image = read_image(path)
    return image, largest_face(analyzer, image, str(path), which)
