"""API prompt -> UI (LiteGraph 0.4) workflow: slots, link table, widget values, then the layout."""
from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any, Mapping

from .errors import WorkflowFormatError
from .graph import is_link, node_ids, topological
from .layout import estimate_size, place_nodes
from .object_info import display_name, is_widget, ordered_inputs, output_names, output_types, spec_options, spec_type
from .widgets import widget_default, widget_layout

# The values a loaded workflow needs in the non-input widgets: "fixed" so it reproduces the prompt.
_EXTRA_WIDGET_VALUES = {"control": "fixed", "filter": "", "upload": "image"}

OutLinks = dict[tuple[str, int], list[int]]


def api_to_ui(api: Mapping[str, Mapping], object_info: Mapping[str, Mapping]) -> dict:
    """The UI (LiteGraph 0.4) workflow for an API prompt; deterministic for a given input.

    Raises WorkflowFormatError for an unknown node type, a non-integer node id, a link to a
    missing node/output, or a cycle (run :func:`check_workflow` for the full list).
    """
    api = {str(k): v for k, v in api.items()}
    ids = node_ids(api)
    for key, node in api.items():
        if node.get("class_type") not in object_info:
            raise WorkflowFormatError(f"node {key}: unknown node type {node.get('class_type')!r}")
    order = topological(api, ids)
    links, node_inputs, out_links = _link_table(api, ids, object_info)
    nodes = {key: _ui_node(key, api[key], object_info[api[key]["class_type"]], ids[key], position,
                           node_inputs[key], out_links)
             for position, key in enumerate(order)}
    place_nodes(api, order, nodes)
    return {
        "last_node_id": max(ids.values(), default=0),
        "last_link_id": len(links),
        "nodes": [nodes[k] for k in sorted(nodes, key=lambda s: ids[s])],
        "links": links,
        "groups": [],
        "config": {},
        "extra": {},
        "version": 0.4,
    }


def _input_slots(node: Mapping, node_def: dict) -> list[dict]:
    """The node's ``inputs``: sockets, then linked or forceInput widgets as converted widgets.

    An entry's ``link`` is still the API link here; :func:`_link_table` numbers it.
    """
    values = node.get("inputs") or {}
    sockets, converted = [], []
    for name, spec, _group in ordered_inputs(node_def):
        value = values.get(name)
        link = value if is_link(value) else None
        if not is_widget(spec):
            sockets.append({"name": name, "type": spec_type(spec), "link": link})
        elif link is not None or spec_options(spec).get("forceInput"):
            converted.append({"name": name, "type": spec_type(spec), "link": link, "widget": {"name": name}})
    return sockets + converted


def _link_table(api: Mapping, ids: Mapping[str, int], object_info: Mapping) -> tuple[list, dict, OutLinks]:
    """Links numbered in target order (node id, then input slot), with each node's input slots."""
    links = []  # [link_id, from, from_slot, to, to_slot, type]
    node_inputs: dict[str, list[dict]] = {}
    out_links: OutLinks = defaultdict(list)
    for key in sorted(api, key=lambda s: ids[s]):
        entries = _input_slots(api[key], object_info[api[key]["class_type"]])
        for slot, entry in enumerate(entries):
            if entry["link"] is None:
                continue
            link_type = _link_type(api, object_info, key, entry)
            src, src_slot = entry["link"]
            link_id = len(links) + 1
            links.append([link_id, ids[src], src_slot, ids[key], slot, link_type])
            out_links[(src, src_slot)].append(link_id)
            entry["link"] = link_id
        node_inputs[key] = entries
    return links, node_inputs, out_links


def _link_type(api: Mapping, object_info: Mapping, key: str, entry: dict) -> str:
    """The source output's type (the input's own for a ``*`` output); raises for a dangling link."""
    src, src_slot = entry["link"]
    if src not in api:
        raise WorkflowFormatError(f"node {key} input {entry['name']!r}: links to missing node {src}")
    src_types = output_types(object_info[api[src]["class_type"]])
    if not 0 <= src_slot < len(src_types):
        raise WorkflowFormatError(f"node {key} input {entry['name']!r}: node {src} has no output {src_slot}")
    link_type = src_types[src_slot]
    return entry["type"] if link_type == "*" else link_type


def _widgets(node_def: dict, values: Mapping) -> tuple[list, list[tuple[str, str, Any]]]:
    """``widgets_values``, and (name, kind, value) per widget as :func:`estimate_size` sizes them.

    Linked and left-out inputs get their default, as the frontend shows them.
    """
    specs = {name: spec for name, spec, _g in ordered_inputs(node_def)}
    widgets_values, drawn = [], []
    for name, kind in widget_layout(node_def):
        if kind == "value":
            value = values.get(name)
            if value is None or is_link(value):
                value = widget_default(specs[name])
            multiline = spec_type(specs[name]) == "STRING" and spec_options(specs[name]).get("multiline")
            drawn.append((name, "multiline" if multiline else kind, value))
            widgets_values.append(copy.deepcopy(value))
        else:
            value = _EXTRA_WIDGET_VALUES[kind]
            drawn.append((name if kind == "upload" else "control_after_generate", kind, value))
            widgets_values.append(value)
    return widgets_values, drawn


def _outputs(node_def: dict, key: str, out_links: OutLinks) -> list[dict]:
    is_list = list(node_def.get("output_is_list") or [])
    outputs = []
    for i, (oname, otype) in enumerate(zip(output_names(node_def), output_types(node_def))):
        entry = {"name": oname, "type": otype, "links": out_links.get((key, i), []), "slot_index": i}
        if i < len(is_list) and is_list[i]:
            entry["shape"] = 6  # LiteGraph.GRID_SHAPE
        outputs.append(entry)
    return outputs


def _ui_node(key: str, node: Mapping, node_def: dict, node_id: int, position: int, inputs: list[dict],
             out_links: OutLinks) -> dict:
    """One LiteGraph node, at the origin until :func:`place_nodes` moves it; keys in the frontend's order."""
    class_type = node["class_type"]
    widgets_values, drawn = _widgets(node_def, node.get("inputs") or {})
    linked = {e["name"] for e in inputs if "widget" in e}
    display = display_name(node_def, class_type)
    title = (node.get("_meta") or {}).get("title") or display
    ui_node = {
        "id": node_id, "type": class_type, "pos": [0.0, 0.0],
        "size": estimate_size(node_def, title, inputs, drawn, linked),
        "flags": {}, "order": position, "mode": 0,
        "inputs": inputs, "outputs": _outputs(node_def, key, out_links),
    }
    if title != display:
        ui_node["title"] = title
    ui_node["properties"] = {"Node name for S&R": class_type}
    ui_node["widgets_values"] = widgets_values
    return ui_node
