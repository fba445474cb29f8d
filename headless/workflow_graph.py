"""API-format workflows as the headless runner sees them: find, read, and look nodes up by role.

The shipped workflows give the nodes a user replaces titles ("Target photo", "Reference
photo", "Scene prompt"); roles are found through those titles and through node classes,
so a user's own copy of a workflow keeps working as long as the titles stay.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..dense_face_core.errors import DenseFaceInputError
from ..dense_face_core.model_folders import WORKFLOW_DIR

TITLE_TARGET = "Target photo"
TITLE_REFERENCE = "Reference photo"
TITLE_SCENE = "Scene prompt"
TITLE_TEXT_MODEL = "Text-editing model"
SAMPLERS = {"KSampler", "KSamplerAdvanced", "DenseFaceLatentBlendSampler"}
MODEL_INPUTS = {  # class_type -> (input name, ComfyUI folder)
    "CheckpointLoaderSimple": ("ckpt_name", "checkpoints"),
    "DenseFaceLoader": ("weights", "dense_face"),
}


def resolve_workflow(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.is_file():
        return p
    for candidate in (WORKFLOW_DIR / name_or_path, WORKFLOW_DIR / f"{name_or_path}_api.json"):
        if candidate.is_file():
            return candidate
    shipped = ", ".join(sorted(f.name for f in WORKFLOW_DIR.glob("*_api.json")))
    raise DenseFaceInputError(f"--workflow: {name_or_path} not found (shipped: {shipped})")


def load_api_workflow(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DenseFaceInputError(f"--workflow: cannot read {path}: {exc}") from exc
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        twin = Path(path).with_name(Path(path).stem + "_api.json")
        hint = f" (its twin {twin} is)" if twin.is_file() else ""
        raise DenseFaceInputError(f"--workflow: {path} is a UI-format workflow; dense-face run needs the API "
                                  f"format{hint}. In ComfyUI use 'Export (API)' / 'Save (API Format)'.")
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        raise DenseFaceInputError(f"--workflow: {path} is not an API-format ComfyUI workflow")
    return data


def nodes_titled(wf: dict, title: str) -> list[str]:
    return [k for k, v in wf.items() if v.get("_meta", {}).get("title") == title]


def nodes_of(wf: dict, *class_types: str) -> list[str]:
    return [k for k, v in wf.items() if v["class_type"] in class_types]
