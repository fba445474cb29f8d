"""``dense-face build-dataset``: photos of identities -> T2I-Dense-Face training shards.

Per image, one MediaPipe pass gives the 478 landmarks; everything else is derived from
them with the core's single definitions (crop.py's aligned square, the crop's head
pose, dense_targets' parsing and depth), plus an optional ArcFace embedding and a
caption with the identity placeholder ``*``. The shard format is described in
:mod:`train.shards`.

Scaling: the sorted item list is cut into fixed *units* of whole identities
(``--shard-size`` images); a unit is one tar + its index, written atomically, so a run
killed at any moment resumes by skipping units whose index matches (same items, same
settings). ``--shard i/n`` takes every n-th unit, so machines can split the work with no
coordination; the same input and settings give byte-identical shards.
"""
from __future__ import annotations

import argparse
import collections
import csv
import hashlib
import io
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..dense_face_core.images import is_image_file
from . import shards as S

OUTCOMES = ("ok", "no_face", "too_small", "unreadable", "grayscale", "duplicate", "too_large",
            "missing", "error", "crashed")
DEFAULT_SHARD_SIZE = 1000
DEFAULT_MIN_CROP = 128     # the authors reject faces whose crop square is under 128 px
DEFAULT_MAX_PIXELS = 100_000_000
MAX_DECODE_SIDE = 4096     # bigger photos are decoded reduced (JPEG DCT scaling) then shrunk
MANIFEST_EVERY_S = 60.0


# ============================================================== planning

@dataclass
class Item:
    identity: str
    path: str          # absolute
    rel: str           # relative to the input root, posix
    size: int
    caption_files: list[str] = field(default_factory=list)
    extra_captions: list[str] = field(default_factory=list)
    labels: dict = field(default_factory=dict)


@dataclass
class Plan:
    layout: str
    items: list[Item]
    identities: list[str]
    empty_identities: list[str]
    missing: list[str]
    loose_files: list[str]


class _Listings:
    """Directory listings cached for one scan: caption look-ups cost no stat per image."""

    def __init__(self):
        self._cache: dict[str, frozenset[str]] = {}

    def names(self, folder: Path) -> frozenset[str]:
        key = str(folder)
        got = self._cache.get(key)
        if got is None:
            try:
                got = frozenset(os.listdir(folder))
            except OSError:
                got = frozenset()
            self._cache[key] = got
        return got


def _caption_candidates(img: Path, listings: _Listings | None = None) -> list[str]:
    """Caption files an image may have: the authors' ``captions/<stem>.json`` beside its
    ``images/`` folder, or ``<stem>.json`` / ``<stem>.txt`` / ``captions/<stem>.*`` beside it."""
    listings = listings or _Listings()
    d, stem = img.parent, img.stem
    folders = [d, d / "captions"] + ([d.parent / "captions"] if d.name == "images" else [])
    found = []
    for folder in folders:
        names = listings.names(folder)
        found += [str(folder / n) for n in (f"{stem}.json", f"{stem}.txt") if n in names]
    return found


def _walk_images(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "captions")
        out += [Path(dirpath) / f for f in filenames if is_image_file(Path(f))]
    return sorted(out)


def _identity_of_csv_path(face_file: str) -> str:
    p = Path(face_file)
    return p.parent.parent.name if p.parent.name == "images" and p.parent.parent.name else p.parent.name


def _find_csvs(root: Path) -> list[Path]:
    if root.is_file() and root.suffix.lower() == ".csv":
        return [root]
    found = []
    for p in sorted(root.glob("*.csv")):
        try:
            with open(p, newline="", encoding="utf-8", errors="replace") as fh:
                header = next(csv.reader(fh), [])
        except OSError:
            continue
        if "face_file" in header:
            found.append(p)
    return found


def _parse_angles(text: str) -> list[float] | None:
    try:
        vals = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:[eE]-?\d+)?", text)]
    except ValueError:
        return None
    return vals if len(vals) == 3 else None


