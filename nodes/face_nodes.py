"""Face crop + mask, paste-back and dense-target preview nodes (logic in dense_face_core)."""
from __future__ import annotations

import numpy as np

import comfy.model_management
import comfy.utils

from ..dense_face_core.annotation_vis import depth_image, draw_landmarks, parsing_image
from ..dense_face_core.crop import FaceCrop, compute_face_crop, passthrough_crop, warp_to_crop
from ..dense_face_core.dense_targets import compute_dense_targets
from ..dense_face_core.errors import DenseFaceInputError, NoFaceError
from ..dense_face_core.face_mask import face_mask
from ..dense_face_core.images import to_rgb_uint8
from ..dense_face_core.landmarker import select_face
from ..dense_face_core.paste import paste_back
from .comfy_side import CATEGORY
from .comfy_side.face_analysis import get_analyzer, landmarker_input
from .comfy_side.tensors import image_to_numpy, numpy_to_image, numpy_to_mask, rgb_channels

ON_NO_FACE = ["error", "pass through (empty mask)"]
FACE_CHOICE = ["largest", "by index"]


def _pick(analyzer, rgb, which, index, name):
    faces = analyzer.detect(rgb, name=name)
    return select_face(faces, "largest" if which == "largest" else int(index), name=name)


class DenseFaceCropMask:
    """FaceCropMask: photo -> aligned face crop, face mask, FACE_CROP transform, head pose."""

    SEARCH_ALIASES = ["face crop", "face mask", "face detection", "face swap"]  # node search in ComfyUI 0.38+

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Photo(s); each image in the batch is cropped on its own face."}),
                "crop_size": ([512, 256], {"default": 512, "tooltip": "Side of the square crop. Dense-Face "
                                                                      "generates at 256; crop at 512 for quality."}),
                "padding": ("FLOAT", {"default": 0.0, "min": -0.2, "max": 1.0, "step": 0.01,
                                      "tooltip": "Enlarge the square by this fraction (0 = the authors' crop)."}),
                "mask_grow": ("FLOAT", {"default": 16.0, "min": -64.0, "max": 128.0, "step": 1.0,
                                        "tooltip": "Grow (+) or shrink (-) the face mask, in pixels of a 512 crop. "
                                                   "16 matches the authors' forehead coverage."}),
                "mask_feather": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 128.0, "step": 1.0,
                                           "tooltip": "Soft edge of the mask, in pixels of a 512 crop."}),
                "face": (FACE_CHOICE, {"default": "largest", "tooltip": "Which face when there are several."}),
                "face_index": ("INT", {"default": 0, "min": 0, "max": 63,
                                       "tooltip": "With 'by index': 0 = largest face, 1 = next largest, ..."}),
                "on_no_face": (ON_NO_FACE, {"default": "error", "tooltip":
                                            "No face found: stop with an error, or pass the centred square "
                                            "through with an empty mask (paste-back then changes nothing)."}),
            },
            "optional": {"landmarker": landmarker_input()},
        }

    RETURN_TYPES = ("IMAGE", "MASK", "FACE_CROP", "FLOAT", "FLOAT", "FLOAT")
    RETURN_NAMES = ("crop", "mask", "face_crop", "yaw", "pitch", "roll")
    OUTPUT_TOOLTIPS = ("Aligned square face crop.", "Face mask in crop space, 1 = face to regenerate.",
                       "Exact transform back to the source image (for Dense-Face Paste Back).",
                       "Yaw of the face as it appears in the crop (degrees; first image of the batch).",
                       "Pitch of the face in the crop.", "Roll of the face in the crop.")
    FUNCTION = "crop"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Finds the face (MediaPipe), crops it square and upright like the authors' FFHQ-style "
                   "alignment, and returns its mask, transform and head pose.")

    def crop(self, image, crop_size, padding, mask_grow, mask_feather, face, face_index, on_no_face,
             landmarker="auto"):
        analyzer = get_analyzer(landmarker)
        images = image_to_numpy(image)
        crops, masks, transforms = [], [], []
        bar = comfy.utils.ProgressBar(len(images))
        for i, arr in enumerate(images):
            comfy.model_management.throw_exception_if_processing_interrupted()
            name = f"image {i} of the batch" if len(images) > 1 else "image"
            rgb = to_rgb_uint8(arr, name)
            try:
                detected = _pick(analyzer, rgb, face, face_index, name)
                fc = compute_face_crop(detected, int(crop_size), padding, canonical_vertices=analyzer.canonical)
                mask = face_mask(fc, grow=mask_grow, feather=mask_feather)
            except NoFaceError:
                if on_no_face == "error":
                    raise
                fc = passthrough_crop((rgb.shape[1], rgb.shape[0]), int(crop_size))
                mask = np.zeros((fc.size, fc.size), np.float32)
            crops.append(warp_to_crop(rgb_channels(arr), fc))
            masks.append(mask)
            transforms.append(fc)
            bar.update(1)
        first = next((t for t in transforms if t.has_face), transforms[0])
        return (numpy_to_image([np.clip(c, 0, 1) for c in crops]), numpy_to_mask(masks), transforms,
                float(first.yaw), float(first.pitch), float(first.roll))


