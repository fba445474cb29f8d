"""What a ComfyUI MODEL is, in the core's terms, and whether Dense-Face weights fit it."""
from __future__ import annotations

from ...dense_face_core.face_mode import check_family, family_for_unet


def model_family(model):
    """(family or None, context_dim) of a ComfyUI MODEL."""
    cfg = model.model.model_config.unet_config
    ctx = int(cfg.get("context_dim") or 0)
    return family_for_unet(ctx, cfg.get("model_channels", 0), cfg.get("channel_mult", ()),
                           cfg.get("num_res_blocks", 0)), ctx


def check_model_and_weights(model, dense_face) -> None:
    """Refuse weights made for another base model than ``model``, naming both."""
    family, context_dim = model_family(model)
    check_family(dense_face.weights, context_dim, family)
