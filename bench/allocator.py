"""glibc malloc settings for CPU timings, and page-fault counting to show why they matter.

ComfyUI's default CPU attention (sub-quadratic) asks for 60-120 MB score buffers at
256x256 (about 1 GB at 512x512) in its attention calls. glibc serves a request above its
mmap threshold (32 MB at most) with fresh pages from the kernel unless its heap happens
to have room, so whether a sampling step pays some 600,000 minor page faults (most of a
second here) depends on what the process allocated and freed before, not on the model
being timed: ``dense-face bench step-overhead --allocator default`` shows identical
configurations at 0 and at 600k+ faults per step. With ``M_MMAP_MAX=0`` and a trim
threshold nothing reaches, every request comes from the heap and freed memory stays
there, so after the first step no configuration faults and the ratios measure compute.
The settings are read when the process starts, so a benchmark re-runs itself in a child
process with them (``--allocator steady``, the default).
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys

STEADY_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}
CHILD_FLAG = "DENSE_FACE_BENCH_ALLOCATOR"


def add_argument(parser) -> None:
    parser.add_argument(
        "--allocator", choices=("steady", "default"), default="steady",
        help="steady (default): re-run in a child process with glibc malloc kept from returning memory "
             "(MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_=2^40), so no configuration pays page faults that "
             "depend on heap history; default: this process's allocator as it is")


def is_glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def child_command(module: str, argv: list[str]) -> list[str] | None:
    """The command that re-runs ``module`` with the steady allocator, or None if this process should measure."""
    if os.environ.get(CHILD_FLAG) or not is_glibc():
        return None
    return [sys.executable, "-m", module, *argv]


def rerun_steady(module: str, argv: list[str] | None, allocator: str) -> int | None:
    """Run the benchmark in a child with :data:`STEADY_ENV`; its exit code, or None to measure here.

    ``argv`` is what the benchmark's ``main`` received (None: this process's command line).
    """
    if allocator != "steady":
        return None
    command = child_command(module, list(sys.argv[1:] if argv is None else argv))
    if command is None:
        return None
    env = {**os.environ, **STEADY_ENV, CHILD_FLAG: "steady"}
    print("re-running with glibc malloc settings " + " ".join(f"{k}={v}" for k, v in STEADY_ENV.items()),
          file=sys.stderr, flush=True)
    return subprocess.call(command, env=env)


def describe() -> str:
    if not is_glibc():
        return f"allocator: {platform.libc_ver()[0] or platform.system()} default"
    if os.environ.get(CHILD_FLAG) == "steady":
        return "allocator: glibc, steady (" + " ".join(f"{k}={v}" for k, v in STEADY_ENV.items()) + ")"
    return "allocator: glibc default"


def minor_faults() -> int:
    """Minor page faults of this process so far (0 where the platform does not count them)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
