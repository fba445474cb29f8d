"""A finished unit -> its shard: duplicates dropped, unique WebDataset keys, the tar written
first and its index (which marks the shard complete) after, both atomically."""
from __future__ import annotations

import collections
import json
import re
from pathlib import Path

from .. import shards as S
from .plan import Item
from .units import Unit, sha256_file

_KEY_RE = re.compile(r"[^\w\-]+", re.UNICODE)


def _slug(text: str) -> str:
    return _KEY_RE.sub("_", text).strip("_") or "x"


def sample_key(item: Item) -> str:
    """WebDataset key ``<identity>/<image path in the identity, no extension>``: no dots."""
    rel = Path(item.rel)
    parts = rel.with_suffix("").parts
    if item.identity in parts:
        parts = parts[parts.index(item.identity) + 1:]
    if parts and parts[0] == "images":
        parts = parts[1:]
    return f"{_slug(item.identity)}/{_slug('_'.join(parts) or rel.stem)}"


def _unique_key(item: Item, keys: set[str]) -> str:
    key = base = sample_key(item)
    n = 2
    while key in keys:
        key, n = f"{base}-{n}", n + 1
    keys.add(key)
    return key


def _collect(unit: Unit, results: list[dict]):
    """(samples, per-item records, counts, caption sources, downscaled) of one unit; a repeat of
    an identity's content (same hash) becomes a ``duplicate`` record."""
    seen: dict[tuple[str, str], str] = {}
    keys: set[str] = set()
    samples, records = [], []
    counts, caption_sources = collections.Counter(), collections.Counter()
    downscaled = 0
    for item, res in zip(unit.items, results):
        rec = {"source": item.rel, "identity": item.identity, "outcome": res["outcome"]}
        sha = res.get("sha1")
        if sha is not None:
            first = seen.get((item.identity, sha))
            if first is not None:
                rec.update(outcome="duplicate", duplicate_of=first)
                res = {"outcome": "duplicate"}
            else:
                seen[(item.identity, sha)] = item.rel
        if res["outcome"] == "ok":
            key = _unique_key(item, keys)
            meta = dict(res["meta"], key=key)
            files = dict(res["files"])
            files["meta.json"] = json.dumps(meta, sort_keys=True, separators=(",", ":"),
                                            ensure_ascii=False).encode("utf-8")
            samples.append((key, files))
            rec["key"] = key
            caption_sources[meta["caption_source"].split(":")[0]] += 1
            downscaled += bool(res.get("downscaled"))
        elif res.get("reason"):
            rec["reason"] = res["reason"]
        counts[rec["outcome"]] += 1
        records.append(rec)
    return samples, records, counts, caption_sources, downscaled


def finish_unit(unit: Unit, results: list[dict], shard_dir: Path, fingerprint: str,
                embedding_model: str | None) -> dict:
    """Deduplicate (content hash, per identity), write the tar then its index, atomically."""
    samples, records, counts, caption_sources, downscaled = _collect(unit, results)
    tar_path = shard_dir / f"{unit.name}.tar"
    offsets = S.write_shard(tar_path, samples)
    index = {
        "format": S.FORMAT,
        "unit": unit.index,
        "shard": tar_path.name,
        "fingerprint": fingerprint,
        "tar_bytes": tar_path.stat().st_size,
        "tar_sha256": sha256_file(tar_path),
        "embedding_model": embedding_model,
        "identities": sorted({it.identity for it in unit.items}),
        "counts": dict(sorted(counts.items())),
        "caption_sources": dict(sorted(caption_sources.items())),
        "downscaled": downscaled,
        "samples": [{"key": k, "identity": json.loads(f["meta.json"])["identity"], "offsets": offsets[k]}
                    for k, f in samples],
        "items": records,
    }
    S.write_json_atomic(S.index_path(tar_path), index)
    return index
