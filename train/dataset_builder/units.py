"""Units of work: whole identities packed into shard-sized groups, each with a fingerprint of
its items and settings, so a resumed or split build knows which shards are already done."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .. import shards as S
from .plan import Item


@dataclass
class Unit:
    index: int
    items: list[Item]

    @property
    def name(self) -> str:
        return f"shard-{self.index:06d}"


def make_units(items: list[Item], shard_size: int) -> list[Unit]:
    """Greedy packing of whole identities (sorted) into units of >= ``shard_size`` images;
    an identity larger than ``2 * shard_size`` is cut into ``shard_size`` chunks."""
    groups: dict[str, list[Item]] = {}
    for it in items:
        groups.setdefault(it.identity, []).append(it)
    units, current = [], []
    for ident in sorted(groups):
        g = groups[ident]
        chunks = ([g[i:i + shard_size] for i in range(0, len(g), shard_size)]
                  if len(g) > 2 * shard_size else [g])
        for chunk in chunks:
            current += chunk
            if len(current) >= shard_size:
                units.append(Unit(len(units), current))
                current = []
    if current:
        units.append(Unit(len(units), current))
    return units


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def unit_fingerprint(unit: Unit, settings: dict) -> str:
    payload = json.dumps({"format": S.FORMAT, "settings": settings,
                          "items": [[it.identity, it.rel, it.size, [Path(c).name for c in it.caption_files],
                                     it.extra_captions, it.labels] for it in unit.items]},
                         sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def unit_done(tar_path: Path, fingerprint: str) -> dict | None:
    """The index of a finished shard built from the same items and settings, else None."""
    index = S.load_index(tar_path)
    if index is None or index.get("fingerprint") != fingerprint:
        return None
    try:
        if tar_path.stat().st_size != index.get("tar_bytes"):
            return None
    except FileNotFoundError:
        return None
    return index
