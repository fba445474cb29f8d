"""Repeatable --reference: photo k reaches loader k, extra photos get their own chained ID Encoder."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dense_face.dense_face_core.errors import DenseFaceInputError
from dense_face.headless.overrides import place_inputs
from dense_face.headless.workflow_graph import nodes_of

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def _load(name):
    return json.loads((WORKFLOWS / f"{name}_api.json").read_text())


def _chain(wf):
    """The identities in the order Apply PC-Adapter gets them: loader image of each encoder, first first."""
    (adapter,) = nodes_of(wf, "DenseFaceApplyPCAdapter")
    node, images = wf[adapter]["inputs"]["face_id"][0], []
    while node is not None:
        enc = wf[node]["inputs"]
        images.append(wf[enc["reference"][0]]["inputs"]["image"])
        node = enc["face_id"][0] if "face_id" in enc else None
    return images[::-1]


def test_three_references_on_the_group_workflow_chain_three_identities():
    wf = _load("dense_face_group")
    notes = place_inputs(wf, {"target": "g.png", "reference": "a.png", "reference_2": "b.png",
                              "reference_3": "c.png"})
    assert _chain(wf) == ["a.png", "b.png", "c.png"]
    assert len(nodes_of(wf, "DenseFaceIDEncoder")) == 3 and len(nodes_of(wf, "LoadImage")) == 4
    assert all(wf[i]["inputs"]["group_by"] == "each" for i in nodes_of(wf, "DenseFaceIDEncoder"))
    assert notes == ["target: g.png", "reference: a.png", "reference 2: b.png", "reference 3: c.png"]


def test_one_reference_fills_every_slot_and_one_identity_workflows_refuse_more():
    wf = _load("dense_face_group")
    place_inputs(wf, {"reference": "a.png"})
    assert _chain(wf) == ["a.png", "a.png"]
    with pytest.raises(DenseFaceInputError, match="dense_face_group"):
        place_inputs(_load("dense_face_face_swap"), {"reference": "a.png", "reference_2": "b.png"})


def test_removing_the_second_slot_leaves_one_identity_chain():
    from dense_face.headless.reference_slots import reference_slots, remove_reference_slot

    wf = _load("dense_face_group")
    remove_reference_slot(wf, 1)
    place_inputs(wf, {"reference": "a.png"})
    assert reference_slots(wf) == 1 and _chain(wf) == ["a.png"]
    assert len(nodes_of(wf, "DenseFaceIDEncoder")) == 1
    with pytest.raises(ValueError):
        remove_reference_slot(wf, 0)
