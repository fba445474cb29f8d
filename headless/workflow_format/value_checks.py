"""Rules for one value or one link: type compatibility, choices, kinds and ranges of widget values."""
from __future__ import annotations

from .object_info import UPLOAD_FLAGS, combo_choices, spec_options, spec_type

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
    if any(spec_options(spec).get(f) for f in UPLOAD_FLAGS):
        return True
    return isinstance(value, str) and ("/" in value or value.lower().endswith(FILE_SUFFIXES))


def _check_choice(where: str, name: str, value, spec, choices: list, missing_files_ok: bool) -> list[str]:
    """A combo value must be a choice, unless it names a file this server lacks and that is accepted."""
    if value in choices:
        return []
    if missing_files_ok and _looks_like_file(value, spec):
        return []
    shown = ", ".join(repr(c) for c in choices[:8]) + (", ..." if len(choices) > 8 else "")
    return [f"{where}: input {name!r} = {value!r} is not one of the choices [{shown}]"]


def _check_range(where: str, name: str, value, kind: str, opts: dict) -> list[str]:
    """Bounds of a number, and integers JavaScript cannot hold exactly."""
    problems = []
    if kind == "INT" and abs(value) > JS_SAFE_INTEGER:
        problems.append(f"{where}: input {name!r} = {value!r} is beyond 2**53; the web frontend (JavaScript "
                        f"numbers) would change it when it loads the workflow")
    if opts.get("min") is not None and value < opts["min"]:
        problems.append(f"{where}: input {name!r} = {value!r} is below its minimum {opts['min']}")
    if opts.get("max") is not None and value > opts["max"]:
        problems.append(f"{where}: input {name!r} = {value!r} is above its maximum {opts['max']}")
    return problems


def check_value(where: str, name: str, value, spec, missing_files_ok: bool) -> list[str]:
    """Problems with a widget input's value; kinds the frontends know nothing of pass unchecked."""
    kind = spec_type(spec)
    choices = combo_choices(spec)
    if choices is not None:
        return _check_choice(where, name, value, spec, choices, missing_files_ok)
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
    return _check_range(where, name, value, kind, spec_options(spec))
