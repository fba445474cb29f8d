"""``manifest.json``: the build's totals, failures grouped by reason with examples, and the
list of finished shards, rewritten from the shard indexes whenever it is written."""
from __future__ import annotations

import collections
from pathlib import Path

from .. import shards as S
from .plan import Plan
from .units import Unit

OUTCOMES = ("ok", "no_face", "too_small", "unreadable", "grayscale", "duplicate", "too_large",
            "missing", "error", "crashed")
MAX_EXAMPLES = 5
DUPLICATE = "duplicate: same content as an earlier image of the identity"

FIELD_DOC = {
    "crop_<size>.jpg": "aligned face crop (dense_face_core.crop), RGB JPEG q95",
    "landmarks.npy": "(478, 3) float32 MediaPipe landmarks normalised to the crop square",
    "parsing.png": "256x256 uint8 class ids, dense_targets.PARSING_CLASSES",
    "depth.png": "256x256 uint16: 0 off the face, else z = (v - 32768) / 16384 (crop widths)",
    "embedding.npy": "(512,) float32 unit ArcFace embedding (only with --insightface-model)",
    "meta.json": "identity, source, pose {pitch,yaw,roll} of the face in the crop (degrees, "
                 "6DRepNet convention), source_pose, crop matrix, caption with '*', labels",
}


class _Tally:
    """Totals over the finished shards' indexes."""

    def __init__(self):
        self.counts = collections.Counter({k: 0 for k in OUTCOMES})
        self.failures: dict[str, dict] = {}
        self.caption_sources = collections.Counter()
        self.per_identity = collections.Counter()
        self.shards: list[dict] = []
        self.pending: list[str] = []
        self.downscaled = 0

    def failure(self, reason: str, example: str) -> None:
        f = self.failures.setdefault(reason, {"count": 0, "examples": []})
        f["count"] += 1
        if len(f["examples"]) < MAX_EXAMPLES:
            f["examples"].append(example)

    def add_index(self, idx: dict) -> None:
        self.counts.update(idx["counts"])
        self.caption_sources.update(idx.get("caption_sources", {}))
        self.downscaled += idx.get("downscaled", 0)
        for rec in idx["items"]:
            if rec["outcome"] == "ok":
                self.per_identity[rec["identity"]] += 1
            elif rec["outcome"] != "duplicate":
                self.failure(f"{rec['outcome']}: {rec.get('reason', '')}".rstrip(": "), rec["source"])
            else:
                self.failure(DUPLICATE, f"{rec['source']} = {rec.get('duplicate_of')}")
        self.shards.append({"file": f"shards/{idx['shard']}", "samples": len(idx["samples"]),
                            "identities": len({s["identity"] for s in idx["samples"]}),
                            "bytes": idx["tar_bytes"], "sha256": idx["tar_sha256"]})

    def add_plan(self, plan: Plan) -> None:
        """What the scan already knows failed: CSV rows without a file, empty folders, loose images."""
        self.counts["missing"] += len(plan.missing)
        for reason, found in (("missing: listed in the CSV but not on disk", plan.missing),
                              ("empty_identity: identity folder without images", plan.empty_identities),
                              ("no_identity: image directly in the input folder (put it in a person's folder)",
                               plan.loose_files)):
            if found:
                self.failures[reason] = {"count": len(found), "examples": found[:MAX_EXAMPLES]}
        self.counts["empty_identity"] = len(plan.empty_identities)
        self.counts["no_identity"] = len(plan.loose_files)


def _tally(plan: Plan, units: list[Unit], indexes: dict[int, dict]) -> _Tally:
    tally = _Tally()
    for u in units:
        idx = indexes.get(u.index)
        if idx is None:
            tally.pending.append(u.name)
        else:
            tally.add_index(idx)
    tally.add_plan(plan)
    return tally


def _embeddings(settings: dict) -> dict:
    if settings.get("embedding_model") is not None:
        return {"present": True, "model": settings["embedding_model"], "dim": 512}
    return {"present": False, "model": None,
            "note": "built without --insightface-model: samples carry no identity "
                    "embedding; the trainer needs one (rebuild with the model)"}


def write_manifest(out: Path, plan: Plan, units: list[Unit], indexes: dict[int, dict],
                   settings: dict, args_summary: dict) -> dict:
    t = _tally(plan, units, indexes)
    manifest = {
        "format": S.FORMAT,
        "complete": not t.pending,
        "layout": plan.layout,
        "input": args_summary["input"],
        "settings": settings,
        "run": args_summary,
        "counts": dict(t.counts),
        "images_planned": len(plan.items) + len(plan.missing),
        "samples": t.counts["ok"],
        "identities": {"total": len(plan.identities), "with_samples": len(t.per_identity),
                       "with_one_sample": sum(1 for v in t.per_identity.values() if v == 1),
                       "empty": len(plan.empty_identities)},
        "failures": dict(sorted(t.failures.items(), key=lambda kv: (-kv[1]["count"], kv[0]))),
        "caption_sources": dict(sorted(t.caption_sources.items())),
        "downscaled_images": t.downscaled,
        "embeddings": _embeddings(settings),
        "shards": t.shards,
        "pending_units": t.pending,
        "fields": FIELD_DOC,
        "depth_encoding": {"zero": S.DEPTH_ZERO, "scale": S.DEPTH_SCALE, "off_face": 0,
                           "units": "MediaPipe z in crop widths, smaller = nearer"},
        "target_size": S.TARGET_SIZE,
    }
    S.write_json_atomic(out / "manifest.json", manifest)
    return manifest
