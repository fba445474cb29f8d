"""The pack loads into a real ComfyUI (once, as one module object per definition) and its nodes are
served in /object_info."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE = ("__init__.py", "cli.py", "dense_face_core", "nodes", "headless", "train", "evaluation", "bench")

FACE_STACK_NODES = ["DenseFacePoseEuler", "DenseFaceCropMask", "DenseFacePasteBack", "DenseFaceAnnotationTargets"]


def test_pack_loads_in_process(comfy):
    for name in FACE_STACK_NODES:
        assert name in comfy.nodes.NODE_CLASS_MAPPINGS, name
        cls = comfy.nodes.NODE_CLASS_MAPPINGS[name]
        assert "required" in cls.INPUT_TYPES()
        assert len(cls.RETURN_TYPES) >= 1
    # model folders are registered with ComfyUI
    for folder in ("dense_face", "mediapipe", "insightface"):
        assert folder in comfy.folder_paths.folder_names_and_paths


def test_pose_node_matches_core(comfy):
    (img,) = comfy.node("DenseFacePoseEuler").draw(yaw=30.0, pitch=-10.0, roll=5.0)
    assert tuple(img.shape) == (1, 256, 256, 3)
    ref = comfy.core.pose.draw_pose_image(30.0, -10.0, 5.0)
    assert np.array_equal((img[0].numpy() * 255).round().astype(np.uint8), ref)


@pytest.mark.server
def test_nodes_in_server_object_info(tmp_path):
    from comfy_harness import ComfyServer

    server = ComfyServer(tmp_path)
    try:
        server.wait_ready()
        info = server.get_json("/object_info")
        for name in FACE_STACK_NODES:
            assert name in info, f"{name} missing from /object_info; log:\n{server.log()[-3000:]}"
            assert info[name]["category"].startswith("Dense-Face")
        assert f"Cannot import {server.root / 'custom_nodes' / 'ComfyUI-Dense-Face'}" not in server.log()
    finally:
        server.stop()


def _modules_from(folder: Path) -> dict[str, object]:
    """Modules whose file is part of the pack's own source (not its venv or its tests)."""
    real = folder.resolve()
    out = {}
    for name, m in list(sys.modules.items()):
        f = getattr(m, "__file__", None)
        if not isinstance(f, str) or not os.path.isabs(f):  # e.g. torch.ops, ComfyUI's "main.py"
            continue
        path = Path(os.path.realpath(f))
        if path.is_relative_to(real) and path.relative_to(real).parts[0] in SOURCE:
            out[name] = m
    return out


def test_one_module_object_per_definition(comfy):
    """dense_face was imported before ComfyUI loaded the pack (as in tests and the command line):
    ComfyUI's pack module is a shell, every module of the tree exists once, as dense_face.*."""
    import dense_face.dense_face_core as core
    import dense_face.nodes.model_nodes as model_nodes

    ours = _modules_from(REPO)
    # The entry file itself runs under whatever name a loader picks (ComfyUI: the folder; pytest's package
    # collector: "main"); as such a shell it defines nothing and imports nothing of ours.
    shells = {n for n, m in ours.items() if Path(os.path.realpath(m.__file__)) == REPO / "__init__.py"}
    second = sorted(n for n in ours if n not in shells and not n.startswith("dense_face."))
    assert not second, f"modules of this tree imported under a second name: {second}"
    assert comfy.pack.__name__ in shells
    assert comfy.pack.__path__ == [] and comfy.pack.NODE_CLASS_MAPPINGS is sys.modules["dense_face.nodes"].NODE_CLASS_MAPPINGS
    assert comfy.nodes.NODE_CLASS_MAPPINGS["DenseFaceLoader"] is model_nodes.DenseFaceLoader
    assert comfy.core is core
    fam = core.random_weights.tiny_family()  # registered once, seen by the loader node's module too
    assert sys.modules["dense_face.dense_face_core.families"].get_family("tiny") is fam


LOAD_WITHOUT_PIP = r"""
import asyncio, json, logging, os, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]  # as if not pip-installed
sys.path.insert(0, os.environ["COMFY_ROOT"])
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="LOG %(message)s")
from comfy.cli_args import args
args.cpu = True
import nodes
def load(path):  # a coroutine in ComfyUI 0.3.x, a plain call in 2024 builds
    ok = nodes.load_custom_node(path)
    return bool(asyncio.run(ok) if asyncio.iscoroutine(ok) else ok)
results = [load(p) for p in sys.argv[1:]]
real = os.path.realpath(sys.argv[1])
SOURCE = ("__init__.py", "cli.py", "dense_face_core", "nodes", "headless", "train", "evaluation", "bench")
ours = sorted(n for n, m in sys.modules.items() if getattr(m, "__file__", None)
              and os.path.realpath(m.__file__).startswith(real + os.sep)
              and os.path.relpath(os.path.realpath(m.__file__), real).split(os.sep)[0] in SOURCE)
cls = nodes.NODE_CLASS_MAPPINGS.get("DenseFaceLoader")
print(json.dumps({"loaded": results, "modules": ours, "loader_module": getattr(cls, "__module__", None)}))
"""


