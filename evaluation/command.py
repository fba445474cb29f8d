"""``dense-face eval``: the paper's evaluation protocol (identities x prompts x seeds) through the headless runner.

Generation goes through :mod:`dense_face.headless.runner` (in-process ComfyUI by default, or a
ComfyUI server with ``--comfy-url``), one run folder per identity x prompt x seed under
``OUT/runs``; a finished run is never generated twice, so an interrupted evaluation
resumes where it stopped. Then every result image is measured (face detection, ArcFace
identity cosine, pose error, CLIP-T, CLIP-I, dlib distance; FID over the whole set) and
a table is written: ``eval_table.{csv,md,json}`` (per identity and overall, mean ± std)
and ``eval_images.csv`` (one row per image). Metrics whose models are not supplied are
left out, and the table says why. See docs/evaluation.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..dense_face_core.errors import DenseFaceInputError, run_reporting_errors
from .dlib_identity import DLIB_MODELS_ENV
from .generate import generate
from .measure import compute_fid, evaluate
from .messages import log
from .plan import RunSpec, build_plan, discover_identities, parse_seeds
from .prompts import DEFAULT_SUBJECT, read_prompts
from .report import aggregate, write_outputs
from .run_record import collect_runs


def _what_options(p: argparse.ArgumentParser) -> None:
    what = p.add_argument_group("what to generate")
    what.add_argument("--identities", help="folder with one sub-folder of photos per identity")
    what.add_argument("--prompts", help="text file, one prompt a line ({person}, {identity} placeholders; # comments)")
    what.add_argument("--seeds", default="0", help="seeds, e.g. 0,1,2 or 0-3 (default 0)")
    what.add_argument("--subject", default=DEFAULT_SUBJECT, help=f"what {{person}} becomes (default {DEFAULT_SUBJECT!r})")
    what.add_argument("--reference-index", type=int, default=0,
                      help="which photo (sorted by name) of each identity conditions the generation (default 0)")
    what.add_argument("--workflow", default="dense_face_personalize", help="as for dense-face run")
    what.add_argument("--target", help="target photo, for workflows that have one (face swap)")
    what.add_argument("--steps", type=int, help="steps of every sampler")
    what.add_argument("--yaw", type=float)
    what.add_argument("--pitch", type=float)
    what.add_argument("--roll", type=float)
    what.add_argument("--checkpoint")
    what.add_argument("--weights")
    what.add_argument("--id-model")


def _where_options(p: argparse.ArgumentParser) -> None:
    where = p.add_argument_group("where it runs (as dense-face run)")
    ex = where.add_mutually_exclusive_group()
    ex.add_argument("--comfy-url", help="ComfyUI server(s): URL, or URL1,URL2,... to spread the generations over "
                                        "several servers (one per GPU or machine), each keeping its models loaded")
    ex.add_argument("--comfyui")
    where.add_argument("--models-dir")
    where.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                       help="in-process ComfyUI: the GPU when there is one (auto), or the CPU")
    where.add_argument("--demo", choices=("auto", "on", "off"), default="off",
                       help="the random-weight demo set: never (default: evaluating random weights is meaningless), "
                            "always (a plumbing check), or when models are missing")
    where.add_argument("--demo-dir")
    where.add_argument("--generated", help="evaluate the runs already in this folder (an earlier OUT/runs); "
                                           "generate nothing")
    where.add_argument("--generate-only", action="store_true", help="generate the runs, measure nothing")
    where.add_argument("--retry-failed", action="store_true", help="generate runs that failed before again")


def _model_options(p: argparse.ArgumentParser) -> None:
    models = p.add_argument_group("metric models (local files; a metric without its model is left out)")
    models.add_argument("--landmarker", help="MediaPipe face_landmarker.task (default: $DENSE_FACE_LANDMARKER or "
                                             "models/mediapipe)")
    models.add_argument("--insightface-model", help="ArcFace for identity: a recognition .onnx or an insightface "
                                                    "pack folder (default: antelopev2 in models/insightface)")
    models.add_argument("--clip", help="local transformers CLIPModel folder, for CLIP-T and CLIP-I")
    models.add_argument("--inception", help="torch-fidelity InceptionV3 weights (.pth state dict or .safetensors)")
    models.add_argument("--fid-reference", help="folder of real images FID compares with")
    models.add_argument("--fid-size", type=int, default=299, help="resize + centre-crop size before Inception "
                                                                  "(0: as they are; default 299)")
    models.add_argument("--fid-batch", type=int, default=32)
    models.add_argument("--fid-features", choices=("64", "192", "768", "2048"), default="2048",
                        help="Inception features FID uses (torch-fidelity's feature_layer_fid; 2048 = standard FID)")
    models.add_argument("--dlib-models", help=f"folder with dlib's .dat files (default: ${DLIB_MODELS_ENV} or the "
                                              "face_recognition_models package)")
    models.add_argument("--no-dlib", action="store_true", help="skip the dlib second opinion")


def build_parser() -> argparse.ArgumentParser:
    """``dense-face eval``'s options, in the groups its --help shows."""
    p = argparse.ArgumentParser(prog="dense-face eval", description=__doc__.splitlines()[0])
    _what_options(p)
    _where_options(p)
    _model_options(p)
    p.add_argument("--out", required=True, help="output folder (runs/ and the tables)")
    return p


