"""The faces a crop node takes from one photo: which faces, their crop transforms and masks.

Kept beside the crop transform so that the node (and anything else that crops the way it
does) shares one rule for face choice, numbering and the no-face pass-through.
"""
from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import numpy as np

from .crop import FaceCrop, compute_face_crop, passthrough_crop
from .errors import NoFaceError
from .face_batch import left_to_right, select_faces
from .face_mask import face_mask
from .landmarker import MIN_FACE_PX, select_face


class FaceChoice(NamedTuple):
    which: str  # "largest", "by index", "all" or "list"
    index: int = 0  # for "by index"
    face_list: str = ""  # for "list"
    on_no_face: str = "error"  # or anything else: a pass-through square with an empty mask


class CropGeometry(NamedTuple):
    size: int
    padding: float = 0.0
    grow: float = 16.0
    feather: float = 8.0


def pick_faces(analyzer, rgb: np.ndarray, choice: FaceChoice, name: str = "image") -> list[tuple[int, object]]:
    """The chosen faces of one photo, each with its left-to-right number (among faces big enough to use)."""
    faces = analyzer.detect(rgb, name=name)
    numbered = left_to_right([f for f in faces if f.size >= MIN_FACE_PX])
    if choice.which in ("all", "list"):
        chosen = select_faces(faces, "all" if choice.which == "all" else choice.face_list, MIN_FACE_PX, name=name)
    else:
        chosen = [select_face(faces, "largest" if choice.which == "largest" else int(choice.index), name=name)]
    return [(next(n for n, g in enumerate(numbered) if g is f), f) for f in chosen]


def crop_faces(analyzer, rgb: np.ndarray, source_index: int, choice: FaceChoice, geometry: CropGeometry,
               name: str = "image") -> list[tuple[FaceCrop, np.ndarray]]:
    """(crop transform, mask) of every chosen face of one photo; a pass-through square with an empty mask
    when it has no face and ``choice.on_no_face`` is not "error"."""
    try:
        picked = pick_faces(analyzer, rgb, choice, name)
    except NoFaceError:
        if choice.on_no_face == "error":
            raise
        fc = replace(passthrough_crop((rgb.shape[1], rgb.shape[0]), geometry.size), source_index=source_index)
        return [(fc, np.zeros((fc.size, fc.size), np.float32))]
    out = []
    for number, detected in picked:
        fc = compute_face_crop(detected, geometry.size, geometry.padding, canonical_vertices=analyzer.canonical)
        fc = replace(fc, source_index=source_index, face_number=number)
        out.append((fc, face_mask(fc, grow=geometry.grow, feather=geometry.feather)))
    return out
