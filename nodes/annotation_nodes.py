"""Dense annotation prediction: the dense head on the UNet's decoder features (one forward)."""
from __future__ import annotations

import logging
import os

import cv2
import numpy as np
import torch

from ..dense_face_core.annotation_vis import note_image, render_prediction
from ..dense_face_core.dense_head import FEATURE_TAPS
from ..dense_face_core.dense_prediction import decode_prediction
from ..dense_face_core.dense_targets import NUM_PARSING_CLASSES
from ..dense_face_core.images import to_rgb_uint8
from .comfy_side import CATEGORY
from .comfy_side.dense_capture import capture_decoder_features
from .comfy_side.tensors import image_to_numpy, numpy_to_image, numpy_to_mask

log = logging.getLogger("dense_face")
WITHOUT_HEAD = ["error", "blank pictures with a note"]


class DenseFaceAnnotationPredict:
    """DenseAnnotationPredict: one UNet forward -> landmarks, parsing and depth from the dense head."""

    SEARCH_ALIASES = ["face landmarks", "face parsing", "face depth", "dense annotations"]  # node search in ComfyUI 0.38+

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"lazy": True, "tooltip": "The patched model from Dense-Face Apply PC-Adapter."}),
                "dense_face": ("DENSE_FACE", {"tooltip": "From Dense-Face Loader (weights with a dense head)."}),
                "latent": ("LATENT", {"lazy": True, "tooltip":
                                      "The face latent (e.g. VAE Encode of a crop, or a sampler's output)."}),
                "positive": ("CONDITIONING", {"lazy": True, "tooltip":
                                              "The face-generation conditioning (with the pose branch)."}),
                "timestep": ("INT", {"default": 50, "min": 0, "max": 999, "tooltip":
                                     "Diffusion timestep of the forward (the head is trained on all of them; "
                                     "small = a nearly clean latent)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip": "Noise for the forward."}),
            },
            "optional": {
                "image": ("IMAGE", {"lazy": True, "tooltip":
                                    "Draw the landmarks on this image (e.g. the decoded face)."}),
                "without_head": (WITHOUT_HEAD, {"default": "error", "tooltip":
                                 "Weights without a dense head (the authors' release has none): stop with an "
                                 "error, or give blank pictures that say so, so a personalisation graph with "
                                 "this preview still finishes."}),
            },
        }

    RETURN_TYPES = ("IMAGE", "IMAGE", "MASK", "IMAGE")
    RETURN_NAMES = ("depth", "parsing", "parsing_masks", "landmarks")
    OUTPUT_TOOLTIPS = ("Depth over the face (near = bright).", "10-class parsing in the authors' palette.",
                       "One mask per class and image (batch x 10, class order as in the README).",
                       "Predicted 478 landmarks drawn on the image (or on white).")
    FUNCTION = "predict"
    CATEGORY = CATEGORY
    DESCRIPTION = "Predicts dense face annotations from the UNet's decoder features with the Dense-Face head."

    def check_lazy_status(self, dense_face, without_head="error", **inputs):
        """ComfyUI (with lazy inputs, 2024-08 on) calls this once the loader has run, before the sampler that
        makes the latent: weights without a head stop the graph here instead of after the sampling."""
        if without_head == "error":
            dense_face.dense_head()  # raises, naming the file
        needed = ("latent",) if not dense_face.weights.has_dense_head else ("model", "latent", "positive", "image")
        return [name for name in needed if name in inputs and inputs[name] is None]  # connected, not yet evaluated

    def predict(self, model, dense_face, latent, positive, timestep, seed, image=None, without_head="error"):
        samples = latent["samples"]
        if without_head != "error" and not dense_face.weights.has_dense_head:
            return _no_head_outputs(dense_face, samples)
        head = dense_face.dense_head()
        blocks = [tap.ldm_output_block for tap in FEATURE_TAPS]
        features = capture_decoder_features(model, samples, positive, timestep, seed, blocks)
        with torch.no_grad():
            pred = head([features[b].float().cpu() for b in blocks])
        size = samples.shape[-1] * 8
        canvases = None
        if image is not None:
            canvases = [cv2.resize(to_rgb_uint8(a), (size, size), interpolation=cv2.INTER_AREA)
                        for a in image_to_numpy(image)]
        depths, parsings, masks, drawn = render_prediction(decode_prediction(pred, size), pred["parsing"].shape[1],
                                                           canvases)
        return (numpy_to_image(depths), numpy_to_image(parsings), numpy_to_mask(masks), numpy_to_image(drawn))


def _no_head_outputs(dense_face, samples):
    """Blank pictures that say why, and empty class masks, in the shapes the head would give."""
    name = os.path.basename(dense_face.weights.path or "these weights")
    text = (f"No dense annotation head in {name} (the authors' release has none). "
            f"Train weights with one: dense-face train.")
    log.warning("Dense-Face Annotation Predict: %s", text)
    size, batch = samples.shape[-1] * 8, samples.shape[0]
    note = note_image(size, text)
    masks = [np.zeros((size, size), np.float32)] * (batch * NUM_PARSING_CLASSES)
    return (numpy_to_image([note] * batch),) * 2 + (numpy_to_mask(masks), numpy_to_image([note] * batch))


NODE_CLASS_MAPPINGS = {"DenseFaceAnnotationPredict": DenseFaceAnnotationPredict}
NODE_DISPLAY_NAME_MAPPINGS = {"DenseFaceAnnotationPredict": "Dense-Face Annotation Predict"}
