"""The metric models of one evaluation, loaded once, and a note for every metric left out and why."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..dense_face_core.errors import MissingModelError
from ..dense_face_core.id_embedding import find_insightface_recognition
from ..dense_face_core.model_folders import comfyui_models_dirs, default_cache_dir
from .arcface_identity import ArcFaceIdentity
from .clip_score import ClipScorer
from .dlib_identity import DlibIdentity, dlib_models_dir, dlib_unavailable_reason


@dataclass
class Scorers:
    analyzer: object
    arcface: object = None
    clip: object = None
    dlib: object = None
    notes: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)


def _model_roots(args, kind: str) -> list[Path]:
    """Where models of ``kind`` are looked for: ``--models-dir``/kind first, then ComfyUI's models folders."""
    return ([Path(args.models_dir) / kind] if args.models_dir else []) + comfyui_models_dirs(kind)


def _default_arcface(args, demo: bool) -> Path | None:
    """--insightface-model, else the antelopev2 pack in the models folders (the demo's random one in demo mode)."""
    if args.insightface_model:
        return Path(args.insightface_model)
    roots = _model_roots(args, "insightface")
    if demo:
        from ..dense_face_core.random_weights import DEMO_ID_PACK

        roots.insert(0, Path(args.demo_dir or default_cache_dir() / "demo-models") / "insightface")
        try:
            return find_insightface_recognition(DEMO_ID_PACK, roots[:1])
        except MissingModelError:
            pass
    try:
        return find_insightface_recognition("antelopev2", roots)
    except MissingModelError:
        return None


def _add_arcface(sc: Scorers, args, demo: bool) -> None:
    arc = _default_arcface(args, demo)
    if arc is None:
        sc.notes["id_cos"] = "no ArcFace model: give --insightface-model (an .onnx or an insightface pack folder)"
        return
    sc.arcface = ArcFaceIdentity(arc)
    sc.models["arcface"] = str(sc.arcface.path)
    if demo and "RANDOM" in str(sc.arcface.path):
        sc.notes["id_cos"] = "measured with the demo's RANDOM-weight ArcFace stand-in: meaningless"


def _add_clip(sc: Scorers, args) -> None:
    if args.clip:
        sc.clip = ClipScorer(args.clip)
        sc.models["clip"] = str(args.clip)
    else:
        sc.notes["clip_t"] = sc.notes["clip_i"] = "no CLIP model: give --clip (a local transformers CLIPModel folder)"


def _add_dlib(sc: Scorers, args) -> None:
    if args.no_dlib:
        sc.notes["dlib_dist"] = "--no-dlib"
    else:
        reason = dlib_unavailable_reason(args.dlib_models)
        if reason:
            sc.notes["dlib_dist"] = reason
        else:
            sc.dlib = DlibIdentity(args.dlib_models)
            sc.models["dlib"] = str(dlib_models_dir(args.dlib_models))
    if "dlib_dist" in sc.notes:
        sc.notes["dlib_match"] = sc.notes["dlib_dist"]


def load_scorers(args, demo: bool) -> Scorers:
    """The face analyser (always needed) and every metric model that was given or found."""
    from ..dense_face_core.landmarker import FaceAnalyzer, find_landmarker_model

    landmarker = find_landmarker_model(args.landmarker, _model_roots(args, "mediapipe"))
    sc = Scorers(analyzer=FaceAnalyzer(landmarker), models={"landmarker": str(landmarker)})
    _add_arcface(sc, args, demo)
    _add_clip(sc, args)
    _add_dlib(sc, args)
    return sc
