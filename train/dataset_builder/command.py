"""``dense-face build-dataset``: the build of this machine's part (resuming finished shards) on
the chosen engine, and the summary line. The options are in :mod:`.options`."""
from __future__ import annotations

import collections
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...dense_face_core.errors import DenseFaceError, DenseFaceInputError, MissingModelError
from .. import shards as S
from .chunks import make_chunks
from .manifest import write_manifest
from .model_settings import check_model_options, model_settings, model_worker_config
from .options import DEFAULT_MAX_PIXELS, DEFAULT_MIN_CROP, DEFAULT_SHARD_SIZE, build_parser  # noqa: F401
from .plan import Plan, scan_input
from .pool import _run_items
from .shard_writer import finish_unit
from .stages import process_chunk
from .units import Unit, make_units, sha256_file, unit_done, unit_fingerprint

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
        **model_settings(args),
        # a model's numbers may depend on what else is in its batch; without models the chunk size is free
        "model_batch_size": (int(getattr(args, "batch_size", 16)) if arcface or _any_model(args) else None),
    }


def _any_model(args) -> bool:
    return bool(getattr(args, "captioner", None) or getattr(args, "clip_model", None)
                or getattr(args, "restore_model", None))


def _worker_config(args, landmarker: str, arcface: str | None, emb_name: str | None) -> dict:
    return {"landmarker": landmarker, "crop_sizes": tuple(args.crop_sizes), "min_crop": args.min_crop,
            "max_pixels": args.max_pixels, "keep_grayscale": bool(args.keep_grayscale),
            "tiles": bool(args.tiles), "arcface_onnx": arcface, "embedding_model": emb_name,
            "workers": max(1, args.workers), **model_worker_config(args)}


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
    check_model_options(args)
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


def _run_engine(args, job: _Job, todo: list[Unit], collector: _Collector) -> None:
    """Every image of ``todo`` through the pipeline, in chunks of ``--batch-size``, on the chosen engine."""
    chunks = make_chunks(todo, getattr(args, "batch_size", None) or 16)

    def on_chunk(slot, results) -> None:
        ui, start = slot
        for k, res in enumerate(results):
            collector.on_result((ui, start + k), res)

    if getattr(args, "engine", "local") == "ray":
        from .ray_engine import run_ray

        run_ray(job.worker_config, chunks, on_chunk, args)
        return
    workers = max(1, args.workers)
    _run_items(job.worker_config, [(c.slot, c) for c in chunks], on_chunk, workers, fn=process_chunk,
               window=workers * 2)


def build(args, timings: dict | None = None) -> dict:
    """Run (or resume) a build; returns the manifest.

    ``timings`` (optional) receives ``first``/``last``: ``time.perf_counter()`` at the
    first and last image result, for throughput without start-up (the benchmark).
    """
    if getattr(args, "engine", "local") == "ray":
        from .ray_engine import _import_ray

        _import_ray()  # a missing Ray is a one-line error before anything is written
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
              f"{_engine_words(args)})", file=sys.stderr)
    for u in todo:
        S.remove_stale_temp(shard_dir / f"{u.name}.tar")
        S.remove_stale_temp(S.index_path(shard_dir / f"{u.name}.tar"))

    from tqdm import tqdm

    bar = tqdm(total=n_todo, unit="img", disable=True if quiet else None, dynamic_ncols=True, file=sys.stderr)
    collector = _Collector(job, todo, bar, timings)
    try:
        if collector.flat:
            _run_engine(args, job, todo, collector)
    finally:
        bar.close()
        manifest = job.write_manifest()
    return manifest


def _engine_words(args) -> str:
    if getattr(args, "engine", "local") == "ray":
        return f"Ray at {args.ray_address}" if args.ray_address else f"a local Ray with {args.workers} CPU(s)"
    return f"{args.workers} worker(s)"


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
