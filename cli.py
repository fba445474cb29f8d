"""``dense-face`` command line: a thin dispatcher over dense_face_core (and train/, bench/).

Each subcommand imports its implementation only when it runs, so ``dense-face --help``
is instant and no subcommand pays for another's imports.
"""
from __future__ import annotations

import argparse
import json
import sys

def _cmd_pose_image(args) -> int:
    from PIL import Image

    from .dense_face_core.errors import DenseFaceInputError
    from .dense_face_core.io_utils import atomic_save_png, check_output_path
    from .dense_face_core.pose import draw_pose_image

    img = draw_pose_image(args.yaw, args.pitch, args.roll, size=args.size)
    out = check_output_path(args.out, "--out")
    try:
        atomic_save_png(Image.fromarray(img), out)
    except OSError as exc:  # what the check cannot foresee (disk full, a race): the user's path, not the temp file
        raise DenseFaceInputError(f"--out {args.out}: could not write the PNG ({exc.strerror or exc})") from exc
    print(f"wrote {args.out} ({args.size}x{args.size}, yaw={args.yaw} pitch={args.pitch} roll={args.roll})")
    return 0


def _cmd_analyze(args) -> int:
    from .dense_face_core.errors import DenseFaceError, DenseFaceInputError
    from .dense_face_core.images import read_image
    from .dense_face_core.landmarker import FaceAnalyzer, find_landmarker_model
    from .dense_face_core.model_folders import comfyui_models_dirs

    if args.max_faces < 1:
        raise DenseFaceInputError(f"--max-faces: expected a whole number of at least 1, got {args.max_faces}")
    model = find_landmarker_model(args.landmarker, comfyui_models_dirs("mediapipe"))
    results, failed = [], 0
    with FaceAnalyzer(model, max_faces=args.max_faces) as analyzer:
        for path in args.images:
            try:
                faces = analyzer.detect(read_image(path), name=str(path))
            except DenseFaceError as exc:
                failed += 1
                results.append({"image": str(path), "faces": 0, "error": str(exc)})
                continue
            entry = {"image": str(path), "faces": len(faces)}
            if faces:
                entry.update(faces[0].as_dict())
            results.append(entry)
    if args.json:
        json.dump(results, sys.stdout)
        sys.stdout.write("\n")
    else:
        for r in results:
            if r.get("error"):
                print(f"{r['image']}: ERROR {r['error']}")
            elif r["faces"] == 0:
                print(f"{r['image']}: no face")
            else:
                box = ", ".join(f"{v:.0f}" for v in r["box"])
                print(f"{r['image']}: {r['faces']} face(s); largest box [{box}] "
                      f"yaw {r['yaw']:.1f} pitch {r['pitch']:.1f} roll {r['roll']:.1f} deg")
    return 1 if failed else 0


def _cmd_convert_official(args) -> int:
    from .dense_face_core.official_checkpoint import convert_official_checkpoint

    summary = convert_official_checkpoint(args.input, args.output)
    for key, value in summary.items():
        print(f"{key}: {value}")
    return 0


def _cmd_install_official(args) -> int:
    from .dense_face_core.model_folders import resolve_models_dir
    from .dense_face_core.official_install import install_official

    models = resolve_models_dir(args.comfyui, args.models_dir)
    print(f"installing the authors' release from {args.folder} into {models}")
    outputs = install_official(args.folder, models)
    done = {o.dest.parent.name + "/" + o.dest.name for o in outputs}
    print("\ndone. " + ("Load workflows/dense_face_personalize.json (two-mode personalisation), "
                        "dense_face_face_swap.json or dense_face_pose_control.json in ComfyUI, or run headless:\n"
                        "  dense-face run --workflow dense_face_face_swap --target PHOTO --reference PHOTO --out DIR"
                        if any("DenseFace_face_generation" in d for d in done) else "no face-generation model installed"))
    return 0


BENCHMARKS = {
    "face-stack": "bench.face_stack",
    "step-overhead": "bench.step_overhead",
    "dataset": "bench.dataset",
    "pipeline": "bench.pipeline",
    "train": "bench.train",
    "group": "bench.group",
    "device": "bench.device",
    "pose-branch": "bench.pose_branch",
    "safetensors-write": "bench.safetensors_write",
}


