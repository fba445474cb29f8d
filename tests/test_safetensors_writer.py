"""The pack's chunked safetensors writer against the safetensors library itself."""
from __future__ import annotations

import json
import struct

import pytest
import torch
from dense_face.dense_face_core import safetensors_writer as sw
from dense_face.dense_face_core.io_utils import WRITE_CHUNK
from safetensors import safe_open
from safetensors.torch import save_file


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for dtype in sw.DTYPE_NAMES:
        if dtype.is_floating_point:
            t = torch.randn(3, 5, generator=g).to(dtype)
        elif dtype == torch.bool:
            t = torch.randint(0, 2, (7,), generator=g).bool()
        else:
            t = torch.randint(0, 100, (2, 3), generator=g).to(dtype)
        out[f"t.{str(dtype)[6:]}"] = t
    base = torch.randn(4, 6, generator=g)
    out.update({"scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3), "transposed": base.t(),
                "view_a": base[1], "view_b": base[2:],  # share storage with each other
                "big": torch.randn(3 * WRITE_CHUNK // 4 + 5, generator=g)})  # spans several chunks
    return out


def _read(path):
    with safe_open(str(path), "pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)


def test_files_read_back_as_the_librarys_own(tmp_path):
    tensors = _tensors()
    meta = {"format": "dense-face", "ünïcode": "ok", "n": "3"}
    sw.write_safetensors(tmp_path / "ours.safetensors", tensors, meta)
    save_file({k: v.contiguous().clone() for k, v in tensors.items()}, str(tmp_path / "lib.safetensors"), metadata=meta)
    (m_ours, ours), (m_lib, lib) = _read(tmp_path / "ours.safetensors"), _read(tmp_path / "lib.safetensors")
    assert m_ours == m_lib == meta
    assert ours.keys() == lib.keys() == tensors.keys()
    for k, v in tensors.items():
        assert ours[k].dtype == v.dtype and ours[k].shape == v.shape and torch.equal(ours[k], v), k
    assert _data_bytes(tmp_path / "ours.safetensors") == _data_bytes(tmp_path / "lib.safetensors")


def _data_bytes(path) -> int:
    raw = path.read_bytes()
    return len(raw) - 8 - struct.unpack("<Q", raw[:8])[0]


def test_layout_is_aligned_and_writes_are_chunked(tmp_path, monkeypatch):
    sizes = []
    real_open = open

    class Recorder:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            sizes.append(len(data))
            return self.fh.write(data)

    monkeypatch.setattr(sw, "open", lambda *a, **k: Recorder(real_open(*a, **k)), raising=False)
    path = tmp_path / "x.safetensors"
    sw.write_safetensors(path, _tensors(), None)
    assert sizes and max(sizes[2:]) <= WRITE_CHUNK and sum(s == WRITE_CHUNK for s in sizes) >= 2
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert n % 8 == 0 and "__metadata__" not in header
    spans = sorted((info["data_offsets"], info["dtype"]) for info in header.values())
    end = 0
    for (start, stop), dtype in spans:
        assert start == end, "tensors are packed back to back"
        size = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
                "U16": 2}.get(dtype, 1)
        assert start % size == 0, f"{dtype} at {start}"
        end = stop
    assert 8 + n + end == len(raw)


def test_bad_dtype_and_key_are_named(tmp_path):
    with pytest.raises(ValueError, match="'c'.*complex64"):
        sw.write_safetensors(tmp_path / "c.safetensors", {"a": torch.zeros(2), "c": torch.zeros(2, dtype=torch.complex64)})
    with pytest.raises(ValueError, match="__metadata__"):
        sw.write_safetensors(tmp_path / "m.safetensors", {"__metadata__": torch.zeros(2)})


def test_bench_runs_every_writer_and_ends_with_ratios():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "dense_face.cli", "bench", "safetensors-write", "--megabytes", "8",
                           "--repeats", "1"], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert all(any(line.startswith(w + " ") for line in lines) for w in ("save_file", "chunked_1MiB", "chunked"))
    assert lines[-1].startswith("ratios: time chunked_1MiB/save_file ") and "chunked/save_file" in lines[-1]