def scan_input(root: Path) -> Plan:
    """List the work: the authors' CSV layout if ``root`` is (or holds) such a CSV, else
    one sub-folder per identity (an ``images/`` sub-folder, when present, is the only one read)."""
    root = Path(root)
    if not root.exists():
        from ..dense_face_core.errors import DenseFaceInputError

        raise DenseFaceInputError(f"--input {root} does not exist")
    csvs = _find_csvs(root)
    if csvs:
        return _scan_csv(csvs)
    if not root.is_dir():
        from ..dense_face_core.errors import DenseFaceInputError

        raise DenseFaceInputError(f"--input {root}: expected a folder of identity folders or the "
                                  "authors' CSV (with a face_file column)")
    items, identities, empty, loose = [], [], [], []
    listings = _Listings()
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        p = Path(entry.path)
        if entry.is_dir(follow_symlinks=True):
            identities.append(entry.name)
            folder = p / "images" if (p / "images").is_dir() else p
            imgs = _walk_images(folder)
            if not imgs:
                empty.append(entry.name)
            for img in imgs:
                try:
                    size = img.stat().st_size
                except OSError:
                    size = -1
                items.append(Item(entry.name, str(img), img.relative_to(root).as_posix(), size,
                                  _caption_candidates(img, listings)))
        elif is_image_file(p):
            loose.append(entry.name)
    return Plan("folders", items, identities, empty, [], loose)


def _scan_csv(csvs: list[Path]) -> Plan:
    items, missing, seen = [], [], set()
    listings = _Listings()
    identities: dict[str, int] = {}
    for csv_path in csvs:
        base = csv_path.parent
        with open(csv_path, newline="", encoding="utf-8", errors="replace") as fh:
            for row in csv.DictReader(fh):
                face_file = (row.get("face_file") or "").strip()
                if not face_file:
                    continue
                img = Path(os.path.normpath(base / face_file))
                rel = Path(os.path.relpath(img, base)).as_posix()
                if rel in seen:
                    continue
                seen.add(rel)
                ident = _identity_of_csv_path(face_file) or str(row.get("subject_id", "unknown"))
                identities.setdefault(ident, 0)
                if not img.is_file():
                    missing.append(rel)
                    continue
                identities[ident] += 1
                caps = []
                if row.get("caption_file"):
                    cf = base / row["caption_file"].strip()
                    if cf.is_file():
                        caps.append(str(cf))
                caps += [c for c in _caption_candidates(img, listings) if c not in caps]
                labels = {}
                if row.get("head_pose"):
                    ang = _parse_angles(row["head_pose"])
                    if ang:
                        labels["head_pose"] = dict(zip(("pitch", "yaw", "roll"), ang))
                if row.get("subject_id"):
                    labels["subject_id"] = row["subject_id"].strip()
                extra = [row["caption"]] if row.get("caption") else []
                items.append(Item(ident, str(img), rel, img.stat().st_size, caps, extra, labels))
    items.sort(key=lambda it: (it.identity, it.rel))
    idents = sorted(identities)
    empty = [i for i in idents if identities[i] == 0]
    return Plan("csv", items, idents, empty, sorted(missing), [])


@dataclass
class Unit:
    index: int
    items: list[Item]

    @property
    def name(self) -> str:
        return f"shard-{self.index:06d}"


def make_units(items: list[Item], shard_size: int) -> list[Unit]:
    """Greedy packing of whole identities (sorted) into units of >= ``shard_size`` images;
    an identity larger than ``2 * shard_size`` is cut into ``shard_size`` chunks."""
    groups: dict[str, list[Item]] = {}
    for it in items:
        groups.setdefault(it.identity, []).append(it)
    units, current = [], []
    for ident in sorted(groups):
        g = groups[ident]
        chunks = ([g[i:i + shard_size] for i in range(0, len(g), shard_size)]
                  if len(g) > 2 * shard_size else [g])
        for chunk in chunks:
            current += chunk
            if len(current) >= shard_size:
                units.append(Unit(len(units), current))
                current = []
    if current:
        units.append(Unit(len(units), current))
    return units


