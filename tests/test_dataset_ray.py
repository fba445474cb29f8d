"""``--engine ray``: Ray Data in local mode on 2 CPUs writes the same shards, byte for byte, as the
local engine, with the model stages (restoration, ArcFace, a captioner) as actor pools, and
a killed Ray build resumes to the same bytes.

One local Ray is started for the module (the builder joins a Ray that is already running); inputs
are a few photos. The models are the tiny random-weight stand-ins of test_dataset_captions and
test_dataset_restoration (real weights cannot be downloaded here).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import build_killed_after_first_shard, CELEBS, DATASET_ARGS as COMMON, LANDMARKER as TASK, SHARED

pytestmark = [pytest.mark.filterwarnings("ignore:.*without --insightface-model:UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]
KILL_ARGS = ["--input", str(CELEBS), "--keep-grayscale", "--min-crop", "48", "--shard-size", "4",
             "--max-images", "28", "--crop-sizes", "256"]


@pytest.fixture(scope="module")
def ray_local():
    if not (CELEBS.is_dir() and TASK.is_file()):
        pytest.skip(f"shared test data or the MediaPipe model not found under {SHARED}")
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ray[data]')")
    pytest.importorskip("ray.data")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False, object_store_memory=256 * 1024 ** 2)
    yield ray
    if started:
        ray.shutdown()


def _build(args) -> dict:
    from dense_face.train.dataset_builder import main

    assert main(list(map(str, args)) + COMMON) == 0
    return json.loads((Path(args[args.index("--out") + 1]) / "manifest.json").read_text())


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((folder / "shards").iterdir())}


def _session_pids(sid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout.split()
    return [int(p) for p, s in zip(out[::2], out[1::2]) if int(s) == sid]


def test_killed_ray_build_resumes_to_the_local_engines_bytes(ray_local, tmp_path):
    """kill -9 a Ray build after its first shard (a driver joining the running Ray with --ray-address, as
    on a cluster); resume on Ray: the same bytes as one clean run of the local engine."""
    ref = tmp_path / "local"
    m = _build([*KILL_ARGS, "--out", ref, "--workers", 2])
    out = tmp_path / "ray"
    address = ray_local.get_runtime_context().gcs_address
    argv = [*KILL_ARGS, "--out", str(out), "--engine", "ray", "--ray-address", address, *COMMON]
    proc = build_killed_after_first_shard(argv, out, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    for pid in _session_pids(proc.pid):  # nothing of the killed driver may live on
        os.kill(pid, signal.SIGKILL)
    done_at_kill = len(list((out / "shards").glob("shard-*.json")))
    assert 1 <= done_at_kill < len(m["shards"]), "the build finished before it could be killed"
    assert not (out / "manifest.json").exists()
    resumed = _build([*KILL_ARGS, "--out", out, "--workers", 2, "--engine", "ray"])
    assert resumed["complete"] and resumed["counts"] == m["counts"]
    assert not [p for p in (out / "shards").iterdir() if p.name.startswith(".")], "temp files left"
    print(f"\nRay build killed after {done_at_kill}/{len(m['shards'])} shards, resumed on Ray: "
          f"byte-identical to the local engine: {_hashes(out) == _hashes(ref)}")
    assert _hashes(out) == _hashes(ref)


def test_ray_model_stages_match_the_local_engine(ray_local, tmp_path):
    """Restoration, ArcFace and a captioner as Ray actor pools: the same shards as the local engine
    (whose worker process holds every model), in chunks of --batch-size. (CLIP runs as the same kind of
    stage; it is left out here to keep the test short: one torch actor instead of two.)"""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_dataset_captions import caption_input, tiny_blip
    from test_dataset_restoration import tiny_restorer

    from dense_face.dense_face_core.random_weights import export_random_arcface

    models = tmp_path / "models"
    arcface = export_random_arcface(models / "buffalo_l" / "w600k_r50.onnx")
    src = caption_input(tmp_path / "in")
    args = ["--input", src, "--crop-sizes", "256,512", "--min-crop", 48, "--batch-size", 2,
            "--captioner", tiny_blip(models / "blip"),
            "--restore-model", tiny_restorer(models / "codeformer.onnx"), "--insightface-model", arcface.parent]
    local = _build([*args, "--out", tmp_path / "local", "--workers", 1])
    ray = _build([*args, "--out", tmp_path / "ray", "--workers", 2, "--engine", "ray"])
    assert local["counts"]["ok"] == 3 and ray["counts"] == local["counts"] and ray["embeddings"]["present"]
    assert _hashes(tmp_path / "ray") == _hashes(tmp_path / "local")
    from dense_face.train import shards as S

    metas = [json.loads(f["meta.json"]) for t in sorted((tmp_path / "ray" / "shards").glob("*.tar"))
             for _, f in S.iter_shard(t)]
    assert all(m["restoration"]["model"] == "codeformer" for m in metas)
    assert {m["caption_source"] for m in metas} == {"file:01.txt", "captioner"}


def test_ray_errors_are_one_line(tmp_path, monkeypatch, capsys):
    from dense_face.dense_face_core.errors import DenseFaceInputError
    from dense_face.train.dataset_builder import main
    from dense_face.train.dataset_builder.ray_engine import actor_resources

    # Ray absent (simulated: it is installed here): one line naming the pip command, nothing written
    monkeypatch.setitem(sys.modules, "ray", None)
    (tmp_path / "in" / "p").mkdir(parents=True)
    assert main(["--input", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--engine", "ray", *COMMON]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("--engine ray needs Ray Data on every node (pip install 'ray[data]')")
    assert not (tmp_path / "o").exists()
    monkeypatch.undo()

    class A:
        gpus_per_actor, cpus_per_actor = None, None

    assert actor_resources(A, 4, {"CPU": 2}) == (0.25, 0.0)
    assert actor_resources(A, 2, {"CPU": 16, "GPU": 1}) == (1.0, 0.5)
    A.cpus_per_actor = 1.0
    with pytest.raises(DenseFaceInputError, match="--cpus-per-actor"):
        actor_resources(A, 2, {"CPU": 2})
    A.cpus_per_actor, A.gpus_per_actor = None, 1.0
    with pytest.raises(DenseFaceInputError, match="--gpus-per-actor"):
        actor_resources(A, 2, {"CPU": 8, "GPU": 1})


def _task_that_kills_its_worker_on_one_photo(batch, cfg, stages, later):
    """Stands in for a native crash on one photo (a real one cannot be provoked on purpose): the Ray
    worker process exits at once on any chunk holding that photo, the builder's own task otherwise."""
    from dense_face.train.dataset_builder import ray_engine

    if any(b"Yann_LeCun" in bytes(p) for p in batch["payload"]):
        os._exit(1)
    return ray_engine.cpu_task(batch, cfg, stages, later)


def test_ray_gives_up_on_a_chunk_that_keeps_killing_its_worker(ray_local, tmp_path, monkeypatch, capsys):
    """Ray would retry such a task forever; the builder allows TASK_RETRIES, then stops with one line that
    says the shards are kept and how to get past the photo, instead of hanging."""
    from ray import cloudpickle

    from dense_face.train.dataset_builder import main, ray_engine

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    monkeypatch.setattr(ray_engine, "cpu_task", _task_that_kills_its_worker_on_one_photo)
    t0 = time.monotonic()
    code = main(["--input", str(CELEBS), "--out", str(tmp_path / "o"), "--engine", "ray", "--keep-grayscale",
                 "--min-crop", "48", "--crop-sizes", "256", "--shard-size", "2", *COMMON])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and time.monotonic() - t0 < 240
    assert "the Ray run failed (WorkerCrashedError" in err[-1] and "--engine local records that photo as crashed" in err[-1], err[-3:]
