"""Models the nodes load from files, kept between prompts by one rule.

A node runs once per prompt, but reloading a weight file, an ONNX session or a MediaPipe
graph every time costs seconds. Every such model sits in a :class:`FileModelCache`: the key
is the file's real path with its modification time and size (a file replaced on disk loads
again) plus the options it was built with; beyond ``capacity`` entries the least recently
used one is dropped. Loading happens under the cache's lock, so two prompts never load the
same file twice at once.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

DEFAULT_CAPACITY = 2  # enough to compare two files without reloading; bounded for multi-GB weights


class FileModelCache:
    def __init__(self, capacity: int = DEFAULT_CAPACITY):
        self.capacity = int(capacity)
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple, Any] = OrderedDict()

    @staticmethod
    def key(path: str | os.PathLike, *options) -> tuple:
        real = os.path.realpath(path)
        stat = os.stat(real)
        return (real, stat.st_mtime_ns, stat.st_size, options)

    def get(self, path: str | os.PathLike, build: Callable[[], Any], *options) -> Any:
        """The model for ``path`` (and ``options``), built with ``build()`` when not cached."""
        key = self.key(path, *options)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            value = build()
            self._entries[key] = value
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
            return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
