"""Progress lines of ``dense-face eval``: on stderr, so stdout carries only the final line."""
from __future__ import annotations

import sys


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
