"""The T2I-Dense-Face shard format: WebDataset tar files written byte-for-byte reproducibly.

One sample = the tar members sharing a key (``<identity>/<image>``), one per field:

=================  ==========================================================================
``crop_256.jpg``   aligned face crop (crop.py's FFHQ square), RGB JPEG quality 95; also
``crop_512.jpg``   at 512 when asked (``--crop-sizes``)
``landmarks.npy``  (478, 3) float32, MediaPipe-normalised to the crop square (x, y in [0, 1]
                   of the crop, z in crop widths); the same numbers for every crop size
``parsing.png``    256x256 8-bit grey PNG of class ids 0..9 (dense_targets.PARSING_CLASSES)
``depth.png``      256x256 16-bit PNG: 0 = off the face mesh, else
                   ``z = (v - DEPTH_ZERO) / DEPTH_SCALE`` (MediaPipe z in crop widths)
``embedding.npy``  (512,) float32 unit ArcFace embedding; absent without ``--insightface-model``
``meta.json``      pose, caption, identity, source path, crop matrix, provenance
=================  ==========================================================================

Why these encodings: the 478x64x64 heatmaps are 7.8 MB per image in float32, so only the
landmarks are stored (the Dataset draws heatmaps in ~3 ms). Depth as a 16-bit PNG is
lossless to 6e-5 crop widths (0.02 px at 256), carries its own face mask (value 0) and
compresses 5x against float16 ``.npy``. Parsing and depth are stored at 256 (the
authors' annotation size) so a loader can pool them to whatever the head predicts.

Why WebDataset tars: sequential reads of ~100 MB files stream at disk/network speed,
object stores and ``webdataset``/``torchdata`` readers take them as is, and one file per
shard keeps millions of images from becoming millions of inodes. Each tar has a sidecar
``<shard>.json`` index (member offsets, per-item outcomes, the unit's fingerprint) that
marks the shard complete and gives map-style datasets random access without a scan.
"""
from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..dense_face_core.io_utils import atomic_open, remove_stale_temp  # noqa: F401 (re-exported)

FORMAT = "dense-face-wds-v1"
DEPTH_ZERO = 32768
DEPTH_SCALE = 16384.0  # v = z * DEPTH_SCALE + DEPTH_ZERO; |z| < 2 crop widths fits
TARGET_SIZE = 256
JPEG_QUALITY = 95
PNG_COMPRESSION = 3
FIELDS = ("crop_256.jpg", "crop_512.jpg", "depth.png", "embedding.npy", "landmarks.npy",
          "meta.json", "parsing.png")
_TAR_MTIME = 0  # fixed header fields: the same input gives byte-identical shards


# ---------------------------------------------------------------- atomic files

def atomic_file(path: Path, mode: str = "wb"):
    """Open a temp file beside ``path``; it replaces ``path`` whole on success (core io_utils)."""
    return atomic_open(path, mode)


def write_json_atomic(path: Path, obj) -> None:
    with atomic_file(path, "w") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True)
        fh.write("\n")


# ---------------------------------------------------------------- encoders

def _imencode(ext: str, arr: np.ndarray, params: list[int]) -> bytes:
    import cv2

    ok, buf = cv2.imencode(ext, np.ascontiguousarray(arr), params)
    if not ok:
        raise RuntimeError(f"{ext[1:].upper().replace('JPG', 'JPEG')} encoding failed")
    return buf.tobytes()


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    import cv2

    return _imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])


def encode_png(arr: np.ndarray) -> bytes:
    import cv2

    return _imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])


def encode_npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def encode_depth(depth: np.ndarray, mask: np.ndarray) -> bytes:
    """Float depth + bool mask -> 16-bit PNG bytes (0 off the mesh)."""
    v = np.clip(np.rint(depth.astype(np.float64) * DEPTH_SCALE + DEPTH_ZERO), 1, 65535)
    return encode_png(np.where(mask, v, 0).astype(np.uint16))