def _per_item(seq, i, name):
    if len(seq) == 1:
        return seq[0]
    if i >= len(seq):
        raise DenseFaceInputError(f"{name}: batch of {len(seq)} does not match the base batch")
    return seq[i]


class DenseFacePasteBack:
    """Blends the generated face back into the source image; outside the mask nothing changes."""

    SEARCH_ALIASES = ["face swap", "paste face back", "face composite"]  # node search in ComfyUI 0.38+

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "base": ("IMAGE", {"tooltip": "The image the face was cropped from."}),
                "face": ("IMAGE", {"tooltip": "The new face crop (any size; resized to the crop size)."}),
                "face_crop": ("FACE_CROP", {"tooltip": "From Dense-Face Crop + Mask."}),
                "feather": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 256.0, "step": 1.0,
                                      "tooltip": "Soft edge in source pixels, inside the mask "
                                                 "(-1 = automatic: 2% of the crop side)."}),
            },
            "optional": {"mask": ("MASK", {"tooltip": "Crop-space mask, 1 = take the new face. "
                                                      "Without it the whole crop square is pasted."})},
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The source image with the new face; outside the feathered mask it is bit-identical.",)
    FUNCTION = "paste"
    CATEGORY = CATEGORY
    DESCRIPTION = "Pastes a face crop back into its source image; pixels outside the feathered mask stay bit-identical."

    def paste(self, base, face, face_crop, feather, mask=None):
        if not isinstance(face_crop, (list, tuple)) or not all(isinstance(c, FaceCrop) for c in face_crop):
            raise DenseFaceInputError("face_crop: connect the FACE_CROP output of Dense-Face Crop + Mask")
        bases = [rgb_channels(b) for b in image_to_numpy(base)]
        faces = [rgb_channels(f) for f in image_to_numpy(face)]
        masks = None if mask is None else [m for m in mask.detach().cpu().float().numpy()]
        out = []
        for i, b in enumerate(bases):
            comfy.model_management.throw_exception_if_processing_interrupted()
            fc = _per_item(face_crop, i, "face_crop")
            m = None if masks is None else _per_item(masks, i, "mask")
            out.append(paste_back(b, _per_item(faces, i, "face"), fc, mask=m,
                                  feather=None if feather < 0 else feather))
        return (numpy_to_image(out),)


class DenseFaceAnnotationTargets:
    """The dense annotation targets of a photo, as the trainer sees them, drawn for inspection."""

    SEARCH_ALIASES = ["face landmarks", "face parsing", "face depth"]  # node search in ComfyUI 0.38+

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "A face photo or an aligned face crop."}),
                "size": ("INT", {"default": 256, "min": 64, "max": 1024, "step": 64,
                                 "tooltip": "Resolution of the parsing and depth maps (training uses 64)."}),
            },
            "optional": {"landmarker": landmarker_input()},
        }

    RETURN_TYPES = ("IMAGE", "IMAGE", "IMAGE", "MASK")
    RETURN_NAMES = ("landmarks", "parsing", "depth", "face_mask")
    OUTPUT_TOOLTIPS = ("The 478 MediaPipe landmarks drawn on the photo.", "10-class pseudo parsing in the authors' palette.",
                       "Z-buffered depth over the face (near = bright).", "Face region of the parsing (1 = face).")
    FUNCTION = "annotate"
    CATEGORY = CATEGORY
    DESCRIPTION = ("MediaPipe landmarks, the 10-class pseudo parsing and the z-buffered depth map "
                   "that Dense-Face's annotation head learns to predict.")

    def annotate(self, image, size, landmarker="auto"):
        analyzer = get_analyzer(landmarker)
        lm_imgs, parsings, depths, masks = [], [], [], []
        for i, arr in enumerate(image_to_numpy(image)):
            comfy.model_management.throw_exception_if_processing_interrupted()
            rgb = to_rgb_uint8(arr, f"image {i}")
            face = select_face(analyzer.detect(rgb), "largest", name=f"image {i}")
            t = compute_dense_targets(face.landmarks, triangles=analyzer.canonical.triangles,
                                      heatmap_size=64, parsing_size=size, depth_size=size)
            lm_imgs.append(draw_landmarks(rgb, face.landmarks))
            parsings.append(parsing_image(t.parsing))
            depths.append(depth_image(t.depth, t.depth_mask))
            masks.append((t.parsing > 0).astype(np.float32))
        return numpy_to_image(lm_imgs), numpy_to_image(parsings), numpy_to_image(depths), numpy_to_mask(masks)


NODE_CLASS_MAPPINGS = {
    "DenseFaceCropMask": DenseFaceCropMask,
    "DenseFacePasteBack": DenseFacePasteBack,
    "DenseFaceAnnotationTargets": DenseFaceAnnotationTargets,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DenseFaceCropMask": "Dense-Face Crop + Mask",
    "DenseFacePasteBack": "Dense-Face Paste Back",
    "DenseFaceAnnotationTargets": "Dense-Face Annotation Targets (from photo)",
}