def _sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def unit_fingerprint(unit: Unit, settings: dict) -> str:
    payload = json.dumps({"format": S.FORMAT, "settings": settings,
                          "items": [[it.identity, it.rel, it.size, [Path(c).name for c in it.caption_files],
                                     it.extra_captions, it.labels] for it in unit.items]},
                         sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


# ============================================================== per-image work (worker side)

_W: dict = {}


def _init_worker(cfg: dict) -> None:
    """Per process: one FaceAnalyzer (+ ArcFace, + captioner); single-threaded libraries
    when several workers share the cores."""
    import cv2

    from ..dense_face_core.landmarker import FaceAnalyzer

    if cfg["workers"] > 1:
        cv2.setNumThreads(1)
    _W.clear()
    _W["cfg"] = cfg
    _W["analyzer"] = FaceAnalyzer(cfg["landmarker"], max_faces=4)
    _W["encoder"] = None
    if cfg.get("arcface_onnx"):
        from ..dense_face_core.id_embedding import ArcFaceEncoder

        _W["encoder"] = ArcFaceEncoder(cfg["arcface_onnx"], cfg["embedding_model"])
    _W["captioner"] = None
    if cfg.get("captioner"):
        from .captions import LocalCaptioner

        if cfg["workers"] > 1:
            import torch

            torch.set_num_threads(1)
        _W["captioner"] = LocalCaptioner(cfg["captioner"])


def _close_worker() -> None:
    a = _W.get("analyzer")
    if a is not None:
        a.close()
    _W.clear()


class _Skip(Exception):
    def __init__(self, outcome: str, reason: str):
        super().__init__(reason)
        self.outcome, self.reason = outcome, reason


def _reason(exc: BaseException) -> str:
    """A failure reason that groups in the manifest: no object reprs, paths or numbers."""
    msg = re.sub(r"<[^>]*>", "", str(exc))
    msg = re.sub(r"(?:[A-Za-z]:)?(?:[\\/][^\s:'\"]+)+", "PATH", msg)
    msg = re.sub(r"\d+", "N", " ".join(msg.split()))[:120]
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def is_grayscale(rgb: np.ndarray) -> bool:
    """True for grey photos stored as RGB (channel differences are JPEG chroma noise only)."""
    step = max(1, int(math.sqrt(rgb.shape[0] * rgb.shape[1] / 65536)))
    a = rgb[::step, ::step].astype(np.int16)
    d = np.maximum(np.maximum(np.abs(a[..., 0] - a[..., 1]), np.abs(a[..., 1] - a[..., 2])),
                   np.abs(a[..., 0] - a[..., 2]))
    return float(d.mean()) < 3.0 and float((d > 24).mean()) < 0.001


def decode_source(data: bytes, max_pixels: int, max_side: int = MAX_DECODE_SIDE):
    """Bytes -> (RGB uint8, original (w, h) after EXIF orientation, grey mode?).

    Photos above ``max_side`` are decoded reduced (JPEG draft) and shrunk with INTER_AREA:
    a face big enough to matter survives, and a 24 MP photo costs a fraction of a full decode.
    """
    import cv2
    from PIL import Image, ImageOps, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = None  # our own limit below, checked before any decoding
    try:
        im = Image.open(io.BytesIO(data))
        w0, h0 = im.size
        if w0 * h0 > max_pixels:
            raise _Skip("too_large", f"more than {max_pixels // 1_000_000} MP")
        if max(w0, h0) > max_side and im.format == "JPEG":
            k = max_side / max(w0, h0)
            im.draft("RGB", (math.ceil(w0 * k), math.ceil(h0 * k)))
        orientation = im.getexif().get(0x0112, 1) if hasattr(im, "getexif") else 1
        im = ImageOps.exif_transpose(im)
        if orientation in (5, 6, 7, 8):
            w0, h0 = h0, w0
        mode = im.mode
        grey_mode = mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
        if mode in ("I;16", "I;16B", "I;16L", "I"):
            from ..dense_face_core.images import to_rgb_uint8

            rgb = to_rgb_uint8(np.asarray(im).astype(np.uint16, copy=False))
        else:
            rgb = np.asarray(im if mode == "RGB" else im.convert("RGB"))
    except _Skip:
        raise
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise _Skip("unreadable", _reason(exc)) from exc
    if rgb.ndim != 3 or rgb.shape[0] < 8 or rgb.shape[1] < 8:
        raise _Skip("unreadable", f"image too small to hold a face ({rgb.shape[1]}x{rgb.shape[0]})")
    h, w = rgb.shape[:2]
    if max(h, w) > max_side:
        k = max_side / max(h, w)
        rgb = cv2.resize(rgb, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb), (w0, h0), grey_mode


def _r(x: float, n: int = 4) -> float:
    return round(float(x), n)


def process_item(item: Item) -> dict:
    """One image -> {outcome, reason, sha1, files, meta}; never raises (errors are outcomes)."""
    try:
        return _process(item)
    except _Skip as s:
        return {"outcome": s.outcome, "reason": s.reason, "sha1": None}
    except Exception as exc:  # noqa: BLE001 (a bug or an odd image must not stop a million-image build)
        return {"outcome": "error", "reason": _reason(exc), "sha1": None}


def _process(item: Item) -> dict:
    from ..dense_face_core.crop import compute_face_crop, resize_crop, warp_to_crop
    from ..dense_face_core.dense_targets import depth_from_landmarks, parsing_from_landmarks
    from .captions import caption_for

    cfg = _W["cfg"]
    analyzer = _W["analyzer"]
    try:
        data = Path(item.path).read_bytes()
    except FileNotFoundError:
        raise _Skip("missing", "file vanished after planning") from None
    except OSError as exc:
        raise _Skip("unreadable", _reason(exc)) from exc
    sha1 = hashlib.sha1(data).hexdigest()
    res = {"sha1": sha1}
    try:
        rgb, (w0, h0), grey_mode = decode_source(data, cfg["max_pixels"])
    except _Skip as s:
        return {**res, "outcome": s.outcome, "reason": s.reason}
    h, w = rgb.shape[:2]
    if not cfg["keep_grayscale"] and (grey_mode or is_grayscale(rgb)):
        return {**res, "outcome": "grayscale", "reason": "grey photo (use --keep-grayscale to keep)"}

    faces = analyzer.detect(rgb, name=item.rel, tiles=cfg["tiles"])
    if not faces:
        return {**res, "outcome": "no_face", "reason": "no face detected"}
    face = faces[0]
    sizes = cfg["crop_sizes"]
    big = max(sizes)
    fc = compute_face_crop(face, big, canonical_vertices=analyzer.canonical)
    sx, sy = w / w0, h / h0  # decoded / original pixels
    side_orig = fc.size / fc.scale / math.sqrt(sx * sy)
    if side_orig < cfg["min_crop"]:
        return {**res, "outcome": "too_small",
                "reason": f"face crop square under {cfg['min_crop']} px in the photo"}

    import cv2

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
    lms = np.asarray(fc.landmarks, np.float32)
    files["landmarks.npy"] = S.encode_npy(lms)
    files["parsing.png"] = S.encode_png(parsing_from_landmarks(lms, S.TARGET_SIZE))
    depth, dmask = depth_from_landmarks(lms, analyzer.canonical.triangles, S.TARGET_SIZE)
    files["depth.png"] = S.encode_depth(depth, dmask)
    if _W["encoder"] is not None:
        emb = _W["encoder"].embed(rgb, face.points)
        files["embedding.npy"] = S.encode_npy(np.asarray(emb, np.float32))

    cap = caption_for([Path(p) for p in item.caption_files], item.extra_captions,
                      _W["captioner"], rgb if _W["captioner"] is not None else None)
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
        "crop": {"size": big, "sizes": list(sizes),
                 "matrix": [[_r(v, 8) for v in row] for row in np.concatenate([M, t[:, None]], 1)]},
        "caption": cap["caption"],
        "caption_original": cap["caption_original"],
        "caption_source": cap["caption_source"],
        "embedding_model": cfg.get("embedding_model") if _W["encoder"] is not None else None,
        "depth_encoding": {"zero": S.DEPTH_ZERO, "scale": S.DEPTH_SCALE, "off_face": 0},
    }
    if item.labels:
        meta["labels"] = item.labels
    return {**res, "outcome": "ok", "reason": None, "files": files, "meta": meta,
            "downscaled": (w, h) != (w0, h0)}


