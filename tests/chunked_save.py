"""``torch.save`` in small writes, for the tests' multi-GB authors'-layout checkpoints.

torch.save hands each storage to one write(), which on this project's machines ran erratically slow
(see dense_face_core/io_utils.py). The file is what torch.save writes to a path; only the write
sizes differ.
"""
from __future__ import annotations

import io

from dense_face.dense_face_core.io_utils import write_chunked


class _ChunkedWriter(io.RawIOBase):
    def __init__(self, fh):
        self.fh = fh

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        write_chunked(self.fh, data)
        return memoryview(data).nbytes

    def flush(self) -> None:
        self.fh.flush()


def torch_save(obj, path) -> None:
    import torch

    with open(path, "wb") as fh:
        torch.save(obj, _ChunkedWriter(fh))
