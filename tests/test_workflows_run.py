"""The shipped API workflows run end to end: on a real ComfyUI server through /prompt (tiny
models), and in-process through `dense-face run` on the random-weight demo set."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "workflows").glob("*_api.json"))
from comfy_harness import TINY_ID_MODEL, tiny_workflow  # noqa: E402


def _runner():
    from dense_face.headless import runner

    return runner


@pytest.fixture(scope="module")
def server(comfy, landmarker_path, tmp_path_factory):
    """A ComfyUI server with our pack, the test pack (tiny model detection) and tiny model files."""
    from comfy_harness import start_tiny_server

    srv = start_tiny_server(tmp_path_factory.mktemp("server"), landmarker_path)
    try:
        yield srv
    finally:
        srv.stop()


_tiny = tiny_workflow


@pytest.mark.server
@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_api_workflow_runs_on_server(server, path, shared_dir, tmp_path):
    wf = _tiny(json.loads(path.read_text()))
    uploads = {"target": shared_dir / "data/celebs/Barack_Obama/04.jpg",
               "reference": shared_dir / "data/celebs/Barack_Obama/01.jpg"}
    runner = _runner()
    uploads = {k: v for k, v in uploads.items()
               if runner.nodes_titled(wf, runner.TITLE_TARGET if k == "target" else runner.TITLE_REFERENCE)}
    written = runner.run_on_server(server.url, wf, uploads, tmp_path, timeout=900)
    saved = [p for p in written if "previews" not in p.parts]
    expected = sum(1 for n in wf.values() if n["class_type"] == "SaveImage")
    print(f"{path.name}: {len(written)} images back from the server ({len(saved)} saved, "
          f"{len(written) - len(saved)} previews)")
    assert len({Path(p).name.rsplit("_", 2)[0] for p in saved}) == expected
    for p in written:
        with Image.open(p) as im:
            assert im.size[0] >= 64 and np.asarray(im).std() > 0


@pytest.mark.slow
def test_face_swap_demo_changes_only_the_face(shared_dir, landmarker_path, demo_cache, tmp_path, monkeypatch):
    """`dense-face run` in-process on the random-weight demo set, on a real photo."""
    import subprocess
    import sys

    target = shared_dir / "data/celebs/Yann_LeCun/01.jpg"
    out = tmp_path / "out"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = dict(os.environ, DENSE_FACE_LANDMARKER=str(landmarker_path), HOME=str(tmp_path),
               XDG_CACHE_HOME=str(demo_cache), TMPDIR=str(tmpdir))
    proc = subprocess.run([sys.executable, "-m", "dense_face.cli", "run", "--workflow", "dense_face_face_swap",
                           "--target", str(target), "--steps", "2", "--demo", "on", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RANDOM WEIGHTS" in proc.stderr and "RANDOM WEIGHTS" in proc.stdout
    # one step bar, the runner's: ComfyUI's tqdm bar would overwrite it on the same terminal line
    assert any(ln.strip().startswith("step") and "ETA" in ln for ln in proc.stderr.replace("\r", "\n").splitlines())
    assert "s/it]" not in proc.stderr and "it/s]" not in proc.stderr, proc.stderr[-2000:]
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["demo_random_weights"] is True
    assert not list(tmpdir.iterdir())  # no copies of the user's photos, no ComfyUI work folder left behind
    saved = [Path(p).name for p in summary["outputs"] if "previews" not in Path(p).parts]
    assert saved and all(n.startswith("DEMO_RANDOM_WEIGHTS_") for n in saved), saved  # demo files say so
    result = next(out.glob("DEMO_RANDOM_WEIGHTS_dense_face_face_swap_*.png"))
    before = np.asarray(Image.open(target).convert("RGB"))
    after = np.asarray(Image.open(result).convert("RGB"))
    # the region that may change: the feathered face mask warped back, as the workflow computes it
    from dense_face.dense_face_core.crop import compute_face_crop
    from dense_face.dense_face_core.face_mask import face_mask
    from dense_face.dense_face_core.landmarker import FaceAnalyzer, select_face
    from dense_face.dense_face_core.paste import auto_feather, warp_mask_back

    wf = json.loads((REPO / "workflows" / "dense_face_face_swap_api.json").read_text())
    crop_inputs = next(n["inputs"] for n in wf.values() if n["class_type"] == "DenseFaceCropMask")
    with FaceAnalyzer(landmarker_path) as fa:
        fc = compute_face_crop(select_face(fa.detect(before)), crop_inputs["crop_size"],
                               crop_inputs["padding"], canonical_vertices=fa.canonical)
    mask = face_mask(fc, grow=crop_inputs["mask_grow"], feather=crop_inputs["mask_feather"])
    weight = warp_mask_back(mask, fc, auto_feather(fc))
    changed = (after != before).any(-1)
    print(f"demo face swap: {changed.mean():.2%} of pixels changed, {(weight > 0).mean():.2%} inside the mask")
    assert changed[weight > 0].mean() > 0.5  # the face was re-painted
    assert not changed[weight == 0].any()  # nothing outside the feathered mask moved


@pytest.mark.server
def test_annotations_without_a_head_stop_before_the_sampler(server, shared_dir, tmp_path):
    """Weights without a dense head (the authors' release): the annotation node's lazy inputs let ComfyUI
    ask it first, so the prompt stops with the file named before the KSampler runs (minutes on a CPU)."""
    import tiny_models as tm
    from dense_face.dense_face_core.errors import DenseFaceError
    from dense_face.dense_face_core.random_weights import build_random_weights
    from dense_face.dense_face_core.weight_file import save_weight_file

    w = build_random_weights(tm.tiny_family(), seed=1, with_dense_head=False, id_embedding_model=TINY_ID_MODEL)
    save_weight_file(server.root / "models" / "dense_face" / "tiny_no_head.safetensors", w.tensors(), w.metadata)
    wf = _tiny(json.loads((REPO / "workflows" / "dense_face_annotations_api.json").read_text()))
    next(n for n in wf.values() if n["class_type"] == "DenseFaceLoader")["inputs"]["weights"] = "tiny_no_head.safetensors"
    runner = _runner()
    with pytest.raises(DenseFaceError, match="tiny_no_head.safetensors has no dense annotation head"):
        runner.run_on_server(server.url, wf, {"reference": shared_dir / "data/celebs/Barack_Obama/01.jpg"},
                             tmp_path, timeout=300)
    last = max(server.get_json("/history").values(), key=lambda h: h["prompt"][0])
    error = next(m[1] for m in last["status"]["messages"] if m[0] == "execution_error")
    sampler = next(k for k, n in wf.items() if n["class_type"] == "KSampler")
    assert error["node_type"] == "DenseFaceAnnotationPredict" and sampler not in error["executed"], error


@pytest.mark.server
def test_cli_run_against_server_url(server, shared_dir, tmp_path):
    """`dense-face run --comfy-url`: overrides by role, uploads, outputs downloaded, summary written."""
    import subprocess
    import sys

    wf = _tiny(json.loads((REPO / "workflows" / "dense_face_face_swap_api.json").read_text()))
    path = tmp_path / "face_swap_tiny_api.json"
    path.write_text(json.dumps(wf))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "dense_face.cli", "run", "--workflow", str(path), "--comfy-url",
                           server.url, "--target", str(shared_dir / "data/celebs/Oprah_Winfrey/01.jpg"),
                           "--reference", str(shared_dir / "data/celebs/Oprah_Winfrey/02.jpg"), "--seed", "5",
                           "--yaw", "25", "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["demo_random_weights"] is False
    assert "pose: yaw 25" in summary["overrides"] and "seed: 5 (+1 per further sampler)" in summary["overrides"]
    assert any(Path(p).name.startswith("dense_face_face_swap") for p in summary["outputs"])
    # a UI-format file is refused with a pointer to its API twin
    bad = subprocess.run([sys.executable, "-m", "dense_face.cli", "run", "--workflow",
                          str(REPO / "workflows" / "dense_face_face_swap.json"), "--comfy-url", server.url,
                          "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "UI-format" in bad.stderr and "_api.json" in bad.stderr


def test_in_process_runner_keeps_models_loaded_and_writes_outputs_every_time(comfy, landmarker_path, shared_dir,
                                                                             tmp_path, monkeypatch, capfd):
    """One executor for every run of a command: a second generation does not load the checkpoint again, and
    a run identical to an earlier one (all of it cached by ComfyUI) still writes its files."""
    import shutil

    import folder_paths

    from comfy_harness import write_tiny_models
    from dense_face.headless.in_process import InProcessRunner

    clip_cfg = write_tiny_models(comfy.models_dir, tmp_path / "work", landmarker_path)
    monkeypatch.setenv("DENSE_FACE_TEST_TINY_CLIP", str(clip_cfg))
    import comfy_test_pack  # noqa: F401 - ComfyUI's loaders detect the tiny checkpoint in this process too

    inputs, out = tmp_path / "input", tmp_path / "out"
    inputs.mkdir()
    shutil.copy(shared_dir / "data/celebs/Yann_LeCun/02.jpg", inputs / "reference.jpg")
    folder_paths.set_input_directory(str(inputs))
    folder_paths.set_output_directory(str(out))
    folder_paths.set_temp_directory(str(out / "previews"))
    base = _tiny(json.loads((REPO / "workflows" / "dense_face_pose_control_api.json").read_text()))
    next(n for n in base.values() if n["class_type"] == "LoadImage")["inputs"]["image"] = "reference.jpg"
    # two poses instead of five: the random full-size SD VAE of the tiny checkpoint (ComfyUI builds every SD
    # VAE at full size) took most of this test's time decoding them
    next(n for n in base.values() if n["class_type"] == "DenseFacePoseGrid")["inputs"]["yaw_steps"] = 2
    runner = InProcessRunner(comfy)
    logs, counts = [], []
    for i, seed in enumerate((3, 4, 4)):  # each run into a folder of its own (as eval and --seeds do)
        wf = json.loads(json.dumps(base))
        next(n for n in wf.values() if n["class_type"] == "KSampler")["inputs"]["seed"] = seed
        written = runner.run(wf, out / f"run{i}")
        assert written and all(p.is_relative_to(out / f"run{i}") and p.is_file() for p in written)
        counts.append(len([p for p in written if "previews" not in p.parts]))
        logs.append(capfd.readouterr().err)
    runner.close()
    assert counts == [2, 2, 2]  # both poses saved by every run, the fully cached third one included
    assert "Base model (SD1.5)" in logs[0] and "Base model (SD1.5)" not in logs[1]  # loaded once
    assert "Generate faces" in logs[1]