# ============================================================== running the units

_KEY_RE = re.compile(r"[^\w\-]+", re.UNICODE)


def _slug(text: str) -> str:
    return _KEY_RE.sub("_", text).strip("_") or "x"


def sample_key(item: Item) -> str:
    """WebDataset key ``<identity>/<image path in the identity, no extension>``: no dots."""
    rel = Path(item.rel)
    parts = rel.with_suffix("").parts
    if item.identity in parts:
        parts = parts[parts.index(item.identity) + 1:]
    if parts and parts[0] == "images":
        parts = parts[1:]
    return f"{_slug(item.identity)}/{_slug('_'.join(parts) or rel.stem)}"


def finish_unit(unit: Unit, results: list[dict], shard_dir: Path, fingerprint: str,
                embedding_model: str | None) -> dict:
    """Deduplicate (content hash, per identity), write the tar then its index, atomically."""
    seen: dict[tuple[str, str], str] = {}
    keys: set[str] = set()
    samples, records = [], []
    counts = collections.Counter()
    caption_sources = collections.Counter()
    downscaled = 0
    for item, res in zip(unit.items, results):
        rec = {"source": item.rel, "identity": item.identity, "outcome": res["outcome"]}
        sha = res.get("sha1")
        if sha is not None:
            first = seen.get((item.identity, sha))
            if first is not None:
                rec.update(outcome="duplicate", duplicate_of=first)
                res = {"outcome": "duplicate"}
            else:
                seen[(item.identity, sha)] = item.rel
        if res["outcome"] == "ok":
            key = base = sample_key(item)
            n = 2
            while key in keys:
                key, n = f"{base}-{n}", n + 1
            keys.add(key)
            meta = dict(res["meta"], key=key)
            files = dict(res["files"])
            files["meta.json"] = json.dumps(meta, sort_keys=True, separators=(",", ":"),
                                            ensure_ascii=False).encode("utf-8")
            samples.append((key, files))
            rec["key"] = key
            caption_sources[meta["caption_source"].split(":")[0]] += 1
            downscaled += bool(res.get("downscaled"))
        elif res.get("reason"):
            rec["reason"] = res["reason"]
        counts[rec["outcome"]] += 1
        records.append(rec)
    tar_path = shard_dir / f"{unit.name}.tar"
    offsets = S.write_shard(tar_path, samples)
    index = {
        "format": S.FORMAT,
        "unit": unit.index,
        "shard": tar_path.name,
        "fingerprint": fingerprint,
        "tar_bytes": tar_path.stat().st_size,
        "tar_sha256": _sha256_file(tar_path),
        "embedding_model": embedding_model,
        "identities": sorted({it.identity for it in unit.items}),
        "counts": dict(sorted(counts.items())),
        "caption_sources": dict(sorted(caption_sources.items())),
        "downscaled": downscaled,
        "samples": [{"key": k, "identity": json.loads(f["meta.json"])["identity"], "offsets": offsets[k]}
                    for k, f in samples],
        "items": records,
    }
    S.write_json_atomic(S.index_path(tar_path), index)
    return index


