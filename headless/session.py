"""A run session: one workflow on one ComfyUI (in this process or a server), for one run or many.

Models are checked before anything runs, against what the ComfyUI that runs the workflow
offers (the same check in process and on a server). With ``--demo auto`` (the default) a
workflow whose models are missing runs on the labelled random-weight demo set of
``dense-face demo-weights`` (built here in process; it must be on the server for a server
run); the text-editing stage of random weights cannot draw a face, so the personalisation
workflow then runs as a face swap on photos that ship in installed packages, and says so.
Temporary folders are removed when the session closes, whatever way it ends.
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
from .in_process import InProcessRunner
from .model_resolution import demo_available, missing_message, missing_models, use_demo_models
from .overrides import apply_overrides, place_inputs
from .reference_slots import check_reference_capacity, reference_role, reference_slots
from .server_client import ComfyServer, run_on_server
from .workflow_graph import (MODEL_INPUTS, TITLE_SCENE, TITLE_TARGET, TITLE_TEXT_MODEL,
                             load_api_workflow, nodes_of, nodes_titled, resolve_workflow)

DEMO_BANNER = ("DEMO MODE - RANDOM WEIGHTS: no trained models were found, so the graph runs on the labelled "
               "random-weight demo set. It proves the workflow runs; the images are NOT faces or likenesses.")
DEMO_REFERENCES = ("tom_hanks", "astronaut")  # packaged photos for the reference loaders of a demo run
MODEL_KINDS = ("checkpoints", "dense_face", "dense_face_embeddings", "insightface", "mediapipe", "vae", "controlnet")


def _existing_file(given: str | os.PathLike, option: str) -> Path:
    path = Path(given).expanduser()
    if not path.is_file():
        raise DenseFaceInputError(f"{option}: no such file {given}")
    return path


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


class RunSession:
    """Decides once about models and the demo set; keeps one ComfyUI (and one executor) for every run."""

    def __init__(self, workflow: str, *, comfy_url: str | None = None, comfyui: str | None = None,
                 models_dir: str | None = None, demo: str = "auto", demo_dir: str | None = None,
                 device: str = "auto", model_names: dict | None = None, log=_stderr):
        self.log = log
        self.comfy_url = comfy_url
        self.wf_path = resolve_workflow(workflow)
        self.base_wf = load_api_workflow(self.wf_path)
        self.model_names = {k: v for k, v in (model_names or {}).items() if v}
        self.host = self.server = self._runner = None
        self.demo = self.switched = False  # switched: personalisation replaced by the face swap (demo)
        self._temp_dirs: list[Path] = []
        if comfy_url:
            self.server = ComfyServer(comfy_url)
        else:
            self._start_host(comfyui, models_dir, device)
        self._decide_models(demo, demo_dir)

    # ------------------------------------------------------------ setup
    def _start_host(self, comfyui, models_dir, device) -> None:
        import torch

        from .comfy_host import InProcessComfy

        cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
        self.host = InProcessComfy(comfyui, cpu=cpu)
        self.log(f"in-process ComfyUI on the {'CPU' if cpu else 'GPU'}: {self.host.root}")
        if models_dir:
            for kind in MODEL_KINDS:
                self.host.add_model_dir(kind, Path(models_dir) / kind)

    @property
    def where(self) -> str:
        return f"the ComfyUI server at {self.server.url}" if self.server else f"the ComfyUI at {self.host.root}"

    def choices(self, class_type: str, input_name: str):
        return (self.server or self.host).choices(class_type, input_name)

    def _decide_models(self, demo: str, demo_dir: str | None) -> None:
        missing = missing_models(self._graph(), self.choices)
        if demo == "off" or (demo == "auto" and not missing):
            if missing:
                raise MissingModelError(missing_message(missing, self.where))
            return
        if missing:
            self.log("models not found: " + ", ".join(f"{m.value} ({m.title})" for m in missing))
        self._enable_demo(demo_dir)

    def _enable_demo(self, demo_dir: str | None) -> None:
        if self.server is not None and not demo_available(self.choices):
            raise MissingModelError(f"{self.where} has neither the workflow's models nor the demo set: on that "
                                    f"machine run `dense-face demo-weights --models-dir <its ComfyUI>/models`, or "
                                    f"install the models")
        self.log("\n" + "=" * 100 + f"\n{DEMO_BANNER}\n" + "=" * 100 + "\n")
        if nodes_titled(self.base_wf, TITLE_SCENE):
            self.wf_path = WORKFLOW_DIR / "dense_face_face_swap_api.json"
            self.base_wf = load_api_workflow(self.wf_path)
            self.switched = True
            self.log("demo: random weights cannot render a scene with a face in the text-editing stage, so the "
                     f"face-swap workflow runs instead ({self.wf_path.name}); a scene prompt has no stage to go to.")
        if self.host is not None:
            from .demo_set import write_demo_models

            folder = Path(demo_dir or default_cache_dir() / "demo-models")
            write_demo_models(folder, host=self.host, log=self.log)
            for kind in ("checkpoints", "dense_face", "insightface"):
                self.host.add_model_dir(kind, folder / kind)
        self.demo = True

    def _graph(self) -> dict:
        """A fresh copy of the workflow with the chosen model names set."""
        wf = json.loads(json.dumps(self.base_wf))
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
        if self.demo:
            use_demo_models(wf)
        return wf

    # ------------------------------------------------------------ inputs and runs
    def images(self, target: str | os.PathLike | None = None, reference=None,
               reference_embedding: str | os.PathLike | None = None) -> dict[str, Path]:
        """The input files this workflow needs, by role (packaged photos stand in for the demo).

        ``reference`` is one photo or a list of them (a group workflow: reference k for identity k)."""
        out: dict[str, Path] = {}
        references = [r for r in ([reference] if isinstance(reference, (str, os.PathLike)) else reference or [])]
        if reference_embedding:
            if not nodes_of(self.base_wf, "DenseFaceIDEncoder"):
                raise DenseFaceInputError(f"--reference-embedding: {self.wf_path.name} has no ID Encoder to replace")
            out["reference_embedding"] = _existing_file(reference_embedding, "--reference-embedding")
        if nodes_titled(self.base_wf, TITLE_TARGET):
            if target:
                out["target"] = _existing_file(target, "--target")
            elif self.demo:
                out["target"] = packaged_photo("group" if self._takes_every_face() else "astronaut")
                self.log(f"demo: target photo = {out['target']}")
            else:
                raise DenseFaceInputError(f"--target: {self.wf_path.name} needs a target photo")
        slots = reference_slots(self.base_wf)
        if not slots or reference_embedding:
            return out
        if references:
            check_reference_capacity(self.base_wf, len(references), self.wf_path.name)
            for k, given in enumerate(references):
                out[reference_role(k)] = _existing_file(given, "--reference")
        elif self.demo:
            for k, photo in enumerate(DEMO_REFERENCES[:slots]):
                out[reference_role(k)] = packaged_photo(photo)
                self.log(f"demo: {reference_role(k).replace('_', ' ')} photo = {out[reference_role(k)]}")
        else:
            raise DenseFaceInputError(f"--reference: {self.wf_path.name} needs a reference photo")
        return out

    def _takes_every_face(self) -> bool:
        return any(self.base_wf[i]["inputs"].get("face") in ("all", "list")
                   for i in nodes_of(self.base_wf, "DenseFaceCropMask"))

    def run(self, out_dir: Path, images: dict[str, Path], overrides: argparse.Namespace,
            inputs_dir: Path | None = None, edit=None) -> tuple[dict, list[str], list[Path]]:
        """One execution; returns (the graph as run, override notes, files written). ``edit(wf)`` may change
        the graph first (a benchmark picking one face of a group)."""
        wf = self._graph()
        if edit is not None:
            edit(wf)
        if self.switched and getattr(overrides, "prompt", None) is not None:
            overrides = argparse.Namespace(**{**vars(overrides), "prompt": None})
            self.log("demo: the scene prompt is not used (the face swap has no text-editing stage)")
        if self.server is not None:  # the server names the uploads; the notes name the user's files
            notes = [f"{role.replace('_', ' ')}: {Path(p).name}" for role, p in images.items()]
            notes += apply_overrides(wf, overrides)
            return wf, notes, run_on_server(self.server.url, wf, images, out_dir)
        names = self._stage_inputs(images, inputs_dir)
        notes = place_inputs(wf, names) + apply_overrides(wf, overrides)
        self.log(f"running {self.wf_path.name} in-process")
        if self._runner is None:
            self._runner = InProcessRunner(self.host)
        return wf, notes, self._runner.run(wf, out_dir)

    def forget_cached_outputs(self) -> None:
        """Drop what ComfyUI's executor cached (in process): the next run loads and computes every node
        again, as a new ``dense-face run`` would (the node pack's own file caches stay)."""
        if self._runner is not None:
            self._runner.executor.reset()

    def _stage_inputs(self, images: dict[str, Path], inputs_dir: Path | None) -> dict[str, str]:
        """Copies of the inputs, by role, in the input folder this ComfyUI reads (a temporary one by default)."""
        import folder_paths

        if inputs_dir is None:
            inputs_dir = Path(tempfile.mkdtemp(prefix="dense-face-inputs-"))
            self._temp_dirs.append(inputs_dir)
        inputs_dir = Path(inputs_dir)
        inputs_dir.mkdir(parents=True, exist_ok=True)
        names = {}
        for role, path in images.items():
            dest = inputs_dir / f"{role}{Path(path).suffix.lower() or '.png'}"
            if Path(path).resolve() != dest.resolve():
                shutil.copyfile(path, dest)
            names[role] = dest.name
        folder_paths.set_input_directory(str(inputs_dir))
        return names

    # ------------------------------------------------------------ the end
    def close(self) -> None:
        """Remove every temporary folder (copies of the user's photos, the host's work folder)."""
        for folder in self._temp_dirs:
            shutil.rmtree(folder, ignore_errors=True)
        self._temp_dirs.clear()
        if self._runner is not None:
            self._runner.close()
            self._runner = None
        if self.host is not None:
            self.host.close()

    def __enter__(self) -> RunSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
