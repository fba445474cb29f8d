"""Several reference photos: one "Reference photo k" loader per identity of a group workflow.

The group workflow ships with two reference loaders, each feeding an ID Encoder (one identity
per photo, ``group_by = each``) chained through ``face_id``. ``--reference`` given n times fills
them in order; beyond the shipped ones, the last loader and its encoder are copied and chained
on; slots left over get the last photo (the group's rule: the last reference repeated).
"""
from __future__ import annotations

import copy

from ..dense_face_core.errors import DenseFaceInputError
from .workflow_graph import TITLE_REFERENCE, nodes_titled


def reference_role(k: int) -> str:
    """Role of the k-th reference photo (0 first): reference, reference_2, reference_3, ..."""
    return "reference" if k == 0 else f"reference_{k + 1}"


def reference_title(k: int) -> str:
    return TITLE_REFERENCE if k == 0 else f"{TITLE_REFERENCE} {k + 1}"


def reference_slots(wf: dict) -> int:
    """How many numbered reference loaders the workflow has (consecutive from the first)."""
    k = 0
    while nodes_titled(wf, reference_title(k)):
        k += 1
    return k


def _consumers(wf: dict, node_id: str) -> list[tuple[str, str]]:
    return [(nid, name) for nid, node in wf.items() for name, v in node["inputs"].items()
            if isinstance(v, list) and len(v) == 2 and str(v[0]) == node_id]


def _slot(wf: dict, k: int) -> tuple[str, str | None]:
    """Reference slot k: its loader and the ID Encoder that reads it (None if no encoder does)."""
    (loader,) = nodes_titled(wf, reference_title(k))[:1]
    encoders = [nid for nid, _ in _consumers(wf, loader) if wf[nid]["class_type"] == "DenseFaceIDEncoder"]
    return loader, (encoders[0] if encoders else None)


def check_reference_capacity(wf: dict, wanted: int, workflow_name: str = "this workflow") -> None:
    """Raise unless ``wanted`` reference photos fit: the shipped slots, or more of them copied from the last
    one, which only a one-identity-per-photo encoder (``group_by = each``) allows."""
    have = reference_slots(wf)
    if wanted <= max(have, 1):
        return
    encoder = _slot(wf, have - 1)[1] if have else None
    if encoder is None or wf[encoder]["inputs"].get("group_by") != "each":
        raise DenseFaceInputError(f"--reference: given {wanted} times, but {workflow_name} makes one identity from "
                                  f"{max(have, 1)} reference photo(s); give one, or use --workflow dense_face_group "
                                  f"(one identity per face)")


def remove_reference_slot(wf: dict, k: int) -> None:
    """Drop reference slot k (k >= 1) of a chained group graph: its loader and encoder go, and whatever read
    the encoder reads the identities chained before it."""
    if k < 1:
        raise ValueError("the first reference slot is the chain's start; it cannot be removed")
    loader, encoder = _slot(wf, k)
    previous = wf[encoder]["inputs"].get("face_id") if encoder else None
    if previous is None:
        raise DenseFaceInputError(f"'{reference_title(k)}' does not feed an ID Encoder chained after another one")
    for nid, name in _consumers(wf, encoder):
        wf[nid]["inputs"][name] = previous
    del wf[encoder], wf[loader]


def add_reference_slots(wf: dict, wanted: int, workflow_name: str = "this workflow") -> None:
    """Copy the last reference loader and its ID Encoder until there are ``wanted`` slots, each new encoder
    chained after the last one (its identities come next); only for one-identity-per-photo encoders."""
    check_reference_capacity(wf, wanted, workflow_name)
    have = reference_slots(wf)
    if wanted <= max(have, 1):
        return
    loader, encoder = _slot(wf, have - 1)
    next_id = max(int(k) for k in wf if str(k).isdigit()) + 1
    for k in range(have, wanted):
        new_loader, new_encoder = str(next_id), str(next_id + 1)
        next_id += 2
        wf[new_loader] = copy.deepcopy(wf[loader])
        wf[new_loader]["_meta"] = {"title": reference_title(k)}
        wf[new_encoder] = copy.deepcopy(wf[encoder])
        wf[new_encoder]["_meta"] = {"title": f"Identity ({reference_title(k).lower()})"}
        wf[new_encoder]["inputs"]["reference"] = [new_loader, 0]
        for nid, name in _consumers(wf, encoder):
            if nid != new_encoder:
                wf[nid]["inputs"][name] = [new_encoder, 0]
        wf[new_encoder]["inputs"]["face_id"] = [encoder, 0]
        loader, encoder = new_loader, new_encoder


def place_references(wf: dict, names: list[str], workflow_name: str = "this workflow") -> None:
    """Photo k into loader k (slots added when more are given; slots left over get the last photo)."""
    if not names:
        return
    add_reference_slots(wf, len(names), workflow_name)
    slots = reference_slots(wf)
    if not slots:
        raise DenseFaceInputError(f"--reference: {workflow_name} has no node titled '{TITLE_REFERENCE}'")
    for k in range(slots):
        for i in nodes_titled(wf, reference_title(k)):
            wf[i]["inputs"]["image"] = names[min(k, len(names) - 1)]
