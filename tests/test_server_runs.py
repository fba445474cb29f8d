"""`dense-face run` and `dense-face eval` on real ComfyUI servers (tiny models): uploads that never collide
or overwrite, models checked against the server, live progress, Ctrl-C, and a pool of two servers."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from comfy_harness import start_tiny_server, tiny_workflow

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.server


def _cli(*args, timeout=900, **kw):
    return subprocess.run([sys.executable, "-m", "dense_face.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, **kw)


def _tiny_file(tmp_path: Path, name: str, steps: int | None = None) -> Path:
    wf = tiny_workflow(json.loads((REPO / "workflows" / f"{name}_api.json").read_text()))
    if steps:
        for node in wf.values():
            if "steps" in node["inputs"]:
                node["inputs"]["steps"] = steps
    path = tmp_path / f"{name}_tiny_api.json"
    path.write_text(json.dumps(wf))
    return path


@pytest.fixture(scope="module")
def servers(comfy, landmarker_path, tmp_path_factory):
    started = []
    try:
        for i in range(2):
            started.append(start_tiny_server(tmp_path_factory.mktemp(f"server{i}"), landmarker_path))
        yield started
    finally:
        for srv in started:
            srv.stop()


def test_uploads_never_collide_nor_overwrite_and_progress_is_live(servers, shared_dir, tmp_path):
    """Two photos with one basename reach their own nodes; a file of the user's in the server's input folder
    stays untouched; stderr shows the nodes, sampler steps with a bar and an ETA, and the total."""
    srv = servers[0]
    users = srv.root / "input" / "01.jpg"
    users.parent.mkdir(parents=True, exist_ok=True)
    users.write_bytes(b"the user's own file")
    target, reference = shared_dir / "data/celebs/Yann_LeCun/01.jpg", shared_dir / "data/celebs/Barack_Obama/01.jpg"
    out = tmp_path / "out"
    proc = _cli("run", "--workflow", _tiny_file(tmp_path, "dense_face_face_swap"), "--comfy-url", srv.url,
                "--target", target, "--reference", reference, "--steps", "6", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert users.read_bytes() == b"the user's own file"
    uploaded = sorted((srv.root / "input" / "dense-face").iterdir())
    assert sorted(p.read_bytes() for p in uploaded) == sorted([target.read_bytes(), reference.read_bytes()])
    result = next(out.glob("dense_face_face_swap_*.png"))
    assert Image.open(result).size == Image.open(target).size == (512, 512)  # the target, not the 256 reference
    err = proc.stderr
    assert "Latent blending (face only)" in err and "file(s) from" in err
    bar = [ln for ln in err.splitlines() if ln.strip().startswith("step") and "ETA" in ln and "elapsed" in ln]
    assert len(bar) >= 6 and "100%" in bar[-1], err
    summary = json.loads((out / "run_summary.json").read_text())
    assert "target: 01.jpg" in summary["overrides"] and "reference: 01.jpg" in summary["overrides"]


def test_group_run_with_three_references(servers, shared_dir, tmp_path):
    """`run --workflow dense_face_group` on insightface's group photo with --reference three times: every face
    re-painted and pasted into the photo (its size kept), one new face per face asked for (three of the six,
    to keep the VAE of the tiny model from taking a minute)."""
    import numpy as np

    from dense_face.dense_face_core.packaged_photos import packaged_photo

    group = packaged_photo("group")
    refs = [shared_dir / f"data/celebs/{who}/01.jpg" for who in ("Yann_LeCun", "Barack_Obama", "Oprah_Winfrey")]
    out = tmp_path / "out"
    wf_file = _tiny_file(tmp_path, "dense_face_group")
    wf = json.loads(wf_file.read_text())
    for node in wf.values():
        if node["class_type"] == "DenseFaceCropMask":
            node["inputs"].update(face="list", face_list="1, 3, 5")
    wf_file.write_text(json.dumps(wf))
    proc = _cli("run", "--workflow", wf_file, "--comfy-url", servers[0].url,
                "--target", group, *[a for r in refs for a in ("--reference", r)], "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "run_summary.json").read_text())
    assert [n for n in summary["overrides"] if n.startswith("reference")] == [
        "reference: 01.jpg", "reference 2: 01.jpg", "reference 3: 01.jpg"]
    faces = sorted(out.glob("dense_face_group_faces_*.png"))
    result = np.asarray(Image.open(next(out.glob("dense_face_group_0*.png"))).convert("RGB"))
    photo = np.asarray(Image.open(group).convert("RGB"))
    assert len(faces) == 3 and result.shape == photo.shape
    changed = (result != photo).any(-1).mean()
    assert 0.002 < changed < 0.5, changed  # the faces, not the whole photo


def test_missing_models_are_named_with_their_folder_and_close_names(servers, shared_dir, tmp_path):
    """The shipped face swap with its default names, on a server that has only the tiny models, and no demo
    set there: one line per missing model (file, folder, where to get it), no ComfyUI validation JSON."""
    for demo in ("off", "auto"):
        proc = _cli("run", "--workflow", "dense_face_face_swap", "--comfy-url", servers[0].url, "--target",
                    shared_dir / "data/celebs/Yann_LeCun/01.jpg", "--reference",
                    shared_dir / "data/celebs/Yann_LeCun/02.jpg", "--demo", demo, "--out", tmp_path / demo,
                    timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "value_not_in_list" not in proc.stderr
        if demo == "off":
            for name, folder in (("DenseFace_face_generation_base.safetensors", "models/checkpoints"),
                                 ("DenseFace_face_generation.safetensors", "models/dense_face")):
                line = next(ln for ln in proc.stderr.splitlines() if name in ln)
                assert folder in line and "install-official" in line
            assert "close names this ComfyUI has: tiny_dense_face.safetensors" in proc.stderr
        else:
            assert "demo-weights --models-dir" in proc.stderr  # the server has not got the demo set either


def test_ctrl_c_interrupts_the_prompt_on_the_server(servers, shared_dir, tmp_path):
    srv = servers[1]
    proc = subprocess.Popen([sys.executable, "-m", "dense_face.cli", "run", "--workflow",
                             _tiny_file(tmp_path, "dense_face_pose_control", steps=4000), "--comfy-url", srv.url,
                             "--reference", shared_dir / "data/celebs/Yann_LeCun/02.jpg", "--out", tmp_path / "o"],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    seen = ""
    deadline = time.time() + 300
    while "step" not in seen and time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    assert "step" in seen, seen
    proc.send_signal(signal.SIGINT)
    rest_out, rest_err = proc.communicate(timeout=120)
    assert proc.returncode == 130, seen + rest_err
    assert "asked ComfyUI" in rest_err and "to stop prompt" in rest_err and "Traceback" not in rest_err
    deadline = time.time() + 60
    while time.time() < deadline:
        queue = srv.get_json("/queue")
        if not queue["queue_running"] and not queue["queue_pending"]:
            break
        time.sleep(0.5)
    assert not queue["queue_running"] and not queue["queue_pending"], queue
    assert not list((tmp_path / "o").glob("*.png"))  # nothing was downloaded


def test_eval_spreads_over_two_servers_resumes_and_matches_one_server(servers, shared_dir, tmp_path):
    """`dense-face eval --comfy-url URL1,URL2`: the runs go to both servers, a second call generates nothing
    again, and every image equals the same run's image generated on one server."""
    import shutil

    ids = tmp_path / "ids"
    for name in ("Yann_LeCun", "Oprah_Winfrey"):
        (ids / name).mkdir(parents=True)
        shutil.copy(shared_dir / f"data/celebs/{name}/01.jpg", ids / name / "01.jpg")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("A close-up photo of * .\n")  # the face swap's prompt is the face prompt
    workflow = _tiny_file(tmp_path, "dense_face_face_swap")
    common = ["--identities", ids, "--prompts", prompts, "--seeds", "1,2", "--workflow", workflow, "--target",
              shared_dir / "data/celebs/Barack_Obama/04.jpg", "--generate-only"]
    pooled = _cli("eval", *common, "--comfy-url", f"{servers[0].url},{servers[1].url}", "--out", tmp_path / "pool",
                  timeout=1500)
    assert pooled.returncode == 0, pooled.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "pool").rglob("run_summary.json")]
    assert len(summaries) == 4 and {s["server"] for s in summaries} == {servers[0].url, servers[1].url}
    assert all(s["status"] == "ok" for s in summaries), summaries
    again = _cli("eval", *common, "--comfy-url", f"{servers[0].url},{servers[1].url}", "--out", tmp_path / "pool")
    assert again.returncode == 0 and "0 to generate" in again.stderr, again.stderr[-2000:]
    single = _cli("eval", *common, "--comfy-url", servers[0].url, "--out", tmp_path / "one", timeout=1500)
    assert single.returncode == 0, single.stderr[-3000:]
    import numpy as np

    def pixels(root):  # per run folder (a server numbers its outputs), the pixels (PNG text chunks hold the graph)
        return {p.parent.relative_to(root): np.asarray(Image.open(p)) for p in root.rglob("dense_face_face_swap_*.png")}

    pool_images, one_images = pixels(tmp_path / "pool"), pixels(tmp_path / "one")
    assert len(pool_images) == 4 and pool_images.keys() == one_images.keys()
    diffs = {str(k): int(np.abs(pool_images[k].astype(int) - one_images[k].astype(int)).max()) for k in pool_images}
    assert all(d == 0 for d in diffs.values()), diffs