def _unit_done(tar_path: Path, fingerprint: str) -> dict | None:
    index = S.load_index(tar_path)
    if index is None or index.get("fingerprint") != fingerprint:
        return None
    try:
        if tar_path.stat().st_size != index.get("tar_bytes"):
            return None
    except FileNotFoundError:
        return None
    return index


def _run_items(cfg: dict, items: list[tuple[object, Item]], on_result, workers: int,
               fn=None) -> None:
    """Process items in order with ``fn`` (default :func:`process_item`, a module-level
    function so it pickles); ``on_result(slot, result)`` is called in input order.

    Several workers: a forkserver process pool with a bounded window of in-flight items (memory stays
    flat for any dataset size). A worker that dies (e.g. a native crash on one image)
    breaks the pool; its in-flight items are retried one by one in fresh single-process
    pools, the one that kills again is recorded as ``crashed``, and the build goes on.
    """
    fn = fn or process_item
    if workers <= 1:
        _init_worker(cfg)
        try:
            for slot, item in items:
                on_result(slot, fn(item))
        finally:
            _close_worker()
        return

    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # forkserver: children fork from a clean server (forking the caller is unsafe when it
    # already runs threads, e.g. torch in a trainer or test process), yet start fast
    # because the server preloads the heavy imports once.
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([__name__, "cv2", "mediapipe.tasks.python.vision"]
                                   + (["insightface.model_zoo"] if cfg.get("arcface_onnx") else []))
    else:
        ctx = mp.get_context("spawn")

    def new_pool(n):
        return ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_worker, initargs=(cfg,))

    window = workers * 8
    got_any = False
    pool = new_pool(workers)
    pending: collections.deque = collections.deque()
    it = iter(items)
    try:
        while True:
            while len(pending) < window:
                nxt = next(it, None)
                if nxt is None:
                    break
                pending.append((nxt, pool.submit(fn, nxt[1])))
            if not pending:
                break
            (slot, item), fut = pending[0]
            try:
                res = fut.result()
            except BrokenProcessPool:
                if not got_any:  # maybe the workers cannot start: surface the real error here
                    pool.shutdown(wait=False, cancel_futures=True)
                    _init_worker(cfg)
                    _close_worker()
                stuck = [p[0] for p in pending]
                pending.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                for s_slot, s_item in stuck:
                    solo = new_pool(1)
                    try:
                        r = solo.submit(fn, s_item).result()
                    except BrokenProcessPool:
                        r = {"outcome": "crashed", "reason": "worker process died on this image", "sha1": None}
                    finally:
                        solo.shutdown(wait=False, cancel_futures=True)
                    on_result(s_slot, r)
                pool = new_pool(workers)
                continue
            pending.popleft()
            got_any = True
            on_result(slot, res)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ============================================================== manifest

