"""The run folder's checkpoint layout, shared by the trainer (save, resume) and export (read).

``checkpoints/checkpoint-NNNNNNNN`` holds accelerate's ``save_state`` (trained weights,
optimizer, LR schedule, :class:`TrainState`) plus ``dense_face_checkpoint.json``: the family
geometry, metadata and config, so export needs neither the base model nor the dataset.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..dense_face_core.errors import DenseFaceInputError, MissingModelError

CHECKPOINTS = "checkpoints"
CHECKPOINT_META = "dense_face_checkpoint.json"


class TrainState:
    """What accelerate checkpoints besides model/optimizer: the step and the data position."""

    def __init__(self):
        self.step = 0
        self.samples_per_rank = 0
        self.world_size = 1
        self.samples_per_step = 1

    def state_dict(self) -> dict:
        return {"step": self.step, "samples_per_rank": self.samples_per_rank, "world_size": self.world_size,
                "samples_per_step": self.samples_per_step}

    def load_state_dict(self, sd: dict) -> None:
        self.step = int(sd["step"])
        self.samples_per_rank = int(sd["samples_per_rank"])
        self.world_size = int(sd.get("world_size", 1))
        self.samples_per_step = int(sd.get("samples_per_step", 1))


def list_checkpoints(output_dir: Path) -> list[Path]:
    root = Path(output_dir) / CHECKPOINTS
    found = []
    for p in root.glob("checkpoint-*"):
        try:
            found.append((int(p.name.split("-")[1]), p))
        except (IndexError, ValueError):
            continue
    return [p for _, p in sorted(found)]


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder as given, or the latest one of a run folder."""
    p = Path(path).expanduser()
    if (p / CHECKPOINT_META).is_file():
        return p
    found = list_checkpoints(p)
    if found:
        return found[-1]
    raise MissingModelError(f"{p} is neither a Dense-Face training checkpoint nor a run folder with checkpoints/")


def resolve_resume(cfg: dict) -> Path | None:
    mode = cfg["train"]["resume"]
    if mode in (None, False, "none", "no"):
        return None
    if mode in ("auto", True):
        found = list_checkpoints(Path(cfg["output_dir"]))
        return found[-1] if found else None
    p = Path(str(mode)).expanduser()
    if not (p / CHECKPOINT_META).is_file():
        raise DenseFaceInputError(f"train.resume: {p} is not a Dense-Face checkpoint folder")
    return p


def resume_from_checkpoint(accelerator, cfg: dict, state: TrainState) -> Path | None:
    """Load ``train.resume``'s checkpoint (if any) into the prepared objects; ``state`` comes in
    with this run's world size and batch. A checkpoint of another world size or batch resumes at
    the same step, its data order no longer sample-exact."""
    world, per_step = state.world_size, state.samples_per_step
    resume = resolve_resume(cfg)
    if resume is None:
        return None
    accelerator.load_state(str(resume))
    if state.world_size != world or state.samples_per_step != per_step:
        accelerator.print(f"dense-face train: resuming {resume.name} with another world size or batch "
                          f"({state.world_size}x{state.samples_per_step} -> {world}x{per_step}); the data "
                          "order restarts from its position in this layout, not sample-exact")
        state.samples_per_rank = state.step * per_step
    state.world_size, state.samples_per_step = world, per_step
    accelerator.print(f"dense-face train: resumed from {resume} at step {state.step}")
    return resume


def save_checkpoint(accelerator, cfg: dict, state: TrainState, meta: dict) -> Path:
    """save_state into ``.tmp-checkpoint-N``, then one rename: a kill at any moment leaves either
    the previous checkpoints or the complete new one, never a partial folder under a real name."""
    root = Path(cfg["output_dir"]) / CHECKPOINTS
    final = root / f"checkpoint-{state.step:08d}"
    tmp = root / f".tmp-checkpoint-{state.step:08d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_meta(tmp / CHECKPOINT_META, dict(meta, step=state.step))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        _keep_newest(Path(cfg["output_dir"]), int(cfg["train"]["checkpoints_total_limit"] or 0))
    accelerator.wait_for_everyone()
    return final


def _write_meta(path: Path, meta: dict) -> None:
    with open(path, "w") as fh:
        json.dump(meta, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())


def _keep_newest(output_dir: Path, limit: int) -> None:
    if limit > 0:
        for old in list_checkpoints(output_dir)[:-limit]:
            shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def clean_temp_checkpoints(output_dir: Path) -> None:
    """Remove the ``.tmp-checkpoint-*`` of a run that was killed while saving."""
    for p in (Path(output_dir) / CHECKPOINTS).glob(".tmp-checkpoint-*"):
        shutil.rmtree(p, ignore_errors=True)


def checkpoint_meta(cfg: dict, net, id_model: str, base_source: str, dataset: str) -> dict:
    """Everything export needs without loading the base model or the dataset again."""
    fam = net.family
    return {
        "format": "dense-face-train-checkpoint",
        "family": {"name": fam.name, "context_dim": fam.context_dim, "model_channels": fam.model_channels,
                   "channel_mult": list(fam.channel_mult), "num_res_blocks": fam.num_res_blocks,
                   "attention_ds": list(fam.attention_ds), "num_heads": fam.num_heads,
                   "num_head_channels": fam.num_head_channels,
                   "use_linear_in_transformer": fam.use_linear_in_transformer},
        "id_embedding_model": id_model,
        "id_dim": net.id_dim,
        "delta": net.delta,
        "id_delta": float(net.id_projector.id_delta),
        "placeholder_token": net.placeholder_token,
        "init_word": net.init_word,
        "dense_head": {"enabled": net.dense_head is not None, "width": net.head_width, "output_size": net.head_size},
        "base_model": base_source,
        "dataset": dataset,
        "config": cfg,
    }
