"""Shared fixtures: the real ComfyUI, the shared test data, the MediaPipe model."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
LANDMARKER = SHARED / "models" / "face_landmarker_v2_with_blendshapes.task"
CELEBS = SHARED / "data" / "celebs"
CASIA = SHARED / "data" / "casia_toy"
DATASET_ARGS = ["--landmarker", str(LANDMARKER), "--quiet"]  # what every dataset-builder test passes

os.environ.setdefault("MPLCONFIGDIR", "/tmp/dense-face-mpl")


def pytest_configure(config):
    """Ctrl-C as at a terminal, for the tests and the processes they start. A shell starts a background job
    (`cmd &` without job control) with SIGINT ignored and Python keeps it ignored: interrupt_main() then does
    nothing and a child `dense-face` ignores SIGINT too (a fresh-clone run started that way hung in the pool
    test). A Python handler here becomes the default in children, which install Python's own again."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def build_killed_after_first_shard(argv: list[str], out: Path, env: dict | None = None):
    """Run the dataset builder with ``argv`` in its own session and SIGKILL the whole session as soon as
    its first shard is on disk (a kill -9 mid-build); the finished process is returned."""
    import signal
    import subprocess
    import sys
    import time

    code = f"import sys; from dense_face.train.dataset_builder import main; sys.exit(main({list(argv)!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    first = Path(out) / "shards" / "shard-000000.json"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip(f"shared test data not found at {SHARED} (only present on the project's machines)")
    return SHARED


@pytest.fixture(scope="session")
def landmarker_path() -> Path:
    if not LANDMARKER.is_file():
        pytest.skip(f"MediaPipe face landmarker model not found at {LANDMARKER}")
    return LANDMARKER


@pytest.fixture(scope="session")
def analyzer(landmarker_path):
    from dense_face.dense_face_core.landmarker import FaceAnalyzer

    with FaceAnalyzer(landmarker_path) as fa:
        yield fa


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    """A real ComfyUI in this process with our pack; the MediaPipe model (when present) in models/mediapipe."""
    from comfy_harness import InProcessComfy

    instance = InProcessComfy(tmp_path_factory.mktemp("comfy"))
    if LANDMARKER.is_file():
        (instance.models_dir / "mediapipe" / "face_landmarker.task").symlink_to(LANDMARKER)
    return instance


@pytest.fixture(scope="session")
def demo_cache(comfy, tmp_path_factory):
    """An XDG cache folder holding the labelled random-weight demo set (full-size SD1.5-shaped), built once
    for every test that needs it (subprocesses find it through XDG_CACHE_HOME)."""
    from dense_face.headless.demo_set import write_demo_models

    cache = tmp_path_factory.mktemp("demo-cache")
    write_demo_models(cache / "dense-face" / "demo-models", host=comfy, log=lambda *_: None)
    return cache
