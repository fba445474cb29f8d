"""Per-image CPU work: one MediaPipe pass and the crops (``analyze_item``), the encoded targets
(``annotate_state``) and the sample's meta (``finish_state``), with the core's single definitions.

An image travels through the stages as a *state* dict; ``outcome`` other than ``ok`` means
it was left out, and every later stage passes it through untouched. These functions never
raise: an error on one image is that image's outcome.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from .. import shards as S
from .decode import Skip, decode_source, failure_reason, is_grayscale
from .plan import Item


def _r(x: float, n: int = 4) -> float:
    return round(float(x), n)


def _read_bytes(item: Item) -> bytes:
    try:
        return Path(item.path).read_bytes()
    except FileNotFoundError:
        raise Skip("missing", "file vanished after planning") from None
    except OSError as exc:
        raise Skip("unreadable", failure_reason(exc)) from exc


def failed(state: dict, exc: BaseException) -> None:
    """Turn ``state`` into the outcome of ``exc`` (a Skip's own, else ``error``), dropping its data."""
    outcome, reason = (exc.outcome, exc.reason) if isinstance(exc, Skip) else ("error", failure_reason(exc))
    keep = {k: state[k] for k in ("item", "sha1") if k in state}
    state.clear()
    state.update(keep, outcome=outcome, reason=reason)


def analyze_item(item: Item, cfg: dict, analyzer) -> dict:
    """Photo -> state: outcome, sha1 and, for a face, its crop geometry, crops and caption files' choice."""
    state = {"item": item, "sha1": None}
    try:
        _analyze(state, cfg, analyzer)
    except Exception as exc:  # noqa: BLE001 (a bug or an odd image must not stop a million-image build)
        failed(state, exc)
    return state


def _analyze(state: dict, cfg: dict, analyzer) -> None:
    from ...dense_face_core.crop import compute_face_crop
    from ..captions import choose_captions

    item = state["item"]
    data = _read_bytes(item)
    state["sha1"] = hashlib.sha1(data).hexdigest()
    rgb, source_size, grey_mode = decode_source(data, cfg["max_pixels"])
    if not cfg["keep_grayscale"] and (grey_mode or is_grayscale(rgb)):
        raise Skip("grayscale", "grey photo (use --keep-grayscale to keep)")
    faces = analyzer.detect(rgb, name=item.rel, tiles=cfg["tiles"])
    if not faces:
        raise Skip("no_face", "no face detected")
    fc = compute_face_crop(faces[0], max(cfg["crop_sizes"]), canonical_vertices=analyzer.canonical)
    h, w = rgb.shape[:2]
    sx, sy = w / source_size[0], h / source_size[1]  # decoded / original pixels
    if fc.size / fc.scale / math.sqrt(sx * sy) < cfg["min_crop"]:
        raise Skip("too_small", f"face crop square under {cfg['min_crop']} px in the photo")
    face = faces[0]
    state.update(outcome="ok", reason=None, fc=fc, num_faces=len(faces), source_size=tuple(source_size),
                 decoded_size=(w, h), source_pose=(face.pitch, face.yaw, face.roll),
                 crops=_crops(rgb, fc, cfg["crop_sizes"]),
                 caption=choose_captions([Path(p) for p in item.caption_files], item.extra_captions,
                                         top_k=int(cfg.get("caption_top_k") or 3)))
    if cfg.get("arcface_onnx"):
        from ...dense_face_core.id_embedding import align_for_arcface

        state["arcface_input"] = align_for_arcface(rgb, face.points)


def _crops(rgb: np.ndarray, fc, sizes) -> dict[int, np.ndarray]:
    """The aligned crops at every size: the largest warped, the others shrunk from it when it divides."""
    import cv2

    from ...dense_face_core.crop import resize_crop, warp_to_crop

    big = max(sizes)
    crops = {big: warp_to_crop(rgb, fc)}
    for s in sizes:
        if s == big:
            continue
        if big % s == 0:
            # an exact box-filter shrink of the big crop is resize_crop(fc, s)'s geometry, and
            # what the authors feed the model (512 crop -> 256 with INTER_AREA, INF:195)
            crops[s] = cv2.resize(crops[big], (s, s), interpolation=cv2.INTER_AREA)
        else:
            crops[s] = warp_to_crop(rgb, resize_crop(fc, s))
    return crops


def annotate_state(state: dict, cfg: dict, analyzer) -> None:
    """Crops, landmarks and targets encoded into the sample's members. After restoration the
    landmarks are found again on the restored crop (the photo's stand in when none is found)."""
    if state["outcome"] != "ok":
        return
    try:
        fc = state["fc"]
        big = max(state["crops"])
        lms, pose = np.asarray(fc.landmarks, np.float32), (fc.pitch, fc.yaw, fc.roll)
        if state.get("restoration") is not None:
            again = analyzer.detect(state["crops"][big], name=state["item"].rel, tiles=False)
            state["restoration"]["landmarks"] = "restored" if again else "photo"
            if again:
                lms, pose = np.asarray(again[0].landmarks, np.float32), (again[0].pitch, again[0].yaw, again[0].roll)
        state["files"] = _target_files(state["crops"], lms, analyzer.canonical.triangles)
        state["pose"] = pose
    except Exception as exc:  # noqa: BLE001
        failed(state, exc)


def _target_files(crops: dict, lms: np.ndarray, triangles) -> dict[str, bytes]:
    """The encoded members of one sample except meta.json and the embedding."""
    from ...dense_face_core.dense_targets import depth_from_landmarks, parsing_from_landmarks

    files = {f"crop_{s}.jpg": S.encode_jpeg(crops[s]) for s in sorted(crops)}
    files["landmarks.npy"] = S.encode_npy(lms)
    files["parsing.png"] = S.encode_png(parsing_from_landmarks(lms, S.TARGET_SIZE))
    depth, dmask = depth_from_landmarks(lms, triangles, S.TARGET_SIZE)
    files["depth.png"] = S.encode_depth(depth, dmask)
    return files


def finish_state(state: dict, cfg: dict) -> dict:
    """A state at the end of the pipeline -> the result the shard writer takes
    ({outcome, reason, sha1[, files, meta, downscaled]}); never raises."""
    base = {"outcome": state["outcome"], "reason": state.get("reason"), "sha1": state.get("sha1")}
    if state["outcome"] != "ok":
        return base
    try:
        from ..captions import choose_captions

        cap = state["caption"]
        if state.get("generated"):
            item = state["item"]
            cap = choose_captions([Path(p) for p in item.caption_files], item.extra_captions, state["generated"],
                                  int(cfg.get("caption_top_k") or 3))
        meta = _sample_meta(state, cfg, cap)
    except Exception as exc:  # noqa: BLE001
        return {**base, "outcome": "error", "reason": failure_reason(exc)}
    return {**base, "files": state["files"], "meta": meta,
            "downscaled": tuple(state["decoded_size"]) != tuple(state["source_size"])}


def _caption_meta(cap: dict) -> dict:
    kept = [{"caption": c["caption"], "text": c["text"], "model": c["model"],
             "score": None if c["score"] is None else _r(c["score"])} for c in cap["captions"]]
    return {"caption": cap["caption"], "caption_original": cap["caption_original"],
            "caption_source": cap["caption_source"], "caption_model": cap["caption_model"],
            "caption_score": None if cap["caption_score"] is None else _r(cap["caption_score"]), "captions": kept}


def _sample_meta(state: dict, cfg: dict, cap: dict) -> dict:
    """meta.json of one sample; the crop matrix is given in original-photo pixels."""
    item, fc, sizes = state["item"], state["fc"], cfg["crop_sizes"]
    (w0, h0), (w, h) = state["source_size"], state["decoded_size"]
    sx, sy = w / w0, h / h0
    # crop matrix in original-photo pixels: p_decoded = (p + 0.5) * s - 0.5
    D = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
    M = fc.matrix[:, :2] @ D[:, :2]
    t = fc.matrix[:, :2] @ D[:, 2] + fc.matrix[:, 2]
    (pitch, yaw, roll), (sp, sy_, sr) = state["pose"], state["source_pose"]
    meta = {
        "format": S.FORMAT, "identity": item.identity, "source": item.rel, "sha1": state["sha1"],
        "source_size": [int(w0), int(h0)], "decoded_size": [int(w), int(h)], "num_faces": state["num_faces"],
        "pose": {"pitch": _r(pitch), "yaw": _r(yaw), "roll": _r(roll)},
        "source_pose": {"pitch": _r(sp), "yaw": _r(sy_), "roll": _r(sr)},
        "crop": {"size": max(sizes), "sizes": list(sizes),
                 "matrix": [[_r(v, 8) for v in row] for row in np.concatenate([M, t[:, None]], 1)]},
        **_caption_meta(cap),
        "embedding_model": cfg.get("embedding_model") if "embedding.npy" in state["files"] else None,
        "restoration": state.get("restoration"),
        "depth_encoding": {"zero": S.DEPTH_ZERO, "scale": S.DEPTH_SCALE, "off_face": 0},
    }
    if item.labels:
        meta["labels"] = item.labels
    return meta
