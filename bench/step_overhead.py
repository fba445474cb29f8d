"""Seconds per sampling step: plain SD1.5 vs face-generation mode vs the stock ControlNet path.

Full-size SD1.5-shaped models with random weights (speed does not depend on the values),
built inside an in-process ComfyUI; CFG 4, euler. Configurations, timed round-robin in
one process so machine drift hits them alike:
- plain:          the base model;
- face_mode:      Dense-Face Apply PC-Adapter (folded adapter, identity query bias and
                  token, pose branch computed once per distinct latent);
- face_mode_naive: the same with the pose branch run on the whole cond+uncond batch
                  (what an ordinary ControlNet does) - shows what the deduplication saves;
- face_mode_torchconv: face_mode with every convolution of the pose branch on F.conv2d
                  (oneDNN where torch picks it) instead of the core's per-layer choice -
                  shows what ``dense_face_core.cpu_conv`` saves (CPU runs only);
- controlnet:     ComfyUI's stock SD1.5 ControlNet (with attention) via Apply ControlNet.
A step is the time between two sampler callbacks; the first step (model loading and
weight patching) is discarded. Where face mode's extra time goes is printed beside the ratios: the
pose branch's own seconds per step, timed inside the sampler by hooks on its module, and the
arithmetic floor of face mode, 1 + (pose branch FLOPs on one row) / (UNet FLOPs on the CFG batch of
two), counted by torch's FlopCounterMode: face mode goes below it only where the branch runs at a
higher FLOP rate than the UNet. Runs of the configurations alternate (short runs, many
repeats) so that the machine's slow and fast spells hit them alike, and each figure is the
median of all its steps (with the interquartile range beside it). Minor page faults per step
are counted beside the times: see ``bench/allocator.py`` for why the run uses steady glibc
malloc settings by default.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

import torch

from . import allocator, arguments


def _naive_face_mode(host, face_inputs, dense_face):
    """face_mode, but the pose ControlNet evaluates every row (no cond/uncond sharing)."""
    from ..nodes.comfy_side import pose_control as patches

    class Naive(torch.nn.Module):
        def __init__(self, branch):
            super().__init__()
            self.branch = branch

        @property
        def dtype(self):
            return self.branch.dtype

        def forward(self, x, hint, timesteps, context=None, y=None, **kw):
            outs = self.branch(x, hint, timesteps)
            return outs if patches._LIST_CONTROL_OUTPUT else {"middle": outs[-1:], "output": outs[:-1]}

    import comfy.controlnet

    model, clip, face_id, pose, pos, neg = face_inputs
    m, p, n = host.node("DenseFaceApplyPCAdapter").apply(model, clip, dense_face, face_id, pose, neg,
                                                         pose_strength=0.0)
    naive = comfy.controlnet.ControlNet(Naive(patches.pose_branch_for(dense_face)))
    p, n = patches.attach_pose(p, n, naive, pose, 1.0, 0.0, 1.0)
    return m, p, n


def _time_steps(model, pos, neg, size: int, steps: int, cfg: float, seed: int,
                sync=None) -> tuple[list[float], list[int]]:
    """Seconds and minor page faults of each step after the first; ``sync`` (e.g. torch.cuda.synchronize)
    is called before each time stamp so that queued device work is counted in its own step."""
    import comfy.sample

    latent = torch.zeros(1, 4, size // 8, size // 8)
    noise = comfy.sample.prepare_noise(latent, seed)
    stamps: list[tuple[float, int]] = []

    def stamp(*_):
        if sync is not None:
            sync()
        stamps.append((time.perf_counter(), allocator.minor_faults()))

    with torch.inference_mode():
        comfy.sample.sample(model, noise, steps + 1, cfg, "euler", "normal", pos, neg, latent,
                            callback=stamp, disable_pbar=True, seed=seed)
    pairs = list(zip(stamps, stamps[1:]))
    return [b[0] - a[0] for a, b in pairs], [b[1] - a[1] for a, b in pairs]


class PoseBranchClock:
    """Seconds spent in the pose branch (the face-mode ControlNet's module) while it is attached:
    forward hooks on the module ComfyUI calls, so the sampler itself is untouched."""

    def __init__(self, positive, sync=None):
        self.calls: list[float] = []  # seconds of each call
        self._t0, self._sync = None, sync
        module = pose_control_module(positive)
        self._handles = [module.register_forward_pre_hook(self._start), module.register_forward_hook(self._stop)]

    def _start(self, *_):
        if self._sync is not None:
            self._sync()
        self._t0 = time.perf_counter()

    def _stop(self, *_):
        if self._sync is not None:
            self._sync()
        self.calls.append(time.perf_counter() - self._t0)

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def pose_control_module(positive) -> torch.nn.Module:
    """The pose branch's control module that face mode attached to a positive conditioning."""
    from ..nodes.comfy_side.pose_control import PoseControlModel

    control = positive[0][1].get("control")
    while control is not None:
        if isinstance(getattr(control, "control_model", None), PoseControlModel):
            return control.control_model
        control = getattr(control, "previous_controlnet", None)
    raise ValueError("no Dense-Face pose branch in this conditioning")


def flop_floor(model, positive, negative, size: int) -> dict:
    """FLOPs of one UNet call on the CFG batch (cond + uncond) and of the pose branch on its one row."""
    from torch.utils.flop_counter import FlopCounterMode

    unet = model.model.diffusion_model
    branch = pose_control_module(positive).branch
    dtype = next(unet.parameters()).dtype
    device = next(unet.parameters()).device
    x = torch.zeros(2, 4, size // 8, size // 8, dtype=dtype, device=device)
    t = torch.full((2,), 500.0, device=device)
    context = torch.cat([positive[0][0], negative[0][0]]).to(device=device, dtype=dtype)
    hint = torch.zeros(1, 3, size, size, dtype=dtype, device=device)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            unet(x, t, context=context)
        unet_flops = counter.get_total_flops()
        where = next(branch.parameters())  # ComfyUI may hold the control model elsewhere than the UNet
        bx, bt, bhint = (v.to(where.device) for v in (x[:1], t[:1], hint))
        guided = branch.encode_hint(bhint, where.dtype)
        with FlopCounterMode(display=False) as counter:
            branch(bx.to(where.dtype), bhint, bt, guided_hint=guided)
        pose_flops = counter.get_total_flops()
    return {"unet_gflop": unet_flops / 1e9, "pose_gflop": pose_flops / 1e9, "floor": 1 + pose_flops / unet_flops}


def _parse(argv):
    parser = argparse.ArgumentParser(prog="dense-face bench step-overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,512", help="image sizes, comma separated (default 256,512)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run (one more is run and dropped)")
    parser.add_argument("--repeats", type=int, default=6, help="round-robin repeats at 256x256 and below")
    parser.add_argument("--large-repeats", type=int, default=1, help="round-robin repeats above 256x256")
    parser.add_argument("--cfg", type=float, default=4.0)
    arguments.add_comfyui(parser)
    allocator.add_argument(parser)
    return parser.parse_args(argv)


TORCH_CONV = "face_mode_torchconv"  # face_mode's own objects, run with the branch on F.conv2d


def _configs(host) -> dict:
    """(model, positive, negative) of plain SD1.5, face mode, face mode without the row dedup, face mode on
    torch's default convolutions (CPU only), stock ControlNet."""
    print("building full-size SD1.5-shaped models with random weights ...", file=sys.stderr)
    configs = build_configs(host)
    if next(pose_control_module(configs["face_mode"][1]).branch.parameters()).device.type == "cpu":
        configs[TORCH_CONV] = configs["face_mode"]
    order = ("plain", "face_mode", "face_mode_naive", TORCH_CONV, "controlnet")  # the table's columns
    return {name: configs[name] for name in order if name in configs}


def _run_context(name, positive):
    from ..dense_face_core.cpu_conv import torch_default_convs

    if name == TORCH_CONV:
        return torch_default_convs(pose_control_module(positive).branch)
    return contextlib.nullcontext()


def build_configs(host, family="sd15", unet_config: dict | None = None, clip_config: str | None = None,
                  model=None, clip=None) -> dict:
    """The configurations of :func:`_configs` for any geometry: ``family`` (a Dense-Face family) names the
    Dense-Face weights, ``unet_config`` (ldm kwargs, with the dtype to run in) the UNet and the stock
    ControlNet, ``clip_config`` a transformers CLIP text config file (default: the full-size SD1.5 ones);
    ``model``/``clip``: ones already built at that geometry (default: built here)."""
    import nodes

    from ..dense_face_core.face_mode import DenseFaceModel
    from ..dense_face_core.id_embedding import FaceID
    from ..dense_face_core.random_weights import build_random_weights
    from ..headless import random_sd as rm

    model = rm.build_unet(unet_config, seed=0) if model is None else model
    clip = rm.build_clip(seed=0, textmodel_json_config=clip_config) if clip is None else clip
    # float16, as in the files users load (the authors' release, every export)
    dense_face = DenseFaceModel(build_random_weights(family, with_dense_head=False, dtype=torch.float16))
    face_id = FaceID(torch.randn(512, generator=torch.Generator().manual_seed(0)).numpy(), dense_face.id_model)
    (pose,) = host.node("DenseFacePoseEuler").draw(15.0, -5.0, 0.0)
    pos, neg = rm.encode(clip, "a close-up photo of a person"), rm.encode(clip, "")
    face = host.node("DenseFaceApplyPCAdapter").apply(model, clip, dense_face, face_id, pose, neg)
    naive = _naive_face_mode(host, (model, clip, face_id, pose, pos, neg), dense_face)
    stock = rm.build_stock_controlnet(unet_config, seed=1)
    cn_pos, cn_neg = nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, stock, pose, 1.0, 0.0, 1.0)
    return {"plain": (model, pos, neg), "face_mode": face, "face_mode_naive": naive,
            "controlnet": (model, cn_pos, cn_neg)}


def _measure(configs, sizes, args):
    """Round-robin over the configurations, so a slow spell of the machine hits all of them."""
    table: dict[tuple[int, str], list[float]] = {}
    faults: dict[tuple[int, str], list[int]] = {}
    pose: dict[tuple[int, str], list[float]] = {}  # face_mode (and torchconv): pose-branch seconds per step
    for size in sizes:
        for rep in range(args.repeats if size <= 256 else args.large_repeats):
            for name, (m, p, n) in configs.items():
                clock = PoseBranchClock(p) if name in ("face_mode", TORCH_CONV) else None
                try:
                    with _run_context(name, p):
                        steps, step_faults = _time_steps(m, p, n, size, args.steps, args.cfg, rep)
                finally:
                    if clock is not None:
                        clock.close()
                if clock is not None:  # once per step (cond and uncond share it); the first step's is dropped too
                    pose.setdefault((size, name), []).extend(clock.calls[1:])
                table.setdefault((size, name), []).extend(steps)
                faults.setdefault((size, name), []).extend(step_faults)
                print(f"  {size}x{size} {name:16s} run {rep + 1}: " + " ".join(f"{s:.2f}" for s in steps)
                      + "   faults/step " + " ".join(str(f) for f in step_faults), file=sys.stderr)
    return table, faults, pose


def _report(configs, sizes, table, faults, pose, floors) -> None:
    print(f"{'size':>9s} " + " ".join(f"{n:>22s}" for n in configs) + "   (median s/step [IQR]; x plain)")
    ratios = {}
    for size in sizes:
        plain = statistics.median(table[(size, "plain")])
        cells = []
        for name in configs:
            q1, t, q3 = statistics.quantiles(table[(size, name)], n=4) if len(table[(size, name)]) > 1 else [
                table[(size, name)][0]] * 3
            ratios[(size, name)] = t / plain
            cells.append(f"{t:6.2f} [{q1:.2f}-{q3:.2f}] {t / plain:4.2f}x")
        print(f"{size:>4d}x{size:<4d} " + " ".join(f"{c:>22s}" for c in cells))
    print("minor page faults per step (median): " + "; ".join(
        f"{size}x{size} " + " ".join(f"{name} {int(statistics.median(faults[(size, name)]))}" for name in configs)
        for size in sizes))
    shares = {}
    for size in sizes:
        plain = statistics.median(table[(size, "plain")])
        branch_s = statistics.median(pose[(size, "face_mode")])
        shares[size] = branch_s / plain
        f = floors[size]
        torch_conv = (f" (on torch's default convolutions {statistics.median(pose[(size, TORCH_CONV)]):.3f} s/step)"
                      if (size, TORCH_CONV) in pose else "")
        print(f"{size}x{size} face mode's extra time: pose branch {branch_s:.3f} s/step{torch_conv} "
              f"({shares[size]:.1%} of plain; timed inside the sampler), the rest (identity query bias, control "
              f"merge) {ratios[(size, 'face_mode')] - 1 - shares[size]:+.1%}; arithmetic floor {f['floor']:.3f}x "
              f"(pose branch {f['pose_gflop']:.1f} GFLOP on 1 row / UNet {f['unet_gflop']:.1f} GFLOP on 2); rates: "
              f"plain step {f['unet_gflop'] / plain:.0f} GFLOP/s, pose branch {f['pose_gflop'] / branch_s:.0f} GFLOP/s")
    ref = 256 if 256 in sizes else sizes[0]
    extra = f" face_mode_torchconv={ratios[(ref, TORCH_CONV)]:.3f}" if (ref, TORCH_CONV) in ratios else ""
    print(f"ratios: face_mode={ratios[(ref, 'face_mode')]:.3f} controlnet={ratios[(ref, 'controlnet')]:.3f} "
          f"pose_branch={shares[ref]:.3f} flop_floor={floors[ref]['floor']:.3f}{extra}")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    code = allocator.rerun_steady(__spec__.name, argv, args.allocator)
    if code is not None:
        return code
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    from ..headless.comfy_host import InProcessComfy

    host = InProcessComfy(args.comfyui)
    import comfy.ldm.modules.attention as attention

    configs = _configs(host)
    backend = getattr(attention.optimized_attention, "__name__", str(attention.optimized_attention))
    print(f"ComfyUI {host.root}, attention backend: {backend}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CFG {args.cfg}, euler; {allocator.describe()}")
    floors = {size: flop_floor(*configs["face_mode"], size) for size in sizes}
    table, faults, pose = _measure(configs, sizes, args)
    _report(configs, sizes, table, faults, pose, floors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
