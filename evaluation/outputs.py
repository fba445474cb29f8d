"""Which saved files of a run hold its result images, read off the workflow graph the run executed."""
from __future__ import annotations

import re
from pathlib import Path

from ..dense_face_core.errors import DenseFaceInputError
from ..headless import runner as R

TITLE_RESULT = "Save result"


def linked_node(wf: dict, link) -> tuple[str, dict] | tuple[None, None]:
    """(id, node) feeding an input linked as ``[node id, output]``; (None, None) for a plain value."""
    if isinstance(link, list) and link and str(link[0]) in wf:
        return str(link[0]), wf[str(link[0])]
    return None, None


def result_save_nodes(wf: dict) -> list[str]:
    """The SaveImage node(s) holding the result: titled 'Save result', fed by Paste Back, or the only one."""
    saves = R.nodes_of(wf, "SaveImage")
    titled = [s for s in saves if wf[s].get("_meta", {}).get("title") == TITLE_RESULT]
    if titled:
        return titled
    pasted = [s for s in saves if (linked_node(wf, wf[s]["inputs"].get("images"))[1] or {}).get("class_type")
              == "DenseFacePasteBack"]
    if pasted:
        return pasted
    if len(saves) == 1:
        return saves
    raise DenseFaceInputError(f"cannot tell which of the workflow's {len(saves)} SaveImage nodes holds the result: "
                              f"title it '{TITLE_RESULT}'")


def saved_files(outputs: list[str], prefix: str) -> list[str]:
    """The files a SaveImage with ``prefix`` wrote (``prefix_00001_.png`` ...), in batch order."""
    pat = re.compile(re.escape(Path(prefix).name) + r"_(\d+)_?\.png$")
    hits = []
    for rel in outputs:
        p = Path(rel)
        if "previews" in p.parts:
            continue
        m = pat.fullmatch(p.name)
        if m:
            hits.append((int(m.group(1)), rel))
    return [rel for _, rel in sorted(hits)]


def save_node_files(wf: dict, save_id: str, summary: dict) -> list[str]:
    """The run's files (relative to its folder) written by the SaveImage node ``save_id``."""
    return saved_files(summary.get("outputs", []), wf[save_id]["inputs"].get("filename_prefix", ""))


def result_files(wf: dict, summary: dict) -> list[str]:
    """Every result image of a run, node by node, each in batch order."""
    return [f for s in result_save_nodes(wf) for f in save_node_files(wf, s, summary)]


def _loaded_photo(node: dict, run_dir: Path, summary: dict) -> Path | None:
    """The run's copy of the photo a LoadImage node read (by its role title: target or reference)."""
    title = node.get("_meta", {}).get("title")
    role = {R.TITLE_TARGET: "target", R.TITLE_REFERENCE: "reference"}.get(title)
    rel = summary.get("inputs", {}).get(role) if role else None
    return run_dir / rel if rel else None


def _same_link(a, b) -> bool:
    """Two links to the same output (node ids may be written as numbers or strings)."""
    return a == b or [str(x) for x in a] == [str(x) for x in b]


def saved_image_of(wf: dict, link, run_dir: Path, summary: dict) -> Path | None:
    """The file holding the image on ``link``: a loaded photo (by role) or a SaveImage of the same output."""
    _, node = linked_node(wf, link)
    if node is None:
        return None
    if node["class_type"] == "LoadImage":
        return _loaded_photo(node, run_dir, summary)
    for s in R.nodes_of(wf, "SaveImage"):
        if _same_link(wf[s]["inputs"].get("images", []), link):
            files = save_node_files(wf, s, summary)
            if files:
                return run_dir / files[0]
    return None
