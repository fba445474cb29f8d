"""Face-stack throughput: analyse + crop + mask + dense targets, images per second.

Runs on the photos in ../shared/data/celebs when present, else on scikit-image's
astronaut and insightface's sample portraits (resized copies), in this one process.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def _photos(limit: int) -> list[np.ndarray]:
    from ..dense_face_core.images import read_image

    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "celebs"
    paths = sorted(shared.glob("*/*.jpg"))[:limit]
    if paths:
        return [read_image(p) for p in paths]
    import os

    import insightface
    import skimage.data

    data = Path(os.path.dirname(insightface.__file__)) / "data" / "images"
    base = [skimage.data.astronaut(), read_image(data / "Tom_Hanks_54745.png")]
    return [base[i % len(base)] for i in range(limit)]


def run(landmarker: str | None, count: int, crop_size: int) -> dict:
    from ..dense_face_core.model_folders import comfyui_models_dirs
    from ..dense_face_core.crop import compute_face_crop, warp_to_crop
    from ..dense_face_core.dense_targets import compute_dense_targets
    from ..dense_face_core.face_mask import face_mask
    from ..dense_face_core.landmarker import FaceAnalyzer, find_landmarker_model, select_face

    photos = _photos(count)
    model = find_landmarker_model(landmarker, comfyui_models_dirs("mediapipe"))
    timings = {"analyse": 0.0, "crop+mask": 0.0, "targets": 0.0}
    with FaceAnalyzer(model) as analyzer:
        analyzer.detect(photos[0])  # warm-up
        start = time.perf_counter()
        for img in photos:
            t0 = time.perf_counter()
            face = select_face(analyzer.detect(img))
            t1 = time.perf_counter()
            fc = compute_face_crop(face, crop_size, canonical_vertices=analyzer.canonical)
            warp_to_crop(img, fc)
            face_mask(fc, grow=16, feather=8)
            t2 = time.perf_counter()
            compute_dense_targets(fc.landmarks, triangles=analyzer.canonical.triangles)
            t3 = time.perf_counter()
            timings["analyse"] += t1 - t0
            timings["crop+mask"] += t2 - t1
            timings["targets"] += t3 - t2
        total = time.perf_counter() - start
    return {"images": len(photos), "seconds": total, "images_per_s": len(photos) / total,
            **{f"ms_{k}": 1000 * v / len(photos) for k, v in timings.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dense-face bench face-stack", description=__doc__.splitlines()[0])
    parser.add_argument("--landmarker", help="MediaPipe face_landmarker.task")
    parser.add_argument("--count", type=int, default=40, help="number of photos")
    parser.add_argument("--crop-size", type=int, default=512)
    args = parser.parse_args(argv)
    r = run(args.landmarker, args.count, args.crop_size)
    print(f"face stack, 1 process, {r['images']} photos, crop {args.crop_size}:")
    for k in ("analyse", "crop+mask", "targets"):
        print(f"  {k:10s} {r['ms_' + k]:7.1f} ms/image")
    print(f"figures: images_per_s={r['images_per_s']:.1f}")
    return 0