def test_pack_loads_once_without_pip_install_and_skips_a_second_copy(tmp_path):
    """A user's ComfyUI: the pack is not pip-installed, ComfyUI imports it first, under its folder's name;
    a second clone of the pack in custom_nodes is skipped with a warning instead of loading twice."""
    from dense_face.headless.comfy_host import find_comfyui, torchvision_stub_dir

    custom = tmp_path / "custom_nodes"
    custom.mkdir()
    (custom / "ComfyUI-Dense-Face").symlink_to(REPO, target_is_directory=True)
    second = custom / "ComfyUI-Dense-Face-copy"
    second.mkdir()
    (second / "__init__.py").write_text((REPO / "__init__.py").read_text())
    env = dict(os.environ, COMFY_ROOT=str(find_comfyui()), HOME=str(tmp_path))
    stub = torchvision_stub_dir(tmp_path)
    if stub is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(stub), env.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_PIP, str(custom / "ComfyUI-Dense-Face"), str(second)],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["loaded"] == [True, True], proc.stdout[-3000:]
    assert report["loader_module"] == "dense_face.nodes.model_nodes"
    second_names = [n for n in report["modules"] if not (n == "dense_face" or n.startswith("dense_face."))]
    assert len(second_names) == 1, second_names  # only ComfyUI's shell module of the folder
    assert "another copy of the pack is already loaded" in proc.stdout and str(second) in proc.stdout


def test_every_node_explains_its_inputs_and_outputs(comfy):
    """What users see in current ComfyUI: a tooltip on every input, OUTPUT_TOOLTIPS for every output."""
    import dense_face.nodes as pack_nodes

    for name, cls in pack_nodes.NODE_CLASS_MAPPINGS.items():
        tips = getattr(cls, "OUTPUT_TOOLTIPS", None)
        assert tips is not None and len(tips) == len(cls.RETURN_TYPES) and all(tips), name
        for section in ("required", "optional"):
            for inp, spec in cls.INPUT_TYPES().get(section, {}).items():
                opts = spec[1] if len(spec) > 1 else {}
                assert opts.get("tooltip"), f"{name}.{inp} has no tooltip"
        assert cls.DESCRIPTION and cls.CATEGORY.startswith("Dense-Face"), name
        aliases = getattr(cls, "SEARCH_ALIASES", None)
        assert isinstance(aliases, list) and aliases and all(isinstance(a, str) and a for a in aliases), name


def _yaml_folders(tmp_path: Path, landmarker: Path | None) -> tuple[Path, str]:
    from dense_face.dense_face_core.random_weights import export_random_arcface

    shared = tmp_path / "elsewhere"
    (shared / "df").mkdir(parents=True)
    (shared / "df" / "yaml_weights.safetensors").write_bytes(b"\0" * 16)
    export_random_arcface(shared / "faces" / "models" / "yaml_pack" / "arcface.onnx")
    (shared / "emb").mkdir()
    (shared / "emb" / "yaml_person.npy").write_bytes(b"")
    (shared / "mp").mkdir()
    if landmarker is not None:
        (shared / "mp" / "yaml_landmarker.task").symlink_to(landmarker)
    text = (f"mine:\n    base_path: {shared}\n    dense_face: df\n    insightface: faces\n"
            f"    dense_face_embeddings: emb\n    mediapipe: |\n        mp\n        ~/nowhere\n")
    return shared, text


def test_extra_model_paths_yaml_is_read_like_comfyui(tmp_path, monkeypatch):
    from dense_face.dense_face_core.model_folders import comfyui_models_dirs, extra_model_paths

    root = tmp_path / "ComfyUI"
    (root / "comfy").mkdir(parents=True)
    (root / "nodes.py").write_text("")
    shared, text = _yaml_folders(tmp_path, None)
    (root / "extra_model_paths.yaml").write_text(text)
    found = extra_model_paths(root)
    assert found["dense_face"] == [shared / "df"] and found["insightface"] == [shared / "faces"]
    assert found["mediapipe"] == [shared / "mp", Path("~/nowhere").expanduser()]
    monkeypatch.setenv("COMFYUI_PATH", str(root))
    assert comfyui_models_dirs("mediapipe")[:2] == [root / "models" / "mediapipe", shared / "mp"]


@pytest.mark.server
def test_server_honours_extra_model_paths_for_every_kind(tmp_path, landmarker_path):
    """A user's extra_model_paths.yaml (read by ComfyUI's main.py before custom nodes load) reaches every
    Dense-Face model kind, insightface packs included."""
    from comfy_harness import ComfyServer

    _shared, text = _yaml_folders(tmp_path, landmarker_path)
    server = ComfyServer(tmp_path / "srv")
    try:
        (server.root / "extra_model_paths.yaml").write_text(text)
        server.wait_ready()
        info = server.get_json("/object_info")
        assert "yaml_weights.safetensors" in info["DenseFaceLoader"]["input"]["required"]["weights"][0]
        assert "insightface/yaml_pack" in info["DenseFaceIDEncoder"]["input"]["required"]["id_model"][0]
        assert "yaml_person.npy" in info["DenseFaceLoadIDEmbedding"]["input"]["required"]["embedding"][0]
        assert "yaml_landmarker.task" in info["DenseFaceCropMask"]["input"]["optional"]["landmarker"][0]
    finally:
        server.stop()
