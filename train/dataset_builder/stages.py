"""The pipeline one chunk goes through, the same in both engines:

    analyze (CPU: MediaPipe, crops) -> [restore (model) ->] annotate (CPU: targets, encoding)
    -> [embed (ArcFace)] -> [caption (one stage per captioner)] -> [score (CLIP)] -> finish

The local engine runs all of it in each worker process (:func:`process_chunk`); Ray runs each
CPU run of stages as tasks and each model stage as an actor pool, on the same chunks and with
these same functions. States drop what no later stage reads, so little travels between stages.
"""
from __future__ import annotations

from dataclasses import dataclass

from .model_set import ARCFACE, CAPTION_PREFIX, CLIP, RESTORE, ModelSet, captioner_paths
from .model_stages import MODEL_STAGES
from .worker import analyze_item, annotate_state, finish_state

_W: dict = {}


@dataclass(frozen=True)
class Stage:
    name: str                 # analyze, restore, annotate, embed, caption, score
    model: str | None = None  # the ModelSet key of a model stage; None for a CPU stage


def plan_stages(cfg: dict) -> list[Stage]:
    stages = [Stage("analyze")]
    if cfg.get("restore_model"):
        stages.append(Stage("restore", RESTORE))
    stages.append(Stage("annotate"))
    if cfg.get("arcface_onnx"):
        stages.append(Stage("embed", ARCFACE))
    stages += [Stage("caption", f"{CAPTION_PREFIX}{i}") for i in range(len(captioner_paths(cfg)))]
    if cfg.get("clip_model"):
        stages.append(Stage("score", CLIP))
    return stages


def stage_groups(stages: list[Stage]) -> list[list[Stage]]:
    """Consecutive CPU stages together (one Ray task), each model stage alone (one actor pool)."""
    groups: list[list[Stage]] = []
    for st in stages:
        if st.model is None and groups and groups[-1][-1].model is None:
            groups[-1].append(st)
        else:
            groups.append([st])
    return groups


def prune(states: list[dict], later: list[Stage]) -> None:
    """Drop the images (crops, the aligned face) that no later stage reads."""
    names = {st.name for st in later}
    keep_crops = bool(names & {"restore", "annotate", "caption", "score"})
    for s in states:
        if not keep_crops:
            s.pop("crops", None)
        elif "annotate" not in names and "restore" not in names and "crops" in s:
            big = max(s["crops"])
            s["crops"] = {big: s["crops"][big]}  # captioners and CLIP look at the largest crop only
        if "embed" not in names:
            s.pop("arcface_input", None)


def run_stages(stages: list[Stage], states: list, cfg: dict, analyzer, models, later=()) -> list[dict]:
    """Run ``stages`` on a chunk (``states`` may start as its Items); ``later`` are the stages after."""
    for i, st in enumerate(stages):
        if st.name == "analyze":
            states = [analyze_item(it, cfg, analyzer) for it in states]
        elif st.name == "annotate":
            for s in states:
                annotate_state(s, cfg, analyzer)
        else:
            MODEL_STAGES[st.name](states, models.get(st.model))
        prune(states, list(stages[i + 1:]) + list(later))
    return states


# ============================================================== one process's models

def _init_worker(cfg: dict, with_models: bool = True) -> None:
    """Per process: one FaceAnalyzer (+ every model of the config, loaded now so that a bad
    model file fails the build at once); single-threaded OpenCV when several workers share cores."""
    import cv2

    from ...dense_face_core.landmarker import FaceAnalyzer

    if cfg.get("workers", 1) > 1:
        cv2.setNumThreads(1)
    _close_worker()
    _W["cfg"] = cfg
    _W["analyzer"] = FaceAnalyzer(cfg["landmarker"], max_faces=4)
    _W["models"] = ModelSet(cfg, model_device(cfg)).load_all() if with_models else None


def model_device(cfg: dict) -> str:
    """Where this process runs its models: ``--device``, or for ``auto`` a GPU when there is one. Asks
    torch only when a torch model (captioner, CLIP) is configured (importing it costs a worker ~1.5 s),
    onnxruntime for the ONNX ones, and nobody without models."""
    device = cfg.get("device") or "auto"
    if device != "auto":
        return str(device)
    if captioner_paths(cfg) or cfg.get("clip_model"):
        from ..caption_models import resolve_device

        return resolve_device(device)
    if cfg.get("restore_model") or cfg.get("arcface_onnx"):
        import onnxruntime as ort

        return "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
    return "cpu"


def _close_worker() -> None:
    a = _W.get("analyzer")
    if a is not None:
        a.close()
    _W.clear()


def ensure_cpu_worker(cfg: dict) -> None:
    """A Ray task's process: the analyzer for ``cfg``, kept between tasks (models live in actors)."""
    if _W.get("cfg") != cfg:
        _init_worker(cfg, with_models=False)


def process_chunk(chunk) -> list[dict]:
    """The local engine's work item: every stage on one chunk, in this worker process."""
    cfg = _W["cfg"]
    states = run_stages(plan_stages(cfg), list(chunk.items), cfg, _W["analyzer"], _W["models"])
    return [finish_state(s, cfg) for s in states]


def process_item(item) -> dict:
    """One image through the whole pipeline -> {outcome, reason, sha1[, files, meta]}; never raises."""
    from .chunks import Chunk

    return process_chunk(Chunk(0, 0, [item]))[0]
