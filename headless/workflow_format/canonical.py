"""API prompts normalised to the form :func:`ui_to_api` returns, so two graphs compare by ``==``."""
from __future__ import annotations

import copy
from typing import Mapping

from .graph import is_link
from .object_info import display_name, is_widget, ordered_inputs, spec_options
from .widgets import widget_default


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
        title = (node.get("_meta") or {}).get("title") or display_name(node_def, class_type)
        out[str(key)] = {"inputs": _canonical_inputs(given, node_def), "class_type": class_type,
                         "_meta": {"title": title}}
    return out


def _canonical_inputs(given: Mapping, node_def: dict) -> dict:
    inputs = {}
    for name, spec, _group in ordered_inputs(node_def):
        if name in given:
            value = given[name]
            inputs[name] = [str(value[0]), int(value[1])] if is_link(value) else copy.deepcopy(value)
        elif is_widget(spec) and not spec_options(spec).get("forceInput"):
            inputs[name] = widget_default(spec)
    for name, value in given.items():  # inputs the definition lacks stay visible to a diff
        inputs.setdefault(name, copy.deepcopy(value))
    return inputs