def _plan(args, identities_root: Path | None) -> list[RunSpec]:
    """Every identity x prompt x seed asked for on the command line."""
    if not args.identities or not args.prompts:
        raise DenseFaceInputError("--identities and --prompts are needed (or --generated to evaluate earlier runs)")
    return build_plan(discover_identities(identities_root, args.reference_index), read_prompts(args.prompts),
                      parse_seeds(args.seeds), args.subject)


def _generated_root(folder: str) -> Path:
    runs_root = Path(folder).resolve()
    if not runs_root.is_dir():
        raise DenseFaceInputError(f"--generated: {runs_root} is not a folder")
    return runs_root


def _settings(args, runs: list[tuple[Path, dict]], runs_root: Path, identities_root: Path | None, info: dict) -> dict:
    """What the table was made from, recorded in eval_table.json."""
    workflows = sorted({s.get("workflow") for _, s in runs if s.get("workflow")})
    return {"runs_root": str(runs_root), "identities": str(identities_root) if identities_root else None,
            "prompts": args.prompts, "seeds": args.seeds, "steps": args.steps,
            "workflow": workflows[0] if len(workflows) == 1 else ", ".join(workflows),
            "demo_random_weights": info["demo"], "models": info["models"]}


def measure_and_report(plan: list[RunSpec] | None, runs_root: Path, args, out: Path,
                       identities_root: Path | None) -> None:
    """Measure the runs, write the tables into ``out`` and show the Markdown one."""
    runs = collect_runs(plan, runs_root)
    if not runs:
        raise DenseFaceInputError(f"no runs found under {runs_root}")
    rows, images, info = evaluate(runs, args, identities_root)
    fid = compute_fid(images, args)
    settings = _settings(args, runs, runs_root, identities_root, info)
    table = aggregate(rows, [s for _, s in runs])
    write_outputs(out, table, rows, fid, info["notes"], settings)
    log((out / "eval_table.md").read_text())
    print(f"eval: table written to {out / 'eval_table.md'} (.csv, .json; per image: eval_images.csv)")


def main(argv: list[str] | None = None) -> int:
    """Generate what is not generated yet (unless --generated), then measure and tabulate."""
    args = build_parser().parse_args(argv)
    out = Path(args.out).resolve()
    args.fid_size = args.fid_size or None
    identities_root = Path(args.identities).resolve() if args.identities else None
    if args.generated:
        plan, runs_root = None, _generated_root(args.generated)
    else:
        plan, runs_root = _plan(args, identities_root), out / "runs"
        generate(plan, args, runs_root, identities_root)
        if args.generate_only:
            log(f"eval: runs are in {runs_root}; measure them with --generated {runs_root}")
            return 0
    measure_and_report(plan, runs_root, args, out, identities_root)
    return 0


def _entry() -> int:
    return run_reporting_errors("dense-face eval", main)


if __name__ == "__main__":
    sys.exit(_entry())
