"""ComfyUI workflow formats: API prompt <-> UI (LiteGraph) workflow, and a static checker.

ComfyUI knows a graph in two forms:

* the **API prompt** that ``POST /prompt`` takes: ``{"<id>": {"class_type": ..., "inputs":
  {...}, "_meta": {"title": ...}}}``, a link being ``["<source id>", <output index>]``;
* the **UI workflow** that the web frontend loads and saves (LiteGraph's serialised graph,
  version 0.4): nodes with positions, sizes, slot lists and ``widgets_values``, plus a
  link table ``[link_id, from_node, from_slot, to_node, to_slot, type]``.

``api_to_ui`` derives the UI form from the API form with the node definitions of a server
(``object_info``: the JSON of ``GET /object_info``, or :func:`object_info_from_classes`
in-process), ``ui_to_api`` goes back, and ``check_workflow`` lists what would stop either
form from loading or running.

The UI form written here is the "legacy widget input" layout that both the 2024 LiteGraph
frontend and the current Vue frontend (comfyui-frontend-package 1.x) load:

* ``widgets_values`` holds one value per widget in input order (required, then optional),
  including widgets whose input is linked; INT inputs named ``seed``/``noise_seed`` (or
  with ``control_after_generate``) are followed by their "control after generate" value
  (``"fixed"`` here, so a loaded workflow reproduces the API prompt), a COMBO with
  ``control_after_generate`` by that value and an empty filter string, and an image-upload
  combo (``image_upload``) adds the upload button's value ``"image"`` after the last
  required input;
* ``inputs`` lists the connection sockets (non-widget types, in input order) followed by
  the widget inputs that are linked (``"widget": {"name": ...}``, a "converted widget");
  unlinked widget inputs are *not* listed (the 2024 frontend would hide the widget of any
  listed one and then drop its value from the prompt). ``forceInput`` widget inputs are
  always listed (the 2024 frontend keeps a hidden widget for them; the new frontend drops
  their value when it counts one extra);
* link ``to_slot`` indexes that ``inputs`` list (the new frontend re-indexes on load).
"""
from __future__ import annotations

import copy
import json
import math
from collections import defaultdict
from typing import Any, Mapping

__all__ = [
    "api_to_ui", "ui_to_api", "check_workflow", "canonical_api", "object_info_from_classes",
    "widget_layout", "is_link", "WorkflowFormatError",
]


class WorkflowFormatError(ValueError):
    """The workflow cannot be converted (unknown node type, malformed links, ...)."""


# Types the frontends draw a widget for (everything else is a connection socket). The 2024
# frontend knows INT, FLOAT, BOOLEAN, STRING, combos (a list of choices) and IMAGEUPLOAD; the
# new one adds the rest, which only newer servers declare.
WIDGET_TYPES = frozenset({
    "INT", "FLOAT", "BOOLEAN", "STRING", "COMBO", "IMAGEUPLOAD",
    "MARKDOWN", "FILEUPLOAD", "COLOR", "IMAGECOMPARE", "TREESELECT", "MULTISELECT", "CHART",
    "GALLERIA", "SELECTBUTTON", "TEXTAREA",
})
SEED_NAMES = ("seed", "noise_seed")
UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload")
# Frontend-only nodes: never in /object_info, never in an API prompt.
VIRTUAL_NODES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})

# Layout constants (LiteGraph units; the frontends grow a node to its computed size on load,
# so the estimates are generous to keep the auto-layout free of overlaps).
TITLE_HEIGHT = 30
SLOT_HEIGHT = 20
WIDGET_HEIGHT = 24
COLUMN_GAP = 80
ROW_GAP = 50
ORIGIN = (50.0, 80.0)


