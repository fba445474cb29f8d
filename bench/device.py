"""``dense-face bench device``: the GPU check, one prepared command (<= 8 minutes on one H200-class GPU).

On CUDA, with full-size SD1.5-shaped random weights (speed does not depend on the values), in one
in-process ComfyUI on the GPU:

1. steps: seconds per sampling step of plain SD1.5, face-generation mode, face mode without the pose
   branch's cond/uncond dedup, and ComfyUI's stock ControlNet, at 256x256 and 512x512, UNet and ControlNet
   in fp16, ComfyUI's default GPU attention, CFG 4, euler (``bench step-overhead``'s configurations and
   step timer, with a device sync before each time stamp); 10 timed steps per run (one more dropped),
   3 round-robin runs per size; peak VRAM of each configuration; then one more face-mode run per size
   with the pose branch timed inside the sampler, and face mode's arithmetic floor (FlopCounterMode);
2. pipeline: the two-mode personalisation run vs plain txt2img at 512 (``bench pipeline``'s stages, same
   models, 20 steps each sampler), stage by stage, peak VRAM of each;
3. trainer: the trainer's micro-step (``bench train``'s timer) in bf16 mixed precision, with and without
   the dense losses, at 256 px and batch sizes 4, 16, 32 (stopping at the first that does not fit):
   step time, samples/s, peak memory; 5 timed steps per setting after 2 warm-up ones;
4. equivalence: trainer vs ComfyUI noise prediction in fp32, fp16 and bf16 (``bench/equivalence.py``,
   the tolerances justified there).

The step counts are kept small so that building the models (random fills on the CPU, about half the
time) and the four parts fit the 8 minutes; the elapsed time of each part is recorded. Writes
``device.json`` and ``device.md`` to ``--out`` (default ``./dense-face-bench-device``; each written
atomically, after every part, ``complete`` true at the end) and ends with one ``ratios:`` line.

``--smoke`` runs the same code on the CPU with the tests' tiny models, fewer steps and small batches
(ComfyUI on the CPU, trainer on the CPU under bf16 autocast): a check that the command works, not a
measurement. Without CUDA and without ``--smoke`` it stops with a one-line error.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from . import arguments
from . import pipeline as pipeline_bench
from . import step_overhead as step_bench
from . import train as train_bench

DEFAULT_OUT = "dense-face-bench-device"
LANDMARKER_CANDIDATES = ("shared/models/face_landmarker_v2_with_blendshapes.task",
                         "../shared/models/face_landmarker_v2_with_blendshapes.task")


def _parse(argv):
    p = argparse.ArgumentParser(prog="dense-face bench device", description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="the same code on the CPU with tiny models (CI)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"folder for device.json and device.md (default ./{DEFAULT_OUT})")
    p.add_argument("--sizes", help="sampling sizes, two, ascending (default 256,512; smoke 64,128)")
    p.add_argument("--steps", type=int, help="timed steps per run (default 10; smoke 1)")
    p.add_argument("--repeats", type=int, help="round-robin runs per size (default 3; smoke 1)")
    p.add_argument("--pipeline-size", type=int, help="base size of the pipeline part (default 512; smoke 192)")
    p.add_argument("--pipeline-steps", type=int, help="steps of each pipeline sampler (default 20; smoke 1)")
    p.add_argument("--train-batches", help="trainer batch sizes, ascending (default 4,16,32; smoke 1,2)")
    p.add_argument("--train-repeats", type=int, help="timed trainer steps per setting (default 5; smoke 1)")
    arguments.add_comfyui(p)
    arguments.add_landmarker(p, "MediaPipe face_landmarker.task for the pipeline part (default: "
                                 "$DENSE_FACE_LANDMARKER, ./shared/models or ../shared/models)")
    args = p.parse_args(argv)
    smoke = args.smoke
    # smoke: 64/128 px steps (tiny attention at 512 px costs seconds a step on a CPU)
    defaults = dict(sizes="64,128" if smoke else "256,512", steps=1 if smoke else 10, repeats=1 if smoke else 3,
                    pipeline_size=192 if smoke else 512, pipeline_steps=1 if smoke else 20,
                    train_batches="1,2" if smoke else "4,16,32", train_repeats=1 if smoke else 5)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    args.train_batches = [int(s) for s in str(args.train_batches).split(",") if s.strip()]
    return args


class Device:
    """Where the check runs: sync, peak-memory reset/read, and the geometry of its models."""

    def __init__(self, smoke: bool, workdir: Path):
        from ..dense_face_core import random_weights as RW

        self.smoke = smoke
        self.cuda = not smoke
        self.torch_device = torch.device("cuda" if self.cuda else "cpu")
        if smoke:
            self.family = RW.tiny_family()
            clip_json = workdir / "tiny_clip_config.json"
            clip_json.write_text(json.dumps(RW.TINY_TEXT_CONFIG))
            self.clip_config, self.vae_ch, self.train_size, self.head_width = str(clip_json), 32, "tiny", 32
            # ComfyUI on the CPU samples tiny models in fp32 (the code path is what the smoke run checks)
            self.sample_dtype = torch.float32
        else:
            self.family = "sd15"
            self.clip_config, self.vae_ch, self.train_size, self.head_width = None, 128, "sd15", None
            self.sample_dtype = torch.float16

    def unet_config(self, dtype=None) -> dict:
        from ..dense_face_core.random_weights import ldm_unet_config

        return ldm_unet_config(self.family, dtype=dtype or self.sample_dtype)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> int | None:
        """Bytes of the device's peak allocation since the last reset (None on the CPU: not measured)."""
        if not self.cuda:
            return None
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())

    def memory(self, reset: bool):
        """For ``bench.train.DenseStepTimer``: reset before a step, read after it."""
        if reset:
            self.reset_peak()
            return None
        return self.peak()

    def describe(self) -> dict:
        import comfy.ldm.modules.attention as attention

        info = {"device": torch.cuda.get_device_name(0) if self.cuda else "cpu (smoke: tiny models)",
                "torch": torch.__version__, "cuda": torch.version.cuda if self.cuda else None,
                "attention": getattr(attention.optimized_attention, "__name__", str(attention.optimized_attention)),
                "sample_dtype": str(self.sample_dtype).replace("torch.", ""), "train_dtype": "bfloat16",
                "models": "tiny (tests' geometry)" if self.smoke else "full-size SD1.5-shaped, random weights"}
        try:
            import comfyui_version

            info["comfyui"] = comfyui_version.__version__
        except ImportError:
            info["comfyui"] = "unknown"
        return info