def _cmd_bench(args) -> int:
    import importlib

    module = importlib.import_module(f"{__package__}.{BENCHMARKS[args.name]}")
    if hasattr(module, "allocator"):
        # A benchmark timed with the steady glibc allocator re-runs itself in a child process; the child is
        # this command again (not the module's own __main__), so its errors are one line like any other.
        from .bench import allocator

        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--allocator", default="steady")
        choice = pre.parse_known_args(args.rest)[0].allocator
        code = allocator.rerun_steady(f"{__package__}.cli", ["bench", args.name, *args.rest], choice)
        if code is not None:
            return code
    return int(module.main(args.rest) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dense-face", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("pose-image", help="draw the pose image for yaw/pitch/roll (degrees)")
    p.add_argument("--yaw", type=float, required=True)
    p.add_argument("--pitch", type=float, required=True)
    p.add_argument("--roll", type=float, required=True)
    p.add_argument("--size", type=int, default=256, help="canvas size (256 = the authors' drawing)")
    p.add_argument("--out", required=True, help="output PNG file")
    p.set_defaults(func=_cmd_pose_image)

    p = sub.add_parser("analyze", help="detect faces: box, head pose, 478 landmarks")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per image")
    p.add_argument("--landmarker", help="MediaPipe face_landmarker.task (default: $DENSE_FACE_LANDMARKER "
                                        "or ComfyUI's models/mediapipe)")
    p.add_argument("--max-faces", type=int, default=4)
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser("convert-official", help="convert the authors' checkpoint to a Dense-Face weight file")
    p.add_argument("input", help="the authors' Lightning .ckpt (read with weights_only=True) or a .safetensors export")
    p.add_argument("output", help="output .safetensors (the IR-SE50 identity network goes beside it)")
    p.set_defaults(func=_cmd_convert_official)

    p = sub.add_parser("install-official", help="install the authors' released weights (their download folder) "
                                                "into a ComfyUI models folder")
    p.add_argument("folder", help="the folder downloaded from the authors' 'Pre-trained Weights' link "
                                  "(*.safetensors, epoch*.ckpt, *init.ckpt; optionally model_ir_se50.pth)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--comfyui", help="your ComfyUI folder (its models/ is written)")
    where.add_argument("--models-dir", help="a ComfyUI-style models folder to write into")
    p.set_defaults(func=_cmd_install_official)

    for name, (_module, text) in DELEGATED.items():
        sub.add_parser(name, help=text + f" (dense-face {name} --help)", add_help=False)

    p = sub.add_parser("bench", help="benchmarks (each prints ratios measured side by side)")
    p.add_argument("name", choices=sorted(BENCHMARKS))
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of that benchmark (--help for them)")
    p.set_defaults(func=_cmd_bench)
    return parser


# Subcommands with their own argument parsers: "name": ("module", "one-line help").
DELEGATED = {
    "run": ("headless.runner", "run a shipped (API-format) workflow headless, in-process or on a ComfyUI server"),
    "demo-weights": ("headless.demo_set", "write the labelled random-weight demo model set (ComfyUI models layout)"),
    "train": ("train.trainer", "train the pose branch, PC-adapter, identity projector and dense head (diffusers + "
                                "accelerate; also under `accelerate launch`)"),
    "export": ("train.export", "export a training checkpoint to the node pack's weight file"),
    "eval": ("evaluation.evaluate", "evaluate identities x prompts x seeds: identity similarity, CLIP-T/I, pose error, "
                               "FID, face detection"),
    "build-dataset": ("train.dataset_builder", "build training shards (crops, landmarks, pose, parsing, depth, "
                                               "embeddings, captions) from photos"),
}


def _delegate(name: str, rest: list[str]) -> int:
    import importlib

    module = importlib.import_module(f"{__package__}.{DELEGATED[name][0]}")
    return int(module.main(rest) or 0)


def main(argv: list[str] | None = None) -> int:
    from .dense_face_core.errors import run_reporting_errors

    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv else None

    def body() -> int:
        if command in DELEGATED:
            return _delegate(command, argv[1:])
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)

    return run_reporting_errors(f"dense-face {command}", body)


if __name__ == "__main__":
    sys.exit(main())
