"""Node sizes and positions for a UI workflow made from an API prompt, which has neither."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Mapping

from .graph import link_sources, users_of
from .object_info import output_names

# Layout constants (LiteGraph units; the frontends grow a node to its computed size on load,
# so the estimates are generous to keep the auto-layout free of overlaps).
TITLE_HEIGHT = 30
SLOT_HEIGHT = 20
WIDGET_HEIGHT = 24
COLUMN_GAP = 80
ROW_GAP = 50
ORIGIN = (50.0, 80.0)


def _text_width(text) -> float:
    return 8.4 * len(str(text))  # LiteGraph's compute_text_size: 0.6 x the 14 px font


def estimate_size(node_def: dict, title: str, entries: list[dict], widgets: list[tuple[str, str, Any]],
                  linked: set[str]) -> list[float]:
    """A node size at least as large as what either frontend computes for it on load.

    The 2024 frontend gives a row to every listed input (converted widgets included) and
    hides linked widgets; the new one gives rows only to non-widget sockets and still draws
    linked widgets (greyed). Both add 20 per slot row and about 24 per widget.
    """
    out_names = output_names(node_def)
    n_widget_inputs = sum(1 for e in entries if "widget" in e)
    rows_old = max(len(entries), len(out_names), 1)
    rows_new = max(len(entries) - n_widget_inputs, len(out_names), 1)
    width = max(_text_width(title) * 1.15 + 50.0, 220.0 if widgets else 160.0)
    width = max(width, _text_width(max((e["name"] for e in entries), key=len, default="")) +
                _text_width(max(out_names, key=len, default="")) + 60.0)
    extra_height = 0.0
    visible = hidden = 0
    for name, kind, value in widgets:
        if kind == "multiline":
            width = max(width, 400.0)
            extra_height += 150.0
        shown = "" if isinstance(value, (dict, list)) else value
        width = max(width, _text_width(name) + min(_text_width(shown), 420.0) + 90.0)
        if name in linked and kind != "upload":
            hidden += 1
        else:
            visible += 1
    height_old = rows_old * SLOT_HEIGHT + visible * WIDGET_HEIGHT + extra_height
    height_new = rows_new * SLOT_HEIGHT + (visible + hidden) * WIDGET_HEIGHT + extra_height
    height = max(height_old, height_new) + 30.0
    if any(kind == "upload" for _n, kind, _v in widgets):
        height += 150.0  # room for the image preview (the 2024 frontend draws one under the upload button)
    return [float(math.ceil(width)), float(math.ceil(height))]


def _columns(deps: Mapping[str, list[str]], order: list[str]) -> dict[int, list[str]]:
    """Columns by dependency depth, sources pulled right to just left of their first user (ALAP)."""
    users = users_of(deps)
    depth = {}
    for k in order:
        depth[k] = 1 + max((depth[d] for d in deps[k]), default=-1)
    for k in reversed(order):  # keeping the order valid: a node stays left of all its users
        if users[k]:
            depth[k] = min(depth[u] for u in users[k]) - 1
    columns = defaultdict(list)
    for k in order:
        columns[depth[k]].append(k)
    return columns


def _barycenter(sources: list[str], centre_y: Mapping[str, float]) -> float:
    """Mean height of a node's placed sources, so links run as level as a one-pass layout allows."""
    ys = [centre_y[d] for d in sources if d in centre_y]
    return (sum(ys) / len(ys)) if ys else float("inf")


def place_nodes(api: Mapping, order: list[str], nodes: dict[str, dict]) -> None:
    """Set every node's ``pos``: columns left to right, each stacked top-down by barycenter."""
    deps = {k: link_sources(api[k]) for k in api}
    columns = _columns(deps, order)
    x = ORIGIN[0]
    centre_y: dict[str, float] = {}
    for col in sorted(columns):
        members = columns[col]
        members.sort(key=lambda k: (_barycenter(deps[k], centre_y), order.index(k)))
        y = ORIGIN[1]
        for k in members:
            n = nodes[k]
            n["pos"] = [float(x), float(y)]
            centre_y[k] = y + n["size"][1] / 2
            y += n["size"][1] + TITLE_HEIGHT + ROW_GAP
        x += max(nodes[k]["size"][0] for k in members) + COLUMN_GAP
