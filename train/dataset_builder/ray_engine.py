"""``--engine ray``: the builder's stages on Ray Data, on a local Ray or a cluster.

A row is one chunk (``--batch-size`` images of one unit) and travels as one pickled list of
per-image states, so each stage sees exactly the batches the local engine sees: the CPU
stages (MediaPipe, crops, targets, encoding) run as Ray tasks, each model stage
(restoration, ArcFace, every captioner, CLIP) as an actor pool with ``--model-actors``
actors, ``--gpus-per-actor`` of a GPU and ``--cpus-per-actor`` CPUs each. Rows come back in
input order to this process, which writes the shards and the manifest exactly as the local
engine does (the same collector, the same resume rule): the same input and settings give
the same bytes, and a killed run resumes from its finished shards.
"""
from __future__ import annotations

import logging
import pickle
import warnings

import numpy as np

from ...dense_face_core.errors import DenseFaceError, DenseFaceInputError
from .stages import _W, ensure_cpu_worker, plan_stages, run_stages, stage_groups
from .worker import finish_state

RAY_INSTALL = "pip install 'ray[data]'"
MAX_BLOCKS = 4096
# Ray Data retries a task forever by default: a photo that crashes its worker natively would hang the build
TASK_RETRIES = 3


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise DenseFaceInputError(f"--engine ray needs Ray Data on every node ({RAY_INSTALL})") from None
    return ray


def _connect(ray, args) -> bool:
    """Join ``--ray-address`` or start a local Ray with ``--workers`` CPUs; True when started here."""
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if args.ray_address:
        ray.init(address=args.ray_address, **quiet)
    else:
        ray.init(address="local", num_cpus=max(1, int(args.workers)), include_dashboard=False, **quiet)
    return True


def actor_resources(args, n_actors: int, resources: dict) -> tuple[float, float]:
    """(CPUs, GPU share) per model actor: the options, else the cluster's GPUs split over the
    actors and at most half its CPUs (the rest runs MediaPipe), one CPU each at most."""
    total_cpu, total_gpu = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    if n_actors == 0:
        return 1.0, 0.0
    gpus = args.gpus_per_actor if args.gpus_per_actor is not None else min(1.0, total_gpu / n_actors)
    cpus = args.cpus_per_actor if args.cpus_per_actor is not None else min(1.0, 0.5 * total_cpu / n_actors)
    if n_actors * cpus > total_cpu - 1 + 1e-9:
        raise DenseFaceInputError(f"--cpus-per-actor: {n_actors} model actors x {cpus:g} CPUs leave less than one of "
                                  f"the cluster's {total_cpu:g} CPUs for the MediaPipe tasks; lower it or "
                                  "--model-actors")
    if gpus > 1 or n_actors * gpus > total_gpu + 1e-9:
        raise DenseFaceInputError(f"--gpus-per-actor: {n_actors} model actors x {gpus:g} GPUs exceed the cluster's "
                                  f"{total_gpu:g} GPU(s)")
    return float(cpus), float(gpus)


def _rows_out(batch: dict, payloads: list[bytes]) -> dict:
    return {"unit": batch["unit"], "start": batch["start"], "payload": np.array(payloads, dtype=object)}


def cpu_task(batch: dict, cfg: dict, stages: list, later: list) -> dict:
    """A run of CPU stages on each chunk of the batch (a Ray task; MediaPipe kept per process)."""
    ensure_cpu_worker(cfg)
    out = [pickle.dumps(run_stages(stages, pickle.loads(p), cfg, _W["analyzer"], None, later), protocol=5)
           for p in batch["payload"]]
    return _rows_out(batch, out)


class ModelActor:
    """One model stage's model, loaded once per actor, run on each chunk it is given."""

    def __init__(self, cfg: dict, stage, later: list, use_gpu: bool):
        from .model_set import ModelSet

        device = "cpu"
        if use_gpu:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.cfg, self.stage, self.later = cfg, stage, later
        self.models = ModelSet(cfg, device)
        self.models.get(stage.model)

    def __call__(self, batch: dict) -> dict:
        out = [pickle.dumps(run_stages([self.stage], pickle.loads(p), self.cfg, None, self.models, self.later),
                            protocol=5) for p in batch["payload"]]
        return _rows_out(batch, out)


def _cpu_map(ds, fn_kwargs: dict):
    """A run of CPU stages as Ray tasks, retried TASK_RETRIES times. Ray Data takes ``max_retries`` only
    through its deprecated free-form remote args (no named parameter yet); without them, Ray's default."""
    kw = {"batch_size": 1, "batch_format": "numpy", "num_cpus": 1, "fn_kwargs": fn_kwargs}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        try:
            return ds.map_batches(cpu_task, max_retries=TASK_RETRIES, **kw)
        except TypeError:  # a Ray that no longer takes remote args here
            return ds.map_batches(cpu_task, **kw)


def _dataset(ray, cfg: dict, chunks: list, args):
    """The Ray Data pipeline over ``chunks``: a map per stage group, model stages as actor pools."""
    from ray.data import ActorPoolStrategy, DataContext

    ctx = DataContext.get_current()
    ctx.execution_options.preserve_order = True  # rows back in input order: shards complete one by one
    ctx.enable_progress_bars = False            # the build's own bar counts images by outcome
    rows = [{"unit": c.unit, "start": c.start, "payload": pickle.dumps(c.items, protocol=5)} for c in chunks]
    # one block per chunk for fine-grained balancing, but not millions of blocks for a big build
    ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS))
    groups = stage_groups(plan_stages(cfg))
    n_actors = sum(1 for g in groups if g[0].model is not None) * args.model_actors
    cpus, gpus = actor_resources(args, n_actors, ray.cluster_resources())
    for i, group in enumerate(groups):
        later = [st for g in groups[i + 1:] for st in g]
        if group[0].model is None:
            ds = _cpu_map(ds, fn_kwargs={"cfg": cfg, "stages": group, "later": later})
        else:
            ds = ds.map_batches(ModelActor, batch_size=1, batch_format="numpy",
                                fn_constructor_kwargs={"cfg": cfg, "stage": group[0], "later": later,
                                                       "use_gpu": gpus > 0},
                                compute=ActorPoolStrategy(size=args.model_actors), num_cpus=cpus, num_gpus=gpus)
    return ds


def run_ray(cfg: dict, chunks: list, on_chunk, args) -> None:
    """Every chunk through the pipeline on Ray; ``on_chunk(slot, results)`` in input order, here."""
    ray = _import_ray()
    started = _connect(ray, args)
    try:
        for row in _dataset(ray, cfg, chunks, args).iter_rows():
            states = pickle.loads(row["payload"])
            on_chunk((int(row["unit"]), int(row["start"])), [finish_state(s, cfg) for s in states])
    except ray.exceptions.RayError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DenseFaceError(f"the Ray run failed ({type(exc).__name__}: {first[:200]}); the finished shards are "
                             "kept and the same command resumes. If a worker keeps dying on one chunk (a native "
                             "crash on a photo), --engine local records that photo as crashed and goes on") from None
    finally:
        if started:
            ray.shutdown()