def decode_image(data: bytes, flags=None) -> np.ndarray:
    """JPEG/PNG bytes -> array; colour images come back RGB, PNGs keep their depth."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED if flags is None else flags)
    if arr is None:
        raise ValueError("undecodable image member")
    if arr.ndim == 3:
        arr = np.ascontiguousarray(arr[:, :, 2::-1])
    return arr


def decode_depth(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """depth.png bytes -> (depth float32 with 1.0 off the face, mask bool)."""
    from ..dense_face_core.dense_targets import DEPTH_BACKGROUND

    v = decode_image(data)
    if v.dtype != np.uint16:
        raise ValueError(f"depth member must be a 16-bit PNG, got {v.dtype}")
    mask = v > 0
    depth = np.where(mask, (v.astype(np.float32) - DEPTH_ZERO) / DEPTH_SCALE, DEPTH_BACKGROUND)
    return depth.astype(np.float32), mask


def decode_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


# ---------------------------------------------------------------- tar shards

def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = _TAR_MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def write_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> dict:
    """Write ``[(key, {field: bytes})]`` as a tar atomically; return member offsets per key.

    Members are written in key order then field-name order with fixed headers, so the
    bytes depend only on the samples. The finished temp file is re-read (headers only)
    before it replaces ``path``: offsets come from what is really on disk.
    """
    path = Path(path)
    with atomic_file(path, "wb") as fh:
        with tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
            for key, files in samples:
                for field in sorted(files):
                    data = files[field]
                    tar.addfile(_tarinfo(f"{key}.{field}", len(data)), io.BytesIO(data))
        fh.flush()
        offsets = scan_offsets(fh.name)
    return offsets


def split_member_name(name: str) -> tuple[str, str]:
    """WebDataset's key rule: the key runs up to the first dot of the file name."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot:
        return name, ""
    return (f"{head}/{stem}" if head else stem), ext


def scan_offsets(path) -> dict[str, dict[str, list[int]]]:
    """``{key: {field: [data_offset, size]}}`` from the tar headers (data is skipped by seeks)."""
    out: dict[str, dict[str, list[int]]] = {}
    with tarfile.open(path, mode="r:", encoding="utf-8") as tar:
        for info, key, field in _file_members(tar):
            out.setdefault(key, {})[field] = [int(info.offset_data), int(info.size)]
    return out


def _file_members(tar: tarfile.TarFile) -> Iterator[tuple[tarfile.TarInfo, str, str]]:
    """(member, key, field) of the regular files, in tar order."""
    for info in tar:
        if info.isfile():
            yield (info, *split_member_name(info.name))


def iter_shard(path, fields=None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream ``(key, {field: bytes})`` in tar order; members of one key must be adjacent.

    ``fields``: None (all), a set of field names, or a predicate on the field name; the
    data of other members is skipped (seeked over on a local file).
    """
    want = fields if callable(fields) else (lambda f: fields is None or f in fields)
    current, files = None, {}
    with tarfile.open(path, mode="r:", encoding="utf-8") as tar:
        for info, key, field in _file_members(tar):
            if key != current:
                if current is not None:
                    yield current, files
                current, files = key, {}
            if want(field):
                files[field] = tar.extractfile(info).read()
    if current is not None:
        yield current, files


def read_members(fh, offsets: dict[str, list[int]], fields) -> dict[str, bytes]:
    """Random access: read the given fields of one sample from an open shard file."""
    out = {}
    for field in fields:
        if field in offsets:
            off, size = offsets[field]
            fh.seek(off)
            data = fh.read(size)
            if len(data) != size:
                raise OSError(f"shard truncated while reading {field} at {off}")
            out[field] = data
    return out


def index_path(shard_path: Path) -> Path:
    return Path(shard_path).with_suffix(".json")


def load_index(shard_path: Path) -> dict | None:
    p = index_path(shard_path)
    try:
        return json.loads(p.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
