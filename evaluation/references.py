"""Per identity, computed once: the reference photo's ArcFace / dlib / CLIP embeddings and the held-out mean."""
from __future__ import annotations

from pathlib import Path

from .arcface_identity import mean_embedding
from .messages import log
from .photos import face_in_file, list_images
from .scorers import Scorers


class ReferenceCache:
    """Per identity: the reference photo, its ArcFace / dlib / CLIP embeddings, the held-out mean embedding."""

    def __init__(self, scorers: Scorers, identities_root: Path | None):
        self.sc = scorers
        self.root = identities_root
        self.cache: dict = {}

    def get(self, run_dir: Path, summary: dict) -> dict:
        ev = summary["eval"]
        key = (ev["identity"], ev["reference"])
        if key not in self.cache:
            ref_path = self._reference_path(run_dir, summary)
            entry = {"path": ref_path, "arcface": None, "heldout": None, "dlib": None, "clip": None}
            if ref_path is not None and ref_path.is_file():
                self._embed_reference(entry, ref_path, ev["identity"])
            if self.sc.arcface and self.root is not None:
                entry["heldout"] = self._heldout(ev)
            self.cache[key] = entry
        return self.cache[key]

    def _reference_path(self, run_dir: Path, summary: dict) -> Path | None:
        """The run's own copy of the reference photo, else the photo in --identities."""
        ref_path = None
        if summary.get("inputs", {}).get("reference"):
            ref_path = run_dir / summary["inputs"]["reference"]
        if (ref_path is None or not ref_path.is_file()) and self.root is not None:
            ref_path = self.root / summary["eval"]["reference"]
        return ref_path

    def _embed_reference(self, entry: dict, ref_path: Path, identity: str) -> None:
        img, face = face_in_file(self.sc.analyzer, ref_path)
        if face is None:
            log(f"eval: no face in the reference photo {ref_path}; identity metrics of {identity} skipped")
        else:
            if self.sc.arcface:
                entry["arcface"] = self.sc.arcface.embed(img, face)
            if self.sc.dlib:
                entry["dlib"] = self.sc.dlib.descriptor(img, face.box)
        if self.sc.clip:
            entry["clip"] = self.sc.clip.image_features([img])[0]

    def _heldout(self, ev: dict):
        """Mean ArcFace embedding of the identity's photos other than the reference (None without any)."""
        folder = self.root / ev["identity"]
        ref_name = Path(ev["reference"]).name
        others = [p for p in list_images(folder) if p.name != ref_name] if folder.is_dir() else []
        return mean_embedding(self.sc.arcface.embed_photos(self.sc.analyzer, others))
