"""The trainer end to end: 2 processes (accelerate launch through torchrun, gloo, CPU) on tiny SD-shaped
models over the authors' casia_toy photos at 128 px; every loss term decreases, a kill -9 mid-run resumes exactly, and
the exported file loads in the ComfyUI nodes."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

import tiny_models as tm

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CASIA = SHARED / "data" / "casia_toy"
LANDMARKER = SHARED / "models" / "face_landmarker_v2_with_blendshapes.task"
CONFIG = REPO / "train" / "configs" / "tiny_cpu.yaml"
STEPS, EVERY, KILL_AFTER = 24, 8, 18
TERMS = ("loss", "eps", "landmark", "parsing", "depth")
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]


def _need_data():
    if not (CASIA.is_dir() and LANDMARKER.is_file()):
        pytest.skip(f"casia_toy or the MediaPipe model not found under {SHARED} (present only on the project's "
                    "machines)")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """casia_toy built once with the tiny config's own recipe (random ArcFace-shaped ONNX)."""
    _need_data()
    from dense_face.train.config import load_config
    from dense_face.train.data_prep import ensure_dataset

    cfg = load_config(CONFIG, output_dir=str(tmp_path_factory.mktemp("data")))
    t0 = time.perf_counter()
    root = ensure_dataset(cfg, log=lambda *_: None)
    manifest = json.loads((root / "manifest.json").read_text())
    print(f"\ncasia_toy dataset: {manifest['samples']} samples in {time.perf_counter() - t0:.1f} s")
    assert manifest["embeddings"]["present"] and manifest["samples"] >= 10
    return root


