"""The one rule for models the nodes keep loaded: keyed by file (and its mtime/size) and options, LRU-bounded."""
from __future__ import annotations

import os
import time

import pytest


@pytest.fixture
def cache_cls(comfy):
    from dense_face.nodes.comfy_side.model_cache import FileModelCache

    return FileModelCache


def test_reuses_reloads_changed_files_and_evicts_least_recent(cache_cls, tmp_path):
    cache = cache_cls(capacity=2)
    a, b, c = (tmp_path / n for n in ("a.bin", "b.bin", "c.bin"))
    for p in (a, b, c):
        p.write_bytes(b"x")
    built = []

    def build(name):
        return lambda: built.append(name) or object()

    first = cache.get(a, build("a"))
    assert cache.get(a, build("a")) is first and built == ["a"]
    assert cache.get(a, build("a-opt"), "CUDA") is not first  # other options: another entry
    cache.get(b, build("b"))  # capacity 2: a (plain) was least recently used and goes
    assert cache.get(a, build("a")) is not first and built == ["a", "a-opt", "b", "a"]
    again = cache.get(a, build("a"))
    a.write_bytes(b"xy")  # the file changed on disk: loaded again
    os.utime(a, (time.time() + 5, time.time() + 5))
    assert cache.get(a, build("a")) is not again
    with pytest.raises(FileNotFoundError):
        cache.get(tmp_path / "missing.bin", build("missing"))
