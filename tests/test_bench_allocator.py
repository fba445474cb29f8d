"""The steady glibc malloc settings the CPU benchmarks use: they must really stop the page faults."""
import os
import subprocess
import sys

import pytest

from dense_face.bench import allocator

pytestmark = pytest.mark.skipif(not allocator.is_glibc(), reason="the settings are glibc's; this libc is not glibc")

# allocate and free a 200 MB and a 50 MB tensor (above glibc's largest mmap threshold; torch's
# CPU allocator is plain malloc, numpy would ask for huge pages) 16 times; print the minor page
# faults of each round. Steady settings need a few rounds before the heap has the right holes.
PROBE = """
import resource, torch
def faults(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def once():
    a = torch.ones(200 * 2**20 // 4); b = torch.ones(50 * 2**20 // 4); del a, b
rounds = []
for _ in range(16):
    before = faults(); once(); rounds.append(faults() - before)
print(*rounds)
"""


def faults_per_round(env_extra: dict) -> list[int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return [int(x) for x in out.stdout.split()]


def test_steady_settings_reuse_large_buffers():
    pages = 250 * 2**20 // 4096
    default = faults_per_round({})
    assert min(default[1:]) > pages // 2, default  # glibc default: fresh mmaps, every page faulted every round
    steady = faults_per_round(allocator.STEADY_ENV)
    assert max(steady[-4:]) < pages // 50, steady  # steady: the heap keeps its pages


def test_rerun_decision(monkeypatch):
    monkeypatch.delenv(allocator.CHILD_FLAG, raising=False)
    assert allocator.child_command("dense_face.bench.pipeline", ["--steps", "2"]) == [
        sys.executable, "-m", "dense_face.bench.pipeline", "--steps", "2"]
    assert allocator.rerun_steady("dense_face.bench.pipeline", [], "default") is None
    assert allocator.describe() == "allocator: glibc default"
    monkeypatch.setenv(allocator.CHILD_FLAG, "steady")  # inside the child: measure, do not recurse
    assert allocator.child_command("dense_face.bench.pipeline", []) is None
    assert allocator.rerun_steady("dense_face.bench.pipeline", [], "steady") is None
    assert "MALLOC_MMAP_MAX_=0" in allocator.describe()
