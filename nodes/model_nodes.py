"""Face-generation mode nodes: load weights, patch the model (PC-adapter + identity + pose), predict annotations."""
from __future__ import annotations

import os
import threading

import numpy as np
import torch

import comfy.model_management
import comfy.sample
import comfy.samplers

from ..dense_face_core.annotation_vis import depth_image, draw_landmarks, parsing_image
from ..dense_face_core.dense_head import FEATURE_TAPS
from ..dense_face_core.dense_prediction import decode_prediction
from ..dense_face_core.errors import DenseFaceInputError, MissingModelError, WeightFileError
from ..dense_face_core.face_mode import DenseFaceModel, check_family
from ..dense_face_core.id_embedding import FaceID, check_id_model
from ..dense_face_core.identity import INIT_WORD, PLACEHOLDER_TOKEN
from ..dense_face_core.images import to_rgb_uint8
from ..dense_face_core.weight_file import load_weight_file
from .comfy_glue import CATEGORY, image_to_numpy, numpy_to_image, numpy_to_mask
from .comfy_patches import (attach_pose, encode_with_identity, install_query_biases, model_family,
                            pose_controlnet)
from .id_nodes import IR_SE50_SUFFIX

DEFAULT_PROMPT = f"A close-up photo of {PLACEHOLDER_TOKEN} ."
_lock = threading.Lock()
_loaded: dict = {}


def weight_choices() -> list[str]:
    import folder_paths

    try:
        files = folder_paths.get_filename_list("dense_face")
    except KeyError:
        files = []
    return [f for f in files if not f.endswith(IR_SE50_SUFFIX)]


def _check_model_and_weights(model, dense_face: DenseFaceModel) -> None:
    family, context_dim = model_family(model)
    check_family(dense_face.weights, context_dim, family)


