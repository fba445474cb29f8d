"""Structure of a UI workflow: ids, the link table against the nodes' slots, widget value counts.

Checked before :func:`ui_to_api`, which trusts the structure and would fail on a broken one
with a less helpful message.
"""
from __future__ import annotations

from typing import Mapping

from .errors import WorkflowFormatError
from .object_info import VIRTUAL_NODES
from .value_checks import types_match
from .widgets import widget_values_by_name


def check_ui_structure(ui: Mapping, object_info: Mapping) -> list[str]:
    nodes, problems = _index_nodes(ui, object_info)
    problems += _check_counters(ui, nodes)
    link_ids, link_problems = _check_links(ui, nodes)
    return problems + link_problems + _check_node_slots(nodes, link_ids, object_info)


def _index_nodes(ui: Mapping, object_info: Mapping) -> tuple[dict, list[str]]:
    """Nodes by id, with duplicate ids and unknown types reported."""
    problems = []
    nodes = {}
    for n in ui.get("nodes") or []:
        if n.get("id") in nodes:
            problems.append(f"UI node id {n.get('id')} appears twice")
        nodes[n.get("id")] = n
        if n.get("type") not in object_info and n.get("type") not in VIRTUAL_NODES:
            problems.append(f"UI node {n.get('id')}: unknown node type {n.get('type')!r}")
    return nodes, problems


def _check_counters(ui: Mapping, nodes: dict) -> list[str]:
    """``last_node_id``/``last_link_id``: the frontend numbers new nodes and links from them."""
    problems = []
    for key in ("last_node_id", "last_link_id"):
        if key not in ui:
            problems.append(f"UI workflow: no {key}")
    if nodes and isinstance(ui.get("last_node_id"), int) and ui["last_node_id"] < max(
            (i for i in nodes if isinstance(i, int)), default=0):
        problems.append("UI workflow: last_node_id is below the largest node id")
    return problems


def _check_links(ui: Mapping, nodes: dict) -> tuple[set, list[str]]:
    """Every link row against the slots at both of its ends; also the set of link ids."""
    problems = []
    link_ids = set()
    for link in ui.get("links") or []:
        if not isinstance(link, (list, tuple)) or len(link) != 6:
            problems.append(f"UI link {link!r}: not [id, from, from_slot, to, to_slot, type]")
            continue
        lid, a, a_slot, b, b_slot, ltype = link
        link_ids.add(lid)
        if isinstance(ui.get("last_link_id"), int) and lid > ui["last_link_id"]:
            problems.append(f"UI link {lid}: above last_link_id")
        src, dst = nodes.get(a), nodes.get(b)
        if src is None or dst is None:
            problems.append(f"UI link {lid}: from node {a} to node {b}, one of which does not exist")
            continue
        outs, ins = src.get("outputs") or [], dst.get("inputs") or []
        if not 0 <= a_slot < len(outs) or lid not in (outs[a_slot].get("links") or []):
            problems.append(f"UI link {lid}: node {a} has no output {a_slot} listing it")
        if not 0 <= b_slot < len(ins) or ins[b_slot].get("link") != lid:
            problems.append(f"UI link {lid}: node {b} has no input {b_slot} holding it")
        elif not types_match(ltype, ins[b_slot].get("type")):
            problems.append(f"UI link {lid}: type {ltype} into input {ins[b_slot].get('name')!r} "
                            f"({ins[b_slot].get('type')})")
    return link_ids, problems


def _check_node_slots(nodes: dict, link_ids: set, object_info: Mapping) -> list[str]:
    """The other direction: every link a slot names is in the table; widget values fit the definition."""
    problems = []
    for n in nodes.values():
        for i in n.get("inputs") or []:
            if i.get("link") is not None and i["link"] not in link_ids:
                problems.append(f"UI node {n.get('id')} input {i.get('name')!r}: link {i['link']} is not in the table")
        for o in n.get("outputs") or []:
            for lid in o.get("links") or []:
                if lid not in link_ids:
                    problems.append(f"UI node {n.get('id')} output {o.get('name')!r}: link {lid} is not in the table")
        node_def = object_info.get(n.get("type"))
        if node_def is not None and n.get("type") not in VIRTUAL_NODES:
            try:
                widget_values_by_name(n, node_def)
            except WorkflowFormatError as e:
                problems.append(str(e))
    return problems
