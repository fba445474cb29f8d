"""Face-generation mode nodes: load Dense-Face weights, and patch the model (PC-adapter + identity + pose)."""
from __future__ import annotations

import os

from ..dense_face_core.errors import DenseFaceInputError, MissingModelError, WeightFileError
from ..dense_face_core.face_mode import DenseFaceModel
from ..dense_face_core.face_batch import face_identities
from ..dense_face_core.id_embedding import as_identities, check_id_model
from ..dense_face_core.identity import INIT_WORD, PLACEHOLDER_TOKEN
from ..dense_face_core.official_checkpoint import ID_NETWORK_SUFFIX
from ..dense_face_core.weight_file import load_weight_file
from .comfy_side import CATEGORY
from .comfy_side.folders import filenames, full_path
from .comfy_side.identity_token import encode_with_identities
from .comfy_side.model_cache import FileModelCache
from .comfy_side.model_checks import check_model_and_weights
from .comfy_side.pose_control import attach_pose, controlnet_for
from .comfy_side.query_bias import install_query_biases

DEFAULT_PROMPT = f"A close-up photo of {PLACEHOLDER_TOKEN} ."
_weights = FileModelCache()


def weight_choices() -> list[str]:
    """Dense-Face weight files: not the identity networks beside them, not the embeddings folder."""
    return [f for f in filenames("dense_face") if not f.endswith(ID_NETWORK_SUFFIX)
            and not f.replace(os.sep, "/").startswith("embeddings/")]


class DenseFaceLoader:
    """A Dense-Face weight file from ComfyUI/models/dense_face -> DENSE_FACE."""

    SEARCH_ALIASES = ["dense face", "face model loader"]  # node search in ComfyUI 0.38+

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"weights": (weight_choices(), {"tooltip": "Dense-Face .safetensors in "
                                                                   "ComfyUI/models/dense_face/."})},
            "optional": {"model": ("MODEL", {"tooltip": "Optional: check now that the weights fit this base model."})},
        }

    RETURN_TYPES = ("DENSE_FACE",)
    RETURN_NAMES = ("dense_face",)
    OUTPUT_TOOLTIPS = ("The loaded weights (pose branch, PC-adapter, identity projector, dense head if any).",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Loads Dense-Face weights (pose branch, PC-adapter, identity projector, dense head); "
                   "refuses corrupted files, pickles, missing tensors and weights for another base model.")

    def load(self, weights, model=None):
        path = full_path("dense_face", weights)
        if path is None:
            raise MissingModelError(f"Dense-Face weights '{weights}' not found; put the .safetensors file in "
                                    f"ComfyUI/models/dense_face/")
        dense_face = _weights.get(path, lambda: DenseFaceModel(load_weight_file(path)))
        if model is not None:
            check_model_and_weights(model, dense_face)
        return (dense_face,)


