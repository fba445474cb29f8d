"""``dense-face build-dataset``: the options, the build of this machine's part (resuming
finished shards), and the summary line."""
from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...dense_face_core.errors import DenseFaceError, DenseFaceInputError, MissingModelError
from .. import shards as S
from .manifest import write_manifest
from .plan import Plan, scan_input
from .pool import _run_items
from .shard_writer import finish_unit
from .units import Unit, make_units, sha256_file, unit_done, unit_fingerprint

DEFAULT_SHARD_SIZE = 1000
DEFAULT_MIN_CROP = 128     # the authors reject faces whose crop square is under 128 px
DEFAULT_MAX_PIXELS = 100_000_000
MANIFEST_EVERY_S = 60.0


# ============================================================== options

def landmarker_path(explicit: str | None, extra_dirs=()) -> str:
    """The MediaPipe model: ``explicit``, else $DENSE_FACE_LANDMARKER, else ComfyUI's
    models/mediapipe, then ``extra_dirs``; the core's error says what to download where."""
    from ...dense_face_core.landmarker import find_landmarker_model
    from ...dense_face_core.model_folders import comfyui_models_dirs

    return str(find_landmarker_model(explicit, [*comfyui_models_dirs("mediapipe"), *extra_dirs]))


def _resolve_insightface(path: str) -> tuple[str, str]:
    """(recognition .onnx, model name ``insightface/<pack>``) from a file or a pack folder."""
    from ...dense_face_core.id_embedding import INSIGHTFACE_PACKS, find_insightface_recognition

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


# ============================================================== the build

@dataclass
class _Job:
    """One build: the plan, its units and which of them are finished (``indexes``)."""

    out: Path
    plan: Plan
    units: list[Unit]
    settings: dict
    summary: dict
    embedding_model: str | None
    fingerprints: dict[int, str] = field(default_factory=dict)
    indexes: dict[int, dict] = field(default_factory=dict)
    worker_config: dict = field(default_factory=dict)

    @property
    def shard_dir(self) -> Path:
        return self.out / "shards"

    def write_manifest(self) -> dict:
        return write_manifest(self.out, self.plan, self.units, self.indexes, self.settings, self.summary)


def _settings(args, landmarker: str, arcface: str | None, emb_name: str | None) -> dict:
    """What the shards' bytes depend on (part of every unit's fingerprint)."""
    return {
        "crop_sizes": list(args.crop_sizes), "min_crop": args.min_crop, "max_pixels": args.max_pixels,
        "keep_grayscale": bool(args.keep_grayscale), "tiles": bool(args.tiles),
        "landmarker_sha256": sha256_file(landmarker),
        "embedding_model": emb_name,
        "embedding_sha256": sha256_file(arcface) if arcface else None,
        "captioner": Path(args.captioner).name if args.captioner else None,
    }


def _worker_config(args, landmarker: str, arcface: str | None, emb_name: str | None) -> dict:
    return {"landmarker": landmarker, "crop_sizes": tuple(args.crop_sizes), "min_crop": args.min_crop,
            "max_pixels": args.max_pixels, "keep_grayscale": bool(args.keep_grayscale),
            "tiles": bool(args.tiles), "arcface_onnx": arcface, "embedding_model": emb_name,
            "captioner": args.captioner, "workers": max(1, args.workers)}


def _todo(job: _Job, shard: tuple[int, int]) -> list[Unit]:
    """Units of this machine's part still to build; finished ones (any part) go to job.indexes."""
    part, nparts = shard
    todo = []
    for u in job.units:
        done = unit_done(job.shard_dir / f"{u.name}.tar", job.fingerprints[u.index])
        if done is not None:
            job.indexes[u.index] = done
        elif u.index % nparts == part:
            todo.append(u)
    return todo


