"""Regenerate the README pictures from code in this repository (run after changing the face stack).

    .venv/bin/python scripts/make_figures.py [--landmarker PATH] [--out docs/images]

Uses only photos that ship in installed packages (scikit-image's astronaut, insightface's group photo).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from dense_face.dense_face_core.model_folders import comfyui_models_dirs
from dense_face.dense_face_core.annotation_vis import depth_image, draw_landmarks, parsing_image, tile_images
from dense_face.dense_face_core.crop import compute_face_crop, warp_to_crop
from dense_face.dense_face_core.dense_targets import compute_dense_targets
from dense_face.dense_face_core.face_mask import face_mask
from dense_face.dense_face_core.io_utils import atomic_save_png
from dense_face.dense_face_core.landmarker import FaceAnalyzer, find_landmarker_model, select_face
from dense_face.dense_face_core.paste import paste_back
from dense_face.dense_face_core.pose import draw_pose_image

POSES = [(0, 0, 0), (30, 0, 0), (-30, 0, 0), (0, 20, 0), (0, -20, 0), (0, 0, 15),
         (45, -10, 5), (-60, 25, -10)]


def label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.putText(out, text, (6, out.shape[0] - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (6, out.shape[0] - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def pose_grid() -> np.ndarray:
    tiles = [label(draw_pose_image(y, p, r), f"yaw {y} pitch {p} roll {r}") for y, p, r in POSES]
    rows = [np.concatenate(tiles[i:i + 4], axis=1) for i in range(0, len(tiles), 4)]
    return np.concatenate(rows, axis=0)


def face_stack(landmarker: Path) -> np.ndarray:
    import skimage.data

    photo = skimage.data.astronaut()
    with FaceAnalyzer(landmarker) as analyzer:
        face = select_face(analyzer.detect(photo))
        fc = compute_face_crop(face, 256, canonical_vertices=analyzer.canonical)
        crop = warp_to_crop(photo, fc)
        mask = face_mask(fc, grow=16, feather=8)
        targets = compute_dense_targets(fc.landmarks, triangles=analyzer.canonical.triangles,
                                        parsing_size=256, depth_size=256)
    boxed = photo.copy()
    cv2.polylines(boxed, [np.round(fc.quad).astype(np.int32)], True, (255, 64, 64), 3)
    # a visibly different "generated" face: the crop with its colours inverted
    new_face = 1.0 - crop.astype(np.float32) / 255.0
    pasted = paste_back(photo.astype(np.float32) / 255.0, new_face, fc, mask=mask)
    mask_rgb = (np.repeat(mask[:, :, None], 3, axis=2) * 255).astype(np.uint8)
    panels = [
        label(cv2.resize(boxed, (256, 256), interpolation=cv2.INTER_AREA), "photo + crop square"),
        label(crop, f"crop: yaw {fc.yaw:.0f} pitch {fc.pitch:.0f} roll {fc.roll:.0f}"),
        label(mask_rgb, "face mask (1 = regenerate)"),
        label(draw_landmarks(crop, fc.landmarks), "478 landmarks"),
        label(parsing_image(targets.parsing), "10-class parsing"),
        label(depth_image(targets.depth, targets.depth_mask), "z-buffered depth"),
        label(cv2.resize((pasted * 255).round().astype(np.uint8), (256, 256), interpolation=cv2.INTER_AREA),
              "paste-back of a new face"),
        label(draw_pose_image(fc.yaw, fc.pitch, fc.roll), "pose image of the crop"),
    ]
    return tile_images(panels[:4]), tile_images(panels[4:])


def group_faces(landmarker: Path) -> np.ndarray:
    """insightface's group photo: the faces as the group nodes number them, a pose image per face, and
    every face pasted back (colours inverted, standing in for generated faces) into its own place."""
    from dense_face.dense_face_core.annotation_vis import numbered_faces
    from dense_face.dense_face_core.face_batch import select_faces
    from dense_face.dense_face_core.images import read_image
    from dense_face.dense_face_core.packaged_photos import packaged_photo
    from dense_face.dense_face_core.paste import paste_faces

    photo = read_image(packaged_photo("group"))
    with FaceAnalyzer(landmarker) as analyzer:
        faces = select_faces(analyzer.detect(photo, name="t1.jpg"), "all", 32)
        crops = [compute_face_crop(f, 256, canonical_vertices=analyzer.canonical) for f in faces]
    new = [1.0 - warp_to_crop(photo, fc).astype(np.float32) / 255.0 for fc in crops]
    masks = [face_mask(fc, grow=16, feather=8) for fc in crops]
    pasted = paste_faces(photo.astype(np.float32) / 255.0, new, crops, masks)
    numbered = numbered_faces(photo, [fc.box for fc in crops], list(range(len(crops))))
    poses = [label(cv2.resize(draw_pose_image(fc.yaw, fc.pitch, fc.roll), (128, 128)), f"face {i}")
             for i, fc in enumerate(crops)]
    width = numbered.shape[1]
    strip = np.concatenate(poses, axis=1)
    strip = cv2.resize(strip, (width, round(strip.shape[0] * width / strip.shape[1])), interpolation=cv2.INTER_AREA)
    out = np.concatenate([numbered, strip, (pasted * 255).round().astype(np.uint8)], axis=0)
    return cv2.resize(out, (800, round(out.shape[0] * 800 / out.shape[1])), interpolation=cv2.INTER_AREA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landmarker")
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--screenshots", help="also copy the frontend screenshots that tests/test_workflows.py "
                                              "saves (test-artifacts/) here, shrunk to 1600 px wide")
    args = parser.parse_args()
    out = Path(args.out)
    atomic_save_png(Image.fromarray(pose_grid()), out / "pose_grid.png")
    top, bottom = face_stack(find_landmarker_model(args.landmarker, comfyui_models_dirs("mediapipe")))
    width = max(top.shape[1], bottom.shape[1])
    pad = lambda a: np.pad(a, ((0, 0), (0, width - a.shape[1]), (0, 0)), constant_values=255)  # noqa: E731
    atomic_save_png(Image.fromarray(np.concatenate([pad(top), pad(bottom)], axis=0)), out / "face_stack.png")
    landmarker = find_landmarker_model(args.landmarker, comfyui_models_dirs("mediapipe"))
    atomic_save_png(Image.fromarray(group_faces(landmarker)), out / "group_faces.png")
    print(f"wrote {out / 'pose_grid.png'}, {out / 'face_stack.png'} and {out / 'group_faces.png'}")
    if args.screenshots:
        for shot in sorted(Path(args.screenshots).glob("litegraph2024-dense_face_*.png")):
            im = Image.open(shot).convert("RGB")
            im = im.resize((1600, round(im.height * 1600 / im.width)), Image.LANCZOS)
            atomic_save_png(im, out / f"workflow_{shot.stem.split('-', 1)[1]}.png")
            print(f"wrote {out / ('workflow_' + shot.stem.split('-', 1)[1] + '.png')}")


if __name__ == "__main__":
    main()