FIELD_DOC = {
    "crop_<size>.jpg": "aligned face crop (dense_face_core.crop), RGB JPEG q95",
    "landmarks.npy": "(478, 3) float32 MediaPipe landmarks normalised to the crop square",
    "parsing.png": "256x256 uint8 class ids, dense_targets.PARSING_CLASSES",
    "depth.png": "256x256 uint16: 0 off the face, else z = (v - 32768) / 16384 (crop widths)",
    "embedding.npy": "(512,) float32 unit ArcFace embedding (only with --insightface-model)",
    "meta.json": "identity, source, pose {pitch,yaw,roll} of the face in the crop (degrees, "
                 "6DRepNet convention), source_pose, crop matrix, caption with '*', labels",
}


def write_manifest(out: Path, plan: Plan, units: list[Unit], indexes: dict[int, dict],
                   settings: dict, args_summary: dict) -> dict:
    counts = collections.Counter({k: 0 for k in OUTCOMES})
    failures: dict[str, dict] = {}
    caption_sources = collections.Counter()
    per_identity = collections.Counter()
    shard_list, pending, downscaled = [], [], 0
    for u in units:
        idx = indexes.get(u.index)
        if idx is None:
            pending.append(u.name)
            continue
        counts.update(idx["counts"])
        caption_sources.update(idx.get("caption_sources", {}))
        downscaled += idx.get("downscaled", 0)
        for rec in idx["items"]:
            if rec["outcome"] == "ok":
                per_identity[rec["identity"]] += 1
            elif rec["outcome"] != "duplicate":
                reason = f"{rec['outcome']}: {rec.get('reason', '')}".rstrip(": ")
                f = failures.setdefault(reason, {"count": 0, "examples": []})
                f["count"] += 1
                if len(f["examples"]) < 5:
                    f["examples"].append(rec["source"])
            else:
                f = failures.setdefault("duplicate: same content as an earlier image of the identity",
                                        {"count": 0, "examples": []})
                f["count"] += 1
                if len(f["examples"]) < 5:
                    f["examples"].append(f"{rec['source']} = {rec.get('duplicate_of')}")
        shard_list.append({"file": f"shards/{idx['shard']}", "samples": len(idx["samples"]),
                           "identities": len({s["identity"] for s in idx["samples"]}),
                           "bytes": idx["tar_bytes"], "sha256": idx["tar_sha256"]})
    counts["missing"] += len(plan.missing)
    if plan.missing:
        failures["missing: listed in the CSV but not on disk"] = {"count": len(plan.missing),
                                                                   "examples": plan.missing[:5]}
    if plan.empty_identities:
        failures["empty_identity: identity folder without images"] = {
            "count": len(plan.empty_identities), "examples": plan.empty_identities[:5]}
    if plan.loose_files:
        failures["no_identity: image directly in the input folder (put it in a person's folder)"] = {
            "count": len(plan.loose_files), "examples": plan.loose_files[:5]}
    counts["empty_identity"] = len(plan.empty_identities)
    counts["no_identity"] = len(plan.loose_files)
    has_emb = settings.get("embedding_model") is not None
    manifest = {
        "format": S.FORMAT,
        "complete": not pending,
        "layout": plan.layout,
        "input": args_summary["input"],
        "settings": settings,
        "run": args_summary,
        "counts": dict(counts),
        "images_planned": len(plan.items) + len(plan.missing),
        "samples": counts["ok"],
        "identities": {"total": len(plan.identities), "with_samples": len(per_identity),
                       "with_one_sample": sum(1 for v in per_identity.values() if v == 1),
                       "empty": len(plan.empty_identities)},
        "failures": dict(sorted(failures.items(), key=lambda kv: (-kv[1]["count"], kv[0]))),
        "caption_sources": dict(sorted(caption_sources.items())),
        "downscaled_images": downscaled,
        "embeddings": ({"present": True, "model": settings["embedding_model"], "dim": 512}
                       if has_emb else
                       {"present": False, "model": None,
                        "note": "built without --insightface-model: samples carry no identity "
                                "embedding; the trainer needs one (rebuild with the model)"}),
        "shards": shard_list,
        "pending_units": pending,
        "fields": FIELD_DOC,
        "depth_encoding": {"zero": S.DEPTH_ZERO, "scale": S.DEPTH_SCALE, "off_face": 0,
                           "units": "MediaPipe z in crop widths, smaller = nearer"},
        "target_size": S.TARGET_SIZE,
    }
    S.write_json_atomic(out / "manifest.json", manifest)
    return manifest


