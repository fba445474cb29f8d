"""A user's mistakes, typed as a user types them: every ``dense-face`` subcommand answers with one line
``dense-face <cmd>: error: ...`` (exit 2, no traceback) naming the input and what was expected, checks
cheap things before any model loads, and leaves nothing behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def dense_face(*args, env_extra=None, cwd=None, timeout=300):
    """(process, seconds) of ``python -m dense_face.cli ARGS`` in a fresh process."""
    env = dict(os.environ, **(env_extra or {}))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dense_face.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=timeout)
    return proc, time.perf_counter() - t0


def one_line_error(proc, command: str, *words: str, notes: int = 0) -> str:
    """The error line, after asserting exit 2, no traceback, and nothing else on stderr but ``notes`` lines."""
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stdout, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) <= 1 + notes, err
    line = lines[-1]
    assert line.startswith(f"dense-face {command}: error: "), err
    for w in words:
        assert w in line, (w, line)
    return line


def unwritable_dir(tmp_path: Path) -> Path:
    """A folder this process cannot create files in: a chmod 555 folder, or /proc for root."""
    if ROOT:
        if not Path("/proc").is_dir():
            pytest.skip("running as root and no /proc: no folder here is unwritable")
        return Path("/proc")
    d = tmp_path / "readonly"
    d.mkdir()
    d.chmod(0o555)
    return d


@pytest.fixture
def readonly_dir(tmp_path):
    d = unwritable_dir(tmp_path)
    yield d
    if d != Path("/proc"):
        d.chmod(0o755)


def test_analyze_max_faces_zero(tmp_path):
    img = tmp_path / "face.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(img)
    proc, seconds = dense_face("analyze", "--max-faces", "0", img)
    one_line_error(proc, "analyze", "--max-faces", "at least 1", "got 0")
    assert "max_vec_size" not in proc.stderr


POSE = ["pose-image", "--yaw", "1", "--pitch", "0", "--roll", "0"]


@pytest.mark.parametrize("case", ["proc_file", "readonly_dir", "existing_dir", "empty", "below_file"])
def test_pose_image_unwritable_out(case, tmp_path, request):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("a file\n")
    if case == "proc_file":
        if not Path("/proc/version").is_file():
            pytest.skip("no /proc/version here")
        out, words = "/proc/version", ["/proc/version", "cannot write"]
    elif case == "readonly_dir":
        out = request.getfixturevalue("readonly_dir") / "pose.png"
        words = [str(out), "cannot write"]
    elif case == "existing_dir":
        out, words = work, [str(work), "is a folder", "expected the path of a file"]
    elif case == "empty":
        out, words = "", ["--out", "empty name"]
    else:
        out, words = work / "notes.txt" / "pose.png", [str(work / "notes.txt" / "pose.png"), "is a file"]
    before = sorted(p.name for p in work.iterdir())
    proc, _ = dense_face(*POSE, "--out", out, cwd=work)
    one_line_error(proc, "pose-image", *words)
    assert sorted(p.name for p in work.iterdir()) == before, "left something behind"
    if Path("/proc").is_dir():
        assert not list(Path("/proc").glob(".version.tmp*"))


@pytest.mark.parametrize("args, words", [
    (["--yaw", "nan", "--pitch", "0", "--roll", "0"], ["yaw must be a finite number", "nan"]),
    (["--yaw", "1", "--pitch", "0", "--roll", "0", "--size", "10"], ["size must be between 32 and 4096", "got 10"]),
])
def test_pose_image_bad_values(args, words, tmp_path):
    proc, _ = dense_face("pose-image", *args, "--out", tmp_path / "pose.png")
    one_line_error(proc, "pose-image", *words)
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------- dense-face run

def _grey_png(path: Path) -> Path:
    Image.fromarray(np.full((320, 320, 3), 128, np.uint8)).save(path)
    return path


def _run_fails_fast(tmp_path, args, *words, env_extra=None):
    proc, seconds = dense_face("run", "--demo", "off", "--workflow", "dense_face_face_swap", *args,
                               env_extra=env_extra)
    line = one_line_error(proc, "run", *words)
    assert seconds < 20, f"took {seconds:.1f} s: the check must come before ComfyUI and the models load"
    return line


@pytest.mark.parametrize("angle, value, shown", [("--yaw", "nan", "nan"), ("--pitch", "inf", "inf"),
                                                 ("--roll", "-2e6", "-2000000.0")])
def test_run_bad_angle(angle, value, shown, tmp_path):
    out = tmp_path / "out"
    _run_fails_fast(tmp_path, [f"{angle}={value}", "--out", out], angle, "finite number of degrees", "1e+06", shown)
    assert not out.exists()


@pytest.mark.parametrize("case", ["file", "below_file", "readonly"])
def test_run_unwritable_out(case, tmp_path, request):
    notes = tmp_path / "notes.txt"
    notes.write_text("a file\n")
    if case == "file":
        out, words = notes, [str(notes), "is a file", "expected a folder"]
    elif case == "below_file":
        out, words = notes / "results", [str(notes / "results"), f"{notes} is a file"]
    else:
        ro = request.getfixturevalue("readonly_dir")
        out, words = ro / "results", [str(ro / "results"), "cannot write", str(ro)]
    _run_fails_fast(tmp_path, ["--out", out], "--out", *words)
    assert notes.read_text() == "a file\n" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("role", ["target", "reference"])
def test_run_unreadable_photo(role, tmp_path):
    fake = tmp_path / "x.jpg"
    fake.write_text("this is text, not a JPEG\n")
    line = _run_fails_fast(tmp_path, [f"--{role}", fake, "--out", tmp_path / "out"],
                           f"--{role} {fake}", "not a readable image", "expected a photo")
    assert f"{role}.jpg" not in line.replace(str(fake), ""), "names the temporary copy, not the user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jpg"]


def test_run_missing_photo(tmp_path):
    _run_fails_fast(tmp_path, ["--target", tmp_path / "none.jpg", "--out", tmp_path / "out"],
                    "--target", "no such file", str(tmp_path / "none.jpg"))


def test_run_reference_without_face(tmp_path, landmarker_path):
    grey = _grey_png(tmp_path / "grey.png")
    _run_fails_fast(tmp_path, ["--reference", grey, "--out", tmp_path / "out"], f"--reference {grey}",
                    "no face found", env_extra={"DENSE_FACE_LANDMARKER": str(landmarker_path)})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["garbage", "wrong_size", "missing"])
def test_run_bad_reference_embedding(case, tmp_path):
    emb = tmp_path / "me.npy"
    if case == "garbage":
        emb.write_text("not numpy\n")
        words = [str(emb), "512 values"]
    elif case == "wrong_size":
        np.save(emb, np.zeros(10, np.float32))
        words = [str(emb), "expected 512 values", "(10,)"]
    else:
        words = ["no such file", str(emb)]
    _run_fails_fast(tmp_path, ["--reference-embedding", emb, "--out", tmp_path / "out"],
                    "--reference-embedding", *words)
    assert not (tmp_path / "out").exists()


def test_preflight_accepts_good_inputs(tmp_path, shared_dir, landmarker_path, monkeypatch):
    """The same checks pass a real photo with a face, a 512-value embedding and a new output folder."""
    from dense_face.headless.preflight import preflight
    from dense_face.headless.runner import build_parser

    monkeypatch.setenv("DENSE_FACE_LANDMARKER", str(landmarker_path))
    photo = shared_dir / "data/celebs/Yann_LeCun/01.jpg"
    np.save(tmp_path / "me.npy", np.ones((1, 512), np.float32))
    for extra in (["--reference", photo, "--target", photo], ["--reference-embedding", tmp_path / "me.npy"]):
        args = build_parser().parse_args(list(map(str, ["--out", tmp_path / "new" / "out", "--yaw", "30",
                                                         *extra])))
        assert preflight(args) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["me.npy"]


# ----------------------------------------------------------------------------------- no ComfyUI to be found

NO_COMFY = {"COMFYUI_PATH": "/nonexistent"}


def test_demo_weights_without_comfyui(tmp_path):
    proc, _ = dense_face("demo-weights", "--models-dir", tmp_path / "models", env_extra=NO_COMFY)
    one_line_error(proc, "demo-weights", "COMFYUI_PATH=/nonexistent", "not a ComfyUI folder")
    assert not (tmp_path / "models").exists()


def test_bench_step_overhead_without_comfyui():
    proc, _ = dense_face("bench", "step-overhead", env_extra=NO_COMFY)
    # the benchmark re-runs itself with the steady allocator and says so in one note line
    one_line_error(proc, "bench", "COMFYUI_PATH=/nonexistent", "not a ComfyUI folder", notes=1)


# ------------------------------------------------------------------------------------ demo set: no log noise

DEMO_BUILD = """
import json, sys
from pathlib import Path
from dense_face.dense_face_core import random_weights as RW
from dense_face.headless import random_sd as rm
from dense_face.headless.demo_set import main

