"""Node definitions (``/object_info``): built in-process, and read the way the frontends read them."""
from __future__ import annotations

import json
import sys
from typing import Any, Mapping

# Types the frontends draw a widget for (everything else is a connection socket). The 2024
# frontend knows INT, FLOAT, BOOLEAN, STRING, combos (a list of choices) and IMAGEUPLOAD; the
# new one adds the rest, which only newer servers declare.
WIDGET_TYPES = frozenset({
    "INT", "FLOAT", "BOOLEAN", "STRING", "COMBO", "IMAGEUPLOAD",
    "MARKDOWN", "FILEUPLOAD", "COLOR", "IMAGECOMPARE", "TREESELECT", "MULTISELECT", "CHART",
    "GALLERIA", "SELECTBUTTON", "TEXTAREA",
})
UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload")
# Frontend-only nodes: never in /object_info, never in an API prompt.
VIRTUAL_NODES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})


def object_info_from_classes(mappings: Mapping[str, type],
                             display_names: Mapping[str, str] | None = None) -> dict:
    """``/object_info`` built in-process from ``NODE_CLASS_MAPPINGS`` (as ComfyUI's server.node_info).

    ``display_names`` defaults to ComfyUI's ``nodes.NODE_DISPLAY_NAME_MAPPINGS`` when ComfyUI
    is imported. The result is passed through JSON, like the server's answer (tuples become
    lists), so it compares equal to what a server returns.
    """
    if display_names is None:
        comfy_nodes = sys.modules.get("nodes")
        display_names = getattr(comfy_nodes, "NODE_DISPLAY_NAME_MAPPINGS", None) or {}
    out = {}
    for name, cls in mappings.items():
        if hasattr(cls, "GET_NODE_INFO_V1"):  # ComfyUI's V3 node API (newer servers)
            info = cls.GET_NODE_INFO_V1()
        else:
            info = _legacy_node_info(name, cls, display_names)
        out[name] = json.loads(json.dumps(info, default=str))
    return out


def _legacy_node_info(name: str, cls: type, display_names: Mapping[str, str]) -> dict:
    """What ComfyUI's server.node_info reports for a class of the pre-V3 node API."""
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
    return info


def _spec_head(spec):
    """An input spec's first element: its type name, or the choice list of an old-style combo."""
    return spec[0] if isinstance(spec, (list, tuple)) and spec else spec


def spec_type(spec) -> str:
    """The socket type of an input spec: a choice list is a COMBO."""
    t = _spec_head(spec)
    if isinstance(t, (list, tuple)):
        return "COMBO"
    return str(t)


def spec_options(spec) -> dict:
    if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict):
        return spec[1]
    return {}


def combo_choices(spec) -> list | None:
    t = _spec_head(spec)
    if isinstance(t, (list, tuple)):
        return list(t)
    if t == "COMBO":  # V3 style: ["COMBO", {"options": [...]}]
        options = spec_options(spec).get("options")
        return list(options) if isinstance(options, (list, tuple)) else None
    return None


def is_widget(spec) -> bool:
    return spec_type(spec) in WIDGET_TYPES


def ordered_inputs(node_def: dict) -> list[tuple[str, Any, str]]:
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


def upload_input(node_def: dict) -> str | None:
    """The combo that gets an upload button (2024: ``image`` + image_upload; new: any media flag)."""
    required = (node_def.get("input") or {}).get("required") or {}
    for name, spec in required.items():
        opts = spec_options(spec)
        if combo_choices(spec) is not None and any(opts.get(f) is True for f in UPLOAD_FLAGS):
            return name
    return None


def output_types(node_def: dict) -> list[str]:
    return [("COMBO" if isinstance(t, (list, tuple)) else str(t)) for t in node_def.get("output") or []]


def output_names(node_def: dict) -> list[str]:
    types = output_types(node_def)
    names = list(node_def.get("output_name") or [])
    return [(names[i] if i < len(names) and names[i] else types[i]) for i in range(len(types))]


def display_name(node_def: dict, class_type: str) -> str:
    return node_def.get("display_name") or node_def.get("name") or class_type
