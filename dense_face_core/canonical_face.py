"""MediaPipe's canonical face mesh, read from the user's FaceLandmarker ``.task`` bundle.

The bundle is a zip holding ``geometry_pipeline_metadata_landmarks.binarypb`` (a
``GeometryPipelineMetadata`` protobuf: canonical mesh vertices x,y,z,u,v, triangle
indices and the procrustes landmark weights). Reading it from the file the user already
has keeps us from shipping a second copy of MediaPipe's data; the protobuf is simple
enough that a 30-line wire-format reader replaces a compiled schema.
"""
from __future__ import annotations

import functools
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MissingModelError

_METADATA_NAME = "geometry_pipeline_metadata_landmarks.binarypb"


@dataclass(frozen=True)
class CanonicalFace:
    vertices: np.ndarray    # (468, 3) float32, centimetres, y up, z towards the viewer
    uv: np.ndarray          # (468, 2) float32
    triangles: np.ndarray   # (898, 3) int32
    weight_ids: np.ndarray  # procrustes landmark ids
    weights: np.ndarray     # their weights


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """Yield (field_number, wire_type, value) for one protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _packed_varints(buf: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(buf):
        v, pos = _varint(buf, pos)
        out.append(v)
    return out


def parse_geometry_metadata(blob: bytes) -> CanonicalFace:
    vertex_buffer: list[float] = []
    index_buffer: list[int] = []
    ids: list[int] = []
    weights: list[float] = []
    for field, wire, value in _fields(blob):
        if field == 1 and wire == 2:  # canonical_mesh: Mesh3d
            for f2, w2, v2 in _fields(value):
                if f2 == 3:
                    vertex_buffer.extend(struct.unpack(f"<{len(v2) // 4}f", v2) if w2 == 2
                                         else struct.unpack("<f", v2))
                elif f2 == 4:
                    index_buffer.extend(_packed_varints(v2) if w2 == 2 else [v2])
        elif field == 2 and wire == 2:  # procrustes_landmark_basis: WeightedLandmarkRef
            lid, weight = 0, 0.0
            for f2, _w2, v2 in _fields(value):
                if f2 == 1:
                    lid = v2
                elif f2 == 2:
                    weight = struct.unpack("<f", v2)[0]
            ids.append(lid)
            weights.append(weight)
    verts = np.asarray(vertex_buffer, np.float32).reshape(-1, 5)
    return CanonicalFace(
        vertices=np.ascontiguousarray(verts[:, :3]),
        uv=np.ascontiguousarray(verts[:, 3:5]),
        triangles=np.asarray(index_buffer, np.int32).reshape(-1, 3),
        weight_ids=np.asarray(ids, np.int32),
        weights=np.asarray(weights, np.float32),
    )


@functools.lru_cache(maxsize=4)
def load_canonical_face(task_path: str | Path) -> CanonicalFace:
    """Canonical mesh from a FaceLandmarker ``.task`` bundle (cached per path)."""
    try:
        with zipfile.ZipFile(task_path) as bundle:
            blob = bundle.read(_METADATA_NAME)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise MissingModelError(
            f"could not read the canonical face mesh ({_METADATA_NAME}) from the MediaPipe model "
            f"{task_path}: {exc}. Use the official face_landmarker.task bundle.") from exc
    return parse_geometry_metadata(blob)