# ---------------------------------------------------------------- the four parts
def measure_steps(host, dev: Device, models, args) -> dict:
    configs = step_bench.build_configs(host, dev.family, dev.unet_config(), dev.clip_config,
                                       model=models[0], clip=models[1])
    times: dict[tuple[int, str], list[float]] = {}
    peaks: dict[tuple[int, str], int | None] = {}
    for size in args.sizes:
        for rep in range(args.repeats):
            for name, (m, p, n) in configs.items():
                dev.reset_peak()
                steps, _ = step_bench._time_steps(m, p, n, size, args.steps, 4.0, rep, sync=dev.sync)
                peak = dev.peak()
                times.setdefault((size, name), []).extend(steps)
                if peak is not None:
                    peaks[(size, name)] = max(peaks.get((size, name)) or 0, peak)
                print(f"  steps {size}x{size} {name:16s} run {rep + 1}: " + " ".join(f"{s:.4f}" for s in steps),
                      file=sys.stderr)
    out = {}
    breakdown = {}  # where face mode's extra time goes: one more face-mode run per size with the branch timed
    for size in args.sizes:  # (its hooks sync the device, so it is kept out of the timed runs above)
        m, p, n = configs["face_mode"]
        clock = step_bench.PoseBranchClock(p, sync=dev.sync)
        try:
            step_bench._time_steps(m, p, n, size, args.steps, 4.0, 0, sync=dev.sync)
        finally:
            clock.close()
        unet_device = next(m.model.diffusion_model.parameters()).device
        floor = None  # counted where the UNet sits after its run: on the GPU (a half-precision UNet that
        if unet_device.type != "cpu" or not dev.cuda:  # ComfyUI moved back to the CPU would take minutes)
            floor = step_bench.flop_floor(m, p, n, size)["floor"]
        else:
            print(f"  flop floor at {size}x{size} skipped: ComfyUI holds the UNet on the CPU", file=sys.stderr)
        breakdown[size] = {"pose_branch_s": statistics.median(clock.calls[1:] or clock.calls), "flop_floor": floor}
    for size in args.sizes:
        plain = statistics.median(times[(size, "plain")])
        out[str(size)] = {name: {"median_s": statistics.median(times[(size, name)]),
                                 "x_plain": statistics.median(times[(size, name)]) / plain,
                                 "steps": len(times[(size, name)]), "peak_bytes": peaks.get((size, name))}
                          for name in configs}
        face = out[str(size)]["face_mode"]
        face["pose_branch_x_plain"] = breakdown[size]["pose_branch_s"] / plain
        face["flop_floor"] = breakdown[size]["flop_floor"]
    return out