# --------------------------------------------------------------------------------------
# node definitions
# --------------------------------------------------------------------------------------
def object_info_from_classes(mappings: Mapping[str, type],
                             display_names: Mapping[str, str] | None = None) -> dict:
    """``/object_info`` built in-process from ``NODE_CLASS_MAPPINGS`` (as ComfyUI's server.node_info).

    ``display_names`` defaults to ComfyUI's ``nodes.NODE_DISPLAY_NAME_MAPPINGS`` when ComfyUI
    is imported. The result is passed through JSON, like the server's answer (tuples become
    lists), so it compares equal to what a server returns.
    """
    if display_names is None:
        import sys

        comfy_nodes = sys.modules.get("nodes")
        display_names = getattr(comfy_nodes, "NODE_DISPLAY_NAME_MAPPINGS", None) or {}
    out = {}
    for name, cls in mappings.items():
        if hasattr(cls, "GET_NODE_INFO_V1"):  # ComfyUI's V3 node API (newer servers)
            info = cls.GET_NODE_INFO_V1()
        else:
            inputs = cls.INPUT_TYPES()
            info = {
                "input": inputs,
                "input_order": {key: list(value.keys()) for key, value in inputs.items()},
                "output": cls.RETURN_TYPES,
                "output_is_list": getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES)),
                "output_name": getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES),
                "name": name,
                "display_name": display_names.get(name, name),
                "description": getattr(cls, "DESCRIPTION", ""),
                "python_module": getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"),
                "category": getattr(cls, "CATEGORY", "sd"),
                "output_node": getattr(cls, "OUTPUT_NODE", False) is True,
            }
            if hasattr(cls, "OUTPUT_TOOLTIPS"):
                info["output_tooltips"] = cls.OUTPUT_TOOLTIPS
            if getattr(cls, "DEPRECATED", False):
                info["deprecated"] = True
            if getattr(cls, "EXPERIMENTAL", False):
                info["experimental"] = True
        out[name] = json.loads(json.dumps(info, default=str))
    return out


def _spec_type(spec) -> str:
    """The socket type of an input spec: a choice list is a COMBO."""
    t = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
    if isinstance(t, (list, tuple)):
        return "COMBO"
    return str(t)


def _spec_options(spec) -> dict:
    if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict):
        return spec[1]
    return {}


def _combo_choices(spec) -> list | None:
    t = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
    if isinstance(t, (list, tuple)):
        return list(t)
    if t == "COMBO":  # V3 style: ["COMBO", {"options": [...]}]
        options = _spec_options(spec).get("options")
        return list(options) if isinstance(options, (list, tuple)) else None
    return None


def _is_widget(spec) -> bool:
    return _spec_type(spec) in WIDGET_TYPES


def _ordered_inputs(node_def: dict) -> list[tuple[str, Any, str]]:
    """(name, spec, "required" | "optional") in the order the frontends build inputs."""
    inputs = node_def.get("input") or {}
    order = node_def.get("input_order") or {}
    out = []
    for group in ("required", "optional"):
        specs = inputs.get(group) or {}
        names = [n for n in order.get(group, []) if n in specs]
        names += [n for n in specs if n not in names]
        out += [(n, specs[n], group) for n in names]
    return out


def _upload_input(node_def: dict) -> str | None:
    """The combo that gets an upload button (2024: ``image`` + image_upload; new: any media flag)."""
    required = (node_def.get("input") or {}).get("required") or {}
    for name, spec in required.items():
        opts = _spec_options(spec)
        if _combo_choices(spec) is not None and any(opts.get(f) is True for f in UPLOAD_FLAGS):
            return name
    return None


def widget_layout(node_def: dict, *, new_frontend: bool = False) -> list[tuple[str, str]]:
    """The node's widgets in ``widgets_values`` order, as ``(input name, kind)``.

    kind: ``value`` (the input's own widget), ``control`` (control_after_generate),
    ``filter`` (a combo control's filter list) or ``upload`` (the upload button, a widget
    named ``upload``; the 2024 frontend also sends its value ``"image"`` in prompts).
    ``new_frontend`` gives the layout the Vue frontend builds itself (no widget for
    ``forceInput`` inputs); files written here use the 2024 layout, which it migrates.
    """
    layout: list[tuple[str, str]] = []
    upload = _upload_input(node_def)
    entries = _ordered_inputs(node_def)
    last_required = max((i for i, e in enumerate(entries) if e[2] == "required"), default=-1)
    for i, (name, spec, _group) in enumerate(entries):
        if _is_widget(spec) and not (new_frontend and _spec_options(spec).get("forceInput")):
            kind = _spec_type(spec)
            opts = _spec_options(spec)
            layout.append((name, "value"))
            if kind == "INT" and (opts.get("control_after_generate") or name in SEED_NAMES):
                layout.append((name, "control"))
            elif kind == "COMBO" and opts.get("control_after_generate"):
                layout += [(name, "control"), (name, "filter")]
        if i == last_required and upload is not None:
            layout.append(("upload", "upload"))
    return layout