class DenseFaceApplyPCAdapter:
    """ApplyPCAdapter: turn the base model into face-generation mode."""

    SEARCH_ALIASES = ["identity", "face swap", "personalization", "head pose"]  # node search in ComfyUI 0.38+

    @classmethod
    def INPUT_TYPES(cls):
        strength = {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.01}
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The SD1.5 base model the weights were trained on (the authors': "
                                               "DenseFace_face_generation_base.safetensors)."}),
                "clip": ("CLIP", {"tooltip": "That checkpoint's CLIP (encodes the face prompt with the identity "
                                             "token)."}),
                "dense_face": ("DENSE_FACE", {"tooltip": "From Dense-Face Loader."}),
                "face_id": ("FACE_ID", {"tooltip": "From Dense-Face ID Encoder (must match the weights' identity network)."}),
                "pose_image": ("IMAGE", {"tooltip": "From Dense-Face Pose Image (256x256 for the authors' setting); "
                                                    "a batch gives each latent of the batch its own pose."}),
                "negative": ("CONDITIONING", {"tooltip": "The authors use an empty prompt."}),
                "prompt": ("STRING", {"multiline": True, "default": DEFAULT_PROMPT, "tooltip":
                           f"Face-generation prompt; the word '{PLACEHOLDER_TOKEN}' (spaces around it) becomes "
                           f"the identity token ('{INIT_WORD}' + the projected identity). When not empty it "
                           f"replaces the positive conditioning's text; leave empty to keep the positive."}),
                "adapter_strength": ("FLOAT", dict(strength, tooltip="Scales every PC-adapter term (q/k/v deltas "
                                                                     "and the identity query bias); 0 = base attention.")),
                "identity_strength": ("FLOAT", dict(strength, tooltip="Scales the identity token's offset.")),
                "pose_strength": ("FLOAT", dict(strength, tooltip="Scales the pose branch (ControlNet strength).")),
                "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001,
                                            "tooltip": "Pose branch and identity query bias act from here..."}),
                "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001,
                                          "tooltip": "...to here (the folded q/k/v deltas act on every step)."}),
            },
            "optional": {
                "positive": ("CONDITIONING", {"tooltip": "Used only when the prompt is empty (then without an "
                                                         "identity token)."}),
                "face_to_identity": ("STRING", {"default": "", "tooltip":
                                     "Several faces (a pose image per face) and several identities: which identity "
                                     "each face gets, e.g. '0:2, 1:0' (face:identity). Empty: face i gets identity "
                                     "i, the last identity repeated; one identity goes to every face."}),
            },
        }

    RETURN_TYPES = ("MODEL", "CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("model", "positive", "negative")
    OUTPUT_TOOLTIPS = ("A patched clone of the model (face-generation mode); the input model is untouched.",
                       "The face prompt with the identity token, and the pose branch attached.",
                       "The negative conditioning with the pose branch attached.")
    FUNCTION = "apply"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Face-generation mode: folds the PC-adapter into a clone of the model, adds the identity "
                   "query bias and the identity token, and attaches the pose branch like a ControlNet.")

    def apply(self, model, clip, dense_face, face_id, pose_image, negative, prompt=DEFAULT_PROMPT,
              adapter_strength=1.0, identity_strength=1.0, pose_strength=1.0, start_percent=0.0, end_percent=1.0,
              positive=None, face_to_identity=""):
        if not isinstance(dense_face, DenseFaceModel):
            raise DenseFaceInputError("dense_face: connect the output of Dense-Face Loader")
        if start_percent > end_percent:
            raise DenseFaceInputError(f"start_percent ({start_percent}) must not exceed end_percent ({end_percent})")
        if not prompt.strip() and positive is None:
            raise DenseFaceInputError("prompt is empty and no positive conditioning is connected: write the "
                                      f"face prompt (e.g. '{DEFAULT_PROMPT}') or connect positive")
        check_model_and_weights(model, dense_face)
        identities = as_identities(face_id)
        for ident in identities:
            check_id_model(ident.model, dense_face.id_model)
        rows = face_identities(face_to_identity, int(pose_image.shape[0]), len(identities))
        # one identity for every face: one row, broadcast over any latent batch (the single-face graphs)
        embeddings = [identities[i].embedding for i in (rows[:1] if len(set(rows)) == 1 else rows)]
        patched = _face_mode_model(model, dense_face, embeddings, adapter_strength, start_percent, end_percent)
        if prompt.strip():
            offsets = [identity_strength * dense_face.identity_offset(e) for e in embeddings] \
                if identity_strength != 0.0 else [None]
            meta = dense_face.weights.metadata
            positive = encode_with_identities(clip, prompt, meta.placeholder_token or PLACEHOLDER_TOKEN,
                                              meta.init_word or INIT_WORD, offsets)
        if pose_strength != 0.0:
            positive, negative = attach_pose(positive, negative, controlnet_for(dense_face), pose_image,
                                             pose_strength, start_percent, end_percent)
        return (patched, positive, negative)


def _face_mode_model(model, dense_face, embeddings, strength, start_percent, end_percent):
    """A clone with the folded PC-adapter and the identity query bias (one row per face, or one for all)."""
    import torch

    patched = model.clone()
    if strength == 0.0:
        return patched
    deltas = {f"diffusion_model.{k}": (v,) for k, v in dense_face.folded_weight_parts().items()}
    added = patched.add_patches(deltas, strength * dense_face.delta)  # ComfyUI multiplies in float32
    if len(added) != len(deltas):
        missing = sorted(set(deltas) - set(added))[:3]
        raise WeightFileError(f"the MODEL lacks {len(deltas) - len(added)} attention weights the adapter "
                              f"patches (e.g. {missing}); is it an SD1.5/SD2.1 UNet?")
    per_face = [dense_face.query_biases(e) for e in embeddings]
    biases = {key: torch.cat([b[key] for b in per_face], dim=0) for key in per_face[0]}
    install_query_biases(patched, biases, strength, _sigma_range(patched, start_percent, end_percent))
    return patched


def _sigma_range(model, start_percent: float, end_percent: float):
    """The sigmas bounding the identity query bias; None for the whole run (no sigma needed per call)."""
    if start_percent <= 0.0 and end_percent >= 1.0:
        return None
    sampling = model.get_model_object("model_sampling") if hasattr(model, "get_model_object") \
        else model.model.model_sampling
    return (float(sampling.percent_to_sigma(start_percent)), float(sampling.percent_to_sigma(end_percent)))


NODE_CLASS_MAPPINGS = {
    "DenseFaceLoader": DenseFaceLoader,
    "DenseFaceApplyPCAdapter": DenseFaceApplyPCAdapter,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DenseFaceLoader": "Dense-Face Loader",
    "DenseFaceApplyPCAdapter": "Dense-Face Apply PC-Adapter (face mode)",
}
