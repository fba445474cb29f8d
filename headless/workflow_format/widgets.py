"""``widgets_values``: which widget each value belongs to, in the 2024 and the Vue frontend's layout."""
from __future__ import annotations

from .errors import WorkflowFormatError
from .object_info import combo_choices, is_widget, ordered_inputs, spec_options, spec_type, upload_input

SEED_NAMES = ("seed", "noise_seed")


def widget_layout(node_def: dict, *, new_frontend: bool = False) -> list[tuple[str, str]]:
    """The node's widgets in ``widgets_values`` order, as ``(input name, kind)``.

    kind: ``value`` (the input's own widget), ``control`` (control_after_generate),
    ``filter`` (a combo control's filter list) or ``upload`` (the upload button, a widget
    named ``upload``; the 2024 frontend also sends its value ``"image"`` in prompts).
    ``new_frontend`` gives the layout the Vue frontend builds itself (no widget for
    ``forceInput`` inputs); files written here use the 2024 layout, which it migrates.
    """
    layout: list[tuple[str, str]] = []
    upload = upload_input(node_def)
    entries = ordered_inputs(node_def)
    last_required = max((i for i, e in enumerate(entries) if e[2] == "required"), default=-1)
    for i, (name, spec, _group) in enumerate(entries):
        if is_widget(spec) and not (new_frontend and spec_options(spec).get("forceInput")):
            kind = spec_type(spec)
            opts = spec_options(spec)
            layout.append((name, "value"))
            if kind == "INT" and (opts.get("control_after_generate") or name in SEED_NAMES):
                layout.append((name, "control"))
            elif kind == "COMBO" and opts.get("control_after_generate"):
                layout += [(name, "control"), (name, "filter")]
        if i == last_required and upload is not None:
            layout.append(("upload", "upload"))
    return layout


def widget_default(spec):
    """The value a frontend gives a fresh widget, for inputs a prompt leaves out."""
    opts = spec_options(spec)
    kind = spec_type(spec)
    if "default" in opts:
        return opts["default"]
    if kind == "COMBO":
        choices = combo_choices(spec) or []
        return choices[0] if choices else None
    return {"INT": 0, "FLOAT": 0.0, "BOOLEAN": False, "STRING": ""}.get(kind)


def widget_values_by_name(node: dict, node_def: dict) -> dict:
    """A UI node's widget values by input name; the value count tells which frontend wrote them."""
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
