"""``dense-face build-dataset``'s options: input and annotation, captions, restoration, engine."""
from __future__ import annotations

import argparse
import os
import re

from .chunks import DEFAULT_BATCH_SIZE

DEFAULT_SHARD_SIZE = 1000
DEFAULT_MIN_CROP = 128     # the authors reject faces whose crop square is under 128 px
DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_TOP_K = 3          # the paper keeps the three captions with the highest CLIP scores
ENGINES = ("local", "ray")


def _parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or int(m.group(2)) < 1 or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise argparse.ArgumentTypeError(f"--shard: expected i/n with 0 <= i < n, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--crop-sizes: expected e.g. 256,512, got {text!r}") from None
    if not sizes or any(s < 64 or s > 2048 for s in sizes):
        raise argparse.ArgumentTypeError(f"--crop-sizes: sizes must be within 64..2048, got {text!r}")
    return sizes


def _positive(kind, name: str, allow_zero: bool = False):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            v = None
        if v is None or v < 0 or (v == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"{name}: expected a {'non-negative' if allow_zero else 'positive'} "
                                             f"number, got {text!r}")
        return v
    return parse


def _input_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, help="folder with one sub-folder per person, or the "
                                                  "authors' CSV (or a folder holding it)")
    p.add_argument("--out", required=True, help="output folder (shards/ and manifest.json)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes (local engine) or CPUs of the local Ray (default: all cores)")
    p.add_argument("--shard", type=_parse_shard, default=(0, 1), metavar="i/n",
                   help="this machine's part: every n-th unit starting at i (default 0/1)")
    p.add_argument("--insightface-model", help="ArcFace .onnx or insightface pack folder; "
                                               "without it no identity embeddings are stored")
    p.add_argument("--landmarker", help="MediaPipe face_landmarker.task (default: $DENSE_FACE_LANDMARKER "
                                        "or ComfyUI's models/mediapipe)")
    p.add_argument("--crop-sizes", type=_parse_sizes, default=(256, 512), help="e.g. 256 or 256,512")
    p.add_argument("--max-images", type=int, default=None, help="only the first N images (sorted)")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                   help=f"images per shard, whole identities (default {DEFAULT_SHARD_SIZE})")
    p.add_argument("--min-crop", type=int, default=DEFAULT_MIN_CROP,
                   help="skip faces whose crop square is smaller in the photo (pixels)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="skip larger photos")
    p.add_argument("--keep-grayscale", action="store_true", help="keep grey photos (skipped by default)")
    p.add_argument("--tiles", action="store_true", help="search tiles when no face is found (slow; "
                                                        "for small faces in big photos)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--captioner", action="append", metavar="FOLDER",
                   help="local folder of a transformers image-to-text model (BLIP, BLIP-2, GIT, Florence-2); "
                        "repeat for several; runs on photos without a usable caption file")
    p.add_argument("--clip-model", metavar="FOLDER", help="local folder of a transformers CLIP model that scores "
                                                          "every generated caption (needed with 2+ captioners)")
    p.add_argument("--captions-top-k", type=_positive(int, "--captions-top-k"), default=DEFAULT_TOP_K,
                   help=f"captions kept per image, best CLIP score first (default {DEFAULT_TOP_K}, the paper's)")
    p.add_argument("--restore-model", metavar="FILE.onnx",
                   help="restore faces before annotation with a GFPGAN/CodeFormer ONNX export (off by default)")
    p.add_argument("--restore-fidelity", type=float, default=0.5,
                   help="CodeFormer's fidelity w: 0 = strongest restoration, 1 = closest to the photo (default 0.5)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the local engine runs the models (default: a GPU when torch sees one)")
    p.add_argument("--batch-size", type=_positive(int, "--batch-size"), default=DEFAULT_BATCH_SIZE,
                   help=f"images per model batch and per work item (default {DEFAULT_BATCH_SIZE}; keep it to "
                        "get the same bytes)")


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: a process pool on this machine; ray: Ray Data (a local Ray, or --ray-address)")
    p.add_argument("--ray-address", help="Ray cluster to join: 'auto' (the cluster of this node) or "
                                         "ray://HOST:10001 (default: start a local Ray with --workers CPUs)")
    p.add_argument("--model-actors", type=_positive(int, "--model-actors"), default=1,
                   help="Ray actors per model stage (default 1)")
    p.add_argument("--gpus-per-actor", type=_positive(float, "--gpus-per-actor", True), default=None,
                   help="GPU share of each model actor (default: the cluster's GPUs split over the actors)")
    p.add_argument("--cpus-per-actor", type=_positive(float, "--cpus-per-actor"), default=None,
                   help="CPUs reserved per model actor (default: at most half the cluster's, 1 each at most)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dense-face build-dataset",
                                description="Build T2I-Dense-Face training shards (WebDataset tars) "
                                            "from a folder of identities or the authors' CSV layout.")
    _input_args(p)
    _model_args(p)
    _engine_args(p)
    return p
