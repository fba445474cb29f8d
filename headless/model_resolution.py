"""Which model files a workflow needs, whether the ComfyUI that runs it has them, and the demo set.

The same check serves this process and a server: ``choices(class_type, input)`` is what the
node offers for that input (the node class's INPUT_TYPES here, the server's /object_info
there), so a missing model is found before anything runs, and the message names the file, the
folder it belongs in, where to get it, and the close names that ComfyUI does have.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from ..dense_face_core.random_weights import DEMO_CHECKPOINT, DEMO_DENSE_FACE, DEMO_ID_MODEL

Choices = Callable[[str, str], "list[str] | None"]
INSTALL = "dense-face install-official FOLDER (the authors' released weights; see the README)"
# (class_type, input) -> (ComfyUI folder, where to get it)
MODEL_INPUTS = {
    ("CheckpointLoaderSimple", "ckpt_name"): ("checkpoints", f"{INSTALL}, or any SD1.5 checkpoint"),
    ("DenseFaceLoader", "weights"): ("dense_face", f"{INSTALL}, or dense-face train + export"),
    ("DenseFaceIDEncoder", "id_model"): ("dense_face (ir_se50:...) or insightface/models/<pack>/",
                                         f"{INSTALL} for ir_se50; the insightface model zoo for packs"),
}
DEMO_NAMES = {("CheckpointLoaderSimple", "ckpt_name"): DEMO_CHECKPOINT, ("DenseFaceLoader", "weights"): DEMO_DENSE_FACE,
              ("DenseFaceIDEncoder", "id_model"): DEMO_ID_MODEL}
DEMO_PREFIX = "DEMO_RANDOM_WEIGHTS_"


@dataclass
class MissingModel:
    title: str
    class_type: str
    input_name: str
    value: str
    offered: list[str]

    def line(self) -> str:
        folder, where = MODEL_INPUTS[(self.class_type, self.input_name)]
        close = difflib.get_close_matches(self.value, self.offered, n=3, cutoff=0.4)
        there = f"; close names this ComfyUI has: {', '.join(close)}" if close else ""
        return f"'{self.value}' ({self.title}): not found; it belongs in ComfyUI/models/{folder} (get it: {where}){there}"


def missing_models(wf: dict, choices: Choices) -> list[MissingModel]:
    out = []
    for node_id, node in wf.items():
        for (cls, name), _spec in MODEL_INPUTS.items():
            value = node["inputs"].get(name) if node["class_type"] == cls else None
            if not isinstance(value, str):
                continue
            offered = choices(cls, name)
            if offered is not None and value not in offered:
                out.append(MissingModel(node.get("_meta", {}).get("title", node_id), cls, name, value, offered))
    return out


def missing_message(missing: list[MissingModel], where: str) -> str:
    return f"models not found on {where}:\n  " + "\n  ".join(m.line() for m in missing) + \
        "\n(or run with --demo auto to try the graph on the labelled random-weight demo set)"


def demo_available(choices: Choices) -> bool:
    return all(name in (choices(cls, inp) or []) for (cls, inp), name in DEMO_NAMES.items())


def use_demo_models(wf: dict) -> None:
    """The demo set's names in every loader, and DEMO in the name of every saved image."""
    for node in wf.values():
        for (cls, inp), name in DEMO_NAMES.items():
            if node["class_type"] == cls and inp in node["inputs"]:
                node["inputs"][inp] = name
        if node["class_type"] == "SaveImage":
            prefix = str(node["inputs"].get("filename_prefix", "ComfyUI"))
            if not prefix.startswith(DEMO_PREFIX):
                node["inputs"]["filename_prefix"] = DEMO_PREFIX + prefix
