"""``dense-face bench train``: what the dense losses cost per training step, and how the trainer
scales from 1 to 2 processes.

- Step time with vs without the dense losses: the trainer's own micro-step (VAE encode, identity
  token, pose branch, adapted UNet, losses, backward, AdamW), in one process, the two settings
  timed round-robin on the same models so machine drift hits both alike; median of the repeats.
- Samples/s with 1 vs 2 processes: the real trainer under ``accelerate launch`` (DDP; gloo on
  CPU, NCCL on GPUs) on synthetic samples, same per-process batch (weak scaling), measured
  from its log after warm-up steps. On CPU every process gets one thread.

Models have random weights (speed does not depend on the values); ``--size`` picks
``tiny`` (the tests' geometry), ``small`` (SD1.5 layout at width 64, the default) or ``sd15``
(full-size SD1.5; needs ~15 GB RAM and minutes per step on a CPU).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from ..train.launch import launch_command
from ..train.run_models import samples_per_step

SIZES = {
    "tiny": {"family": {"name": "tiny", "context_dim": 32, "model_channels": 32, "channel_mult": [1, 2, 2, 2],
                        "num_heads": 4},
             "unet": {"attention_head_dim": 8},
             "text_encoder": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                              "num_hidden_layers": 2},
             "vae": {"block_out_channels": [16, 32, 32, 32], "layers_per_block": 1, "norm_num_groups": 8},
             "head_width": 32, "what": "tiny SD-shaped (the tests' geometry: UNet width 32, context 32)"},
    "small": {"family": {"name": "bench_small", "context_dim": 128, "model_channels": 64,
                         "channel_mult": [1, 2, 4, 4], "num_heads": 8},
              "text_encoder": {"hidden_size": 128, "intermediate_size": 512, "num_attention_heads": 4,
                               "num_hidden_layers": 4, "projection_dim": 128},
              "vae": {"block_out_channels": [32, 64, 128, 128], "layers_per_block": 1},
              "head_width": 32,
              "what": "small SD1.5-shaped (UNet width 64 = 1/5 of SD1.5, mult 1,2,4,4, context 128; head width 32 = 128 x 64/320 rounded)"},
    "sd15": {"family": "sd15",
             "text_encoder": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                              "num_hidden_layers": 12, "projection_dim": 768},
             "vae": {"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2},
             "head_width": 128, "what": "full-size SD1.5 (UNet 320, CLIP-L, SD VAE; head width 128)"},
}


def bench_config(size: str, image_size: int, batch: int, output_dir: str) -> dict:
    """A resolved trainer config for a synthetic-data run at ``size``."""
    from dense_face.train import config as C

    s = SIZES[size]
    cfg = copy.deepcopy(C.DEFAULTS)
    cfg["output_dir"] = output_dir
    cfg["base"].update(kind="tiny_random", family=s["family"], unet=s.get("unet", {}),
                       text_encoder=s["text_encoder"], vae=s["vae"], sample_size=image_size // 8)
    cfg["model"]["dense_head"].update(width=s["head_width"])
    cfg["data"].update(synthetic=64, image_size=image_size, num_workers=0)
    cfg["train"].update(batch_size=batch, lr=1e-4, progress=False, checkpoint_every=10 ** 9, caption_dropout=0.1,
                        identity_dropout=0.05)
    cfg["export"]["at_end"] = False
    C.validate(cfg)
    return cfg


class DenseStepTimer:
    """The trainer's micro-step with and without the dense losses on one set of models, timed round-robin.

    ``device``/``weight_dtype``/``autocast_dtype``: where it runs; the frozen base is cast to ``weight_dtype``
    and the step runs under autocast to ``autocast_dtype`` (None: none), as the trainer does under
    accelerate's mixed precision. ``sync`` (e.g. torch.cuda.synchronize) ends each timed step, ``memory``
    (e.g. a reset-and-read of torch.cuda's peak) is called as ``memory(True)`` before and ``memory(False)``
    after each step and the largest value per setting is kept.
    """

    def __init__(self, cfg: dict, device=torch.device("cpu"), weight_dtype=torch.float32, autocast_dtype=None):
        from dense_face.train.base_models import load_base
        from dense_face.train.model import build_net

        torch.set_flush_denormal(True)
        self.cfg, self.device, self.weight_dtype, self.autocast_dtype = cfg, torch.device(device), weight_dtype, autocast_dtype
        self.base = load_base(cfg["base"])
        torch.manual_seed(0)
        self.net = build_net(cfg, self.base).attach(self.base)
        self.params = self.net.configure_trainable()
        if self.device.type != "cpu" or weight_dtype != torch.float32:
            for m in self.base.modules().values():
                m.to(self.device, dtype=weight_dtype)
            self.net.to(self.device)
        self.opt = torch.optim.AdamW(self.params, lr=1e-5)

    def run(self, batch_size: int, repeats: int, warmup: int, sync=None, memory=None) -> dict[bool, dict]:
        """{dense on: {"times": seconds of each timed step, "peak": largest memory(False)}}."""
        import contextlib

        from dense_face.train.data_prep import SyntheticPairs
        from dense_face.train.micro_step import MicroStep, step_generator

        cfg, net = self.cfg, self.net
        data = SyntheticPairs(max(64, batch_size), cfg["data"]["image_size"], cfg["data"]["target_size"])
        batch = torch.utils.data.default_collate([data[i] for i in range(batch_size)])
        steps = {mode: MicroStep(cfg, net, net, self.base, self.device, self.weight_dtype, mode)
                 for mode in (True, False)}
        out: dict[bool, dict] = {True: {"times": [], "peak": None}, False: {"times": [], "peak": None}}
        net.train()
        for i in range(warmup + repeats):
            for mode in (True, False):
                if memory is not None:
                    memory(True)
                t0 = time.perf_counter()
                autocast = (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype
                            else contextlib.nullcontext())
                with autocast:
                    loss, _ = steps[mode].loss(batch, step_generator(0, i, 0, 0))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.params, 1.0)
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
                if sync is not None:
                    sync()
                if i >= warmup:
                    out[mode]["times"].append(time.perf_counter() - t0)
                if memory is not None:
                    peak = memory(False)
                    out[mode]["peak"] = peak if out[mode]["peak"] is None else max(out[mode]["peak"], peak)
        return out

    def close(self) -> None:
        self.net.detach_base()


def time_dense_overhead(cfg: dict, repeats: int, warmup: int) -> tuple[float, float]:
    """Median seconds per optimizer step with and without the dense losses (one process, CPU, fp32)."""
    timer = DenseStepTimer(cfg)
    stats = timer.run(int(cfg["train"]["batch_size"]), repeats, warmup)
    timer.close()
    return statistics.median(stats[True]["times"]), statistics.median(stats[False]["times"])


def samples_per_second(cfg: dict, processes: int, steps: int, warmup: int, workdir: Path) -> float:
    """Run the trainer under accelerate launch and read samples/s after ``warmup`` steps from its log."""
    out = workdir / f"procs{processes}"
    run_cfg = copy.deepcopy(cfg)
    run_cfg["output_dir"] = str(out)
    run_cfg["train"]["max_steps"] = steps
    path = workdir / f"procs{processes}.yaml"
    path.write_text(yaml.safe_dump(run_cfg))
    cmd, env = launch_command(processes, cpu=not torch.cuda.is_available())
    cmd += ["--config", str(path)]
    env["HF_HOME"] = str(workdir / "hf_home")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"trainer with {processes} process(es) failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    recs = [json.loads(x) for x in (out / "logs" / "train_log.jsonl").read_text().splitlines()]
    per_step = recs[0]["samples"] / (recs[0]["step"] * samples_per_step(run_cfg["train"]))
    if per_step != processes:  # a launcher that quietly started fewer processes would measure nothing
        raise RuntimeError(f"asked for {processes} trainer process(es), the log shows {per_step:g}")
    a, b = recs[warmup - 1], recs[-1]
    return (b["samples"] - a["samples"]) / (b["elapsed_s"] - a["elapsed_s"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dense-face bench train", description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), default="small", help="model size (see the module help)")
    p.add_argument("--image-size", type=int, default=256, help="training image size (the authors': 256)")
    p.add_argument("--batch", type=int, default=2, help="samples per process and step")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per setting (dense overhead)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--scaling-steps", type=int, default=10, help="trainer steps per scaling run")
    p.add_argument("--skip-scaling", action="store_true", help="only the dense-loss overhead")
    p.add_argument("--threads", type=int, default=None, help="torch threads for the in-process timing")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory(prefix="dense-face-bench-train-") as tmp:
        cfg = bench_config(args.size, args.image_size, args.batch, tmp)
        print(f"models: {SIZES[args.size]['what']}, random weights; images {args.image_size}px, batch {args.batch} "
              f"per process; trainer runs on {device}, torch {torch.__version__}, {torch.get_num_threads()} thread(s) in-process")
        with_dense, without = time_dense_overhead(cfg, args.repeats, args.warmup)
        overhead = with_dense / without
        print(f"training step (fp32, CPU, one process, median of {args.repeats}): with dense losses {with_dense:.3f} s, "
              f"without {without:.3f} s -> {100 * (overhead - 1):+.1f} %")
        scaling = float("nan")
        if not args.skip_scaling:
            one = samples_per_second(cfg, 1, args.scaling_steps, args.warmup + 1, Path(tmp))
            two = samples_per_second(cfg, 2, args.scaling_steps, args.warmup + 1, Path(tmp))
            scaling = two / one
            note = "gloo, 1 thread per process" if device == "cpu" else "NCCL"
            print(f"trainer samples/s (accelerate launch, {note}, steps {args.warmup + 2}-{args.scaling_steps}): "
                  f"1 process {one:.2f}, 2 processes {two:.2f}")
    print(f"ratios: dense_loss_overhead={overhead:.3f} scaling_2proc={scaling:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