class DenseFaceLoader:
    """A Dense-Face weight file from ComfyUI/models/dense_face -> DENSE_FACE."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"weights": (weight_choices(), {"tooltip": "Dense-Face .safetensors in "
                                                                   "ComfyUI/models/dense_face/."})},
            "optional": {"model": ("MODEL", {"tooltip": "Optional: check now that the weights fit this base model."})},
        }

    RETURN_TYPES = ("DENSE_FACE",)
    RETURN_NAMES = ("dense_face",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Loads Dense-Face weights (pose branch, PC-adapter, identity projector, dense head); "
                   "refuses corrupted files, pickles, missing tensors and weights for another base model.")

    def load(self, weights, model=None):
        import folder_paths

        path = folder_paths.get_full_path("dense_face", weights)
        if path is None:
            raise MissingModelError(f"Dense-Face weights '{weights}' not found; put the .safetensors file in "
                                    f"ComfyUI/models/dense_face/")
        stat = os.stat(path)
        key = (path, stat.st_mtime_ns, stat.st_size)
        with _lock:
            dense_face = _loaded.get(key)
            if dense_face is None:
                dense_face = DenseFaceModel(load_weight_file(path))
                _loaded.clear()  # keep one file in memory
                _loaded[key] = dense_face
        if model is not None:
            _check_model_and_weights(model, dense_face)
        return (dense_face,)


class DenseFaceApplyPCAdapter:
    """ApplyPCAdapter: turn the base model into face-generation mode."""

    @classmethod
    def INPUT_TYPES(cls):
        strength = {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.01}
        return {
            "required": {
                "model": ("MODEL",),
                "clip": ("CLIP",),
                "dense_face": ("DENSE_FACE",),
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
            },
        }

    RETURN_TYPES = ("MODEL", "CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("model", "positive", "negative")
    FUNCTION = "apply"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Face-generation mode: folds the PC-adapter into a clone of the model, adds the identity "
                   "query bias and the identity token, and attaches the pose branch like a ControlNet.")

    def apply(self, model, clip, dense_face, face_id, pose_image, negative, prompt=DEFAULT_PROMPT,
              adapter_strength=1.0, identity_strength=1.0, pose_strength=1.0, start_percent=0.0, end_percent=1.0,
              positive=None):
        if not isinstance(dense_face, DenseFaceModel):
            raise DenseFaceInputError("dense_face: connect the output of Dense-Face Loader")
        if not isinstance(face_id, FaceID):
            raise DenseFaceInputError("face_id: connect the output of Dense-Face ID Encoder or Load ID Embedding")
        if start_percent > end_percent:
            raise DenseFaceInputError(f"start_percent ({start_percent}) must not exceed end_percent ({end_percent})")
        _check_model_and_weights(model, dense_face)
        check_id_model(face_id.model, dense_face.id_model)

        patched = model.clone()
        if adapter_strength != 0.0:
            deltas = {f"diffusion_model.{k}": (v,) for k, v in dense_face.folded_weight_deltas().items()}
            added = patched.add_patches(deltas, adapter_strength)
            if len(added) != len(deltas):
                missing = sorted(set(deltas) - set(added))[:3]
                raise WeightFileError(f"the MODEL lacks {len(deltas) - len(added)} attention weights the adapter "
                                      f"patches (e.g. {missing}); is it an SD1.5/SD2.1 UNet?")
            sampling = patched.model.model_sampling
            sigma_range = (float(sampling.percent_to_sigma(start_percent)),
                           float(sampling.percent_to_sigma(end_percent)))
            install_query_biases(patched, dense_face.query_biases(face_id.embedding), adapter_strength, sigma_range)

        if not prompt.strip() and positive is None:
            raise DenseFaceInputError("prompt is empty and no positive conditioning is connected: write the "
                                      f"face prompt (e.g. '{DEFAULT_PROMPT}') or connect positive")
        if prompt.strip():
            offset = None
            if identity_strength != 0.0:
                offset = identity_strength * dense_face.identity_offset(face_id.embedding)
            meta = dense_face.weights.metadata
            positive = encode_with_identity(clip, prompt, meta.placeholder_token or PLACEHOLDER_TOKEN,
                                            meta.init_word or INIT_WORD, offset)
        if pose_strength != 0.0:
            cache = dense_face._modules
            if "comfy_controlnet" not in cache:  # one CONTROL_NET per loaded file
                cache["comfy_controlnet"] = pose_controlnet(dense_face.pose_branch())
            positive, negative = attach_pose(positive, negative, cache["comfy_controlnet"], pose_image,
                                             pose_strength, start_percent, end_percent)
        return (patched, positive, negative)


def _one_evaluation_sampler(capture: dict):
    """A KSAMPLER whose sampler function evaluates the model once, at the first sigma."""

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        s_in = x.new_ones([x.shape[0]])
        capture["denoised"] = model(x, sigmas[0] * s_in, **(extra_args or {}))
        return capture["denoised"]

    return comfy.samplers.KSAMPLER(sample)


class DenseFaceAnnotationPredict:
    """DenseAnnotationPredict: one UNet forward -> landmarks, parsing and depth from the dense head."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The patched model from Dense-Face Apply PC-Adapter."}),
                "dense_face": ("DENSE_FACE",),
                "latent": ("LATENT", {"tooltip": "The face latent (e.g. VAE Encode of a crop, or a sampler's output)."}),
                "positive": ("CONDITIONING", {"tooltip": "The face-generation conditioning (with the pose branch)."}),
                "timestep": ("INT", {"default": 50, "min": 0, "max": 999, "tooltip":
                                     "Diffusion timestep of the forward (the head is trained on all of them; "
                                     "small = a nearly clean latent)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip": "Noise for the forward."}),
            },
            "optional": {"image": ("IMAGE", {"tooltip": "Draw the landmarks on this image (e.g. the decoded face)."})},
        }

    RETURN_TYPES = ("IMAGE", "IMAGE", "MASK", "IMAGE")
    RETURN_NAMES = ("depth", "parsing", "parsing_masks", "landmarks")
    OUTPUT_TOOLTIPS = ("Depth over the face (near = bright).", "10-class parsing in the authors' palette.",
                       "One mask per class and image (batch x 10, class order as in the README).",
                       "Predicted 478 landmarks drawn on the image (or on white).")
    FUNCTION = "predict"
    CATEGORY = CATEGORY
    DESCRIPTION = "Predicts dense face annotations from the UNet's decoder features with the Dense-Face head."

    def predict(self, model, dense_face, latent, positive, timestep, seed, image=None):
        head = dense_face.dense_head()
        unet = model.model.diffusion_model
        features: dict[int, torch.Tensor] = {}
        # ComfyUI runs a block's layers one by one (forward_timestep_embed), never the block itself,
        # so the block's output is its last layer's output.
        hooks = [unet.output_blocks[tap.ldm_output_block][-1].register_forward_hook(
            lambda _m, _i, out, i=tap.ldm_output_block: features.__setitem__(i, out)) for tap in FEATURE_TAPS]
        samples = latent["samples"]
        try:
            sigma = model.model.model_sampling.sigma(torch.tensor([float(timestep)]))
            sigmas = torch.cat([sigma.reshape(1), torch.zeros(1)]).float()
            noise = comfy.sample.prepare_noise(samples, seed)
            capture: dict = {}
            comfy.sample.sample_custom(model, noise, 1.0, _one_evaluation_sampler(capture), sigmas, positive,
                                       positive, samples, disable_pbar=True, seed=seed)
        finally:
            for h in hooks:
                h.remove()
        with torch.no_grad():
            pred = head([features[tap.ldm_output_block].float().cpu() for tap in FEATURE_TAPS])
        size = samples.shape[-1] * 8
        dec = decode_prediction(pred, size)
        canvases = None
        if image is not None:
            import cv2

            canvases = [cv2.resize(to_rgb_uint8(a), (size, size), interpolation=cv2.INTER_AREA)
                        for a in image_to_numpy(image)]
        depths, parsings, masks, lms = [], [], [], []
        for b in range(dec.parsing.shape[0]):
            depths.append(depth_image(dec.depth[b], dec.face_mask[b]))
            parsings.append(parsing_image(dec.parsing[b]))
            masks.extend((dec.parsing[b] == c).astype(np.float32) for c in range(pred["parsing"].shape[1]))
            canvas = canvases[min(b, len(canvases) - 1)] if canvases else np.full((size, size, 3), 255, np.uint8)
            pts = np.concatenate([dec.landmarks[b], np.zeros((dec.landmarks.shape[1], 1), np.float32)], axis=1)
            lms.append(draw_landmarks(canvas, pts))
        return (numpy_to_image(depths), numpy_to_image(parsings), numpy_to_mask(masks), numpy_to_image(lms))


NODE_CLASS_MAPPINGS = {
    "DenseFaceLoader": DenseFaceLoader,
    "DenseFaceApplyPCAdapter": DenseFaceApplyPCAdapter,
    "DenseFaceAnnotationPredict": DenseFaceAnnotationPredict,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DenseFaceLoader": "Dense-Face Loader",
    "DenseFaceApplyPCAdapter": "Dense-Face Apply PC-Adapter (face mode)",
    "DenseFaceAnnotationPredict": "Dense-Face Annotation Predict",
}