def _landmarker(explicit: str | None) -> str | None:
    import os

    from ..dense_face_core.landmarker import LANDMARKER_ENV

    if explicit:
        return explicit
    if os.environ.get(LANDMARKER_ENV):
        return os.environ[LANDMARKER_ENV]
    repo = Path(__file__).resolve().parents[1]
    for rel in LANDMARKER_CANDIDATES:
        for root in (Path.cwd(), repo):
            if (root / rel).is_file():
                return str((root / rel).resolve())
    return None


def measure_pipeline(host, dev: Device, models, args) -> dict:
    landmarker = _landmarker(args.landmarker)
    if landmarker is None:
        return {"skipped": "no MediaPipe face_landmarker.task (pass --landmarker or set DENSE_FACE_LANDMARKER)"}
    ns = argparse.Namespace(size=args.pipeline_size, steps=args.pipeline_steps, comfyui=args.comfyui,
                            landmarker=landmarker)
    kwargs = {"dense_head_width": dev.head_width} if dev.head_width else {}
    run = pipeline_bench.TwoModeRun(ns, host=host, models=models, family=dev.family, weights_kwargs=kwargs)
    if dev.smoke:  # a small base: the astronaut's head and shoulders, so that the face is above 64 px
        photo = pipeline_bench.TwoModeRun.astronaut(args.pipeline_size, box=(0, 96, 256, 352))
        run.photo = run.reference = photo
    peaks: dict[str, int | None] = {}

    def timed(name, fn):
        dev.reset_peak()
        t0 = time.perf_counter()
        fn()
        dev.sync()
        seconds = time.perf_counter() - t0
        peaks[name] = dev.peak()
        return seconds

    two, t_two, t_plain, (t_before, _), (t_after, _) = pipeline_bench.measure(
        run, args.pipeline_steps, timed=timed, clock=lambda: pipeline_bench.Clock(sync=dev.sync))
    glue = sum(two.parts.get(k, 0.0) for k in pipeline_bench.GLUE)
    plain_peak = max((p for p in (peaks["plain_before"], peaks["plain_after"]) if p is not None), default=None)
    return {"size": args.pipeline_size, "steps": args.pipeline_steps, "plain_s": t_plain,
            "plain_before_s": t_before, "plain_after_s": t_after, "two_mode_s": t_two, "x_plain": t_two / t_plain,
            "glue_share": glue / t_two, "stages_s": dict(two.parts),
            "peak_bytes": {"plain": plain_peak, "two_mode": peaks["two_mode"]}}


def measure_trainer(dev: Device, args, tmp: Path) -> dict:
    cfg = train_bench.bench_config(dev.train_size, 64 if dev.smoke else 256, args.train_batches[0], str(tmp / "train"))
    torch.set_grad_enabled(True)  # the pipeline part turned it off for the process
    timer = train_bench.DenseStepTimer(cfg, dev.torch_device, torch.bfloat16, torch.bfloat16)
    rows = {}
    try:
        for batch in args.train_batches:
            try:
                stats = timer.run(batch, args.train_repeats, 1 if dev.smoke else 2, sync=dev.sync, memory=dev.memory)
            except torch.cuda.OutOfMemoryError:
                rows[str(batch)] = {"fits": False}
                torch.cuda.empty_cache()
                break
            row = {"fits": True}
            for mode, key in ((True, "dense"), (False, "no_dense")):
                t = statistics.median(stats[mode]["times"])
                row[key] = {"step_s": t, "samples_per_s": batch / t, "peak_bytes": stats[mode]["peak"]}
            row["dense_over_plain"] = row["dense"]["step_s"] / row["no_dense"]["step_s"]
            rows[str(batch)] = row
            print(f"  trainer batch {batch}: dense {row['dense']['step_s']:.3f} s, "
                  f"without {row['no_dense']['step_s']:.3f} s", file=sys.stderr)
    finally:
        timer.close()
        del timer
        if dev.cuda:
            torch.cuda.empty_cache()
    return {"image_size": cfg["data"]["image_size"], "mixed_precision": "bf16", "repeats": args.train_repeats,
            "models": train_bench.SIZES[dev.train_size]["what"], "batches": rows}


