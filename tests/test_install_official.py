"""`dense-face install-official`: from an authors'-style download folder to pictures in a real ComfyUI.

The authors' files cannot be downloaded here, so the folder is built in their exact layouts with
random values: the text-editing model is the full-size SD1.5-shaped demo checkpoint, the
face-generation Lightning checkpoint holds a full-size random Dense-Face set in the authors'
names plus a random IR-SE50 (pSp's layout) and a frozen SD1.5 base, and ``*init.ckpt`` holds the
Dense-Face parts. The workflows then run with their default model names, unchanged.
"""
from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from chunked_save import torch_save
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
EPOCH = "epoch=000009.ckpt"
INIT = "DenseFace_init.ckpt"
TEXT = "DenseFace_text_editing.safetensors"


def _cli(*args, env=None, timeout=1500):
    return subprocess.run([sys.executable, "-m", "dense_face.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _authors_folder(folder: Path, demo_checkpoint: Path, *, with_id_network=True, with_base=True, family="sd15"):
    from dense_face.dense_face_core.ir_se50 import IRSE50
    from dense_face.dense_face_core.official_checkpoint import to_official_state_dict
    from dense_face.dense_face_core.random_weights import build_random_weights
    from safetensors.torch import load_file

    folder.mkdir(parents=True)
    weights = build_random_weights(family, seed=2, with_dense_head=False, id_embedding_model="ir_se50",
                                   dtype=torch.float16)
    weights.init_embedding = torch.randn(weights.family.context_dim, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    id_net = IRSE50().state_dict() if with_id_network else None
    base = None
    if with_base:
        base = load_file(str(demo_checkpoint))
        base = {k: (0.5 * v if k.startswith("model.diffusion_model.") else v) for k, v in base.items()}
    sd = to_official_state_dict(weights, id_net, base)
    torch_save({"state_dict": sd, "epoch": 9, "global_step": 1000, "pytorch-lightning_version": "1.5.0"},
               folder / EPOCH)
    torch_save({"state_dict": to_official_state_dict(weights)}, folder / INIT)
    if demo_checkpoint is not None:
        os.link(demo_checkpoint, folder / TEXT)
    return weights, id_net


@pytest.fixture(scope="module")
def release(demo_cache, tmp_path_factory):
    demo = demo_cache / "dense-face" / "demo-models" / "checkpoints" / "dense_face_demo_sd15_RANDOM_WEIGHTS.safetensors"
    folder = tmp_path_factory.mktemp("download") / "Dense-Face weights"
    weights, id_net = _authors_folder(folder, demo)
    return folder, weights, id_net


def test_install_is_complete_idempotent_and_never_overwrites(release, tmp_path):
    from dense_face.dense_face_core.weight_file import load_weight_file
    from safetensors import safe_open

    folder, weights, _id_net = release
    models = tmp_path / "models"
    proc = _cli("install-official", folder, "--models-dir", models)
    assert proc.returncode == 0, proc.stderr[-3000:]
    installed = {"checkpoints/DenseFace_text_editing.safetensors", "checkpoints/DenseFace_face_generation_base.safetensors",
                 "dense_face/DenseFace_face_generation.safetensors",
                 "dense_face/DenseFace_face_generation.ir_se50.safetensors"}
    assert {str(p.relative_to(models)) for p in models.rglob("*.safetensors")} == installed
    for name in installed:
        assert name.split("/")[1] in proc.stdout
    assert "dense_face_personalize.json" in proc.stdout and f"--init-from-official {folder / INIT}" in proc.stdout
    assert filecmp.cmp(models / "checkpoints" / TEXT, folder / TEXT, shallow=False)
    w = load_weight_file(models / "dense_face" / "DenseFace_face_generation.safetensors", expected_family="sd15")
    assert w.metadata.id_embedding_model == "ir_se50" and not w.has_dense_head
    assert all(torch.equal(w.pose_branch[k].float(), v.float()) for k, v in weights.pose_branch.items())
    with safe_open(str(models / "checkpoints" / "DenseFace_face_generation_base.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any(p in k for k in keys for p in (".per_q.", ".feat_to_q.", "control_model."))
    assert any(k.startswith("cond_stage_model.") for k in keys) and any(k.startswith("first_stage_model.") for k in keys)

    mtimes = {p: p.stat().st_mtime_ns for p in models.rglob("*.safetensors")}
    again = _cli("install-official", folder, "--models-dir", models)
    assert again.returncode == 0 and again.stdout.count("already installed") == 4, again.stdout
    assert "hashing" not in again.stdout  # sizes and mtimes match the records: nothing is read twice
    assert {p: p.stat().st_mtime_ns for p in models.rglob("*.safetensors")} == mtimes

    other = tmp_path / "other_models"
    (other / "checkpoints").mkdir(parents=True)
    (other / "checkpoints" / TEXT).write_bytes(b"someone else's file")
    refused = _cli("install-official", folder, "--models-dir", other)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr and "hashing" not in refused.stdout
    assert str(other / "checkpoints" / TEXT) in refused.stderr and "nothing was written" in refused.stderr
    assert (other / "checkpoints" / TEXT).read_bytes() == b"someone else's file" and not (other / "dense_face").exists()


def test_identity_network_from_psp_file_or_a_clear_note(tmp_path):
    """Without IR-SE50 inside the checkpoint: taken from model_ir_se50.pth (pSp's pickled state dict, read with
    weights_only=True), or one note naming the file and where it comes from."""
    from dense_face.dense_face_core.ir_se50 import IRSE50
    from dense_face.dense_face_core.official_install import install_official
    from dense_face.dense_face_core.random_weights import tiny_family

    tiny_family()
    folder = tmp_path / "download"
    _authors_folder(folder, None, with_id_network=False, with_base=False, family="tiny")
    notes = []
    outputs = install_official(folder, tmp_path / "m1", log=notes.append)
    assert not (tmp_path / "m1" / "dense_face" / "DenseFace_face_generation.ir_se50.safetensors").exists()
    assert any("model_ir_se50.pth" in n and "pixel2style2pixel" in n for n in notes)
    assert any("no text-editing checkpoint" in n for n in notes) and any("carries no base model" in n for n in notes)
    assert [o.state for o in outputs] == ["written"]
    torch.manual_seed(3)
    torch.save(IRSE50().state_dict(), folder / "model_ir_se50.pth")
    install_official(folder, tmp_path / "m2", log=notes.append)
    from dense_face.dense_face_core.id_embedding import IRSE50Encoder

    enc = IRSE50Encoder(tmp_path / "m2" / "dense_face" / "DenseFace_face_generation.ir_se50.safetensors")
    assert enc.embed_crop(np.full((256, 256, 3), 128, np.uint8)).shape == (512,)


def test_rerun_hashes_only_sources_whose_size_or_mtime_changed(tmp_path, monkeypatch):
    """A re-run compares each source's size and mtime with the record before hashing it: unchanged, no hashing;
    touched with the same bytes, hashed and still the same; another checkpoint under the old name, refused."""
    from dense_face.dense_face_core import official_install as oi
    from dense_face.dense_face_core.random_weights import tiny_family

    tiny_family()
    folder, models = tmp_path / "download", tmp_path / "models"
    _authors_folder(folder, None, with_base=False, family="tiny")
    first = oi.install_official(folder, models, log=lambda *_: None)
    assert [o.state for o in first] == ["written", "written"]
    hashed = []
    real = oi.sha256_of
    monkeypatch.setattr(oi, "sha256_of", lambda path, log=None: hashed.append(path.name) or real(path, log))
    assert [o.state for o in oi.install_official(folder, models, log=lambda *_: None)] == ["same", "same"]
    assert hashed == []
    epoch = folder / EPOCH
    os.utime(epoch, ns=(epoch.stat().st_atime_ns, epoch.stat().st_mtime_ns + 10**9))  # touched, same bytes
    assert [o.state for o in oi.install_official(folder, models, log=lambda *_: None)] == ["same", "same"]
    assert hashed == [EPOCH]  # once for both outputs of that checkpoint
    before = {p: p.read_bytes() for p in models.rglob("*.safetensors")}
    ckpt = torch.load(epoch, weights_only=True)
    key = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    ckpt["state_dict"][key] = ckpt["state_dict"][key] + 1  # another training run's checkpoint, same file name
    torch_save(ckpt, epoch)
    with pytest.raises(oi.DenseFaceInputError, match="nothing was written"):
        oi.install_official(folder, models, log=lambda *_: None)
    assert {p: p.read_bytes() for p in models.rglob("*.safetensors")} == before


def test_unwritable_models_folder_is_one_clear_line(release, tmp_path):
    """A models folder below a file (and, for a non-root user, a read-only one): one line, exit 2."""
    folder, _w, _i = release
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    cases = [blocker / "models"]
    if os.geteuid() != 0:  # root ignores folder permissions
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        cases.append(ro)
    try:
        for models in cases:
            proc = _cli("install-official", folder, "--models-dir", models)
            assert proc.returncode == 2 and "Traceback" not in proc.stderr and str(models) in proc.stderr, proc.stderr
    finally:
        if len(cases) > 1:
            cases[1].chmod(0o755)


@pytest.mark.server
def test_shipped_workflows_run_on_the_installed_release(release, shared_dir, landmarker_path, tmp_path):
    """A real ComfyUI server with what install-official wrote: face swap and pose control run with their
    default model names (exit 0, every output), the face swap changes only the face; the annotations
    workflow stops with one clear line (the authors' weights have no dense head); personalisation
    validates against the server's /object_info."""
    from comfy_harness import ComfyServer
    from dense_face.headless.workflow_format import check_workflow

    folder, _w, _i = release
    srv = ComfyServer(tmp_path / "server")
    try:
        proc = _cli("install-official", folder, "--comfyui", srv.root)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (srv.root / "models" / "mediapipe").mkdir(exist_ok=True)
        (srv.root / "models" / "mediapipe" / "face_landmarker.task").symlink_to(landmarker_path)
        srv.wait_ready()
        info = srv.get_json("/object_info")
        for name in ("dense_face_personalize", "dense_face_face_swap", "dense_face_pose_control"):
            wf = json.loads((REPO / "workflows" / f"{name}_api.json").read_text())
            problems = [m for m in check_workflow(wf, info) if "(LoadImage)" not in m]  # photos come per run
            assert not problems, (name, problems)
        target = shared_dir / "data/celebs/Yann_LeCun/01.jpg"
        reference = shared_dir / "data/celebs/Barack_Obama/01.jpg"
        out = tmp_path / "swap"
        run = _cli("run", "--workflow", "dense_face_face_swap", "--comfy-url", srv.url, "--target", target,
                   "--reference", reference, "--steps", "2", "--demo", "off", "--out", out)
        assert run.returncode == 0, run.stderr[-3000:]
        summary = json.loads((out / "run_summary.json").read_text())
        assert summary["demo_random_weights"] is False
        names = [Path(p).name for p in summary["outputs"]]
        assert any(n.startswith("dense_face_face_swap") for n in names) and any(n.startswith("dense_face_face_")
                                                                                 for n in names)
        assert len([p for p in summary["outputs"] if "previews" in p]) == 3  # the annotation preview's notes
        _assert_only_the_face_changed(target, next(out.glob("dense_face_face_swap_*.png")), landmarker_path)
        feat = shared_dir / "data/casia_toy/CASIAFaces/0000045/feat_file_v2/001.pth"  # the authors' identity file
        by_feature = _cli("run", "--workflow", "dense_face_face_swap", "--comfy-url", srv.url, "--target", target,
                          "--reference-embedding", feat, "--steps", "1", "--demo", "off", "--out", tmp_path / "feat")
        assert by_feature.returncode == 0, by_feature.stderr[-3000:]
        assert "reference embedding:" in (tmp_path / "feat" / "run_summary.json").read_text()
        # the shipped pose grid with its default model names, two poses instead of five and one step (full-size
        # models on a CPU: every pose and step adds sampling time to CI)
        grid = json.loads((REPO / "workflows" / "dense_face_pose_control_api.json").read_text())
        next(n for n in grid.values() if n["class_type"] == "DenseFacePoseGrid")["inputs"]["yaw_steps"] = 2
        (tmp_path / "pose_control_api.json").write_text(json.dumps(grid))
        poses = _cli("run", "--workflow", tmp_path / "pose_control_api.json", "--comfy-url", srv.url, "--reference",
                     reference, "--steps", "1", "--demo", "off", "--out", tmp_path / "poses")
        assert poses.returncode == 0, poses.stderr[-3000:]
        assert len(list((tmp_path / "poses").glob("dense_face_pose_control_*.png"))) == 2
        ann = _cli("run", "--workflow", "dense_face_annotations", "--comfy-url", srv.url, "--reference", reference,
                   "--steps", "2", "--demo", "off", "--out", tmp_path / "ann")
        assert ann.returncode == 2 and "Traceback" not in ann.stderr and "no dense annotation head" in ann.stderr
        assert "Generate face" not in ann.stderr, ann.stderr  # the KSampler never ran (lazy inputs)
    finally:
        srv.stop()


def _assert_only_the_face_changed(target: Path, result: Path, landmarker_path: Path) -> None:
    from dense_face.dense_face_core.crop import compute_face_crop
    from dense_face.dense_face_core.face_mask import face_mask
    from dense_face.dense_face_core.landmarker import FaceAnalyzer, select_face
    from dense_face.dense_face_core.paste import auto_feather, warp_mask_back

    before = np.asarray(Image.open(target).convert("RGB"))
    after = np.asarray(Image.open(result).convert("RGB"))
    wf = json.loads((REPO / "workflows" / "dense_face_face_swap_api.json").read_text())
    crop = next(n["inputs"] for n in wf.values() if n["class_type"] == "DenseFaceCropMask")
    with FaceAnalyzer(landmarker_path) as fa:
        fc = compute_face_crop(select_face(fa.detect(before)), crop["crop_size"], crop["padding"],
                               canonical_vertices=fa.canonical)
    weight = warp_mask_back(face_mask(fc, grow=crop["mask_grow"], feather=crop["mask_feather"]), fc, auto_feather(fc))
    changed = (after != before).any(-1)
    assert changed[weight > 0].mean() > 0.5 and not changed[weight == 0].any()
