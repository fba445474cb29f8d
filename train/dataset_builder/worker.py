"""Per-image work, run in the worker processes: one MediaPipe pass, then the crop, targets,
embedding and caption derived from it with the core's single definitions."""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from .. import shards as S
from .decode import Skip, decode_source, failure_reason, is_grayscale
from .plan import Item

_W: dict = {}


def _init_worker(cfg: dict) -> None:
    """Per process: one FaceAnalyzer (+ ArcFace, + captioner); single-threaded libraries
    when several workers share the cores."""
    import cv2

    from ...dense_face_core.landmarker import FaceAnalyzer

    if cfg["workers"] > 1:
        cv2.setNumThreads(1)
    _W.clear()
    _W["cfg"] = cfg
    _W["analyzer"] = FaceAnalyzer(cfg["landmarker"], max_faces=4)
    _W["encoder"] = None
    if cfg.get("arcface_onnx"):
        from ...dense_face_core.id_embedding import ArcFaceEncoder

        _W["encoder"] = ArcFaceEncoder(cfg["arcface_onnx"], cfg["embedding_model"])
    _W["captioner"] = None
    if cfg.get("captioner"):
        from ..captions import LocalCaptioner

        if cfg["workers"] > 1:
            import torch

            torch.set_num_threads(1)
        _W["captioner"] = LocalCaptioner(cfg["captioner"])


def _close_worker() -> None:
    a = _W.get("analyzer")
    if a is not None:
        a.close()
    _W.clear()


def _r(x: float, n: int = 4) -> float:
    return round(float(x), n)


def process_item(item: Item) -> dict:
    """One image -> {outcome, reason, sha1, files, meta}; never raises (errors are outcomes)."""
    try:
        return _process(item)
    except Skip as s:
        return {"outcome": s.outcome, "reason": s.reason, "sha1": None}
    except Exception as exc:  # noqa: BLE001 (a bug or an odd image must not stop a million-image build)
        return {"outcome": "error", "reason": failure_reason(exc), "sha1": None}


def _read_bytes(item: Item) -> bytes:
    try:
        return Path(item.path).read_bytes()
    except FileNotFoundError:
        raise Skip("missing", "file vanished after planning") from None
    except OSError as exc:
        raise Skip("unreadable", failure_reason(exc)) from exc


def _process(item: Item) -> dict:
    from ...dense_face_core.crop import compute_face_crop
    from ..captions import caption_for

    cfg, analyzer = _W["cfg"], _W["analyzer"]
    data = _read_bytes(item)
    res = {"sha1": hashlib.sha1(data).hexdigest()}
    try:
        rgb, source_size, grey_mode = decode_source(data, cfg["max_pixels"])
    except Skip as s:
        return {**res, "outcome": s.outcome, "reason": s.reason}
    if not cfg["keep_grayscale"] and (grey_mode or is_grayscale(rgb)):
        return {**res, "outcome": "grayscale", "reason": "grey photo (use --keep-grayscale to keep)"}
    faces = analyzer.detect(rgb, name=item.rel, tiles=cfg["tiles"])
    if not faces:
        return {**res, "outcome": "no_face", "reason": "no face detected"}
    fc = compute_face_crop(faces[0], max(cfg["crop_sizes"]), canonical_vertices=analyzer.canonical)
    h, w = rgb.shape[:2]
    decoded_size = (w, h)
    sx, sy = w / source_size[0], h / source_size[1]  # decoded / original pixels
    if fc.size / fc.scale / math.sqrt(sx * sy) < cfg["min_crop"]:
        return {**res, "outcome": "too_small",
                "reason": f"face crop square under {cfg['min_crop']} px in the photo"}
    files = _sample_files(rgb, fc, faces[0], cfg["crop_sizes"])
    cap = caption_for([Path(p) for p in item.caption_files], item.extra_captions,
                      _W["captioner"], rgb if _W["captioner"] is not None else None)
    meta = _sample_meta(item, res["sha1"], faces, fc, source_size, decoded_size, cap)
    return {**res, "outcome": "ok", "reason": None, "files": files, "meta": meta,
            "downscaled": decoded_size != source_size}


def _sample_files(rgb: np.ndarray, fc, face, sizes) -> dict[str, bytes]:
    """The encoded members of one sample except meta.json: crops, landmarks, targets, embedding."""
    from ...dense_face_core.dense_targets import depth_from_landmarks, parsing_from_landmarks

    files = _crop_files(rgb, fc, sizes)
    lms = np.asarray(fc.landmarks, np.float32)
    files["landmarks.npy"] = S.encode_npy(lms)
    files["parsing.png"] = S.encode_png(parsing_from_landmarks(lms, S.TARGET_SIZE))
    depth, dmask = depth_from_landmarks(lms, _W["analyzer"].canonical.triangles, S.TARGET_SIZE)
    files["depth.png"] = S.encode_depth(depth, dmask)
    if _W["encoder"] is not None:
        emb = _W["encoder"].embed(rgb, face.points)
        files["embedding.npy"] = S.encode_npy(np.asarray(emb, np.float32))
    return files


def _crop_files(rgb: np.ndarray, fc, sizes) -> dict[str, bytes]:
    import cv2

    from ...dense_face_core.crop import resize_crop, warp_to_crop

    big = max(sizes)
    files: dict[str, bytes] = {}
    big_crop = warp_to_crop(rgb, fc)
    for s in sizes:
        if s == big:
            crop = big_crop
        elif big % s == 0:
            # an exact box-filter shrink of the big crop is resize_crop(fc, s)'s geometry, and
            # what the authors feed the model (512 crop -> 256 with INTER_AREA, INF:195)
            crop = cv2.resize(big_crop, (s, s), interpolation=cv2.INTER_AREA)
        else:
            crop = warp_to_crop(rgb, resize_crop(fc, s))
        files[f"crop_{s}.jpg"] = S.encode_jpeg(crop)
    return files


def _sample_meta(item: Item, sha1: str, faces: list, fc, source_size, decoded_size, cap: dict) -> dict:
    """meta.json of one sample; the crop matrix is given in original-photo pixels."""
    cfg, face = _W["cfg"], faces[0]
    sizes = cfg["crop_sizes"]
    (w0, h0), (w, h) = source_size, decoded_size
    sx, sy = w / w0, h / h0
    # crop matrix in original-photo pixels: p_decoded = (p + 0.5) * s - 0.5
    D = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
    M = fc.matrix[:, :2] @ D[:, :2]
    t = fc.matrix[:, :2] @ D[:, 2] + fc.matrix[:, 2]
    meta = {
        "format": S.FORMAT,
        "identity": item.identity,
        "source": item.rel,
        "sha1": sha1,
        "source_size": [int(w0), int(h0)],
        "decoded_size": [int(w), int(h)],
        "num_faces": len(faces),
        "pose": {"pitch": _r(fc.pitch), "yaw": _r(fc.yaw), "roll": _r(fc.roll)},
        "source_pose": {"pitch": _r(face.pitch), "yaw": _r(face.yaw), "roll": _r(face.roll)},
        "crop": {"size": max(sizes), "sizes": list(sizes),
                 "matrix": [[_r(v, 8) for v in row] for row in np.concatenate([M, t[:, None]], 1)]},
        "caption": cap["caption"],
        "caption_original": cap["caption_original"],
        "caption_source": cap["caption_source"],
        "embedding_model": cfg.get("embedding_model") if _W["encoder"] is not None else None,
        "depth_encoding": {"zero": S.DEPTH_ZERO, "scale": S.DEPTH_SCALE, "off_face": 0},
    }
    if item.labels:
        meta["labels"] = item.labels
    return meta