def measure_equivalence(host, dev: Device, tmp: Path) -> dict:
    from .equivalence import Equivalence

    cfg = train_bench.bench_config(dev.train_size, 256, 1, str(tmp / "equivalence"))
    width = dev.head_width or cfg["model"]["dense_head"]["width"]
    eq = Equivalence(host, dev.family, cfg["base"], dev.torch_device, width, dev.unet_config)
    try:
        return eq.run()
    finally:
        eq.close()


# ---------------------------------------------------------------- report
def _mb(n) -> str:
    return "n/a" if n is None else f"{n / 2 ** 20:,.0f} MiB"


def markdown(result: dict) -> str:
    info = result["info"]
    lines = [f"# dense-face bench device ({'SMOKE: tiny models on the CPU, not a measurement' if info.get('smoke') else info['device']})",
             "", f"{result['date']}; torch {info['torch']}, CUDA {info['cuda']}, ComfyUI {info['comfyui']}, attention "
             f"`{info['attention']}`, sampling in {info['sample_dtype']}, training in bf16; {info['models']}.", ""]
    steps = result.get("steps")
    if steps:
        lines += ["## Sampling step (median s/step, x plain, peak VRAM)", "",
                  "| size | " + " | ".join(next(iter(steps.values()))) + " |",
                  "|---|" + "---|" * len(next(iter(steps.values())))]
        for size, row in steps.items():
            lines.append(f"| {size}x{size} | " + " | ".join(
                f"{c['median_s'] * 1000:.1f} ms, {c['x_plain']:.2f}x, {_mb(c['peak_bytes'])}" for c in row.values()) + " |")
        lines.append("")
        lines += [f"Face mode's extra time at {size}x{size}: the pose branch takes {row['face_mode']['pose_branch_x_plain']:.1%}"
                  f" of a plain step (timed inside the sampler in a separate run); the arithmetic floor (pose branch "
                  f"FLOPs on one row over the UNet's on the CFG batch) is "
                  + ("not counted." if row["face_mode"]["flop_floor"] is None else f"{row['face_mode']['flop_floor']:.3f}x.")
                  for size, row in steps.items()]
        lines.append("")
    pipe = result.get("pipeline")
    if pipe:
        lines += ["## Two-mode pipeline vs plain txt2img", ""]
        if "skipped" in pipe:
            lines += [f"skipped: {pipe['skipped']}", ""]
        else:
            lines += [f"base {pipe['size']}x{pipe['size']}, {pipe['steps']} steps each sampler: plain "
                      f"{pipe['plain_s']:.2f} s ({_mb(pipe['peak_bytes']['plain'])}), two-mode {pipe['two_mode_s']:.2f} s "
                      f"({_mb(pipe['peak_bytes']['two_mode'])}) = {pipe['x_plain']:.2f}x; glue {pipe['glue_share']:.1%}",
                      "", "| stage | s | share |", "|---|---|---|"]
            lines += [f"| {k} | {v:.3f} | {v / pipe['two_mode_s']:.1%} |" for k, v in pipe["stages_s"].items()]
            lines.append("")
    tr = result.get("trainer")
    if tr:
        lines += [f"## Trainer step ({tr['mixed_precision']}, {tr['image_size']} px, {tr['models']})", "",
                  "| batch | with dense losses | without | dense / without |", "|---|---|---|---|"]
        for batch, row in tr["batches"].items():
            if not row["fits"]:
                lines.append(f"| {batch} | out of memory | | |")
                continue
            cell = [f"{row[k]['step_s']:.3f} s, {row[k]['samples_per_s']:.1f} samples/s, {_mb(row[k]['peak_bytes'])}"
                    for k in ("dense", "no_dense")]
            lines.append(f"| {batch} | {cell[0]} | {cell[1]} | {row['dense_over_plain']:.2f}x |")
        lines.append("")
    eq = result.get("equivalence")
    if eq:
        lines += ["## Trainer vs ComfyUI (max |difference| / max |eps|, t=500)", "",
                  "| dtype | cond | uncond | tolerance | ok | trainer vs fp32 | ComfyUI vs fp32 |", "|---|---|---|---|---|---|---|"]
        for name, row in eq.items():
            lines.append(f"| {name} | {row['cond']['trainer_vs_comfy']:.2e} | {row['uncond']['trainer_vs_comfy']:.2e} | "
                         f"{row['tolerance']:.1e} | {'yes' if row['ok'] else 'NO'} | "
                         f"{max(row[b]['trainer_vs_fp32'] for b in ('cond', 'uncond')):.2e} | "
                         f"{max(row[b]['comfy_vs_fp32'] for b in ('cond', 'uncond')):.2e} |")
        lines.append("")
    lines += ["elapsed: " + ", ".join(f"{k} {v:.0f} s" for k, v in result["elapsed_s"].items()), "",
              result.get("ratios", "ratios: (incomplete)"), ""]
    return "\n".join(lines)


