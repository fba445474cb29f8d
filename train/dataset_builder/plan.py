"""What to build: the input scanned into a sorted list of images (folders of identities, or
the authors' CSV layout), with the caption files and labels each image brings."""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ...dense_face_core.errors import DenseFaceInputError
from ...dense_face_core.images import is_image_file


@dataclass
class Item:
    identity: str
    path: str          # absolute
    rel: str           # relative to the input root, posix
    size: int
    caption_files: list[str] = field(default_factory=list)
    extra_captions: list[str] = field(default_factory=list)
    labels: dict = field(default_factory=dict)


@dataclass
class Plan:
    layout: str
    items: list[Item]
    identities: list[str]
    empty_identities: list[str]
    missing: list[str]
    loose_files: list[str]


class _Listings:
    """Directory listings cached for one scan: caption look-ups cost no stat per image."""

    def __init__(self):
        self._cache: dict[str, frozenset[str]] = {}

    def names(self, folder: Path) -> frozenset[str]:
        key = str(folder)
        got = self._cache.get(key)
        if got is None:
            try:
                got = frozenset(os.listdir(folder))
            except OSError:
                got = frozenset()
            self._cache[key] = got
        return got


def _caption_candidates(img: Path, listings: _Listings | None = None) -> list[str]:
    """Caption files an image may have: the authors' ``captions/<stem>.json`` beside its
    ``images/`` folder, or ``<stem>.json`` / ``<stem>.txt`` / ``captions/<stem>.*`` beside it."""
    listings = listings or _Listings()
    d, stem = img.parent, img.stem
    folders = [d, d / "captions"] + ([d.parent / "captions"] if d.name == "images" else [])
    found = []
    for folder in folders:
        names = listings.names(folder)
        found += [str(folder / n) for n in (f"{stem}.json", f"{stem}.txt") if n in names]
    return found


def _walk_images(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "captions")
        out += [Path(dirpath) / f for f in filenames if is_image_file(Path(f))]
    return sorted(out)


def _identity_of_csv_path(face_file: str) -> str:
    p = Path(face_file)
    return p.parent.parent.name if p.parent.name == "images" and p.parent.parent.name else p.parent.name


def _find_csvs(root: Path) -> list[Path]:
    if root.is_file() and root.suffix.lower() == ".csv":
        return [root]
    found = []
    for p in sorted(root.glob("*.csv")):
        try:
            with open(p, newline="", encoding="utf-8", errors="replace") as fh:
                header = next(csv.reader(fh), [])
        except OSError:
            continue
        if "face_file" in header:
            found.append(p)
    return found


def _parse_angles(text: str) -> list[float] | None:
    try:
        vals = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:[eE]-?\d+)?", text)]
    except ValueError:
        return None
    return vals if len(vals) == 3 else None


def scan_input(root: Path) -> Plan:
    """List the work: the authors' CSV layout if ``root`` is (or holds) such a CSV, else
    one sub-folder per identity (an ``images/`` sub-folder, when present, is the only one read)."""
    root = Path(root)
    if not root.exists():
        raise DenseFaceInputError(f"--input {root} does not exist")
    csvs = _find_csvs(root)
    if csvs:
        return _scan_csv(csvs)
    if not root.is_dir():
        raise DenseFaceInputError(f"--input {root}: expected a folder of identity folders or the "
                                  "authors' CSV (with a face_file column)")
    return _scan_folders(root)


def _scan_folders(root: Path) -> Plan:
    items, identities, empty, loose = [], [], [], []
    listings = _Listings()
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        p = Path(entry.path)
        if entry.is_dir(follow_symlinks=True):
            identities.append(entry.name)
            folder = p / "images" if (p / "images").is_dir() else p
            imgs = _walk_images(folder)
            if not imgs:
                empty.append(entry.name)
            for img in imgs:
                try:
                    size = img.stat().st_size
                except OSError:
                    size = -1
                items.append(Item(entry.name, str(img), img.relative_to(root).as_posix(), size,
                                  _caption_candidates(img, listings)))
        elif is_image_file(p):
            loose.append(entry.name)
    return Plan("folders", items, identities, empty, [], loose)


def _scan_csv(csvs: list[Path]) -> Plan:
    items, missing, seen = [], [], set()
    listings = _Listings()
    identities: dict[str, int] = {}
    for csv_path in csvs:
        base = csv_path.parent
        with open(csv_path, newline="", encoding="utf-8", errors="replace") as fh:
            for row in csv.DictReader(fh):
                face_file = (row.get("face_file") or "").strip()
                if not face_file:
                    continue
                img = Path(os.path.normpath(base / face_file))
                rel = Path(os.path.relpath(img, base)).as_posix()
                if rel in seen:
                    continue
                seen.add(rel)
                ident = _identity_of_csv_path(face_file) or str(row.get("subject_id", "unknown"))
                identities.setdefault(ident, 0)
                if not img.is_file():
                    missing.append(rel)
                    continue
                identities[ident] += 1
                items.append(_csv_item(row, base, img, rel, ident, listings))
    items.sort(key=lambda it: (it.identity, it.rel))
    idents = sorted(identities)
    empty = [i for i in idents if identities[i] == 0]
    return Plan("csv", items, idents, empty, sorted(missing), [])


def _csv_item(row: dict, base: Path, img: Path, rel: str, ident: str, listings: _Listings) -> Item:
    """One CSV row: its caption file first, the ones found beside the image after, its labels."""
    caps = []
    if row.get("caption_file"):
        cf = base / row["caption_file"].strip()
        if cf.is_file():
            caps.append(str(cf))
    caps += [c for c in _caption_candidates(img, listings) if c not in caps]
    labels = {}
    if row.get("head_pose"):
        ang = _parse_angles(row["head_pose"])
        if ang:
            labels["head_pose"] = dict(zip(("pitch", "yaw", "roll"), ang))
    if row.get("subject_id"):
        labels["subject_id"] = row["subject_id"].strip()
    extra = [row["caption"]] if row.get("caption") else []
    return Item(ident, str(img), rel, img.stat().st_size, caps, extra, labels)
