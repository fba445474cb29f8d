"""The models of the builder's model stages (restoration, ArcFace, captioners, CLIP), by stage key.

One definition of how a model is loaded, shared by the local engine's worker processes
(which hold all of them) and Ray's actors (one model each), so both run the same network
with the same settings: CPU inference pinned to ``model_threads`` threads, the device named
by the caller.
"""
from __future__ import annotations

RESTORE, ARCFACE, CLIP = "restore", "arcface", "clip"
CAPTION_PREFIX = "caption:"
DEFAULT_MODEL_THREADS = 1


def captioner_paths(cfg: dict) -> list[str]:
    """The ``--captioner`` folders of a worker config (one path or a list)."""
    got = cfg.get("captioners")
    if got is None:
        got = cfg.get("captioner")
    if not got:
        return []
    return [got] if isinstance(got, str) else list(got)


def model_keys(cfg: dict) -> list[str]:
    """The model stages a config asks for, in pipeline order."""
    keys = [RESTORE] if cfg.get("restore_model") else []
    keys += [ARCFACE] if cfg.get("arcface_onnx") else []
    keys += [f"{CAPTION_PREFIX}{i}" for i in range(len(captioner_paths(cfg)))]
    keys += [CLIP] if cfg.get("clip_model") else []
    return keys


def load_model(cfg: dict, key: str, device: str):
    """The model of one stage, on ``device`` (``cpu`` or ``cuda``)."""
    threads = int(cfg.get("model_threads") or DEFAULT_MODEL_THREADS)
    if key == RESTORE:
        from ..restoration import OnnxRestorer

        return OnnxRestorer(cfg["restore_model"], cfg.get("restore_fidelity", 0.5), device, threads)
    if key == ARCFACE:
        from ...dense_face_core.id_embedding import ArcFaceEncoder

        import onnxruntime as ort

        providers = [p for p in (["CUDAExecutionProvider"] if device == "cuda" else []) + ["CPUExecutionProvider"]
                     if p in ort.get_available_providers()]
        return ArcFaceEncoder(cfg["arcface_onnx"], cfg["embedding_model"], providers=providers)
    from ..caption_models import ClipScorer, LocalCaptioner, configure_torch_threads

    if device == "cpu":
        configure_torch_threads(threads)
    if key == CLIP:
        return ClipScorer(cfg["clip_model"], device)
    if key.startswith(CAPTION_PREFIX):
        return LocalCaptioner(captioner_paths(cfg)[int(key[len(CAPTION_PREFIX):])], device=device)
    raise KeyError(key)


class ModelSet:
    """The models of one process, loaded on first use and kept."""

    def __init__(self, cfg: dict, device: str):
        self.cfg, self.device = cfg, device
        self._models: dict[str, object] = {}

    def get(self, key: str):
        if key not in self._models:
            self._models[key] = load_model(self.cfg, key, self.device)
        return self._models[key]

    def load_all(self) -> "ModelSet":
        for key in model_keys(self.cfg):
            self.get(key)
        return self
