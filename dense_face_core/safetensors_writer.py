"""Write a safetensors file in small ``write()`` calls, from the tensors' own memory.

``safetensors.torch.save_file`` hands each tensor to one ``write()``, which on this project's
machines ran erratically slow (see :mod:`.io_utils`; ``dense-face bench safetensors-write``
measures both writers). The file is the same format, read by the same library (the tests compare
the two writers' files through ``safe_open``).
"""
from __future__ import annotations

import json
import os
import struct
import sys
from collections.abc import Mapping

import torch
from torch import Tensor

from .io_utils import write_chunked

# safetensors' dtype names (https://github.com/huggingface/safetensors, the format's "dtype" field).
_NAMES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
          "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL", "uint16": "U16",
          "uint32": "U32", "uint64": "U64", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2"}
DTYPE_NAMES = {getattr(torch, k): v for k, v in _NAMES.items() if isinstance(getattr(torch, k, None), torch.dtype)}


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, Tensor],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` (any device, layout or shared storage) and string ``metadata`` to ``path``.

    Tensors are laid out by element size, largest first, so each one starts at a multiple of its
    own element size (the header is padded to 8 bytes, as the format's own writer does)."""
    if sys.byteorder != "little":  # the format is little-endian; let the library byte-swap
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, str(path),
                  metadata=dict(metadata) if metadata else None)
        return
    for name, t in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"safetensors key {name!r}: expected a string other than '__metadata__'")
        if t.dtype not in DTYPE_NAMES:
            raise ValueError(f"tensor {name!r}: dtype {t.dtype} has no safetensors name")
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name in order:
        t = tensors[name]
        size = t.numel() * t.element_size()
        header[name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for name in order:
            _write_tensor(fh, tensors[name])


def _write_tensor(fh, t: Tensor) -> None:
    if t.numel() == 0:
        return
    write_chunked(fh, t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())