out = Path(sys.argv[1])
# the real command at the tiny geometry (the full-size set is 2 GB); the other two files already there
cfg = out.parent / "tiny_clip.json"
cfg.write_text(json.dumps(RW.TINY_TEXT_CONFIG))
unet, clip, vae = rm.build_unet, rm.build_clip, rm.build_vae
rm.build_unet = lambda seed=0: unet(RW.ldm_unet_config(RW.TINY), seed)
rm.build_clip = lambda seed=0: clip(seed, str(cfg))
rm.build_vae = lambda seed=0: vae(seed, ch=32)
for rel in ("dense_face/" + RW.DEMO_DENSE_FACE, "insightface/models/%s/%s" % (RW.DEMO_ID_PACK, RW.RANDOM_ARCFACE_FILE)):
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    (out / rel).write_bytes(b"stand-in")
code = main(["--models-dir", str(out)])
print("=== after the build", file=sys.stderr, flush=True)
vae(0, ch=32)  # ComfyUI's log is back as it was: the same build now warns
sys.exit(code)
"""


@pytest.mark.slow
def test_demo_build_keeps_comfy_log_quiet(tmp_path):
    try:
        from dense_face.headless.comfy_host import find_comfyui

        find_comfyui()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no ComfyUI to build the demo set in: {exc}")
    models = tmp_path / "models"
    proc = subprocess.run([sys.executable, "-c", DEMO_BUILD, str(models)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    during, _, after = proc.stderr.partition("=== after the build")
    assert "Missing VAE keys" not in during, during[-3000:]
    assert "Missing VAE keys" in after  # the test would see the noise, and the level was restored
    assert "demo models: building" in proc.stdout and "demo models: checkpoints" in proc.stdout
    assert (models / "checkpoints").is_dir()


# ----------------------------------------------------------------------------------------- scripts/main_job.sh

def test_main_job_names_the_landmarker_path(tmp_path):
    """No landmarker and no download: the job says exactly where to put the file, and leaves no partial download."""
    tree = tmp_path / "pack"
    (tree / "scripts").mkdir(parents=True)
    (tree / "scripts" / "main_job.sh").write_text((REPO / "scripts" / "main_job.sh").read_text())
    (tree / "scripts" / "setup.sh").write_text("#!/usr/bin/env bash\nexit 0\n")  # the venv is not what is tested
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text('#!/usr/bin/env bash\nfor a; do last=$a; done\necho partial > "$last"\nexit 6\n')
    (bin_dir / "curl").chmod(0o755)
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "DENSE_FACE_LANDMARKER"}
    env.update(HOME=str(home), PATH=f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}")
    proc = subprocess.run(["bash", str(tree / "scripts" / "main_job.sh")], capture_output=True, text=True,
                          env=env, timeout=60)
    target = home / ".cache" / "dense-face" / "face_landmarker.task"
    assert proc.returncode == 1, proc.stderr
    assert f"put it at {target}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(target.parent.iterdir()), "partial download left behind"


# ------------------------------------------------------------------------------ build-dataset after kill -9

def _session_processes(sid: int) -> list:
    import psutil

    out = []
    for p in psutil.process_iter():
        try:
            if p.pid != sid and os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass
    return out


def test_build_dataset_workers_die_with_killed_parent(tmp_path, shared_dir, landmarker_path):
    pytest.importorskip("psutil")
    import psutil

    celebs = shared_dir / "data" / "celebs"
    out = tmp_path / "shards"
    cmd = [sys.executable, "-m", "dense_face.cli", "build-dataset", "--input", str(celebs), "--out", str(out),
           "--workers", "2", "--keep-grayscale", "--min-crop", "48", "--shard-size", "4", "--crop-sizes", "256",
           "--landmarker", str(landmarker_path), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        first = out / "shards" / "shard-000000.json"
        while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None and first.exists(), "the build ended (or never started) before the kill"
        kids = psutil.Process(proc.pid).children(recursive=True)
        workers = [k for k in kids if "forkserver" in " ".join(k.cmdline()) and k.ppid() != proc.pid]
        assert len(workers) >= 2, [k.cmdline() for k in kids]
        os.kill(proc.pid, signal.SIGKILL)  # the parent only, as a user's kill -9 or the OOM killer does
        proc.wait()
        assert not (out / "manifest.json").exists(), "the build finished before it could be killed"
        gone, alive = psutil.wait_procs(kids, timeout=10)
        assert not alive, [(p.pid, p.cmdline()) for p in alive]
        assert not _session_processes(proc.pid)
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in _session_processes(proc.pid):
            p.kill()
