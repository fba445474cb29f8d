"""``dense-face bench device --smoke``: the GPU check's code path on the CPU with tiny models, so it never rots."""
import json
import os
import subprocess
import sys
from pathlib import Path


SHARED_LANDMARKER = Path(__file__).resolve().parents[2] / "shared" / "models" / "face_landmarker_v2_with_blendshapes.task"


def test_device_bench_smoke(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, MPLCONFIGDIR=str(tmp_path / "mpl"))
    proc = subprocess.run([sys.executable, "-m", "dense_face.cli", "bench", "device", "--smoke", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    result = json.loads((out / "device.json").read_text())
    assert result["complete"] and result["info"]["smoke"]
    assert set(result["steps"]["64"]) == {"plain", "face_mode", "face_mode_naive", "controlnet"}
    face = result["steps"]["128"]["face_mode"]
    assert 0 < face["pose_branch_x_plain"] < 1 and 1 < face["flop_floor"] < 1.5, face
    if SHARED_LANDMARKER.is_file() or os.environ.get("DENSE_FACE_LANDMARKER"):
        assert result["pipeline"]["x_plain"] > 0 and "face sampler (256)" in result["pipeline"]["stages_s"]
    assert all(row["fits"] for row in result["trainer"]["batches"].values())
    assert set(result["equivalence"]) == {"fp32", "fp16", "bf16"}
    assert result["equivalence"]["fp32"]["ok"], result["equivalence"]["fp32"]
    md = (out / "device.md").read_text()
    assert "## Sampling step" in md and "## Trainer vs ComfyUI" in md
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("ratios: face_64=") and "dense_losses=" in last and "two_mode=" in last
    assert "face_floor_128=1." in last
    assert sum(line.startswith("ratios:") for line in proc.stdout.splitlines()) == 1
    assert last == result["ratios"]


def test_device_bench_needs_cuda_or_smoke(tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    proc = subprocess.run([sys.executable, "-m", "dense_face.cli", "bench", "device", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--smoke" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
