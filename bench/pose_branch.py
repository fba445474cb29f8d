"""The pose branch on one row: the core's CPU convolution choice vs torch's default for every layer.

Full-size SD1.5-shaped branch (``--smoke``: the tiny test geometry) with random weights (speed does
not depend on the values), float32 on the CPU, one latent row as face mode runs it (the hint
encoded once). "core" is the branch as it runs (``dense_face_core.cpu_conv``: im2col + GEMM where a
layer's output has no more pixels than channels, ``F.conv2d`` elsewhere), "default" the same branch
with ``F.conv2d`` everywhere (oneDNN where torch picks it). Both run alternately in this one
process, so drift hits them alike; each figure is a median. The error columns compare each path's
13 residuals with a float64 copy of the branch (largest absolute difference over the largest
value). The per-layer table times each distinct convolution of the branch at the first size, both
ways.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def _branch(seed: int, smoke: bool):
    from ..dense_face_core.pose_branch import PoseBranch
    from ..dense_face_core.random_weights import fill_random_, tiny_family

    return fill_random_(PoseBranch.for_family(tiny_family() if smoke else "sd15"), seed).eval()


def _paths(branch):
    """Callables running ``fn`` with the branch on each path."""
    from ..dense_face_core.cpu_conv import torch_default_convs

    def core(fn):
        return fn()

    def default(fn):
        with torch_default_convs(branch):
            return fn()

    return {"core": core, "default": default}


def _median_seconds(calls: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each call, alternating which goes first; one untimed warm-up each."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for r in range(repeats):
        for k in (list(calls) if r % 2 == 0 else list(calls)[::-1]):
            t0 = time.perf_counter()
            calls[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _rel_err(outs, ref) -> float:
    return max(((o.double() - r).abs().max() / r.abs().max()).item() for o, r in zip(outs, ref))


def whole_branch(branch, branch64, size: int, repeats: int) -> dict:
    gen = torch.Generator().manual_seed(size)
    x = torch.randn(1, 4, size // 8, size // 8, generator=gen)
    hint = torch.rand(1, 3, size, size, generator=gen)
    t = torch.tensor([500.0])
    paths = _paths(branch)
    with torch.inference_mode():
        guided = branch.encode_hint(hint, torch.float32)
        ref = branch64(x.double(), hint.double(), t, guided_hint=guided.double())
        run = lambda: branch(x, hint, t, guided_hint=guided)  # noqa: E731
        errors = {k: _rel_err(p(run), ref) for k, p in paths.items()}
        med = _median_seconds({k: (lambda p=p: p(run)) for k, p in paths.items()}, repeats)
    return {"size": size, "seconds": med, "rel_err_vs_fp64": errors, "ratio": med["core"] / med["default"]}


def per_layer(branch, size: int, repeats: int) -> list[dict]:
    """Each distinct convolution of the branch at ``size`` (shape, count per call), both ways."""
    from ..dense_face_core.cpu_conv import Conv2d, uses_im2col

    seen: dict[tuple, list] = {}
    hooks = []

    def record(module, args):
        key = (tuple(args[0].shape), tuple(module.weight.shape), module.stride)
        seen.setdefault(key, [module, args[0], 0])[2] += 1

    for m in branch.modules():
        if isinstance(m, Conv2d):
            hooks.append(m.register_forward_pre_hook(record))
    x = torch.zeros(1, 4, size // 8, size // 8)
    with torch.inference_mode():
        branch(x, None, torch.tensor([500.0]), guided_hint=torch.zeros(1, branch.model_channels, size // 8, size // 8))
    for h in hooks:
        h.remove()
    rows = []
    with torch.inference_mode():
        for (shape, weight, stride), (module, inp, count) in seen.items():
            inp = torch.randn(inp.shape)
            calls = {"core": lambda m=module, i=inp: m(i),
                     "default": lambda m=module, i=inp: torch.nn.functional.conv2d(i, m.weight, m.bias, m.stride,
                                                                                    m.padding)}
            med = _median_seconds(calls, repeats)
            rows.append({"input": shape, "weight": weight, "stride": stride[0], "count": count,
                         "path": "im2col" if uses_im2col(module, inp) else "F.conv2d",
                         "ms": {k: 1000 * v for k, v in med.items()}})
    return sorted(rows, key=lambda r: -r["ms"]["default"] * r["count"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dense-face bench pose-branch", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,512", help="image sizes, comma separated")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls of each path per size")
    parser.add_argument("--layer-repeats", type=int, default=5, help="timed calls per layer shape")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--smoke", action="store_true", help="the tiny test geometry: checks the code path, "
                                                             "not the speed (for CI)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.threads:
        torch.set_num_threads(args.threads)
    branch = _branch(0, args.smoke)
    branch64 = _branch(0, args.smoke).double()
    geometry = " (tiny smoke geometry)" if args.smoke else ""
    print(f"pose branch{geometry}, float32 on the CPU, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          "one row; core = the branch's own choice per layer, default = F.conv2d everywhere")
    results = [whole_branch(branch, branch64, s, args.repeats) for s in sizes]
    print(f"{'size':>9} {'core s':>9} {'default s':>10} {'ratio':>6}   rel. error vs float64 (core / default)")
    for r in results:
        s, e = r["seconds"], r["rel_err_vs_fp64"]
        print(f"{r['size']:>4}x{r['size']:<4} {s['core']:9.3f} {s['default']:10.3f} {r['ratio']:6.2f}   "
              f"{e['core']:.1e} / {e['default']:.1e}")
    rows = per_layer(branch, sizes[0], args.layer_repeats)
    print(f"per layer at {sizes[0]}x{sizes[0]} (ms per call, each layer alone; count = calls per branch run):")
    for row in rows:
        ms = row["ms"]
        print(f"  in {str(row['input']):18s} w {str(row['weight']):22s} s{row['stride']} x{row['count']:<2} "
              f"core {row['path']:8s} {ms['core']:7.1f}  default {ms['default']:7.1f}  "
              f"({ms['core'] / ms['default']:.2f}x)")
    print("ratios: " + " ".join(f"core_vs_default_{r['size']}={r['ratio']:.3f}" for r in results))
    return 0
