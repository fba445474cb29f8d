"""UI workflow -> API prompt, as the frontend's graphToPrompt builds it."""
from __future__ import annotations

import copy
from typing import Mapping

from .errors import WorkflowFormatError
from .object_info import VIRTUAL_NODES, display_name, is_widget, ordered_inputs, spec_options
from .widgets import widget_values_by_name


def ui_to_api(ui: Mapping, object_info: Mapping[str, Mapping]) -> dict:
    """The API prompt of a UI workflow, as the frontend's graphToPrompt builds it.

    Frontend-only nodes (Note, MarkdownNote, Reroute, PrimitiveNode) are resolved (a
    Primitive's value goes into its targets); muted nodes (mode 2) are left out and bypassed
    ones (mode 4) pass their first input of the same type through. Every widget value is
    written (what the API file left out comes back as the default), ``_meta.title`` is the
    node's title (its display name when it has none).
    """
    nodes = {str(n["id"]): n for n in ui.get("nodes") or []}
    links = _link_rows(ui)
    api = {}
    for key in sorted(nodes, key=lambda s: (len(s), s)):
        node = nodes[key]
        class_type = node.get("type")
        if class_type in VIRTUAL_NODES or node.get("mode") in (2, 4):
            continue
        if class_type not in object_info:
            raise WorkflowFormatError(f"node {key}: unknown node type {class_type!r}")
        node_def = object_info[class_type]
        inputs = _api_inputs(node, node_def, nodes, links)
        title = node.get("title") or display_name(node_def, class_type)
        api[key] = {"inputs": inputs, "class_type": class_type, "_meta": {"title": title}}
    return api


def _link_rows(ui: Mapping) -> dict:
    """The link table by link id, as ``[id, from, from_slot, to, to_slot, type]`` rows (newer files use objects)."""
    links = {}
    for link in ui.get("links") or []:
        if isinstance(link, dict):
            link = [link["id"], link["origin_id"], link["origin_slot"], link["target_id"],
                    link["target_slot"], link.get("type")]
        links[link[0]] = link
    return links


def _resolve(link_id, want_type, nodes: Mapping[str, dict], links: Mapping, seen=()):
    """("link", [src, slot]) | ("value", v) | None, following frontend-only and bypassed nodes."""
    link = links.get(link_id)
    if link is None:
        raise WorkflowFormatError(f"link {link_id} is not in the link table")
    src = nodes.get(str(link[1]))
    if src is None:
        raise WorkflowFormatError(f"link {link_id} comes from missing node {link[1]}")
    if link_id in seen:
        raise WorkflowFormatError(f"link {link_id} loops through frontend-only nodes")
    seen = seen + (link_id,)
    if src["type"] == "Reroute":
        upstream = (src.get("inputs") or [{}])[0].get("link")
        return None if upstream is None else _resolve(upstream, want_type, nodes, links, seen)
    if src["type"] == "PrimitiveNode":
        return ("value", copy.deepcopy((src.get("widgets_values") or [None])[0]))
    if src.get("mode") == 2:
        return None
    if src.get("mode") == 4:
        for inp in src.get("inputs") or []:
            if inp.get("link") is not None and inp.get("type") == want_type:
                return _resolve(inp["link"], want_type, nodes, links, seen)
        return None
    return ("link", [str(src["id"]), int(link[2])])


def _api_inputs(node: dict, node_def: dict, nodes: Mapping[str, dict], links: Mapping) -> dict:
    """A node's API inputs in definition order: what its links resolve to, else its widget values."""
    widget_values = widget_values_by_name(node, node_def)
    ui_inputs = {i["name"]: i for i in node.get("inputs") or []}
    inputs = {}
    for name, spec, _group in ordered_inputs(node_def):
        slot = ui_inputs.get(name)
        if slot is not None and slot.get("link") is not None:
            resolved = _resolve(slot["link"], slot.get("type"), nodes, links)
            if resolved is not None:
                inputs[name] = resolved[1]
                continue
        if is_widget(spec) and name in widget_values:
            if spec_options(spec).get("forceInput"):
                continue  # a socket-only input without a link sends nothing
            inputs[name] = copy.deepcopy(widget_values[name])
    return inputs
