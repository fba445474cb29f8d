"""The evaluation harness (`dense-face eval`, evaluation/) and its metrics (evaluation/metrics.py re-exports).

Real ArcFace, CLIP and Inception weights cannot be downloaded here, so these tests use
stand-ins that go through the real library code: a random ArcFace-shaped ONNX loaded by
insightface's model zoo (export_random_arcface), a tiny random transformers CLIPModel
saved to a folder and loaded with from_pretrained, and a random-weight state dict of
torch-fidelity's own InceptionV3 loaded through its feature_extractor_weights_path. The
numbers they give are meaningless; the tests check the code paths and the invariants
(identical images -> cosine 1, FID(A, A) = 0, ...). MediaPipe (pose, detection) and dlib
(when installed: dlib-bin + face_recognition_models) run with their real models.
"""
from __future__ import annotations

import copy
import csv
import json
import os
import shutil
import string
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _metrics():
    from dense_face.evaluation import metrics

    return metrics


def _evaluate():
    from dense_face.evaluation import evaluate

    return evaluate


@pytest.fixture(scope="module")
def celebs(shared_dir) -> Path:
    return shared_dir / "data" / "celebs"


def _img(celebs: Path, name: str) -> np.ndarray:
    from dense_face.dense_face_core.images import read_image

    return read_image(celebs / f"{name}.jpg")


