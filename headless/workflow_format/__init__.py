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

Modules: ``object_info`` (node definitions), ``widgets`` (``widgets_values`` order),
``graph`` (links, ids, execution order), ``api_to_ui`` with ``layout`` (sizes, positions),
``ui_to_api``, ``canonical``, and ``checker`` with ``value_checks`` and ``ui_checks``.
"""
from __future__ import annotations

from .to_ui import api_to_ui
from .canonical import canonical_api
from .checker import check_workflow
from .errors import WorkflowFormatError
from .graph import is_link
from .layout import (COLUMN_GAP as COLUMN_GAP, ORIGIN as ORIGIN, ROW_GAP as ROW_GAP, SLOT_HEIGHT as SLOT_HEIGHT,
                     TITLE_HEIGHT as TITLE_HEIGHT, WIDGET_HEIGHT as WIDGET_HEIGHT)
from .object_info import (UPLOAD_FLAGS as UPLOAD_FLAGS, VIRTUAL_NODES as VIRTUAL_NODES, WIDGET_TYPES as WIDGET_TYPES,
                          object_info_from_classes)
from .to_api import ui_to_api
from .value_checks import (FILE_SUFFIXES as FILE_SUFFIXES, JS_SAFE_INTEGER as JS_SAFE_INTEGER,
                           types_match as types_match)
from .widgets import SEED_NAMES as SEED_NAMES, widget_layout

__all__ = [
    "api_to_ui", "ui_to_api", "check_workflow", "canonical_api", "object_info_from_classes",
    "widget_layout", "is_link", "WorkflowFormatError",
]