def test_run_spreads_seeds_over_servers(servers, shared_dir, tmp_path):
    """`dense-face run --comfy-url URL1,URL2 --seeds 5,6`: one run per seed in OUT/seed_<n>/, each on one of the
    servers; the image of a seed does not depend on which server made it."""
    import numpy as np

    workflow = _tiny_file(tmp_path, "dense_face_face_swap")
    photos = ["--target", shared_dir / "data/celebs/Oprah_Winfrey/01.jpg", "--reference",
              shared_dir / "data/celebs/Oprah_Winfrey/02.jpg"]
    both = _cli("run", "--workflow", workflow, "--comfy-url", f"{servers[0].url},{servers[1].url}", *photos,
                "--seeds", "5,6", "--out", tmp_path / "both")
    assert both.returncode == 0, both.stderr[-3000:]
    runs = json.loads((tmp_path / "both" / "run_summary.json").read_text())["runs"]
    assert len(runs) == 2 and {r["comfyui"] for r in runs} <= {servers[0].url, servers[1].url}
    alone = _cli("run", "--workflow", workflow, "--comfy-url", servers[1].url, *photos, "--seed", "6",
                 "--out", tmp_path / "alone")
    assert alone.returncode == 0, alone.stderr[-3000:]
    a = np.asarray(Image.open(next((tmp_path / "both" / "seed_6").glob("dense_face_face_swap_*.png"))))
    b = np.asarray(Image.open(next((tmp_path / "alone").glob("dense_face_face_swap_*.png"))))
    assert np.array_equal(a, b)
    one = _cli("run", "--workflow", workflow, "--comfy-url", f"{servers[0].url},{servers[1].url}", *photos,
               "--out", tmp_path / "x", timeout=60)
    assert one.returncode == 2 and "--seeds" in one.stderr


