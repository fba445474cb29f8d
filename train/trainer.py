"""``dense-face train``: train the pose branch, PC-adapter, identity projector and dense head
on a frozen Stable Diffusion with diffusers + accelerate.

    dense-face train --config FILE [--output-dir DIR] [--set key.sub=value ...] [--lr 1e-5 ...]
    accelerate launch [--multi_gpu --num_processes N ...] $(which dense-face) train --config FILE ...

One process, DDP over many processes and nodes, and whatever ``accelerate config`` sets up
(DeepSpeed/FSDP, mixed precision) all run this same loop. Resuming is exact: the sample
order, timesteps, noise and dropout are pure functions of (seed, step, micro-step, rank),
and a checkpoint (``accelerate save_state`` into a temp folder renamed into place) holds
the trained weights, optimizer, LR schedule and step count.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..dense_face_core.errors import run_reporting_errors
from . import config as C
from .accelerator_setup import installed_trackers, make_accelerator
from .checkpoints import (
    TrainState,
    checkpoint_meta,
    clean_temp_checkpoints,
    resume_from_checkpoint,
    save_checkpoint,
)
from .data_prep import make_loader, run_dataset
from .export import export_checkpoint
from .launch import SINGLE_CPU_PROCESS_HINT, asked_for_more_processes
from .micro_step import MicroStep, step_generator
from .run_models import RunModels, make_optimizer, samples_per_step, setup_models
from .train_log import LOSS_TERMS, TrainLog

__all__ = ["build_parser", "main", "train"]


@dataclass
class _Run:
    """Everything the loop touches, prepared by :func:`_start`."""

    cfg: dict
    accelerator: object
    models: RunModels
    model: torch.nn.Module  # the net as accelerate prepared it (DDP-wrapped under several processes)
    optimizer: object
    lr_scheduler: object
    state: TrainState
    meta: dict
    batches: object
    micro: MicroStep
    log: TrainLog
    resume: Path | None


def _start(cfg: dict) -> _Run:
    """Accelerator, data (built once, by the main process), models, optimizer, resume, loader, log."""
    t = cfg["train"]
    out = Path(cfg["output_dir"])
    trackers = installed_trackers(t["report_to"])
    accelerator = make_accelerator(t, out, trackers)
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    if accelerator.is_main_process:
        kind = str(accelerator.distributed_type).split(".")[-1]
        where = str(device) if kind == "NO" else f"{kind}, {device}"
        print(f"dense-face train: {world} process{'es' if world > 1 else ''} ({where}), mixed precision "
              f"{accelerator.mixed_precision}", file=sys.stderr)
        if asked_for_more_processes(world):
            print(SINGLE_CPU_PROCESS_HINT, file=sys.stderr)
        out.mkdir(parents=True, exist_ok=True)
        clean_temp_checkpoints(out)
    dataset, root, id_model = run_dataset(cfg, accelerator)
    models = setup_models(cfg, device, world)
    optimizer, lr_scheduler, lr = make_optimizer(cfg, models.params, world)
    model, optimizer = accelerator.prepare(models.net, optimizer)
    state = TrainState()
    state.world_size, state.samples_per_step = world, samples_per_step(t)
    accelerator.register_for_checkpointing(lr_scheduler, state)
    meta = checkpoint_meta(cfg, models.net, id_model, models.base.source, str(root))
    resume = resume_from_checkpoint(accelerator, cfg, state)
    if accelerator.is_main_process:
        (out / "config.yaml").write_text(C.dump(cfg))
    batches = iter(make_loader(cfg, dataset, rank, world, state.samples_per_rank, device))
    log = TrainLog(accelerator, cfg, trackers, state.step, lr)
    micro = MicroStep(cfg, model, accelerator.unwrap_model(model), models.base, device, models.weight_dtype,
                      models.dense_on)
    return _Run(cfg, accelerator, models, model, optimizer, lr_scheduler, state, meta, batches, micro, log, resume)


def _optimisation_step(run: _Run) -> torch.Tensor:
    """One optimizer step over ``gradient_accumulation_steps`` micro-batches; returns the loss
    terms (LOSS_TERMS order) averaged over them."""
    t, acc = run.cfg["train"], run.accelerator
    accum = int(t["gradient_accumulation_steps"])
    sums = torch.zeros(len(LOSS_TERMS), device=acc.device)
    for micro in range(accum):
        batch = next(run.batches)
        g = step_generator(int(t["seed"]), run.state.step, micro, acc.process_index)
        with acc.accumulate(run.model):
            with acc.autocast():
                loss, terms = run.micro.loss(batch, g)
            acc.backward(loss)
            if acc.sync_gradients and float(t["max_grad_norm"]) > 0:
                acc.clip_grad_norm_(run.models.params, float(t["max_grad_norm"]))
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
        sums += torch.stack([terms[k].detach().float() for k in LOSS_TERMS]) / accum
    run.lr_scheduler.step()
    return sums


def _finish(run: _Run, last: Path | None) -> None:
    """Close the log; the main process exports the last checkpoint when ``export.at_end`` asks."""
    cfg, acc = run.cfg, run.accelerator
    run.log.close()
    if acc.is_main_process and cfg["export"]["at_end"] and last is not None:
        path = export_checkpoint(last, cfg["export"]["out"], dtype=cfg["export"]["dtype"],
                                 include_dense_head=bool(cfg["export"]["include_dense_head"]))
        print(f"dense-face train: exported {path}", file=sys.stderr)
    acc.wait_for_everyone()
    run.models.net.detach_base()


def train(cfg: dict) -> Path:
    """Run (or resume) training; returns the last checkpoint folder."""
    run = _start(cfg)
    t, state = cfg["train"], run.state
    max_steps = int(t["max_steps"])
    run.model.train()
    last = run.resume
    run.log.start()
    while state.step < max_steps:
        sums = _optimisation_step(run)
        state.step += 1
        state.samples_per_rank += samples_per_step(t)
        run.log.after_step(state, sums, run.lr_scheduler)
        if state.step % int(t["checkpoint_every"]) == 0 or state.step == max_steps:
            last = save_checkpoint(run.accelerator, cfg, state, run.meta)
    _finish(run, last)
    return last


# ---------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dense-face train", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="YAML config (see train/configs/)")
    p.add_argument("--output-dir", help="run folder: checkpoints/, logs/, config.yaml, the exported weights")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.lr=1e-5 --set loss.lambda_depth=0.5")
    for name, key in C.SHORTCUTS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, metavar="V", help=f"same as --set {key}=V")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    overrides = list(args.overrides)
    for name, key in C.SHORTCUTS.items():
        value = getattr(args, name)
        if value is not None:
            overrides.append(f"{key}={value}")

    def body() -> int:
        cfg = C.load_config(args.config, overrides, args.output_dir)
        if args.print_config:
            print(C.dump(cfg), end="")
            return 0
        train(cfg)
        return 0

    return run_reporting_errors("dense-face train", body, "interrupted (resume with the same command)")


if __name__ == "__main__":
    sys.exit(main())
