"""What would stop a workflow from loading or running, found without a server: against its ``/object_info``."""
from __future__ import annotations

from typing import Mapping

from .errors import WorkflowFormatError
from .graph import is_link, topological
from .object_info import is_widget, ordered_inputs, output_types, spec_type
from .ui_checks import check_ui_structure
from .to_api import ui_to_api
from .value_checks import check_value, types_match


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
        problems = check_ui_structure(workflow, object_info)
        if problems:
            return problems
        try:
            api = ui_to_api(workflow, object_info)
        except WorkflowFormatError as e:
            return [str(e)]
        return _check_api(api, object_info, missing_files_ok)
    return _check_api(workflow, object_info, missing_files_ok)


def _check_api(api: Mapping, object_info: Mapping, missing_files_ok: bool) -> list[str]:
    """Every node's inputs, then (only for an otherwise sound graph) the execution order."""
    problems = []
    for key, node in api.items():
        problems += _check_node(api, object_info, key, node, missing_files_ok)
    if not problems:
        try:
            topological({str(k): v for k, v in api.items()}, {str(k): i for i, k in enumerate(api)})
        except WorkflowFormatError as e:
            problems.append(str(e))
    return problems


def _check_node(api: Mapping, object_info: Mapping, key, node, missing_files_ok: bool) -> list[str]:
    class_type = node.get("class_type") if isinstance(node, Mapping) else None
    where = f"node {key} ({class_type})"
    if not class_type:
        return [f"node {key}: no class_type"]
    node_def = object_info.get(class_type)
    if node_def is None:
        return [f"{where}: unknown node type {class_type!r}"]
    given = node.get("inputs") or {}
    specs = {name: (spec, group) for name, spec, group in ordered_inputs(node_def)}
    hidden = (node_def.get("input") or {}).get("hidden") or {}
    problems = [f"{where}: required input {name!r} is missing"
                for name, (_spec, group) in specs.items() if group == "required" and name not in given]
    for name, value in given.items():
        if name not in specs:
            if name not in hidden:
                problems.append(f"{where}: unknown input {name!r}")
            continue
        problems += _check_input(api, object_info, where, name, value, specs[name][0], missing_files_ok)
    return problems


def _check_input(api: Mapping, object_info: Mapping, where: str, name: str, value, spec,
                 missing_files_ok: bool) -> list[str]:
    """A socket needs a link, a widget a fitting value (a linked widget is checked as a link)."""
    if is_link(value):
        return _check_link(api, object_info, where, name, value, spec_type(spec))
    if isinstance(value, (list, tuple)) and len(value) == 2 and not is_widget(spec):
        return [f"{where}: input {name!r} has a malformed link {value!r}"]
    if not is_widget(spec):
        return [f"{where}: input {name!r} ({spec_type(spec)}) needs a link, got the value {value!r}"]
    return check_value(where, name, value, spec, missing_files_ok)


def _check_link(api: Mapping, object_info: Mapping, where: str, name: str, value, in_type: str) -> list[str]:
    src_key, slot = value
    src = api.get(src_key)
    if src is None:
        return [f"{where}: input {name!r} links to missing node {src_key}"]
    src_def = object_info.get(src.get("class_type"))
    if src_def is None:
        return []  # reported on its own
    out_types = output_types(src_def)
    if not 0 <= slot < len(out_types):
        return [f"{where}: input {name!r} links to output {slot} of node {src_key} "
                f"({src.get('class_type')}), which has {len(out_types)} outputs"]
    if not types_match(out_types[slot], in_type):
        return [f"{where}: input {name!r} ({in_type}) is linked to output {slot} "
                f"({out_types[slot]}) of node {src_key} ({src.get('class_type')})"]
    return []
