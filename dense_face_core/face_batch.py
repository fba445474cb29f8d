"""Several faces, several identities: the conventions every node and the runner share.

- Face order: in each photo, faces are numbered left to right by the centre of their
  landmark box (ties by size, larger first), so "face 2" means the same face whatever the
  detector's own order; photos of a batch follow one another (all faces of photo 0 first).
- Face selection: ``all``, or a list such as ``"0,2"`` of those numbers.
- Identity groups: how reference photos become identities: empty = all averaged into one
  (the single-identity default), ``each`` = one identity per reference, or groups such as
  ``"0+1, 2"`` (identity 0 averages references 0 and 1, identity 1 is reference 2).
- Face-to-identity mapping: ``"0:2, 1:0"`` gives face 0 identity 2 and face 1 identity 0;
  unmapped faces take identity i for face i, the last identity repeated past the end.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from .errors import DenseFaceInputError, NoFaceError


def left_to_right(faces: Sequence) -> list:
    """Faces in the documented order: box centre x ascending, ties by size descending."""
    return sorted(faces, key=lambda f: (round((f.box[0] + f.box[2]) / 2.0, 3), -f.size))


def _numbers(text: str, option: str) -> list[int]:
    try:
        values = [int(p) for p in re.split(r"[\s,]+", text.strip()) if p]
    except ValueError:
        raise DenseFaceInputError(f"{option}: expected face numbers such as '0,2', got {text!r}") from None
    if not values or min(values) < 0:
        raise DenseFaceInputError(f"{option}: expected face numbers (0, 1, ...) such as '0,2', got {text!r}")
    return values


def select_faces(faces: Sequence, which: str, min_size: float, name: str = "image") -> list:
    """``which`` = ``"all"`` or a list of face numbers; the faces, numbered left to right, of usable size."""
    usable = left_to_right([f for f in faces if f.size >= min_size])
    if not usable:
        detail = f"; the largest is {max(f.size for f in faces):.0f} px" if faces else ""
        raise NoFaceError(f"{name}: no face of at least {min_size:.0f} px found{detail}")
    if which == "all":
        return usable
    wanted = _numbers(which, "face_list")
    missing = [n for n in wanted if n >= len(usable)]
    if missing:
        raise NoFaceError(f"{name}: face {missing[0]} requested but {len(usable)} face(s) were found "
                          f"(numbers 0..{len(usable) - 1}, left to right)")
    return [usable[n] for n in wanted]


def identity_groups(spec: str, n_references: int) -> list[list[int]]:
    """Which references average into each identity (see the module docstring)."""
    text = (spec or "").strip().lower()
    if n_references < 1:
        raise DenseFaceInputError("reference: no reference photo")
    if not text:
        return [list(range(n_references))]
    if text == "each":
        return [[i] for i in range(n_references)]
    groups = []
    for part in text.split(","):
        try:
            members = [int(m) for m in part.split("+") if m.strip()]
        except ValueError:
            raise DenseFaceInputError(f"group_by: expected 'each' or groups such as '0+1, 2', got {spec!r}") from None
        bad = [m for m in members if not 0 <= m < n_references]
        if not members or bad:
            raise DenseFaceInputError(f"group_by: reference {bad[0] if bad else '?'} does not exist "
                                      f"({n_references} reference photo(s): 0..{n_references - 1})")
        groups.append(members)
    return groups


def face_identities(spec: str, n_faces: int, n_identities: int) -> list[int]:
    """The identity of every face (see the module docstring)."""
    if n_identities < 1:
        raise DenseFaceInputError("face_id: no identity")
    out = [min(i, n_identities - 1) for i in range(n_faces)]
    for part in filter(None, (p.strip() for p in (spec or "").split(","))):
        m = re.fullmatch(r"(\d+)\s*:\s*(\d+)", part)
        if not m:
            raise DenseFaceInputError(f"face_to_identity: expected pairs such as '0:2, 1:0', got {part!r}")
        face, ident = int(m.group(1)), int(m.group(2))
        if face >= n_faces or ident >= n_identities:
            raise DenseFaceInputError(f"face_to_identity: {part!r} names face {face} of {n_faces} or identity "
                                      f"{ident} of {n_identities}")
        out[face] = ident
    return out


def pose_overrides(spec: str, n_faces: int) -> dict[int, dict[str, float]]:
    """``"1: yaw=20 pitch=-5; 2: roll=0"`` -> {1: {"yaw": 20, "pitch": -5}, 2: {"roll": 0}} (rows of the batch)."""
    out: dict[int, dict[str, float]] = {}
    for part in filter(None, (p.strip() for p in (spec or "").split(";"))):
        m = re.fullmatch(r"(\d+)\s*:\s*(.+)", part)
        if not m:
            raise DenseFaceInputError(f"overrides: expected e.g. '1: yaw=20 pitch=-5; 2: roll=0', got {part!r}")
        row = int(m.group(1))
        if row >= n_faces:
            raise DenseFaceInputError(f"overrides: face {row} does not exist ({n_faces} face(s): 0..{n_faces - 1})")
        for item in re.split(r"[\s,]+", m.group(2).strip()):
            k, _, v = item.partition("=")
            if k not in ("yaw", "pitch", "roll"):
                raise DenseFaceInputError(f"overrides: {item!r}: expected yaw=, pitch= or roll=")
            try:
                out.setdefault(row, {})[k] = float(v)
            except ValueError:
                raise DenseFaceInputError(f"overrides: {item!r}: {v!r} is not a number of degrees") from None
    return out