# ============================================================== entry points

def _resolve_insightface(path: str) -> tuple[str, str]:
    """(recognition .onnx, model name ``insightface/<pack>``) from a file or a pack folder."""
    from ..dense_face_core.errors import MissingModelError
    from ..dense_face_core.id_embedding import INSIGHTFACE_PACKS, find_insightface_recognition

    p = Path(path).expanduser()
    if p.is_file() and p.suffix.lower() == ".onnx":
        by_file = {v: k for k, v in INSIGHTFACE_PACKS.items()}
        return str(p), f"insightface/{by_file.get(p.name, p.stem)}"
    if p.is_dir():
        return str(find_insightface_recognition(p.name, [p.parent])), f"insightface/{p.name}"
    raise MissingModelError(f"--insightface-model {p}: expected an ArcFace .onnx file or an insightface "
                            "model pack folder (e.g. ComfyUI/models/insightface/models/antelopev2)")


def _parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or int(m.group(2)) < 1 or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise argparse.ArgumentTypeError(f"--shard: expected i/n with 0 <= i < n, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--crop-sizes: expected e.g. 256,512, got {text!r}") from None
    if not sizes or any(s < 64 or s > 2048 for s in sizes):
        raise argparse.ArgumentTypeError(f"--crop-sizes: sizes must be within 64..2048, got {text!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dense-face build-dataset",
                                description="Build T2I-Dense-Face training shards (WebDataset tars) "
                                            "from a folder of identities or the authors' CSV layout.")
    p.add_argument("--input", required=True, help="folder with one sub-folder per person, or the "
                                                  "authors' CSV (or a folder holding it)")
    p.add_argument("--out", required=True, help="output folder (shards/ and manifest.json)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    p.add_argument("--shard", type=_parse_shard, default=(0, 1), metavar="i/n",
                   help="this machine's part: every n-th unit starting at i (default 0/1)")
    p.add_argument("--insightface-model", help="ArcFace .onnx or insightface pack folder; "
                                               "without it no identity embeddings are stored")
    p.add_argument("--landmarker", help="MediaPipe face_landmarker.task (default: $DENSE_FACE_LANDMARKER "
                                        "or ComfyUI's models/mediapipe)")
    p.add_argument("--crop-sizes", type=_parse_sizes, default=(256, 512), help="e.g. 256 or 256,512")
    p.add_argument("--max-images", type=int, default=None, help="only the first N images (sorted)")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                   help=f"images per shard, whole identities (default {DEFAULT_SHARD_SIZE})")
    p.add_argument("--min-crop", type=int, default=DEFAULT_MIN_CROP,
                   help="skip faces whose crop square is smaller in the photo (pixels)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="skip larger photos")
    p.add_argument("--keep-grayscale", action="store_true", help="keep grey photos (skipped by default)")
    p.add_argument("--tiles", action="store_true", help="search tiles when no face is found (slow; "
                                                        "for small faces in big photos)")
    p.add_argument("--captioner", help="local folder of a transformers image-to-text model, used when "
                                       "an image has no usable caption file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def build(args, timings: dict | None = None) -> dict:
    """Run (or resume) a build; returns the manifest.

    ``timings`` (optional) receives ``first``/``last``: ``time.perf_counter()`` at the
    first and last image result, for throughput without start-up (the benchmark).
    """
    from ..dense_face_core.errors import DenseFaceInputError
    from ..dense_face_core.landmarker import find_landmarker_model

    try:
        from ..dense_face_core.model_folders import comfyui_models_dirs
        search = comfyui_models_dirs("mediapipe")
    except ImportError:
        search = []
    landmarker = str(find_landmarker_model(args.landmarker, search))
    out = Path(args.out)
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    if args.shard_size < 1:
        raise DenseFaceInputError("--shard-size must be at least 1")

    arcface, emb_name = (None, None)
    if args.insightface_model:
        arcface, emb_name = _resolve_insightface(args.insightface_model)
    settings = {
        "crop_sizes": list(args.crop_sizes), "min_crop": args.min_crop, "max_pixels": args.max_pixels,
        "keep_grayscale": bool(args.keep_grayscale), "tiles": bool(args.tiles),
        "landmarker_sha256": _sha256_file(landmarker),
        "embedding_model": emb_name,
        "embedding_sha256": _sha256_file(arcface) if arcface else None,
        "captioner": Path(args.captioner).name if args.captioner else None,
    }
    plan = scan_input(Path(args.input))
    if args.max_images is not None:
        plan.items = plan.items[:max(0, args.max_images)]
    units = make_units(plan.items, args.shard_size)
    part, nparts = args.shard
    fingerprints = {u.index: unit_fingerprint(u, settings) for u in units}
    indexes: dict[int, dict] = {}
    todo: list[Unit] = []
    for u in units:
        done = _unit_done(shard_dir / f"{u.name}.tar", fingerprints[u.index])
        if done is not None:
            indexes[u.index] = done
        elif u.index % nparts == part:
            todo.append(u)
    summary = {"input": str(Path(args.input).resolve()), "shard": f"{part}/{nparts}",
               "workers": args.workers, "shard_size": args.shard_size, "max_images": args.max_images}
    n_todo = sum(len(u.items) for u in todo)
    if not getattr(args, "quiet", False):
        print(f"dense-face build-dataset: {len(plan.items)} images, {len(plan.identities)} identities, "
              f"{len(units)} shards ({len(indexes)} done, {len(todo)} to build here: {n_todo} images, "
              f"{args.workers} worker(s))", file=sys.stderr)
    for u in todo:
        S.remove_stale_temp(shard_dir / f"{u.name}.tar")
        S.remove_stale_temp(S.index_path(shard_dir / f"{u.name}.tar"))

    cfg = {"landmarker": landmarker, "crop_sizes": tuple(args.crop_sizes), "min_crop": args.min_crop,
           "max_pixels": args.max_pixels, "keep_grayscale": bool(args.keep_grayscale),
           "tiles": bool(args.tiles), "arcface_onnx": arcface, "embedding_model": emb_name,
           "captioner": args.captioner, "workers": max(1, args.workers)}
    flat = [((ui, k), item) for ui, u in enumerate(todo) for k, item in enumerate(u.items)]
    buffers: dict[int, list] = {ui: [None] * len(u.items) for ui, u in enumerate(todo)}
    remaining = {ui: len(u.items) for ui, u in enumerate(todo)}
    last_manifest = [time.monotonic()]

    from tqdm import tqdm

    bar = tqdm(total=n_todo, unit="img", disable=True if getattr(args, "quiet", False) else None,
               dynamic_ncols=True, file=sys.stderr)
    tally = collections.Counter()

    def on_result(slot, res):
        if timings is not None:
            timings.setdefault("first", time.perf_counter())
            timings["last"] = time.perf_counter()
        ui, k = slot
        buffers[ui][k] = res
        remaining[ui] -= 1
        tally[res["outcome"]] += 1
        bar.update(1)
        if remaining[ui] == 0:
            u = todo[ui]
            indexes[u.index] = finish_unit(u, buffers.pop(ui), shard_dir, fingerprints[u.index], emb_name)
            bar.set_postfix({k: v for k, v in tally.items() if v}, refresh=False)
            if time.monotonic() - last_manifest[0] > MANIFEST_EVERY_S:
                write_manifest(out, plan, units, indexes, settings, summary)
                last_manifest[0] = time.monotonic()

    try:
        if flat:
            _run_items(cfg, flat, on_result, max(1, args.workers))
    finally:
        bar.close()
        manifest = write_manifest(out, plan, units, indexes, settings, summary)
    return manifest


def main(argv: list[str] | None = None) -> int:
    from ..dense_face_core.errors import DenseFaceError

    args = build_parser().parse_args(argv)
    try:
        manifest = build(args)
    except DenseFaceError as exc:
        print(f"dense-face build-dataset: error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        c = {k: v for k, v in manifest["counts"].items() if v}
        state = "complete" if manifest["complete"] else f"{len(manifest['pending_units'])} shard(s) pending"
        print(f"dense-face build-dataset: {manifest['samples']} samples in {len(manifest['shards'])} shard(s), "
              f"{state}; counts {c}; embeddings: {'yes' if manifest['embeddings']['present'] else 'no'}; "
              f"manifest {Path(args.out) / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