def ratios_line(result: dict) -> str:
    def fmt(x):
        return "n/a" if x is None else f"{x:.3f}"

    steps = result.get("steps") or {}
    sizes = sorted(int(s) for s in steps) or [256, 512]
    small, large = sizes[0], sizes[-1]

    def step(size, name):
        return steps.get(str(size), {}).get(name, {}).get("x_plain")

    pipe = result.get("pipeline") or {}
    batches = [r for r in (result.get("trainer") or {}).get("batches", {}).values() if r.get("fits")]
    eq = result.get("equivalence") or {}
    floor = steps.get(str(large), {}).get("face_mode", {}).get("flop_floor")
    return (f"ratios: face_{small}={fmt(step(small, 'face_mode'))} face_{large}={fmt(step(large, 'face_mode'))} "
            f"face_floor_{large}={fmt(floor)} "
            f"controlnet_{large}={fmt(step(large, 'controlnet'))} two_mode={fmt(pipe.get('x_plain'))} "
            f"dense_losses={fmt(batches[-1]['dense_over_plain'] if batches else None)} "
            f"equivalence={'ok' if eq and all(r['ok'] for r in eq.values()) else 'FAIL'}")


def write(out: Path, result: dict) -> None:
    from ..dense_face_core.io_utils import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("device.json", json.dumps(result, indent=2) + "\n"), ("device.md", markdown(result))):
        with atomic_path(out / name) as tmp:
            Path(tmp).write_text(text)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("dense-face bench device: no CUDA device here; use --smoke (CPU, tiny models) or run it on a GPU machine",
              file=sys.stderr)
        return 2
    from ..headless import random_sd as rm
    from ..headless.comfy_host import InProcessComfy

    out = Path(args.out)
    start = time.perf_counter()
    host = InProcessComfy(args.comfyui, cpu=args.smoke)
    tmp = Path(tempfile.mkdtemp(prefix="dense-face-bench-device-", dir=host.workdir))
    dev = Device(args.smoke, tmp)
    result = {"complete": False, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "info": dict(dev.describe(), smoke=args.smoke), "settings": {k: v for k, v in vars(args).items()},
              "elapsed_s": {"comfyui start": time.perf_counter() - start}}

    def part(name, fn):
        t0 = time.perf_counter()
        print(f"dense-face bench device: {name} ...", file=sys.stderr, flush=True)
        result[name] = fn()
        result["elapsed_s"][name] = time.perf_counter() - t0
        write(out, result)

    try:
        t0 = time.perf_counter()
        print("building the models (random weights) ...", file=sys.stderr, flush=True)
        models = (rm.build_unet(dev.unet_config(), seed=0), rm.build_clip(seed=0, textmodel_json_config=dev.clip_config),
                  rm.build_vae(seed=0, ch=dev.vae_ch))
        result["elapsed_s"]["models"] = time.perf_counter() - t0
        part("steps", lambda: measure_steps(host, dev, models, args))
        part("pipeline", lambda: measure_pipeline(host, dev, models, args))
        models = None  # free the sampling models before the trainer part
        part("trainer", lambda: measure_trainer(dev, args, tmp))
        part("equivalence", lambda: measure_equivalence(host, dev, tmp))
        result["elapsed_s"]["total"] = time.perf_counter() - start
        result["ratios"] = ratios_line(result)
        result["complete"] = True
        write(out, result)
    finally:
        host.close()
    print(markdown(result).rsplit("\n", 3)[0])
    print(f"wrote {out / 'device.json'} and {out / 'device.md'}")
    print(result["ratios"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
