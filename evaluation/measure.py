"""Measuring the runs: one row of metrics per result image, and FID over the whole set."""
from __future__ import annotations

import json
import time
from pathlib import Path

from .dlib_identity import DLIB_MATCH_THRESHOLD, DlibIdentity
from .fid import frechet_inception_distance
from .fid_library import fid_unavailable_reason
from .messages import log
from .outputs import result_files
from .photos import face_in_file, list_images
from .pose_error import face_pose, pose_errors
from .pose_targets import pose_targets
from .prompts import clip_text
from .references import ReferenceCache
from .run_record import RUN_WORKFLOW
from .scorers import Scorers, load_scorers
from .stats import cosine


def _face_metrics(row: dict, img, face, target: dict | None, sc: Scorers, ref: dict) -> None:
    """Identity (ArcFace, dlib) and pose error of the face found on a result image."""
    row.update({f"measured_{a}": v for a, v in face_pose(face).items()})
    if sc.arcface and ref["arcface"] is not None:
        emb = sc.arcface.embed(img, face)
        row["id_cos"] = cosine(emb, ref["arcface"])
        if ref["heldout"] is not None:
            row["id_cos_heldout"] = cosine(emb, ref["heldout"])
    if target is not None:
        row.update({f"target_{a}": v for a, v in target.items()})
        row.update(pose_errors(target, face_pose(face)))
    if sc.dlib and ref["dlib"] is not None:
        d = sc.dlib.descriptor(img, face.box)
        if d is not None:
            row["dlib_dist"] = DlibIdentity.distance(d, ref["dlib"])
            row["dlib_match"] = 1.0 if row["dlib_dist"] < DLIB_MATCH_THRESHOLD else 0.0


def _clip_metrics(row: dict, img, text_feat, sc: Scorers, ref: dict) -> None:
    """CLIP-T (image vs prompt) and CLIP-I (image vs reference photo); whole images, face or not."""
    feat = sc.clip.image_features([img])[0]
    row["clip_t"] = cosine(feat, text_feat)
    if ref["clip"] is not None:
        row["clip_i"] = cosine(feat, ref["clip"])


def measure_run(run_dir: Path, summary: dict, sc: Scorers, refs: ReferenceCache) -> tuple[list[dict], list[Path]]:
    """One row per result image of a successful run, and the result image paths."""
    ev = summary["eval"]
    wf = json.loads((run_dir / RUN_WORKFLOW).read_text())
    files = result_files(wf, summary)
    targets, pose_source = pose_targets(wf, run_dir, summary, sc.analyzer, len(files))
    ref = refs.get(run_dir, summary)
    text_feat = sc.clip.text_features([clip_text(ev["prompt"])])[0] if sc.clip else None
    rows, paths = [], []
    for k, rel in enumerate(files):
        path = run_dir / rel
        img, face = face_in_file(sc.analyzer, path)
        row = {"identity": ev["identity"], "prompt_index": ev["prompt_index"], "seed": ev["seed"],
               "image": str(path), "prompt": ev["prompt"], "face_detected": 1.0 if face else 0.0,
               "pose_source": pose_source}
        if face is not None:
            _face_metrics(row, img, face, targets[k], sc, ref)
        if sc.clip:
            _clip_metrics(row, img, text_feat, sc, ref)
        rows.append(row)
        paths.append(path)
    return rows, paths


def evaluate(runs: list[tuple[Path, dict]], args, identities_root: Path | None) -> tuple[list[dict], list[Path], dict]:
    """Rows of every successful run, the result image paths (for FID), and the notes / models / demo flag."""
    demo = any(s.get("demo_random_weights") for _, s in runs)
    sc = load_scorers(args, demo)
    refs = ReferenceCache(sc, identities_root)
    rows, images = [], []
    ok = [(d, s) for d, s in runs if s.get("status") == "ok"]
    t0 = time.time()
    try:
        for n, (d, s) in enumerate(ok, 1):
            r, p = measure_run(d, s, sc, refs)
            rows += r
            images += p
            if n % 10 == 0 or n == len(ok):
                log(f"eval: measured {n}/{len(ok)} run(s) ({time.time() - t0:.0f}s)")
    finally:
        sc.analyzer.close()
    if identities_root is None and sc.arcface:
        sc.notes["id_cos_heldout"] = "--identities not given: the identity's other photos are unknown"
    return rows, images, {"notes": sc.notes, "models": sc.models, "demo": demo}


def _fid_warning(args, generated: int, reference: int) -> str | None:
    """Why this FID is not comparable with published ones, if it is not."""
    warnings = []
    if args.fid_features != "2048":
        warnings.append(f"{args.fid_features}-d Inception features, not the standard 2048: not comparable with FID")
    if min(generated, reference) < 2048:
        warnings.append("fewer than 2048 images on a side: FID is biased upward and not comparable across set sizes")
    return "; ".join(warnings) or None


def compute_fid(images: list[Path], args) -> dict:
    """FID of all result images against --fid-reference, or the reason it was not computed."""
    if not args.inception or not args.fid_reference:
        return {"value": None, "reason": "give --inception (InceptionV3 FID weights) and --fid-reference (real images)"}
    reason = fid_unavailable_reason()
    if reason:
        return {"value": None, "reason": reason}
    reference = list_images(args.fid_reference, recursive=True)
    if len(images) < 2 or len(reference) < 2:
        return {"value": None, "reason": f"too few images ({len(images)} generated, {len(reference)} reference)"}
    log(f"eval: FID over {len(images)} generated and {len(reference)} reference images ...")
    value = frechet_inception_distance(images, reference, args.inception, size=args.fid_size,
                                       batch_size=args.fid_batch, features=args.fid_features)
    fid = {"value": value, "generated": len(images), "reference": len(reference), "size": args.fid_size,
           "features": args.fid_features, "weights": str(args.inception)}
    warning = _fid_warning(args, len(images), len(reference))
    if warning:
        fid["warning"] = warning
    return fid