def _launch(out: Path, data: Path, home: Path) -> subprocess.Popen:
    from dense_face.train.launch import launch_command

    cmd, env = launch_command(2, cpu=True)
    cmd += ["--config", str(CONFIG), "--output-dir", str(out), "--set", f"data.root={data}", "--set", "data.build=null",
            "--max-steps", str(STEPS), "--checkpoint-every", str(EVERY), "--set", "train.progress=false",
            "--set", "data.image_size=128"]  # the config's 256 px: same code, twice the run time
    env.update(HF_HOME=str(home), PYTHONUNBUFFERED="1")
    log = open(out.parent / f"{out.name}.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(out.parent))


def _wait(proc: subprocess.Popen, out: Path, timeout: float = 300) -> str:
    try:
        rc = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            _kill_tree(proc.pid)
    text = (out.parent / f"{out.name}.log").read_text()
    assert rc == 0, text[-3000:]
    return text


def _kill_tree(pid: int) -> None:
    """SIGKILL the launcher and every worker at once (torchrun starts workers in new sessions)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + [root]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


def _log(out: Path) -> dict[int, dict]:
    """The last record of every step (a resumed run logs the steps after its checkpoint again)."""
    recs = {}
    for line in (out / "logs" / "train_log.jsonl").read_text().splitlines():
        r = json.loads(line)
        recs[r["step"]] = r
    return recs


@pytest.fixture(scope="module")
def runs(dataset, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("train")
    home = work / "hf_home"
    t0 = time.perf_counter()
    full = work / "full"
    _wait(_launch(full, dataset, home), full)
    t_full = time.perf_counter() - t0

    killed = work / "killed"
    proc = _launch(killed, dataset, home)
    log = killed / "logs" / "train_log.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and any(json.loads(x)["step"] >= KILL_AFTER for x in log.read_text().splitlines()):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    _kill_tree(proc.pid)
    killed_at = max(_log(killed))
    ckpts = sorted(p.name for p in (killed / "checkpoints").iterdir())
    resumed = _wait(_launch(killed, dataset, home), killed)
    print(f"\n2-process runs: uninterrupted {STEPS} steps {t_full:.0f} s; killed (-9) at step {killed_at} with "
          f"{ckpts}; whole kill+resume {time.perf_counter() - t0 - t_full:.0f} s")
    return {"full": full, "killed": killed, "killed_at": killed_at, "resumed_output": resumed}


def test_every_loss_term_decreases(runs):
    recs = _log(runs["full"])
    assert sorted(recs) == list(range(1, STEPS + 1))
    assert recs[1]["samples"] == 2 * 2, "two processes of batch 2 each"  # one process would log 2
    assert "2 processes (MULTI_CPU" in (runs["full"].parent / "full.log").read_text()
    lines = []
    for term in TERMS:
        first = sum(recs[s][term] for s in range(1, 5)) / 4
        last = sum(recs[s][term] for s in range(STEPS - 3, STEPS + 1)) / 4
        lines.append(f"{term} {first:.4f} -> {last:.4f}")
        assert last < 0.9 * first, f"{term} did not decrease: {first:.4f} -> {last:.4f}"
    print("\nmean of steps 1-4 -> steps 21-24: " + "; ".join(lines))


def test_kill_and_resume_continues_exactly(runs):
    full, killed = _log(runs["full"]), _log(runs["killed"])
    assert runs["killed_at"] >= KILL_AFTER and runs["killed_at"] < STEPS
    resume_step = (runs["killed_at"] // EVERY) * EVERY
    assert f"at step {resume_step}" in runs["resumed_output"]
    assert sorted(killed) == list(range(1, STEPS + 1))
    worst = max(abs(full[s][t] - killed[s][t]) for s in range(resume_step + 1, STEPS + 1) for t in TERMS)
    assert worst <= 1e-5, f"losses after resume differ from the uninterrupted run by {worst}"
    assert full[STEPS]["lr"] == killed[STEPS]["lr"] and full[STEPS]["samples"] == killed[STEPS]["samples"]
    # the trained weights after resume equal the uninterrupted run's (optimizer state restored)
    from safetensors.torch import load_file

    a = load_file(str(runs["full"] / "dense_face_tiny.safetensors"))
    b = load_file(str(runs["killed"] / "dense_face_tiny.safetensors"))
    assert set(a) == set(b)
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert diff <= 1e-5, diff
    print(f"\nresumed at step {resume_step}: max |loss diff| {worst:.1e}, max |weight diff| {diff:.1e}")
    assert not list((runs["killed"] / "checkpoints").glob(".tmp-*"))


def test_export_loads_in_comfyui(runs, comfy):
    from dense_face.train.export import main as export_main

    tm.tiny_family()
    out = comfy.models_dir / "dense_face" / "trained_tiny.safetensors"
    assert export_main(["--checkpoint", str(runs["full"]), "--out", str(out), "--dtype", "float16"]) == 0
    model = tm.tiny_model(seed=0)
    (dense_face,) = comfy.node("DenseFaceLoader").load(out.name, model=model)
    meta = dense_face.weights.metadata
    assert meta.base_family == "tiny" and meta.id_embedding_model == "insightface/dense_face_demo_RANDOM_WEIGHTS"
    assert meta.extra["train_steps"] == str(STEPS) and meta.has_dense_head and meta.has_init_embedding
    assert dense_face.weights.pose_branch["time_embed.0.weight"].dtype == torch.float16
    assert dense_face.dense_head() is not None and dense_face.pose_branch() is not None


# ---------------------------------------------------------------- in-process checks (no launcher)
@pytest.fixture(scope="module")
def tiny_net():
    from dense_face.train.base_models import build_tiny_random, tiny_base_config
    from dense_face.train.model import DenseFaceNet

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: extra threads only fight over shared cores (30x slower seen)
    fam = tm.tiny_family()
    base = build_tiny_random(tiny_base_config("tiny", seed=1, unet={"attention_head_dim": 8}))
    torch.manual_seed(0)
    net = DenseFaceNet(fam, head_width=32)
    net.init_from_base(base)
    net.attach(base)
    yield net, base
    net.detach_base()
    torch.set_num_threads(threads)


def _inputs(net, captions, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = len(captions)
    ids, mask = net.tokenize(captions)
    f = torch.nn.functional.normalize(torch.randn(b, 512, generator=g), dim=1)
    return (torch.randn(b, 4, 32, 32, generator=g), torch.randint(0, 1000, (b,), generator=g), ids, mask, f,
            torch.rand(b, 3, 256, 256, generator=g))


def test_cfg_dropout_semantics(tiny_net):
    """Caption dropout = the authors' uncond (empty prompt, no token, f still in the adapter);
    identity dropout = the placeholder is the plain init word and the adapter gets no identity."""
    net, base = tiny_net
    net.eval()
    x, t, ids, mask, f, pose = _inputs(net, ["a close-up photo of * ."])
    person_ids, _ = net.tokenize(["a close-up photo of person ."])
    empty_ids, empty_mask = net.tokenize([""])
    with torch.no_grad():
        plain_person = base.text_encoder(input_ids=person_ids).last_hidden_state
        plain_empty = base.text_encoder(input_ids=empty_ids).last_hidden_state
        dropped_id = net(x, t, ids, mask, f, torch.zeros(1), pose)
        dropped_id2 = net(x, t, ids, mask, -f, torch.zeros(1), pose)
        dropped_cap = net(x, t, empty_ids, empty_mask, f, torch.ones(1), pose)
        dropped_cap2 = net(x, t, empty_ids, empty_mask, -f, torch.ones(1), pose)
        full = net(x, t, ids, mask, f, torch.ones(1), pose)
    assert torch.allclose(dropped_id["context"], plain_person, atol=1e-6)
    assert torch.equal(dropped_id["pred"], dropped_id2["pred"])  # no trace of the identity left
    assert torch.allclose(dropped_cap["context"], plain_empty, atol=1e-6)
    assert not torch.allclose(dropped_cap["pred"], dropped_cap2["pred"], atol=1e-6)  # f still reaches the adapter
    assert not torch.allclose(full["context"], plain_person, atol=1e-6)


def test_gradient_checkpointing_same_gradients(tiny_net):
    net, base = tiny_net
    net.train()
    params = net.configure_trainable()
    x, t, ids, mask, f, pose = _inputs(net, ["a photo of * smiling", "* ."], seed=3)
    grads = []
    for ckpt in (False, True):
        if ckpt:
            base.unet.enable_gradient_checkpointing()
        net.checkpoint_pose_branch = ckpt
        net.zero_grad(set_to_none=True)
        out = net(x, t, ids, mask, f, torch.ones(2), pose)
        (out["pred"].square().mean() + sum(v.square().mean() for v in out["dense"].values())).backward()
        grads.append([p.grad.clone() for p in params])
    base.unet.disable_gradient_checkpointing()
    net.checkpoint_pose_branch = False
    worst = max(float((a - b).abs().max()) for a, b in zip(*grads))
    nonzero = sum(bool(g.abs().sum() > 0) for g in grads[0])
    assert worst <= 1e-5 and nonzero > len(grads[0]) // 2, (worst, nonzero, len(grads[0]))


def test_config_overrides_and_errors(tmp_path, capsys):
    import yaml

    from dense_face.dense_face_core.errors import DenseFaceInputError
    from dense_face.train.config import load_config
    from dense_face.train.trainer import main

    assert main(["--config", str(CONFIG), "--output-dir", str(tmp_path), "--lr", "3e-4", "--set",
                 "loss.lambda_depth=0.5", "--set", "train.timestep_range=[100, 900]", "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["train"]["lr"] == 3e-4 and cfg["loss"]["lambda_depth"] == 0.5
    assert cfg["train"]["timestep_range"] == [100, 900] and cfg["output_dir"] == str(tmp_path.resolve())
    assert cfg["data"]["build"]["out"] == str(tmp_path.resolve() / "dataset")
    with pytest.raises(DenseFaceInputError, match="unknown config key 'train.lrr'"):
        load_config(CONFIG, ["train.lrr=1"], str(tmp_path))
    with pytest.raises(DenseFaceInputError, match="output_size"):
        load_config(CONFIG, ["data.target_size=32"], str(tmp_path))
    assert main(["--config", str(CONFIG), "--output-dir", str(tmp_path), "--set", "base.kind=nope"]) == 2


def test_diffusers_folder_base(tiny_net, tmp_path):
    """A base saved as a local diffusers folder loads offline (kind: diffusers) to the same modules."""
    from dense_face.train.base_models import load_base

    _, base = tiny_net
    for name, module in base.modules().items():
        module.save_pretrained(tmp_path / name)
    base.tokenizer.save_pretrained(tmp_path / "tokenizer")
    base.noise_scheduler.save_pretrained(tmp_path / "scheduler")
    with pytest.warns(UserWarning, match="attention heads"):  # ComfyUI's 8 heads vs the tiny family's 4
        loaded = load_base({"kind": "diffusers", "path": str(tmp_path), "family": None, "tokenizer": None,
                            "prediction_type": None})
    assert loaded.family.name == "tiny" and loaded.prediction_type == "epsilon"
    for name, module in loaded.modules().items():
        a, b = module.state_dict(), base.modules()[name].state_dict()
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), name
    assert loaded.tokenizer("a photo of * .").input_ids == base.tokenizer("a photo of * .").input_ids


def test_tokenizer_is_capped_at_the_text_encoders_positions(tmp_path):
    """Current ComfyUI's sd1_tokenizer says model_max_length 8192 (the 2024 build's 77): the trainer
    pads and truncates to the 77 positions of the CLIP text encoder whichever folder it finds."""
    import json
    import shutil

    from dense_face.train.base_models import find_sd1_tokenizer, load_tokenizer

    found = find_sd1_tokenizer()
    claims = {}
    for name, limit in (("current", 8192), ("old", 77)):
        folder = tmp_path / name
        shutil.copytree(found, folder)
        cfg = json.loads((folder / "tokenizer_config.json").read_text())
        cfg["model_max_length"] = limit
        (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
        tok = load_tokenizer(folder)
        ids = tok(["a close-up photo of * ."], padding="max_length", max_length=tok.model_max_length,
                  truncation=True).input_ids[0]
        claims[name] = (tok.model_max_length, len(ids))
    assert claims == {"current": (77, 77), "old": (77, 77)}


def test_init_from_the_authors_init_checkpoint(tmp_path):
    """`dense-face train --init-from-official FILE`: the authors' *init.ckpt (their Lightning names, a pickle
    read with weights_only=True) initialises the pose branch, the PC-adapter and the identity projector."""
    from dense_face.dense_face_core.official_checkpoint import to_official_state_dict
    from dense_face.dense_face_core.random_weights import build_random_weights
    from dense_face.train.base_models import load_base
    from dense_face.train.config import load_config
    from dense_face.train.model import build_net

    fam = tm.tiny_family()
    weights = build_random_weights(fam, seed=9, with_dense_head=False, id_embedding_model="ir_se50")
    ckpt = tmp_path / "DenseFace_init.ckpt"
    torch.save({"state_dict": to_official_state_dict(weights)}, ckpt)
    cfg = load_config(CONFIG, ["model.init_from_official=" + str(ckpt)], str(tmp_path))
    net = build_net(cfg, load_base(cfg["base"]))
    for k, v in weights.pose_branch.items():
        assert torch.equal(net.pose_branch.state_dict()[k], v), k
    assert torch.equal(net.id_projector.projector.weight, weights.id_projector["projector.weight"])
    layer = next(iter(weights.pc_adapter))
    assert any(torch.equal(p, weights.pc_adapter[layer]) for p in net.pc_adapter.parameters())
    with pytest.raises(Exception, match="exclude each other"):
        load_config(CONFIG, ["model.init_from_official=" + str(ckpt), "model.init_from=x.safetensors"], str(tmp_path))
