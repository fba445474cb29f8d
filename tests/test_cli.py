"""The dense-face command line, run as a user would (subprocess of the installed script)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dense_face.dense_face_core.pose import draw_pose_image

SCRIPT = Path(sys.executable).parent / "dense-face"


def run(*args, env_extra=None, check=True):
    import os

    env = dict(os.environ, **(env_extra or {}))
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "dense_face.cli"]
    proc = subprocess.run(cmd + list(map(str, args)), capture_output=True, text=True, env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"dense-face {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_pose_image_command(tmp_path):
    out = tmp_path / "sub" / "pose.png"
    run("pose-image", "--yaw", 30, "--pitch", -10, "--roll", 5, "--out", out)
    assert np.array_equal(np.asarray(Image.open(out)), draw_pose_image(30, -10, 5))
    run("pose-image", "--yaw", 30, "--pitch", -10, "--roll", 5, "--size", 512, "--out", out)
    assert Image.open(out).size == (512, 512)
    bad = run("pose-image", "--yaw", "nan", "--pitch", 0, "--roll", 0, "--out", tmp_path / "x.png", check=False)
    assert bad.returncode == 2 and "yaw must be a finite number" in bad.stderr
    assert not (tmp_path / "x.png").exists()


def test_analyze_json(tmp_path, shared_dir, landmarker_path):
    import skimage.data

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "blank.png")
    Image.fromarray(skimage.data.astronaut()).save(tmp_path / "astronaut.png")
    celeb = shared_dir / "data/celebs/Yann_LeCun/01.jpg"
    proc = run("analyze", "--json", "--landmarker", landmarker_path, celeb, tmp_path / "blank.png",
               tmp_path / "astronaut.png")
    results = json.loads(proc.stdout)
    assert [r["faces"] for r in results] == [1, 0, 1]
    first = results[0]
    assert set(first) >= {"faces", "box", "yaw", "pitch", "roll", "landmarks"}
    assert len(first["landmarks"]) == 478 and len(first["landmarks"][0]) == 3
    w, h = Image.open(celeb).size
    x0, y0, x1, y1 = first["box"]
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert all(0.0 <= v <= 1.0 for p in first["landmarks"] for v in p[:2])


def test_analyze_missing_model_and_unreadable(tmp_path, landmarker_path):
    proc = run("analyze", tmp_path / "none.jpg", env_extra={"DENSE_FACE_LANDMARKER": str(tmp_path / "no.task")},
               check=False)
    assert proc.returncode == 2 and "DENSE_FACE_LANDMARKER" in proc.stderr and "face_landmarker.task" in proc.stderr
    proc = run("analyze", "--json", "--landmarker", landmarker_path, tmp_path / "none.jpg", check=False)
    assert proc.returncode == 1
    assert "could not read image" in json.loads(proc.stdout)[0]["error"]


def test_help_lists_commands():
    out = run("--help").stdout
    for cmd in ("pose-image", "analyze", "convert-official", "bench"):
        assert cmd in out


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_closed_stdout_pipe_stops_quietly(unbuffered):
    """`dense-face ... | head -1`: the command stops when the reader goes away, with no traceback, whether its
    output goes out line by line (the reader leaves after the first) or at the end (the reader has left)."""
    import os

    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "dense_face.cli"]
    env = dict(os.environ, PYTHONUNBUFFERED=unbuffered)
    proc = subprocess.Popen(cmd + ["bench", "pose-branch", "--smoke", "--sizes", "64", "--repeats", "1",
                                   "--layer-repeats", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = proc.stdout.readline() if unbuffered else b"pose branch"
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141 and first.startswith(b"pose branch"), err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.slow
def test_bench_face_stack(landmarker_path):
    out = run("bench", "face-stack", "--count", "6", "--landmarker", landmarker_path).stdout
    last = out.strip().splitlines()[-1]
    assert last.startswith("figures: images_per_s=") and float(last.split("=")[1]) > 0
