"""Writing a weight file: the pack's writer (64 KiB writes) against ``safetensors.torch.save_file``.

Writers: ``save_file`` (one write() per tensor), ``chunked_1MiB`` (the pack's writer with 1 MiB
writes) and ``chunked`` (the pack's writer as shipped). Each write runs in its own child process that
first builds the tensors (float16, 1280x1280 each, the size of SD1.5's largest layers); the extra
peak memory of a write is the child's high-water mark after the write minus the one before it. The
writers alternate, ``--repeats`` times each; medians are printed, and the last line gives the
ratios to save_file. ``--fill-page-cache`` first writes scratch files until less than 3 GB of memory
is free, the state of a machine that has been reading and writing models for a while.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WRITERS = ("save_file", "chunked_1MiB", "chunked")
FREE_TARGET_MB = 3072


def _high_water_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child(writer: str, megabytes: int, path: str) -> None:
    import torch

    per = 1280 * 1280
    count = max(1, megabytes * (1 << 20) // (2 * per))
    tensors = {f"layer{i:04d}.weight": torch.empty(1280, 1280, dtype=torch.float16).normal_() for i in range(count)}
    before = _high_water_mb()
    start = time.perf_counter()
    if writer == "save_file":
        from safetensors.torch import save_file

        save_file(tensors, path, metadata={"bench": "safetensors-write"})
    else:
        from ..dense_face_core import io_utils
        from ..dense_face_core.safetensors_writer import write_safetensors

        if writer == "chunked_1MiB":
            io_utils.WRITE_CHUNK = 1 << 20
        write_safetensors(path, tensors, {"bench": "safetensors-write"})
    seconds = time.perf_counter() - start
    size = os.path.getsize(path)
    print(json.dumps({"seconds": seconds, "extra_mb": _high_water_mb() - before, "bytes": size}))


def _free_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemFree:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _fill_page_cache(folder: str) -> int:
    """Scratch files (1 GB each, at most 64) until MemFree < FREE_TARGET_MB; returns how many."""
    from ..dense_face_core.io_utils import write_chunked

    block = os.urandom(1 << 20)
    n = 0
    while n < 64 and _free_mb() > FREE_TARGET_MB:
        with open(os.path.join(folder, f"scratch{n}"), "wb") as fh:
            for _ in range(1024):
                write_chunked(fh, block)
        n += 1
    os.sync()  # clean page cache, as after reading models; dirty pages would time the disk instead
    return n


def _measure(writer: str, megabytes: int, folder: str) -> dict:
    path = os.path.join(folder, f"{writer}.safetensors")
    try:
        out = subprocess.run([sys.executable, "-m", f"{__package__}.safetensors_write", "--child", writer, "--megabytes", str(megabytes),
                              "--out", path], capture_output=True, text=True, check=True)
    finally:
        if os.path.exists(path):
            os.unlink(path)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dense-face bench safetensors-write", description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=2048, help="file size to write (SD1.5 fp16: about 2 GB)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", default=None, help="where to write (default: the system temp folder)")
    parser.add_argument("--fill-page-cache", action="store_true",
                        help=f"first fill memory with page cache (until under {FREE_TARGET_MB} MB are free)")
    parser.add_argument("--child", choices=WRITERS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.megabytes, args.out)
        return 0
    runs: dict[str, list[dict]] = {w: [] for w in WRITERS}
    with tempfile.TemporaryDirectory(dir=args.folder, prefix="dense-face-write-") as folder:
        if args.fill_page_cache:
            print(f"page cache: wrote {_fill_page_cache(folder)} GB of scratch files; {_free_mb():.0f} MB free")
        for _ in range(args.repeats):
            for writer in WRITERS:
                runs[writer].append(_measure(writer, args.megabytes, folder))
    med = {w: {k: statistics.median(r[k] for r in runs[w]) for k in ("seconds", "extra_mb")} for w in WRITERS}
    size_mb = runs["chunked"][0]["bytes"] / (1 << 20)
    print(f"writing {size_mb:.0f} MB of float16 tensors, median of {args.repeats} (each in a fresh process):")
    print(f"{'writer':12s} {'seconds':>8s} {'MB/s':>8s} {'extra peak MB':>14s}  all seconds")
    for w in WRITERS:
        secs = ", ".join(f"{r['seconds']:.2f}" for r in runs[w])
        print(f"{w:12s} {med[w]['seconds']:8.2f} {size_mb / med[w]['seconds']:8.0f} {med[w]['extra_mb']:14.0f}  {secs}")
    base = med["save_file"]["seconds"]
    print("ratios: time " + ", ".join(f"{w}/save_file {med[w]['seconds'] / base:.3f}x" for w in WRITERS[1:])
          + "; extra peak memory " + ", ".join(f"{w} {med[w]['extra_mb']:.0f} MB" for w in WRITERS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
