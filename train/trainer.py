"""``dense-face train``: train the pose branch, PC-adapter, identity projector and dense head
on a frozen Stable Diffusion with diffusers + accelerate.

    dense-face train --config FILE [--output-dir DIR] [--set key.sub=value ...] [--lr 1e-5 ...]
    accelerate launch [--num_processes N ...] $(which dense-face) train --config FILE ...

One process, DDP over many processes and nodes, and whatever ``accelerate config`` sets up
(DeepSpeed/FSDP, mixed precision) all run this same loop. Resuming is exact: the sample
order, timesteps, noise and dropout are pure functions of (seed, step, micro-step, rank),
and a checkpoint (``accelerate save_state`` into a temp folder renamed into place) holds
the trained weights, optimizer, LR schedule and step count.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..dense_face_core.dense_head import dense_losses
from ..dense_face_core.errors import DenseFaceInputError, run_reporting_errors
from . import config as C

CHECKPOINTS = "checkpoints"
CHECKPOINT_META = "dense_face_checkpoint.json"
LOG_FILE = "train_log.jsonl"
LOSS_TERMS = ("loss", "eps", "landmark", "parsing", "depth")


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


def step_generator(seed: int, step: int, micro: int, rank: int) -> torch.Generator:
    """The randomness of one micro-step of one rank (timesteps, noise, dropout, posterior sample)."""
    s = int(np.random.SeedSequence([int(seed), int(step), int(micro), int(rank)]).generate_state(1)[0])
    return torch.Generator().manual_seed(s)


class MicroStep:
    """Loss of one micro-batch: VAE latents, noise and timestep, CFG dropout, the face-mode forward,
    eps-MSE + lambda-weighted dense losses (paper Eq. 8), dense features at the sampled timestep.

    Dropout for classifier-free guidance, as the authors sample the unconditional branch:
    - caption dropout: the prompt becomes "" - no placeholder, so no identity token - while the
      identity feature still reaches the PC-adapter (the authors' uncond: empty prompt, f kept);
    - identity dropout: the caption stays but the identity is gone everywhere: the placeholder
      keeps the plain init-word embedding and the adapter's identity input is zero (no query bias).
    """

    def __init__(self, cfg, model, net, base, device, weight_dtype, dense_on: bool):
        t, lo = cfg["train"], cfg["loss"]
        self.model, self.net, self.base, self.device, self.dtype = model, net, base, device, weight_dtype
        self.dense_on = dense_on
        self.sample_latents = cfg["data"]["latents"] == "sample"
        self.scaling = float(getattr(base.vae.config, "scaling_factor", 0.18215))
        sched = base.noise_scheduler
        self.t_lo, t_hi = (int(v) for v in t["timestep_range"])
        self.t_hi = min(t_hi, sched.config.num_train_timesteps)
        self.p_cap, self.p_id = float(t["caption_dropout"]), float(t["identity_dropout"])
        self.lambdas = (float(lo["lambda_landmark"]), float(lo["lambda_parsing"]), float(lo["lambda_depth"]))

    @torch.no_grad()
    def latents(self, image, g):
        dist = self.base.vae.encode(image.to(self.device, self.dtype)).latent_dist
        lat = dist.mean
        if self.sample_latents:  # the authors encode with a posterior sample
            lat = lat + dist.std * torch.randn(lat.shape, generator=g).to(self.device, lat.dtype)
        return lat.float() * self.scaling

    def loss(self, batch, g):
        from .model import dense_targets, diffusion_target, mse

        dev, sched = self.device, self.base.noise_scheduler
        b = batch["image"].shape[0]
        latents = self.latents(batch["image"], g)
        noise = torch.randn(latents.shape, generator=g).to(dev)
        timesteps = torch.randint(self.t_lo, self.t_hi, (b,), generator=g).to(dev)
        drop_caption = (torch.rand(b, generator=g) < self.p_cap).tolist()
        drop_identity = torch.rand(b, generator=g) < self.p_id
        id_keep = (~drop_identity & batch["has_embedding"].bool()).float().to(dev)
        captions = ["" if dc else c for dc, c in zip(drop_caption, batch["caption"])]
        input_ids, placeholder = self.net.tokenize(captions, dev)
        noisy = sched.add_noise(latents, noise, timesteps)
        target = diffusion_target(sched, latents, noise, timesteps)
        res = self.model(noisy.to(self.dtype), timesteps, input_ids, placeholder, batch["embedding"].to(dev), id_keep,
                         batch["pose_image"].to(dev, self.dtype), with_dense=self.dense_on)
        loss_eps = mse(res["pred"], target)
        zero = torch.zeros((), device=dev)
        terms = {"eps": loss_eps, "landmark": zero, "parsing": zero, "depth": zero}
        loss = loss_eps
        if self.dense_on:
            targets = {k: v.to(dev) for k, v in dense_targets(batch).items()}
            dense = dense_losses(res["dense"], targets, *self.lambdas)
            terms.update({k: dense[k] for k in ("landmark", "parsing", "depth")})
            loss = loss + dense["total"]
        terms["loss"] = loss
        return loss, terms


# ---------------------------------------------------------------- checkpoints
def list_checkpoints(output_dir: Path) -> list[Path]:
    root = Path(output_dir) / CHECKPOINTS
    found = []
    for p in root.glob("checkpoint-*"):
        try:
            found.append((int(p.name.split("-")[1]), p))
        except (IndexError, ValueError):
            continue
    return [p for _, p in sorted(found)]


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
        meta = dict(meta, step=state.step)
        with open(tmp / CHECKPOINT_META, "w") as fh:
            json.dump(meta, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        limit = int(cfg["train"]["checkpoints_total_limit"] or 0)
        if limit > 0:
            for old in list_checkpoints(Path(cfg["output_dir"]))[:-limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


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


def _clean_temp_checkpoints(output_dir: Path) -> None:
    for p in (Path(output_dir) / CHECKPOINTS).glob(".tmp-checkpoint-*"):
        shutil.rmtree(p, ignore_errors=True)


# ---------------------------------------------------------------- the run
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


def _lr_scheduler(cfg: dict, optimizer):
    from diffusers.optimization import get_scheduler

    t = cfg["train"]
    return get_scheduler(t["lr_scheduler"], optimizer=optimizer, num_warmup_steps=int(t["lr_warmup_steps"]),
                         num_training_steps=int(t["max_steps"]))


def _trackers(report_to) -> list[str]:
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


def train(cfg: dict) -> Path:
    """Run (or resume) training; returns the last checkpoint folder."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    from .base_models import load_base
    from .data_prep import EpochItems, ResumableSampler, SyntheticPairs, embedding_model_name, ensure_dataset
    from .dataset import DenseFacePairs
    from .model import build_net

    t = cfg["train"]
    out = Path(cfg["output_dir"])
    accum = int(t["gradient_accumulation_steps"])
    trackers = _trackers(t["report_to"])
    accelerator = Accelerator(
        gradient_accumulation_steps=accum, mixed_precision=t["mixed_precision"],
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=bool(t["ddp_find_unused_parameters"]))])
    ds = getattr(accelerator.state, "deepspeed_plugin", None)
    if ds is not None:  # DeepSpeed wants the micro-batch size when no DataLoader goes through prepare()
        ds.deepspeed_config["train_micro_batch_size_per_gpu"] = int(t["batch_size"])
    main = accelerator.is_main_process
    rank, world = accelerator.process_index, accelerator.num_processes
    device = accelerator.device
    if t["allow_tf32"] and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # ---- data (built once, by the main process)
    d = cfg["data"]
    if main:
        out.mkdir(parents=True, exist_ok=True)
        _clean_temp_checkpoints(out)
    if int(d["synthetic"] or 0) > 0:
        root = f"synthetic({int(d['synthetic'])})"
        id_model = d["id_embedding_model"] or "synthetic"
        dataset = SyntheticPairs(int(d["synthetic"]), int(d["image_size"]), int(d["target_size"]), int(t["seed"]))
    else:
        if main:
            root = ensure_dataset(cfg)
        accelerator.wait_for_everyone()
        if not main:
            root = ensure_dataset(cfg)  # now only locates the finished build
        id_model = embedding_model_name(cfg, root)
        dataset = DenseFacePairs(root, image_size=int(d["image_size"]), target_size=int(d["target_size"]),
                                 seed=int(t["seed"]), min_images_per_identity=int(d["min_images_per_identity"]),
                                 heatmap_sigma=float(d["heatmap_sigma"]),
                                 require_embeddings=bool(d["require_embeddings"]))

    # ---- models
    base = load_base(cfg["base"])
    torch.manual_seed(int(t["seed"]))
    net = build_net(cfg, base)
    dense_on = C.dense_losses_enabled(cfg)
    net.attach(base)
    params = net.configure_trainable(input_block_adapters=bool(cfg["model"]["train_input_block_adapters"]),
                                     dense_head=dense_on)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(t["mixed_precision"], torch.float32)
    for m in base.modules().values():  # frozen base in the compute dtype (halves its memory under fp16/bf16)
        m.to(device) if weight_dtype == torch.float32 else m.to(device, dtype=weight_dtype)
    net.to(device)
    if t["gradient_checkpointing"]:
        base.unet.enable_gradient_checkpointing()
        enc = base.text_encoder
        (getattr(enc, "activation_checkpointing_enable", None) or enc.gradient_checkpointing_enable)()
        base.text_encoder.train()  # transformers checkpoints only in training mode (CLIP has no dropout)
        net.checkpoint_pose_branch = True
    if t["sync_batchnorm"] and world > 1:
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    lr = float(t["lr"]) * (int(t["batch_size"]) * accum * world if t["scale_lr"] else 1)
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(float(t["adam_beta1"]), float(t["adam_beta2"])),
                                  weight_decay=float(t["adam_weight_decay"]), eps=float(t["adam_epsilon"]))
    lr_scheduler = _lr_scheduler(cfg, optimizer)
    model, optimizer = accelerator.prepare(net, optimizer)
    state = TrainState()
    state.world_size, state.samples_per_step = world, int(t["batch_size"]) * accum
    accelerator.register_for_checkpointing(lr_scheduler, state)
    meta = checkpoint_meta(cfg, net, id_model, base.source, str(root))

    resume = resolve_resume(cfg)
    if resume is not None:
        accelerator.load_state(str(resume))
        if state.world_size != world or state.samples_per_step != int(t["batch_size"]) * accum:
            accelerator.print(f"dense-face train: resuming {resume.name} with another world size or batch "
                              f"({state.world_size}x{state.samples_per_step} -> {world}x"
                              f"{int(t['batch_size']) * accum}); the data order restarts from its position "
                              "in this layout, not sample-exact")
            state.samples_per_rank = state.step * int(t["batch_size"]) * accum
        state.world_size, state.samples_per_step = world, int(t["batch_size"]) * accum
        accelerator.print(f"dense-face train: resumed from {resume} at step {state.step}")
    if main:
        (out / "config.yaml").write_text(C.dump(cfg))

    max_steps = int(t["max_steps"])
    sampler = ResumableSampler(len(dataset), rank, world, int(t["seed"]), start=state.samples_per_rank)
    workers = int(d["num_workers"])
    loader = torch.utils.data.DataLoader(EpochItems(dataset), batch_size=int(t["batch_size"]), sampler=sampler,
                                         num_workers=workers, persistent_workers=workers > 0,
                                         pin_memory=device.type == "cuda", drop_last=True)
    batches = iter(loader)
    if trackers:
        accelerator.init_trackers("dense_face", config={"lr": lr, "max_steps": max_steps})

    step = MicroStep(cfg, model, accelerator.unwrap_model(model), base, device, weight_dtype, dense_on)
    log_path = out / "logs" / LOG_FILE
    if main:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    bar = None
    if main and t["progress"]:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_steps, initial=state.step, desc="dense-face train", dynamic_ncols=True)
    model.train()
    last = resume
    t_start = time.perf_counter()
    while state.step < max_steps:
        sums = torch.zeros(len(LOSS_TERMS), device=device)
        for micro in range(accum):
            batch = next(batches)
            g = step_generator(int(t["seed"]), state.step, micro, rank)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss, terms = step.loss(batch, g)
                accelerator.backward(loss)
                if accelerator.sync_gradients and float(t["max_grad_norm"]) > 0:
                    accelerator.clip_grad_norm_(params, float(t["max_grad_norm"]))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            sums += torch.stack([terms[k].detach().float() for k in LOSS_TERMS]) / accum
        lr_scheduler.step()
        state.step += 1
        state.samples_per_rank += int(t["batch_size"]) * accum
        if state.step % int(t["log_every"]) == 0 or state.step == max_steps:  # same on every rank
            means = accelerator.reduce(sums, reduction="mean")
            rec = {"step": state.step, **{k: float(v) for k, v in zip(LOSS_TERMS, means.tolist())},
                   "lr": float(lr_scheduler.get_last_lr()[0]),
                   "samples": state.step * state.samples_per_step * world,
                   "elapsed_s": round(time.perf_counter() - t_start, 3)}
            if main:
                with open(log_path, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                if trackers:
                    accelerator.log({k: v for k, v in rec.items() if k != "step"}, step=state.step)
                if bar is not None:
                    bar.set_postfix({k: f"{rec[k]:.4f}" for k in LOSS_TERMS[:2]} | {"lr": f"{rec['lr']:.2e}"})
        if bar is not None:
            bar.update(1)
        if state.step % int(t["checkpoint_every"]) == 0 or state.step == max_steps:
            last = save_checkpoint(accelerator, cfg, state, meta)
    if bar is not None:
        bar.close()
    if trackers:
        accelerator.end_training()
    if main and cfg["export"]["at_end"] and last is not None:
        from .export import export_checkpoint

        path = export_checkpoint(last, cfg["export"]["out"], dtype=cfg["export"]["dtype"],
                                 include_dense_head=bool(cfg["export"]["include_dense_head"]))
        print(f"dense-face train: exported {path}", file=sys.stderr)
    accelerator.wait_for_everyone()
    net.detach_base()
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
