"""Command-line overrides applied to a workflow by role (photos, prompt, seed, steps, pose)."""
from __future__ import annotations

import re

from ..dense_face_core.errors import DenseFaceInputError
from .reference_slots import place_references, reference_role, reference_slots, reference_title
from .workflow_graph import (
    SAMPLERS,
    TITLE_SCENE,
    TITLE_TARGET,
    nodes_of,
    nodes_titled,
)

INPUT_ROLES = ("target", "reference", "reference_embedding")


def place_inputs(wf: dict, names: dict[str, str]) -> list[str]:
    """Point the workflow at its input files, by role, as the ComfyUI that runs it names them
    (``reference``, ``reference_2``, ...: one photo per reference loader, see :mod:`.reference_slots`)."""
    notes = []
    if names.get("target"):
        ids = nodes_titled(wf, TITLE_TARGET)
        if not ids:
            raise DenseFaceInputError(f"--target: this workflow has no node titled '{TITLE_TARGET}'")
        for i in ids:
            wf[i]["inputs"]["image"] = names["target"]
        notes.append(f"target: {names['target']}")
    references = []
    while names.get(reference_role(len(references))):
        references.append(names[reference_role(len(references))])
    place_references(wf, references)
    notes += [f"{reference_role(k).replace('_', ' ')}: {name}" for k, name in enumerate(references)]
    if names.get("reference_embedding"):
        use_reference_embedding(wf, names["reference_embedding"] + EMBEDDING_INPUT_MARK)
        notes.append(f"reference embedding: {names['reference_embedding']}")  # as for the photos: role: name
    return notes


EMBEDDING_INPUT_MARK = " [input]"  # how Dense-Face Load ID Embedding lists a file of the input folder


def use_reference_embedding(wf: dict, choice: str) -> None:
    """Identity from a saved embedding: every ID Encoder becomes a Load ID Embedding of ``choice``, and the
    reference photo loader it no longer needs goes."""
    encoders = nodes_of(wf, "DenseFaceIDEncoder")
    if not encoders:
        raise DenseFaceInputError("--reference-embedding: this workflow has no Dense-Face ID Encoder to replace")
    for i in encoders:
        model = str(wf[i]["inputs"].get("id_model", ""))
        wf[i] = {"class_type": "DenseFaceLoadIDEmbedding", "_meta": {"title": "Identity (saved embedding)"},
                 "inputs": {"embedding": choice, "id_model": model.split(":", 1)[0]}}
    used = {v[0] for node in wf.values() for v in node["inputs"].values() if isinstance(v, list) and v}
    loaders = [i for k in range(reference_slots(wf)) for i in nodes_titled(wf, reference_title(k))]
    for i in loaders:
        if i not in used:
            del wf[i]


def apply_overrides(wf: dict, args) -> list[str]:
    """Set prompt, seeds, steps and pose by role; returns what changed, for the summary."""
    notes = []
    if args.prompt is not None:
        scene = nodes_titled(wf, TITLE_SCENE)
        if scene:
            for i in scene:
                wf[i]["inputs"]["text"] = args.prompt
            notes.append(f"scene prompt: {args.prompt!r}")
        else:
            for i in nodes_of(wf, "DenseFaceApplyPCAdapter"):
                wf[i]["inputs"]["prompt"] = args.prompt
            notes.append(f"face prompt: {args.prompt!r}")
    samplers = sorted(nodes_of(wf, *SAMPLERS), key=int)
    for n, i in enumerate(samplers):
        inputs = wf[i]["inputs"]
        key = "noise_seed" if "noise_seed" in inputs else "seed"
        if args.seed is not None and key in inputs:
            inputs[key] = args.seed + n
        if args.steps is not None and "steps" in inputs:
            inputs["steps"] = args.steps
    if args.seed is not None:
        notes.append(f"seed: {args.seed} (+1 per further sampler)")
    if args.steps is not None:
        notes.append(f"steps: {args.steps}")
    angles = {k: getattr(args, k) for k in ("yaw", "pitch", "roll") if getattr(args, k) is not None}
    if angles:
        ids = nodes_of(wf, "DenseFacePoseEuler")
        if not ids:
            raise DenseFaceInputError("--yaw/--pitch/--roll: this workflow has no Dense-Face Pose Image node")
        for i in ids:
            wf[i]["inputs"].update(angles)  # replaces the link from the detected angles
        notes.append("pose: " + ", ".join(f"{k} {v:g}" for k, v in angles.items()))
    return notes


def _seed_part(part: str) -> list[int]:
    """One comma-separated piece of --seeds: a seed or an inclusive range ``a-b`` (descending when a > b)."""
    m = re.fullmatch(r"(-?\d+)-(-?\d+)", part)
    if not m:
        return [int(part)]
    a, b = int(m.group(1)), int(m.group(2))
    return list(range(a, b + 1) if a <= b else range(a, b - 1, -1))


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' or '0-3' or a mix ('0-2,10')."""
    seeds: list[int] = []
    try:
        for part in str(text).split(","):
            if part.strip():
                seeds.extend(_seed_part(part.strip()))
    except ValueError as exc:
        raise DenseFaceInputError(f"--seeds: cannot read {text!r} (use e.g. 0,1,2 or 0-3)") from exc
    if not seeds:
        raise DenseFaceInputError("--seeds: no seed given")
    return list(dict.fromkeys(seeds))
