"""Live progress of a workflow run on stderr, the same for a server and for this process.

ComfyUI reports which node is executing and, for samplers, step ``i`` of ``n``; this turns
those events into lines a person can follow: the node's title, a step bar with elapsed time
and an ETA, and the total at the end. On a terminal the bar redraws in place; in a log it
prints about every tenth of the steps.
"""
from __future__ import annotations

import sys
import time

BAR = 24


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class ProgressPrinter:
    def __init__(self, titles: dict[str, str] | None = None, stream=None):
        self.titles = dict(titles or {})
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.time()
        self._node = None
        self._step_started = None
        self._last_printed = -1
        self._open_bar = False

    def _write(self, text: str, end: str = "\n") -> None:
        if self._open_bar and end == "\n":
            self.stream.write("\n")
            self._open_bar = False
        self.stream.write(text + end)
        self.stream.flush()

    def executing(self, node) -> None:
        if node is None or str(node) == str(self._node):
            return
        self._node, self._step_started, self._last_printed = str(node), None, -1
        self._write(f"[{_clock(time.time() - self.started):>6s}] {self.titles.get(str(node), str(node))}")

    def step(self, value: int, total: int) -> None:
        if not total:
            return
        now = time.time()
        if self._step_started is None or value <= 1 and self._last_printed > value:
            self._step_started, self._last_printed = now - 1e-9, -1
        every = max(1, total // 10)
        if not self.tty and value != total and value - self._last_printed < every:
            return
        self._last_printed = value
        done = value / total
        spent = now - self._step_started
        eta = spent / done * (1 - done) if done > 0 else 0.0
        bar = "#" * int(round(BAR * done)) + "." * (BAR - int(round(BAR * done)))
        line = (f"         step {value:>4d}/{total:<4d} [{bar}] {done:4.0%}  elapsed {_clock(now - self.started)}"
                f"  ETA {_clock(eta)}")
        if self.tty:
            self.stream.write("\r" + line)
            self.stream.flush()
            self._open_bar = value != total
            if value == total:
                self.stream.write("\n")
        else:
            self._write(line)

    def finished(self, what: str = "done") -> None:
        self._write(f"[{_clock(time.time() - self.started):>6s}] {what} in {time.time() - self.started:.1f} s")

    def note(self, text: str) -> None:
        self._write(text)