class _Collector:
    """Results in, shards out: a unit's shard is written as soon as its last image is in, and
    the manifest is refreshed every ``MANIFEST_EVERY_S``."""

    def __init__(self, job: _Job, todo: list[Unit], bar, timings: dict | None):
        self.job, self.todo, self.bar, self.timings = job, todo, bar, timings
        self.flat = [((ui, k), item) for ui, u in enumerate(todo) for k, item in enumerate(u.items)]
        self.buffers: dict[int, list] = {ui: [None] * len(u.items) for ui, u in enumerate(todo)}
        self.remaining = {ui: len(u.items) for ui, u in enumerate(todo)}
        self.tally = collections.Counter()
        self.last_manifest = time.monotonic()

    def on_result(self, slot, res) -> None:
        if self.timings is not None:
            self.timings.setdefault("first", time.perf_counter())
            self.timings["last"] = time.perf_counter()
        ui, k = slot
        self.buffers[ui][k] = res
        self.remaining[ui] -= 1
        self.tally[res["outcome"]] += 1
        self.bar.update(1)
        if self.remaining[ui] == 0:
            job, u = self.job, self.todo[ui]
            job.indexes[u.index] = finish_unit(u, self.buffers.pop(ui), job.shard_dir, job.fingerprints[u.index],
                                               job.embedding_model)
            self.bar.set_postfix({k: v for k, v in self.tally.items() if v}, refresh=False)
            if time.monotonic() - self.last_manifest > MANIFEST_EVERY_S:
                job.write_manifest()
                self.last_manifest = time.monotonic()


def _plan_job(args, landmarker: str) -> _Job:
    """Everything decided before any image is read: models, settings, plan, units, fingerprints."""
    arcface, emb_name = (None, None)
    if args.insightface_model:
        arcface, emb_name = _resolve_insightface(args.insightface_model)
    settings = _settings(args, landmarker, arcface, emb_name)
    plan = scan_input(Path(args.input))
    if args.max_images is not None:
        plan.items = plan.items[:max(0, args.max_images)]
    units = make_units(plan.items, args.shard_size)
    part, nparts = args.shard
    summary = {"input": str(Path(args.input).resolve()), "shard": f"{part}/{nparts}",
               "workers": args.workers, "shard_size": args.shard_size, "max_images": args.max_images}
    job = _Job(Path(args.out), plan, units, settings, summary, emb_name)
    job.fingerprints = {u.index: unit_fingerprint(u, settings) for u in units}
    job.worker_config = _worker_config(args, landmarker, arcface, emb_name)
    return job


def build(args, timings: dict | None = None) -> dict:
    """Run (or resume) a build; returns the manifest.

    ``timings`` (optional) receives ``first``/``last``: ``time.perf_counter()`` at the
    first and last image result, for throughput without start-up (the benchmark).
    """
    landmarker = landmarker_path(args.landmarker)
    shard_dir = Path(args.out) / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    if args.shard_size < 1:
        raise DenseFaceInputError("--shard-size must be at least 1")
    job = _plan_job(args, landmarker)
    todo = _todo(job, args.shard)
    quiet = getattr(args, "quiet", False)
    n_todo = sum(len(u.items) for u in todo)
    if not quiet:
        print(f"dense-face build-dataset: {len(job.plan.items)} images, {len(job.plan.identities)} identities, "
              f"{len(job.units)} shards ({len(job.indexes)} done, {len(todo)} to build here: {n_todo} images, "
              f"{args.workers} worker(s))", file=sys.stderr)
    for u in todo:
        S.remove_stale_temp(shard_dir / f"{u.name}.tar")
        S.remove_stale_temp(S.index_path(shard_dir / f"{u.name}.tar"))

    from tqdm import tqdm

    bar = tqdm(total=n_todo, unit="img", disable=True if quiet else None, dynamic_ncols=True, file=sys.stderr)
    collector = _Collector(job, todo, bar, timings)
    try:
        if collector.flat:
            _run_items(job.worker_config, collector.flat, collector.on_result, max(1, args.workers))
    finally:
        bar.close()
        manifest = job.write_manifest()
    return manifest


def main(argv: list[str] | None = None) -> int:
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
