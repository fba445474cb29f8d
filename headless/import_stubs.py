"""Hollow stand-ins for modules that are installed but unusable, present only during an import.

Some wheels (this project's CPU torch with a mismatched torchvision, for one) leave
``import torchvision`` failing, while ComfyUI and torch-fidelity import it at module level
for features the pack never calls. The stand-ins exist only for that import and the
previous ``sys.modules`` entries come back afterwards.
"""
from __future__ import annotations

import contextlib
import sys
import types


def torchvision_works() -> bool:
    try:
        import torchvision

        return hasattr(torchvision, "__version__")
    except Exception:
        return False
    finally:  # a failed import leaves None placeholders that would mask a later stand-in
        for name in [n for n, m in sys.modules.items() if n.startswith("torchvision") and m is None]:
            del sys.modules[name]


@contextlib.contextmanager
def hollow_modules(names: tuple[str, ...]):
    """Empty modules under ``names`` (children set as attributes of their parents) for the ``with`` body."""
    saved = {n: sys.modules.get(n) for n in names}
    mods = {n: types.ModuleType(n) for n in names}
    for name, mod in mods.items():
        parent, _, child = name.rpartition(".")
        if parent in mods:
            setattr(mods[parent], child, mod)
    sys.modules.update(mods)
    try:
        yield mods
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
