"""A run session: one workflow on one ComfyUI (in this process or a server), for one run or many.

With ``--demo auto`` (the default) a workflow whose models are missing runs on the
labelled random-weight demo set of ``dense-face demo-weights``; the text-editing stage of
random weights cannot draw a face, so the personalisation workflow then runs as a face
swap on photos that ship in installed packages, and the output says so.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ..dense_face_core.errors import DenseFaceInputError, MissingModelError
from ..dense_face_core.model_folders import WORKFLOW_DIR, default_cache_dir
from ..dense_face_core.packaged_photos import packaged_photo
from .in_process import run_in_process
from .overrides import apply_overrides, place_inputs
from .server_client import run_on_server
from .workflow_graph import (MODEL_INPUTS, TITLE_REFERENCE, TITLE_SCENE, TITLE_TARGET, TITLE_TEXT_MODEL, load_api_workflow, nodes_of,
                             nodes_titled, required_models, resolve_workflow, use_demo_models)

DEMO_BANNER = ("DEMO MODE - RANDOM WEIGHTS: no trained models were found, so the graph runs on the labelled "
               "random-weight demo set. It proves the workflow runs; the images are NOT faces or likenesses.")


def _existing_file(given: str | os.PathLike, option: str) -> Path:
    path = Path(given).expanduser()
    if not path.is_file():
        raise DenseFaceInputError(f"{option}: no such file {given}")
    return path


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


MODEL_KINDS = ("checkpoints", "dense_face", "insightface", "mediapipe", "vae", "controlnet")


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
        if "text_checkpoint" in self.model_names:  # after --checkpoint: only the text-editing stage
            for i in nodes_titled(wf, TITLE_TEXT_MODEL):
                wf[i]["inputs"]["ckpt_name"] = self.model_names["text_checkpoint"]
        if "id_model" in self.model_names:
            for i in nodes_of(wf, "DenseFaceIDEncoder"):
                wf[i]["inputs"]["id_model"] = self.model_names["id_model"]

    def missing_models(self, wf: dict) -> list[tuple[str, str]]:
        return [(k, n) for k, n in required_models(wf) if self.host.folder_paths.get_full_path(k, n) is None]

    def images(self, target: str | os.PathLike | None = None, reference: str | os.PathLike | None = None,
               reference_embedding: str | os.PathLike | None = None) -> dict[str, Path]:
        """The input files this workflow needs, by role (packaged photos stand in for the demo)."""
        out: dict[str, Path] = {}
        if reference_embedding:
            if not nodes_of(self.base_wf, "DenseFaceIDEncoder"):
                raise DenseFaceInputError(f"--reference-embedding: {self.wf_path.name} has no ID Encoder to replace")
            out["reference_embedding"] = _existing_file(reference_embedding, "--reference-embedding")
        for role, given, title, demo_photo in (("target", target, TITLE_TARGET, "astronaut"),
                                               ("reference", reference, TITLE_REFERENCE, "tom_hanks")):
            if not nodes_titled(self.base_wf, title) or (role == "reference" and reference_embedding):
                continue
            if given:
                out[role] = _existing_file(given, f"--{role}")
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
        if self.host is None:  # the server names the uploads; the notes name the user's files
            notes = [f"{role.replace('_', ' ')}: {Path(p).name}" for role, p in images.items()]
            notes += apply_overrides(wf, overrides)
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
        notes = place_inputs(wf, names) + apply_overrides(wf, overrides)
        if self.demo:
            use_demo_models(wf, self.demo_paths)
        missing = self.missing_models(wf)
        if missing:
            raise MissingModelError("models not found: " + "; ".join(
                f"{n} belongs in ComfyUI/models/{k}/" for k, n in missing) + " (or run with --demo auto)")
        self.log(f"running {self.wf_path.name} in-process")
        return wf, notes, run_in_process(self.host, wf, out_dir)