@pytest.fixture(scope="module")
def arcface_standin(tmp_path_factory) -> Path:
    """A RANDOM ArcFace-shaped ONNX (112x112 -> 512) in an insightface pack folder."""
    from dense_face.dense_face_core.random_weights import export_random_arcface

    return export_random_arcface(tmp_path_factory.mktemp("arc") / "standin_pack" / "arcface_RANDOM.onnx")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    """A tiny RANDOM transformers CLIPModel + processor saved like a downloaded model folder.

    Its tokenizer is the real CLIPTokenizer class over a character-level vocabulary (CLIP's
    own vocab file cannot be downloaded here)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    folder = tmp_path_factory.mktemp("clip") / "tiny_clip_RANDOM"
    folder.mkdir()
    chars = list(string.ascii_lowercase + string.digits + ".,!?'-*")
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    bos, eos = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": bos, "<|endoftext|>": eos})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=bos, eos_token_id=eos,
                pad_token_id=eos)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=32, patch_size=8)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    tok.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def inception_standin(tmp_path_factory) -> Path:
    """torch-fidelity's InceptionV3 (its own class) with RANDOM weights, saved as a state dict.

    The library's constructor always loads weights (downloading them when no path is
    given), so the download and the load are switched off only while this stand-in is built."""
    M = _metrics()
    reason = M.fid_unavailable_reason()
    if reason:
        pytest.skip(f"FID: {reason}")
    import torch

    M.load_torch_fidelity()
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    saved = fe.load_state_dict_from_url, fe.FeatureExtractorInceptionV3.load_state_dict
    fe.load_state_dict_from_url = lambda *a, **k: {}
    fe.FeatureExtractorInceptionV3.load_state_dict = lambda self, *a, **k: None
    try:
        torch.manual_seed(0)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        fe.load_state_dict_from_url, fe.FeatureExtractorInceptionV3.load_state_dict = saved
    with torch.no_grad():  # scale-preserving random weights, so features neither vanish nor explode
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("inception") / "inception_RANDOM.pth"
    torch.save(net.state_dict(), path)
    return path


# ---------------------------------------------------------------- plan helpers

def test_prompts_placeholders_and_seeds(tmp_path):
    E = _evaluate()
    from dense_face.dense_face_core.errors import DenseFaceInputError

    f = tmp_path / "prompts.txt"
    f.write_text("# comment\n\n{person} wearing a hat on a beach\nA close-up photo of * .\n{identity} in {{braces}}\n")
    prompts = E.read_prompts(f)
    assert prompts == ["{person} wearing a hat on a beach", "A close-up photo of * .", "{identity} in {{braces}}"]
    assert E.fill_prompt(prompts[0], "Barack_Obama") == "a person wearing a hat on a beach"
    assert E.fill_prompt(prompts[0], "X", subject="a man") == "a man wearing a hat on a beach"
    assert E.fill_prompt(prompts[2], "Barack_Obama") == "Barack Obama in {braces}"
    assert E.clip_text("A close-up photo of * .") == "A close-up photo of person ."
    with pytest.raises(DenseFaceInputError, match="unknown placeholder"):
        E.fill_prompt("{who} smiling", "X")
    assert E.parse_seeds("0,1,5-7,1") == [0, 1, 5, 6, 7]
    with pytest.raises(DenseFaceInputError):
        E.parse_seeds("a")


def test_result_files_and_pose_targets_from_the_workflows():
    E = _evaluate()
    wfs = {n: json.loads((REPO / "workflows" / f"dense_face_{n}_api.json").read_text())
           for n in ("personalize", "face_swap", "pose_control")}
    assert [wfs[n][E.result_save_nodes(wfs[n])[0]]["inputs"]["filename_prefix"] for n in wfs] == [
        "dense_face_personalize", "dense_face_face_swap", "dense_face_pose_control"]
    outputs = ["dense_face_face_00001_.png", "dense_face_face_swap_00002_.png", "dense_face_face_swap_00001_.png",
               "previews/dense_face_face_swap_00003_.png"]
    assert E.saved_files(outputs, "dense_face_face_swap") == ["dense_face_face_swap_00001_.png",
                                                              "dense_face_face_swap_00002_.png"]
    assert E.saved_files(outputs, "dense_face_face") == ["dense_face_face_00001_.png"]
    poses, source = E.pose_targets(wfs["pose_control"], Path("."), {}, None, 5)
    assert source == "pose grid" and [p["yaw"] for p in poses] == [-40, -20, 0, 20, 40]
    wf = copy.deepcopy(wfs["personalize"])
    for node in wf.values():
        if node["class_type"] == "DenseFacePoseEuler":
            node["inputs"].update(yaw=10.0, pitch=-5.0, roll=0.0)  # what --yaw/--pitch/--roll do
    poses, source = E.pose_targets(wf, Path("."), {}, None, 1)
    assert poses == [{"yaw": 10.0, "pitch": -5.0, "roll": 0.0}] and "yaw set" in source


# ---------------------------------------------------------------- metric functions

def test_identity_cosine_goes_through_insightface(celebs, analyzer, arcface_standin):
    M = _metrics()
    enc = M.ArcFaceIdentity(arcface_standin)  # insightface.model_zoo.get_model -> ArcFaceONNX
    assert type(enc.encoder.model).__name__ == "ArcFaceONNX"
    assert M.ArcFaceIdentity(arcface_standin.parent).path == arcface_standin  # a pack folder works too
    a, b = _img(celebs, "Barack_Obama/01"), _img(celebs, "Albert_Einstein/01")
    assert M.identity_cosine(enc, analyzer, a, a) == pytest.approx(1.0, abs=1e-5)
    other = M.identity_cosine(enc, analyzer, a, b)
    assert other is not None and other < 0.9999  # random weights: only "different from identical" is meaningful
    assert M.identity_cosine(enc, analyzer, np.full((256, 256, 3), 127, np.uint8), a) is None  # no face


def test_pose_error_with_our_estimator(celebs, analyzer):
    M = _metrics()
    img = _img(celebs, "Barack_Obama/01")
    own = M.face_pose(M.largest_face(analyzer, img))
    assert M.pose_errors(own, M.face_pose(M.largest_face(analyzer, img)))["pose_mae"] == pytest.approx(0, abs=1e-6)
    off = {"yaw": own["yaw"] + 10, "pitch": own["pitch"] - 5, "roll": own["roll"] + 3}
    e = M.pose_errors(off, own)
    assert (e["yaw_err"], e["pitch_err"], e["roll_err"]) == pytest.approx((10, 5, 3))
    assert e["pose_mae"] == pytest.approx(6.0)
    assert M.angle_error(179, -179) == pytest.approx(2.0)
    # a real change of pose: the photo turned 15 degrees counter-clockwise -> roll - 15
    rotated = np.asarray(Image.fromarray(img).rotate(15, resample=Image.BICUBIC, expand=True, fillcolor=(128,) * 3))
    measured = M.face_pose(M.largest_face(analyzer, rotated))
    expected = {"yaw": own["yaw"], "pitch": own["pitch"], "roll": own["roll"] - 15}
    right, wrong = M.pose_errors(expected, measured), M.pose_errors(own, measured)
    print(f"rotated 15 deg: MAE {right['pose_mae']:.2f} vs the rotated target, {wrong['pose_mae']:.2f} vs the original")
    assert right["pose_mae"] < 2.0 and wrong["roll_err"] > 12


def test_clip_t_and_clip_i_tiny_clip(celebs, tiny_clip):
    import torch

    M = _metrics()
    sc = M.ClipScorer(tiny_clip)
    a, b = _img(celebs, "Barack_Obama/01"), _img(celebs, "Yann_LeCun/01")
    assert sc.clip_i(a, a) == pytest.approx(1.0, abs=1e-5)
    t = sc.clip_t(a, "a person wearing a hat on a beach")
    # the same number from CLIPModel's own forward: logits_per_image / logit_scale
    inputs = sc.processor(text=["a person wearing a hat on a beach"], images=[a], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = sc.model(**inputs)
    assert t == pytest.approx(float(out.logits_per_image[0, 0] / sc.model.logit_scale.detach().exp()), abs=1e-5)
    assert -1 <= sc.clip_i(a, b) < 0.99999


def test_fid_torch_fidelity(celebs, inception_standin, tmp_path):
    M = _metrics()
    from dense_face.dense_face_core.errors import DenseFaceInputError

    a = sorted((celebs / "Barack_Obama").glob("*.jpg"))[:3]
    b = sorted((celebs / "Oprah_Winfrey").glob("*.jpg"))[:3]
    t0 = time.time()
    # the library's 64-d pool features keep this quick: its 2048-d FID takes an eigen-decomposition
    # of a 2048 x 2048 matrix (tens of seconds on this CPU); the code path is the same
    same = M.frechet_inception_distance(a, a, inception_standin, size=128, batch_size=8, features="64")
    diff = M.frechet_inception_distance(a, b, inception_standin, size=128, batch_size=8, features="64")
    print(f"FID (random Inception): same set {same:.3g}, different sets {diff:.3g} ({time.time() - t0:.1f}s)")
    assert diff > 0 and abs(same) < 1e-3 * diff  # same set: 0 up to the eigenvalue round-off
    bad = tmp_path / "pickled.pth"
    import torch

    torch.save({"w": torch.zeros(1), "obj": Path("x")}, bad)  # something weights_only=True refuses
    with pytest.raises(DenseFaceInputError, match="refused"):
        M.frechet_inception_distance(a, b, bad)


def test_dlib_second_opinion(celebs, analyzer):
    M = _metrics()
    reason = M.dlib_unavailable_reason()
    if reason:
        pytest.skip(reason)
    d = M.DlibIdentity()  # dlib's real ResNet and shape predictor
    emb = {}
    for n in ("Barack_Obama/01", "Barack_Obama/02", "Albert_Einstein/01"):
        img = _img(celebs, n)
        emb[n] = d.descriptor(img, M.largest_face(analyzer, img).box)
    same = d.distance(emb["Barack_Obama/01"], emb["Barack_Obama/02"])
    other = d.distance(emb["Barack_Obama/01"], emb["Albert_Einstein/01"])
    print(f"dlib distance: same person {same:.3f}, different {other:.3f}")
    assert same < M.DLIB_MATCH_THRESHOLD < other


# ---------------------------------------------------------------- the command

def _identities(celebs: Path, root: Path, name="Barack_Obama", photos=("01", "02", "05")) -> Path:
    (root / name).mkdir(parents=True)
    for p in photos:
        shutil.copyfile(celebs / name / f"{p}.jpg", root / name / f"{p}.jpg")
    return root


def test_eval_measures_existing_runs(celebs, analyzer, arcface_standin, tiny_clip, landmarker_path, tmp_path, request):
    """--generated: runs laid out as `dense-face eval` writes them (here with real photos as the
    'results' of a face-swap run), measured and tabulated without ComfyUI."""
    E, M = _evaluate(), _metrics()
    ids = _identities(celebs, tmp_path / "ids")
    wf = json.loads((REPO / "workflows" / "dense_face_face_swap_api.json").read_text())
    runs = tmp_path / "runs"
    results = {0: "Barack_Obama/02", 1: "Barack_Obama/05"}
    for seed, result in results.items():
        d = runs / "Barack_Obama" / f"p000_s{seed}"
        (d / "inputs").mkdir(parents=True)
        shutil.copyfile(celebs / "Barack_Obama/04.jpg", d / "inputs" / "target.jpg")
        shutil.copyfile(celebs / "Barack_Obama/01.jpg", d / "inputs" / "reference.jpg")
        Image.open(celebs / f"{result}.jpg").save(d / "dense_face_face_swap_00001_.png")
        Image.open(celebs / f"{result}.jpg").save(d / "dense_face_face_00001_.png")
        (d / E.RUN_WORKFLOW).write_text(json.dumps(wf))
        (d / E.RUN_SUMMARY).write_text(json.dumps({
            "workflow": "dense_face_face_swap_api.json", "demo_random_weights": False, "status": "ok",
            "outputs": ["dense_face_face_00001_.png", "dense_face_face_swap_00001_.png"],
            "inputs": {"target": "inputs/target.jpg", "reference": "inputs/reference.jpg"},
            "eval": {"identity": "Barack_Obama", "reference": "Barack_Obama/01.jpg", "prompt_index": 0,
                     "prompt": "A close-up photo of * .", "seed": seed}}))
    out = tmp_path / "out"
    argv = ["--generated", str(runs), "--identities", str(ids), "--insightface-model", str(arcface_standin),
            "--clip", str(tiny_clip), "--landmarker", str(landmarker_path), "--out", str(out)]
    try:
        inception = request.getfixturevalue("inception_standin")
        argv += ["--inception", str(inception), "--fid-reference", str(ids), "--fid-size", "128",
                 "--fid-features", "64"]
    except pytest.skip.Exception:
        inception = None  # torch-fidelity not installed: FID is reported as skipped
    assert E.main(argv) == 0
    table = json.loads((out / "eval_table.json").read_text())
    rows = {r["identity"]: r for r in table["table"]}
    assert rows["Barack_Obama"]["runs"] == 2 and rows["ALL"]["images"] == 2
    assert rows["ALL"]["face_detected"]["mean"] == 1.0
    if inception is not None:
        assert table["fid"]["value"] > 0 and table["fid"]["generated"] == 2 and "64-d" in table["fid"]["warning"]
    else:
        assert table["fid"]["value"] is None and "--inception" in table["fid"]["reason"]
    # the numbers are the metric functions' own
    enc = M.ArcFaceIdentity(arcface_standin)
    ref, tgt = _img(celebs, "Barack_Obama/01"), _img(celebs, "Barack_Obama/04")
    target_pose = M.face_pose(M.largest_face(analyzer, tgt))
    ids_expected, mae_expected = [], []
    for result in results.values():
        img = _img(celebs, result)
        ids_expected.append(M.identity_cosine(enc, analyzer, img, ref))
        mae_expected.append(M.pose_errors(target_pose, M.face_pose(M.largest_face(analyzer, img)))["pose_mae"])
    assert rows["ALL"]["id_cos"]["mean"] == pytest.approx(np.mean(ids_expected), abs=1e-5)
    assert rows["ALL"]["pose_mae"]["mean"] == pytest.approx(np.mean(mae_expected), abs=1e-4)
    assert rows["ALL"]["id_cos_heldout"]["n"] == 2 and rows["ALL"]["clip_t"]["n"] == 2
    images = (out / "eval_images.csv").read_text()
    assert "detected in target.jpg" in images and "dense_face_face_swap_00001_.png" in images
    md = (out / "eval_table.md").read_text()
    print(md)
    assert "| **ALL** |" in md and "id_cos" in md


def test_eval_server_mode_plumbing(celebs, analyzer, arcface_standin, landmarker_path, tmp_path, monkeypatch):
    """--comfy-url: the workflow goes to runner.run_on_server with the overrides and the uploads; here a
    stand-in for the server 'renders' real photos (base image = one photo, result = another), so the
    personalisation workflow's target pose is taken from the saved base image."""
    from dense_face.headless import runner

    E, M = _evaluate(), _metrics()
    calls = []

    def fake_server(url, wf, uploads, out_dir, timeout=3600):
        calls.append((url, copy.deepcopy(wf), dict(uploads)))
        written = []
        for prefix, photo in (("dense_face_base", "04"), ("dense_face_personalize", "02"), ("dense_face_face", "02")):
            dest = Path(out_dir) / f"{prefix}_00001_.png"
            Image.open(celebs / "Barack_Obama" / f"{photo}.jpg").save(dest)
            written.append(dest)
        return written

    from dense_face.headless import session

    monkeypatch.setattr(session, "run_on_server", fake_server)  # where the session calls it
    # the stand-in server has no /object_info: it offers no model lists, so none is reported missing
    monkeypatch.setattr(session.ComfyServer, "choices", lambda self, class_type, input_name: None)
    ids = _identities(celebs, tmp_path / "ids", photos=("01", "05"))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("{person} in a garden\n")
    out = tmp_path / "out"
    argv = ["--identities", str(ids), "--prompts", str(prompts), "--seeds", "3", "--steps", "5",
            "--comfy-url", "http://comfy.invalid:8188", "--insightface-model", str(arcface_standin),
            "--landmarker", str(landmarker_path), "--no-dlib", "--out", str(out)]
    assert E.main(argv) == 0
    (url, wf, uploads), = calls
    assert url == "http://comfy.invalid:8188" and uploads["reference"].name == "reference.jpg"
    assert wf[runner.nodes_titled(wf, runner.TITLE_SCENE)[0]]["inputs"]["text"] == "a person in a garden"
    assert [wf[i]["inputs"]["seed"] for i in sorted(runner.nodes_of(wf, *runner.SAMPLERS), key=int)] == [3, 4]
    with open(out / "eval_images.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and rows[0]["pose_source"] == "detected in dense_face_base_00001_.png"
    base, result = _img(celebs, "Barack_Obama/04"), _img(celebs, "Barack_Obama/02")
    expected = M.pose_errors(M.face_pose(M.largest_face(analyzer, base)), M.face_pose(M.largest_face(analyzer, result)))
    assert float(rows[0]["pose_mae"]) == pytest.approx(expected["pose_mae"], abs=1e-3)
    assert rows[0]["id_cos"] != "" and rows[0]["id_cos_heldout"] != ""  # 05.jpg is the held-out photo
    assert E.main(argv) == 0 and len(calls) == 1  # resumed: not sent again


@pytest.mark.slow
def test_eval_end_to_end_demo(celebs, landmarker_path, tiny_clip, demo_cache, tmp_path):
    """`dense-face eval` on 1 identity x 1 prompt x 1 seed, generated in-process through the runner on the
    RANDOM-weight demo set (2 steps). The metrics of random weights are meaningless: this checks the
    plumbing (generation, the run record, resuming, the table), not the numbers."""
    ids = _identities(celebs, tmp_path / "ids", photos=("01", "02"))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("{person} wearing a hat on a beach\n")
    out = tmp_path / "out"
    env = dict(os.environ, DENSE_FACE_LANDMARKER=str(landmarker_path), HOME=str(tmp_path),
               XDG_CACHE_HOME=str(demo_cache), MPLCONFIGDIR=str(tmp_path / "mpl"))
    cmd = [sys.executable, "-m", "dense_face.evaluation.evaluate", "--identities", str(ids), "--prompts", str(prompts),
           "--seeds", "0", "--steps", "2", "--demo", "on", "--clip", str(tiny_clip), "--out", str(out)]
    _run_end_to_end(cmd, env, out)


def _run_end_to_end(cmd, env, out):
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    print(f"eval with generation: {time.time() - t0:.0f}s")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "RANDOM WEIGHTS" in proc.stderr
    summary = json.loads((out / "runs" / "Barack_Obama" / "p000_s0" / "run_summary.json").read_text())
    assert summary["status"] == "ok" and summary["demo_random_weights"] is True, summary
    assert summary["eval"]["prompt"] == "a person wearing a hat on a beach"
    table = json.loads((out / "eval_table.json").read_text())
    assert table["settings"]["demo_random_weights"] is True
    rows = {r["identity"]: r for r in table["table"]}
    assert rows["Barack_Obama"]["runs"] == 1 and rows["Barack_Obama"]["images"] == 1
    assert "RANDOM" in table["skipped"]["id_cos"]
    assert "RANDOM WEIGHTS" in (out / "eval_table.md").read_text()
    assert (out / "eval_table.csv").read_text().count("\n") == 3  # header, the identity, ALL
    # resuming: nothing is generated again
    t0 = time.time()
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 already done, 0 to generate" in again.stderr
    print(f"resumed (measuring only): {time.time() - t0:.0f}s")