def _widget_default(spec):
    opts = _spec_options(spec)
    kind = _spec_type(spec)
    if "default" in opts:
        return opts["default"]
    if kind == "COMBO":
        choices = _combo_choices(spec) or []
        return choices[0] if choices else None
    return {"INT": 0, "FLOAT": 0.0, "BOOLEAN": False, "STRING": ""}.get(kind)


def _output_types(node_def: dict) -> list[str]:
    return [("COMBO" if isinstance(t, (list, tuple)) else str(t)) for t in node_def.get("output") or []]


def _output_names(node_def: dict) -> list[str]:
    types = _output_types(node_def)
    names = list(node_def.get("output_name") or [])
    return [(names[i] if i < len(names) and names[i] else types[i]) for i in range(len(types))]


def is_link(value) -> bool:
    """An API input value that is a link ``["<node id>", <output index>]`` (as ComfyUI's executor)."""
    return (isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def _display_name(node_def: dict, class_type: str) -> str:
    return node_def.get("display_name") or node_def.get("name") or class_type


# --------------------------------------------------------------------------------------
# API -> UI
# --------------------------------------------------------------------------------------
def _node_ids(api: Mapping) -> dict[str, int]:
    ids = {}
    for key in api:
        try:
            number = int(str(key))
        except ValueError:
            number = -1
        if number < 1 or str(number) != str(key):
            raise WorkflowFormatError(f"node id {key!r}: UI workflows need positive integer node ids "
                                      f"(as the frontend writes); renumber the API prompt")
        ids[str(key)] = number
    return ids


def _topological(api: Mapping, ids: Mapping[str, int]) -> list[str]:
    """Node ids in execution order (Kahn, ties by numeric id); raises on a cycle."""
    deps = {k: sorted({v[0] for v in (api[k].get("inputs") or {}).values() if is_link(v) and v[0] in api},
                      key=lambda s: ids[s]) for k in api}
    users = defaultdict(list)
    for k, ds in deps.items():
        for d in ds:
            users[d].append(k)
    remaining = {k: len(ds) for k, ds in deps.items()}
    ready = sorted([k for k, n in remaining.items() if n == 0], key=lambda s: ids[s])
    out = []
    while ready:
        k = ready.pop(0)
        out.append(k)
        for u in users[k]:
            remaining[u] -= 1
            if remaining[u] == 0:
                ready.append(u)
        ready.sort(key=lambda s: ids[s])
    if len(out) != len(api):
        cyclic = sorted(set(api) - set(out), key=lambda s: ids[s])
        raise WorkflowFormatError(f"the graph has a cycle through nodes {cyclic}")
    return out


def _text_width(text) -> float:
    return 8.4 * len(str(text))  # LiteGraph's compute_text_size: 0.6 x the 14 px font


def _estimate_size(node_def: dict, title: str, entries: list[dict], widgets: list[tuple[str, str, Any]],
                   linked: set[str]) -> list[float]:
    """A node size at least as large as what either frontend computes for it on load.

    The 2024 frontend gives a row to every listed input (converted widgets included) and
    hides linked widgets; the new one gives rows only to non-widget sockets and still draws
    linked widgets (greyed). Both add 20 per slot row and about 24 per widget.
    """
    out_names = _output_names(node_def)
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
        height += 60.0  # room for the image preview
    return [float(math.ceil(width)), float(math.ceil(height))]


def api_to_ui(api: Mapping[str, Mapping], object_info: Mapping[str, Mapping]) -> dict:
    """The UI (LiteGraph 0.4) workflow for an API prompt; deterministic for a given input.

    Raises WorkflowFormatError for an unknown node type, a non-integer node id, a link to a
    missing node/output, or a cycle (run :func:`check_workflow` for the full list).
    """
    api = {str(k): v for k, v in api.items()}
    ids = _node_ids(api)
    for key, node in api.items():
        if node.get("class_type") not in object_info:
            raise WorkflowFormatError(f"node {key}: unknown node type {node.get('class_type')!r}")
    order = _topological(api, ids)

    # links, in target order (node id, then input order)
    links = []  # [link_id, from, from_slot, to, to_slot, type]
    node_inputs: dict[str, list[dict]] = {}
    out_links: dict[tuple[str, int], list[int]] = defaultdict(list)
    for key in sorted(api, key=lambda s: ids[s]):
        node = api[key]
        node_def = object_info[node["class_type"]]
        values = node.get("inputs") or {}
        sockets, converted = [], []
        for name, spec, _group in _ordered_inputs(node_def):
            value = values.get(name)
            widget = _is_widget(spec)
            forced = widget and bool(_spec_options(spec).get("forceInput"))
            if not widget:
                sockets.append({"name": name, "type": _spec_type(spec), "link": value if is_link(value) else None})
            elif is_link(value) or forced:
                converted.append({"name": name, "type": _spec_type(spec),
                                  "link": value if is_link(value) else None, "widget": {"name": name}})
        entries = sockets + converted
        for slot, entry in enumerate(entries):
            value = entry["link"]
            if value is None:
                continue
            src, src_slot = value
            if src not in api:
                raise WorkflowFormatError(f"node {key} input {entry['name']!r}: links to missing node {src}")
            src_types = _output_types(object_info[api[src]["class_type"]])
            if not 0 <= src_slot < len(src_types):
                raise WorkflowFormatError(f"node {key} input {entry['name']!r}: node {src} has no output {src_slot}")
            link_type = src_types[src_slot]
            if link_type == "*":
                link_type = entry["type"]
            link_id = len(links) + 1
            links.append([link_id, ids[src], src_slot, ids[key], slot, link_type])
            out_links[(src, src_slot)].append(link_id)
            entry["link"] = link_id
        node_inputs[key] = entries

    # nodes
    nodes = {}
    for position, key in enumerate(order):
        node = api[key]
        class_type = node["class_type"]
        node_def = object_info[class_type]
        values = node.get("inputs") or {}
        specs = {name: spec for name, spec, _g in _ordered_inputs(node_def)}
        widgets_values, drawn = [], []
        linked = {e["name"] for e in node_inputs[key] if "widget" in e}
        for name, kind in widget_layout(node_def):
            if kind == "value":
                value = values.get(name)
                if value is None or is_link(value):
                    value = _widget_default(specs[name])
                multiline = _spec_type(specs[name]) == "STRING" and _spec_options(specs[name]).get("multiline")
                drawn.append((name, "multiline" if multiline else kind, value))
                widgets_values.append(copy.deepcopy(value))
            else:
                value = {"control": "fixed", "filter": "", "upload": "image"}[kind]
                drawn.append((name if kind == "upload" else "control_after_generate", kind, value))
                widgets_values.append(value)
        types = _output_types(node_def)
        names = _output_names(node_def)
        is_list = list(node_def.get("output_is_list") or [])
        outputs = []
        for i, (oname, otype) in enumerate(zip(names, types)):
            entry = {"name": oname, "type": otype, "links": out_links.get((key, i), []), "slot_index": i}
            if i < len(is_list) and is_list[i]:
                entry["shape"] = 6  # LiteGraph.GRID_SHAPE
            outputs.append(entry)
        display = _display_name(node_def, class_type)
        title = (node.get("_meta") or {}).get("title") or display
        ui_node = {
            "id": ids[key], "type": class_type, "pos": [0.0, 0.0],
            "size": _estimate_size(node_def, title, node_inputs[key], drawn, linked),
            "flags": {}, "order": position, "mode": 0,
            "inputs": node_inputs[key], "outputs": outputs,
        }
        if title != display:
            ui_node["title"] = title
        ui_node["properties"] = {"Node name for S&R": class_type}
        ui_node["widgets_values"] = widgets_values
        nodes[key] = ui_node

    _layout(api, ids, order, nodes)
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


def _layout(api, ids, order, nodes) -> None:
    """Columns by dependency depth (sources just left of their first user), rows by barycenter."""
    deps = {k: [v[0] for v in (api[k].get("inputs") or {}).values() if is_link(v)] for k in api}
    users = defaultdict(list)
    for k, ds in deps.items():
        for d in ds:
            users[d].append(k)
    depth = {}
    for k in order:
        depth[k] = 1 + max((depth[d] for d in deps[k]), default=-1)
    for k in reversed(order):  # pull nodes right, next to their users (ALAP), keeping order valid
        if users[k]:
            depth[k] = min(depth[u] for u in users[k]) - 1
    columns = defaultdict(list)
    for k in order:
        columns[depth[k]].append(k)
    x = ORIGIN[0]
    centre_y: dict[str, float] = {}
    for col in sorted(columns):
        members = columns[col]

        def barycenter(k):
            ys = [centre_y[d] for d in deps[k] if d in centre_y]
            return (sum(ys) / len(ys)) if ys else float("inf")

        members.sort(key=lambda k: (barycenter(k), order.index(k)))
        y = ORIGIN[1]
        for k in members:
            n = nodes[k]
            n["pos"] = [float(x), float(y)]
            centre_y[k] = y + n["size"][1] / 2
            y += n["size"][1] + TITLE_HEIGHT + ROW_GAP
        x += max(nodes[k]["size"][0] for k in members) + COLUMN_GAP


# --------------------------------------------------------------------------------------
# UI -> API
# --------------------------------------------------------------------------------------
def _widget_values_by_name(node: dict, node_def: dict) -> dict:
    values = node.get("widgets_values")
    if values is None:
        values = []
    if isinstance(values, dict):
        return dict(values)
    for new_frontend in (False, True):
        layout = widget_layout(node_def, new_frontend=new_frontend)
        if len(layout) == len(values):
            return {name: v for (name, kind), v in zip(layout, values) if kind == "value"}
    expected = len(widget_layout(node_def))
    raise WorkflowFormatError(f"node {node.get('id')} ({node.get('type')}): widgets_values has {len(values)} "
                              f"values, the node definition needs {expected}")


def ui_to_api(ui: Mapping, object_info: Mapping[str, Mapping]) -> dict:
    """The API prompt of a UI workflow, as the frontend's graphToPrompt builds it.

    Frontend-only nodes (Note, MarkdownNote, Reroute, PrimitiveNode) are resolved (a
    Primitive's value goes into its targets); muted nodes (mode 2) are left out and bypassed
    ones (mode 4) pass their first input of the same type through. Every widget value is
    written (what the API file left out comes back as the default), ``_meta.title`` is the
    node's title (its display name when it has none).
    """
    nodes = {str(n["id"]): n for n in ui.get("nodes") or []}
    links = {}
    for link in ui.get("links") or []:
        if isinstance(link, dict):
            link = [link["id"], link["origin_id"], link["origin_slot"], link["target_id"],
                    link["target_slot"], link.get("type")]
        links[link[0]] = link

    def resolve(link_id, want_type, seen=()):
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
            return None if upstream is None else resolve(upstream, want_type, seen)
        if src["type"] == "PrimitiveNode":
            return ("value", copy.deepcopy((src.get("widgets_values") or [None])[0]))
        if src.get("mode") == 2:
            return None
        if src.get("mode") == 4:
            for inp in src.get("inputs") or []:
                if inp.get("link") is not None and inp.get("type") == want_type:
                    return resolve(inp["link"], want_type, seen)
            return None
        return ("link", [str(src["id"]), int(link[2])])

    api = {}
    for key in sorted(nodes, key=lambda s: (len(s), s)):
        node = nodes[key]
        class_type = node.get("type")
        if class_type in VIRTUAL_NODES or node.get("mode") in (2, 4):
            continue
        if class_type not in object_info:
            raise WorkflowFormatError(f"node {key}: unknown node type {class_type!r}")
        node_def = object_info[class_type]
        widget_values = _widget_values_by_name(node, node_def)
        ui_inputs = {i["name"]: i for i in node.get("inputs") or []}
        inputs = {}
        for name, spec, _group in _ordered_inputs(node_def):
            slot = ui_inputs.get(name)
            if slot is not None and slot.get("link") is not None:
                resolved = resolve(slot["link"], slot.get("type"))
                if resolved is not None:
                    inputs[name] = resolved[1]
                    continue
            if _is_widget(spec) and name in widget_values:
                if _spec_options(spec).get("forceInput"):
                    continue  # a socket-only input without a link sends nothing
                inputs[name] = copy.deepcopy(widget_values[name])
        title = node.get("title") or _display_name(node_def, class_type)
        api[key] = {"inputs": inputs, "class_type": class_type, "_meta": {"title": title}}
    return api


def canonical_api(api: Mapping[str, Mapping], object_info: Mapping[str, Mapping]) -> dict:
    """An API prompt in the form :func:`ui_to_api` returns, for comparing graphs.

    Keys become strings, inputs follow the definition order, a widget input the prompt left
    out gets its default (the frontend always sends every widget), and ``_meta.title``
    defaults to the node's display name. Unknown node types are copied as they are.
    """
    out = {}
    for key, node in api.items():
        class_type = node.get("class_type")
        node_def = object_info.get(class_type)
        given = node.get("inputs") or {}
        if node_def is None:
            out[str(key)] = {"inputs": dict(given), "class_type": class_type,
                             "_meta": {"title": (node.get("_meta") or {}).get("title") or class_type}}
            continue
        inputs = {}
        for name, spec, _group in _ordered_inputs(node_def):
            if name in given:
                value = given[name]
                inputs[name] = [str(value[0]), int(value[1])] if is_link(value) else copy.deepcopy(value)
            elif _is_widget(spec) and not _spec_options(spec).get("forceInput"):
                inputs[name] = _widget_default(spec)
        for name, value in given.items():  # inputs the definition lacks stay visible to a diff
            inputs.setdefault(name, copy.deepcopy(value))
        title = (node.get("_meta") or {}).get("title") or _display_name(node_def, class_type)
        out[str(key)] = {"inputs": inputs, "class_type": class_type, "_meta": {"title": title}}
    return out


# --------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------
JS_SAFE_INTEGER = 2 ** 53 - 1
FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".onnx", ".task", ".gguf", ".npy", ".npz",
                 ".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".json", ".yaml")


def types_match(output_type: str, input_type: str) -> bool:
    """LiteGraph/ComfyUI type compatibility: equal, ``*``, or overlapping ``A,B`` unions."""
    if not output_type or not input_type or output_type == "*" or input_type == "*":
        return True
    a = {t.strip().upper() for t in str(output_type).split(",")}
    b = {t.strip().upper() for t in str(input_type).split(",")}
    return bool(a & b) or "*" in a or "*" in b


def _looks_like_file(value, spec) -> bool:
    if any(_spec_options(spec).get(f) for f in UPLOAD_FLAGS):
        return True
    return isinstance(value, str) and ("/" in value or value.lower().endswith(FILE_SUFFIXES))


def _check_value(where: str, name: str, value, spec, missing_files_ok: bool) -> list[str]:
    kind = _spec_type(spec)
    opts = _spec_options(spec)
    choices = _combo_choices(spec)
    if choices is not None:
        if value in choices:
            return []
        if missing_files_ok and _looks_like_file(value, spec):
            return []
        shown = ", ".join(repr(c) for c in choices[:8]) + (", ..." if len(choices) > 8 else "")
        return [f"{where}: input {name!r} = {value!r} is not one of the choices [{shown}]"]
    if kind == "INT":
        if isinstance(value, bool) or not isinstance(value, int):
            return [f"{where}: input {name!r} = {value!r} is not an INT"]
    elif kind == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return [f"{where}: input {name!r} = {value!r} is not a FLOAT"]
    elif kind == "BOOLEAN":
        return [] if isinstance(value, bool) else [f"{where}: input {name!r} = {value!r} is not a BOOLEAN"]
    elif kind == "STRING":
        return [] if isinstance(value, str) else [f"{where}: input {name!r} = {value!r} is not a STRING"]
    else:
        return []
    problems = []
    if kind == "INT" and abs(value) > JS_SAFE_INTEGER:
        problems.append(f"{where}: input {name!r} = {value!r} is beyond 2**53; the web frontend (JavaScript "
                        f"numbers) would change it when it loads the workflow")
    if opts.get("min") is not None and value < opts["min"]:
        problems.append(f"{where}: input {name!r} = {value!r} is below its minimum {opts['min']}")
    if opts.get("max") is not None and value > opts["max"]:
        problems.append(f"{where}: input {name!r} = {value!r} is above its maximum {opts['max']}")
    return problems


def _check_api(api: Mapping, object_info: Mapping, missing_files_ok: bool) -> list[str]:
    problems = []
    for key, node in api.items():
        class_type = node.get("class_type") if isinstance(node, Mapping) else None
        where = f"node {key} ({class_type})"
        if not class_type:
            problems.append(f"node {key}: no class_type")
            continue
        node_def = object_info.get(class_type)
        if node_def is None:
            problems.append(f"{where}: unknown node type {class_type!r}")
            continue
        given = node.get("inputs") or {}
        specs = {name: (spec, group) for name, spec, group in _ordered_inputs(node_def)}
        hidden = (node_def.get("input") or {}).get("hidden") or {}
        for name, (_spec, group) in specs.items():
            if group == "required" and name not in given:
                problems.append(f"{where}: required input {name!r} is missing")
        for name, value in given.items():
            if name not in specs:
                if name not in hidden:
                    problems.append(f"{where}: unknown input {name!r}")
                continue
            spec, _group = specs[name]
            in_type = _spec_type(spec)
            if is_link(value):
                src_key, slot = value
                src = api.get(src_key)
                if src is None:
                    problems.append(f"{where}: input {name!r} links to missing node {src_key}")
                    continue
                src_def = object_info.get(src.get("class_type"))
                if src_def is None:
                    continue  # reported on its own
                out_types = _output_types(src_def)
                if not 0 <= slot < len(out_types):
                    problems.append(f"{where}: input {name!r} links to output {slot} of node {src_key} "
                                    f"({src.get('class_type')}), which has {len(out_types)} outputs")
                    continue
                if not types_match(out_types[slot], in_type):
                    problems.append(f"{where}: input {name!r} ({in_type}) is linked to output {slot} "
                                    f"({out_types[slot]}) of node {src_key} ({src.get('class_type')})")
            elif isinstance(value, (list, tuple)) and len(value) == 2 and not _is_widget(spec):
                problems.append(f"{where}: input {name!r} has a malformed link {value!r}")
            elif not _is_widget(spec):
                problems.append(f"{where}: input {name!r} ({in_type}) needs a link, got the value {value!r}")
            else:
                problems += _check_value(where, name, value, spec, missing_files_ok)
    if not problems:
        try:
            _topological({str(k): v for k, v in api.items()}, {str(k): i for i, k in enumerate(api)})
        except WorkflowFormatError as e:
            problems.append(str(e))
    return problems


def _check_ui_structure(ui: Mapping, object_info: Mapping) -> list[str]:
    problems = []
    nodes = {}
    for n in ui.get("nodes") or []:
        if n.get("id") in nodes:
            problems.append(f"UI node id {n.get('id')} appears twice")
        nodes[n.get("id")] = n
        if n.get("type") not in object_info and n.get("type") not in VIRTUAL_NODES:
            problems.append(f"UI node {n.get('id')}: unknown node type {n.get('type')!r}")
    for key in ("last_node_id", "last_link_id"):
        if key not in ui:
            problems.append(f"UI workflow: no {key}")
    if nodes and isinstance(ui.get("last_node_id"), int) and ui["last_node_id"] < max(
            (i for i in nodes if isinstance(i, int)), default=0):
        problems.append("UI workflow: last_node_id is below the largest node id")
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
                _widget_values_by_name(n, node_def)
            except WorkflowFormatError as e:
                problems.append(str(e))
    return problems


def check_workflow(workflow: Mapping, object_info: Mapping[str, Mapping], *,
                   missing_files_ok: bool = False) -> list[str]:
    """Problems that stop a workflow (API prompt or UI workflow) from loading or validating.

    Reports unknown node types, missing required inputs, unknown inputs, links to a missing
    node or output, links whose output type does not fit the input (``*`` and ``A,B``
    unions as ComfyUI), values outside a node's choices or min/max or of the wrong kind,
    integers the frontend cannot hold exactly (beyond 2**53), and cycles. For UI workflows also the consistency of the link table with the nodes'
    slots and of ``widgets_values`` with the definitions. ``missing_files_ok`` accepts
    combo values that name files (models, input images) the server does not have.
    """
    if isinstance(workflow.get("nodes"), list):
        problems = _check_ui_structure(workflow, object_info)
        if problems:
            return problems
        try:
            api = ui_to_api(workflow, object_info)
        except WorkflowFormatError as e:
            return [str(e)]
        return _check_api(api, object_info, missing_files_ok)
    return _check_api(workflow, object_info, missing_files_ok)

