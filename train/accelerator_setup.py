"""The accelerate side of a run: one Accelerator for one process, DDP or whatever
``accelerate config`` set up, with the trackers that are really installed."""
from __future__ import annotations

import sys
from pathlib import Path

import torch


def installed_trackers(report_to) -> list[str]:
    """The ``train.report_to`` names whose package is importable; a missing one is said, not fatal."""
    import importlib.util

    out = []
    for name in report_to or []:
        module = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(name, name)
        if importlib.util.find_spec(module) is not None or (name == "tensorboard" and
                                                              importlib.util.find_spec("tensorboardX")):
            out.append(name)
        else:
            print(f"dense-face train: report_to {name!r} is not installed; logging to jsonl only", file=sys.stderr)
    return out


def make_accelerator(t: dict, out: Path, trackers: list[str]):
    """The Accelerator for the ``train`` config section ``t``; logs go under ``out/logs``."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    accelerator = Accelerator(
        gradient_accumulation_steps=int(t["gradient_accumulation_steps"]), mixed_precision=t["mixed_precision"],
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=bool(t["ddp_find_unused_parameters"]))])
    ds = getattr(accelerator.state, "deepspeed_plugin", None)
    if ds is not None:  # DeepSpeed wants the micro-batch size when no DataLoader goes through prepare()
        ds.deepspeed_config["train_micro_batch_size_per_gpu"] = int(t["batch_size"])
    if t["allow_tf32"] and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return accelerator
