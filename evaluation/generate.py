"""Generation through the headless runner: one run folder per RunSpec, finished runs never generated twice."""
from __future__ import annotations

import argparse
import json
import shutil
import threading
import time
from pathlib import Path

from ..dense_face_core.errors import DenseFaceError, DenseFaceInputError, MissingModelError
from ..dense_face_core.io_utils import atomic_write_text
from ..headless import runner as R
from ..headless.server_pool import run_pool, split_urls
from .messages import log
from .plan import RunSpec
from .run_record import RUN_WORKFLOW, eval_block, load_run, rel_path, run_is_done, write_summary


class Generator:
    """Runs the workflow once per RunSpec through the runner's RunSession (one ComfyUI for all runs)."""

    def __init__(self, args):
        self.args = args
        self.session = R.RunSession(args.workflow, comfy_url=args.comfy_url, comfyui=args.comfyui,
                                    models_dir=args.models_dir, demo=args.demo, demo_dir=args.demo_dir,
                                    device=args.device, log=log,
                                    model_names={"checkpoint": args.checkpoint, "weights": args.weights,
                                                 "id_model": args.id_model})
        if self.session.demo:
            log("eval: metrics of random weights are meaningless: this run checks the plumbing only.")

    @property
    def wf_path(self) -> Path:
        return self.session.wf_path

    @property
    def demo(self) -> bool:
        return self.session.demo

    @property
    def host(self):
        return self.session.host

    def _namespace(self, prompt, seed):
        a = self.args
        return argparse.Namespace(prompt=prompt, seed=seed, steps=a.steps, yaw=a.yaw, pitch=a.pitch, roll=a.roll)

    def _summary_head(self) -> dict:
        return {"workflow": str(self.wf_path), "demo_random_weights": self.demo}

    def failed_summary(self, exc: Exception) -> dict:
        """The record of a run that failed (kept, and counted in the table)."""
        return {**self._summary_head(), "outputs": [], "status": "failed", "error": str(exc)}

    def run(self, spec: RunSpec, run_dir: Path) -> dict:
        """Generate one run into ``run_dir``; returns its summary (``run_summary.json``)."""
        images = self.session.images(target=self.args.target, reference=spec.identity.reference)
        inputs_dir = run_dir / "inputs"
        local = _copy_inputs(images, inputs_dir)
        wf, notes, written = self.session.run(run_dir, local, self._namespace(spec.prompt, spec.seed),
                                              inputs_dir=inputs_dir)
        atomic_write_text(run_dir / RUN_WORKFLOW, json.dumps(wf, indent=1) + "\n")
        return {**self._summary_head(), "overrides": notes, "outputs": [rel_path(p, run_dir) for p in written],
                "inputs": {role: rel_path(p, run_dir) for role, p in local.items()}}


def _copy_inputs(images: dict, inputs_dir: Path) -> dict[str, Path]:
    """Copies of the photos by role in the run folder: a record of exactly what conditioned the run."""
    inputs_dir.mkdir(parents=True, exist_ok=True)
    local = {}
    for role, path in images.items():
        local[role] = inputs_dir / f"{role}{Path(path).suffix.lower() or '.png'}"
        shutil.copyfile(path, local[role])
    return local


def pending_runs(plan: list[RunSpec], args, runs_root: Path, identities_root: Path) -> list[RunSpec]:
    """The planned runs not yet done with these settings (what resuming still has to generate)."""
    todo = []
    for spec in plan:
        run_dir = runs_root / spec.key
        if not run_is_done(load_run(run_dir), eval_block(spec, args, identities_root), run_dir, args.retry_failed):
            todo.append(spec)
    return todo


def _fresh_run_dir(run_dir: Path) -> Path:
    """An empty run folder: one left half-done, or made with other settings, starts afresh."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    return run_dir


def _try_run(gen: Generator, spec: RunSpec, run_dir: Path, errors: list[str], n: int) -> dict:
    """One run's summary; a generation error makes a failed run, unless it is a setup error."""
    try:
        summary = gen.run(spec, run_dir)
        summary.update(status="ok")
        return summary
    except (MissingModelError, DenseFaceInputError):
        raise  # configuration: every run would fail the same way
    except DenseFaceError as exc:
        log(f"    FAILED: {exc}")
        errors.append(str(exc))
        if len(errors) == 3 and n == 3 and len(set(errors)) == 1:
            raise DenseFaceError(f"the first 3 runs failed the same way, stopping: {exc}")
        return gen.failed_summary(exc)


def _free_comfy_memory(gen: Generator) -> None:
    """Hand the in-process ComfyUI's memory to the metric models."""
    if gen.host is not None:
        import comfy.model_management as mm

        mm.unload_all_models()
        mm.soft_empty_cache()


def generate(plan: list[RunSpec], args, runs_root: Path, identities_root: Path) -> None:
    """Generate every planned run that is not done yet, writing each run's summary as it finishes.

    With several servers (``--comfy-url URL1,URL2``) each keeps its models loaded and takes the next
    pending run when it is free; a run's result depends only on its own settings and seed."""
    todo = pending_runs(plan, args, runs_root, identities_root)
    log(f"eval: {len(plan)} run(s) planned, {len(plan) - len(todo)} already done, {len(todo)} to generate")
    if not todo:
        return
    urls = split_urls(getattr(args, "comfy_url", None))
    gens = [Generator(argparse.Namespace(**{**vars(args), "comfy_url": url})) for url in urls]
    try:
        if len(gens) == 1:
            _generate_all(gens[0], todo, args, runs_root, identities_root)
        else:
            log(f"eval: spreading {len(todo)} run(s) over {len(gens)} ComfyUI servers: {', '.join(urls)}")
            errors: list[str] = []
            lock = threading.Lock()
            run_pool(gens, list(enumerate(todo, 1)), lambda gen, item: _one_run(
                gen, item[1], item[0], len(todo), args, runs_root, identities_root, errors, lock))
    finally:
        for gen in gens:
            gen.session.close()
    _free_comfy_memory(gens[0])


def _one_run(gen, spec, n, total, args, runs_root, identities_root, errors, lock) -> None:
    with lock:
        run_dir = _fresh_run_dir(runs_root / spec.key)
    where = gen.session.server.url if gen.session.server else "in process"
    log(f"[{n}/{total}] {spec.key}: {spec.prompt!r} seed {spec.seed} ({where})")
    t0 = time.time()
    summary = _try_run(gen, spec, run_dir, errors, n)
    summary.update(eval=eval_block(spec, args, identities_root), seconds=round(time.time() - t0, 2),
                   server=where)
    write_summary(run_dir, summary)
    log(f"    {spec.key}: {summary['status']} in {time.time() - t0:.1f}s")


def _generate_all(gen: Generator, todo: list[RunSpec], args, runs_root: Path, identities_root: Path) -> None:
    started = time.time()
    errors: list[str] = []
    for n, spec in enumerate(todo, 1):
        run_dir = _fresh_run_dir(runs_root / spec.key)
        log(f"[{n}/{len(todo)}] {spec.key}: {spec.prompt!r} seed {spec.seed}")
        t0 = time.time()
        summary = _try_run(gen, spec, run_dir, errors, n)
        summary.update(eval=eval_block(spec, args, identities_root), seconds=round(time.time() - t0, 2))
        write_summary(run_dir, summary)
        done = time.time() - started
        log(f"    {summary['status']} in {time.time() - t0:.1f}s; about {done / n * (len(todo) - n) / 60:.1f} min left")