def test_killed_eval_resumes_without_generating_twice(servers, shared_dir, tmp_path):
    """kill -9 in the middle of `dense-face eval`: the next call keeps every finished run as it was and
    generates only the others."""
    import shutil

    ids = tmp_path / "ids"
    for name in ("Yann_LeCun", "Oprah_Winfrey"):
        (ids / name).mkdir(parents=True)
        shutil.copy(shared_dir / f"data/celebs/{name}/01.jpg", ids / name / "01.jpg")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("A close-up photo of * .\n")
    args = ["--identities", ids, "--prompts", prompts, "--seeds", "1-3",
            "--workflow", _tiny_file(tmp_path, "dense_face_face_swap", steps=12), "--target",
            shared_dir / "data/celebs/Barack_Obama/04.jpg", "--generate-only", "--comfy-url", servers[0].url,
            "--out", tmp_path / "out"]
    proc = subprocess.Popen([sys.executable, "-m", "dense_face.cli", "eval", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and not list((tmp_path / "out").rglob("run_summary.json")):
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    done = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("run_summary.json")}
    assert 1 <= len(done) < 6, done
    again = _cli("eval", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{len(done)} already done, {6 - len(done)} to generate" in again.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # finished runs kept as they were
    assert len(list((tmp_path / "out").rglob("run_summary.json"))) == 6


def test_a_server_with_the_demo_set_runs_the_shipped_graph_on_it(servers, demo_cache, shared_dir, tmp_path):
    """--demo auto on a server that has the demo set (and not the workflow's models): loudly on the demo set,
    every saved image named DEMO."""
    models = servers[1].root / "models"
    demo = demo_cache / "dense-face" / "demo-models"
    for sub in ("checkpoints", "dense_face", "insightface/models"):
        for f in (demo / sub).iterdir():
            if not (models / sub / f.name).exists():
                (models / sub).mkdir(parents=True, exist_ok=True)
                (models / sub / f.name).symlink_to(f, target_is_directory=f.is_dir())
    out = tmp_path / "out"
    proc = _cli("run", "--workflow", "dense_face_face_swap", "--comfy-url", servers[1].url, "--target",
                shared_dir / "data/celebs/Yann_LeCun/01.jpg", "--reference", shared_dir / "data/celebs/Yann_LeCun/02.jpg",
                "--steps", "1", "--out", out, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RANDOM WEIGHTS" in proc.stderr and "RANDOM WEIGHTS" in proc.stdout
    saved = [p.name for p in out.glob("*.png")]
    assert saved and all(n.startswith("DEMO_RANDOM_WEIGHTS_") for n in saved), saved
