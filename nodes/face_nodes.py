"""Face crop + mask, paste-back and dense-target preview nodes (logic in dense_face_core)."""
from __future__ import annotations

import numpy as np

import comfy.model_management
import comfy.utils

from ..dense_face_core.annotation_vis import depth_image, draw_landmarks, numbered_faces, parsing_image
from ..dense_face_core.crop import FaceCrop, warp_to_crop
from ..dense_face_core.dense_targets import compute_dense_targets
from ..dense_face_core.errors import DenseFaceInputError
from ..dense_face_core.face_crops import CropGeometry, FaceChoice, crop_faces
from ..dense_face_core.images import to_rgb_uint8
from ..dense_face_core.landmarker import select_face
from ..dense_face_core.paste import paste_faces
from .comfy_side import CATEGORY
from .comfy_side.face_analysis import get_analyzer, landmarker_input
from .comfy_side.tensors import image_to_numpy, numpy_to_image, numpy_to_mask, rgb_channels

ON_NO_FACE = ["error", "pass through (empty mask)"]
FACE_CHOICE = ["largest", "by index", "all", "list"]


class DenseFaceCropMask:
    """FaceCropMask: photo -> aligned face crop, face mask, FACE_CROP transform, head pose."""

    SEARCH_ALIASES = ["face crop", "face mask", "face detection", "face swap"]  # node search in ComfyUI 0.38+

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Photo(s); each image in the batch is cropped on its own face(s)."}),
                "crop_size": ([512, 256], {"default": 512, "tooltip": "Side of the square crop. Dense-Face "
                                                                      "generates at 256; crop at 512 for quality."}),
                "padding": ("FLOAT", {"default": 0.0, "min": -0.2, "max": 1.0, "step": 0.01,
                                      "tooltip": "Enlarge the square by this fraction (0 = the authors' crop)."}),
                "mask_grow": ("FLOAT", {"default": 16.0, "min": -64.0, "max": 128.0, "step": 1.0,
                                        "tooltip": "Grow (+) or shrink (-) the face mask, in pixels of a 512 crop. "
                                                   "16 matches the authors' forehead coverage."}),
                "mask_feather": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 128.0, "step": 1.0,
                                           "tooltip": "Soft edge of the mask, in pixels of a 512 crop."}),
                "face": (FACE_CHOICE, {"default": "largest", "tooltip":
                         "Which face(s): the largest; one by index (by size); all of them; or a list "
                         "(face_list). all/list give one crop per face, numbered left to right (see "
                         "faces_preview)."}),
                "face_index": ("INT", {"default": 0, "min": 0, "max": 63,
                                       "tooltip": "With 'by index': 0 = largest face, 1 = next largest, ..."}),
                "on_no_face": (ON_NO_FACE, {"default": "error", "tooltip":
                                            "No face found: stop with an error, or pass the centred square "
                                            "through with an empty mask (paste-back then changes nothing)."}),
            },
            "optional": {
                "landmarker": landmarker_input(),
                "face_list": ("STRING", {"default": "", "tooltip": "With face = list: the faces to take, by "
                                                                   "their left-to-right numbers, e.g. '0,2'."}),
            },
        }

    RETURN_TYPES = ("IMAGE", "MASK", "FACE_CROP", "FLOAT", "FLOAT", "FLOAT", "IMAGE")
    RETURN_NAMES = ("crop", "mask", "face_crop", "yaw", "pitch", "roll", "faces_preview")
    OUTPUT_TOOLTIPS = ("Aligned square face crop(s): one per chosen face.",
                       "Face mask(s) in crop space, 1 = face to regenerate.",
                       "Exact transform of every crop back to its source image (for Dense-Face Paste Back).",
                       "Yaw of the first face as it appears in its crop (degrees).",
                       "Pitch of the first face in its crop.", "Roll of the first face in its crop.",
                       "Each photo with the chosen faces boxed and numbered (left to right).")
    FUNCTION = "crop"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Finds the face (MediaPipe), crops it square and upright like the authors' FFHQ-style "
                   "alignment, and returns its mask, transform and head pose.")

    def crop(self, image, crop_size, padding, mask_grow, mask_feather, face, face_index, on_no_face,
             landmarker="auto", face_list=""):
        analyzer = get_analyzer(landmarker)
        images = image_to_numpy(image)
        crops, masks, transforms, previews = [], [], [], []
        bar = comfy.utils.ProgressBar(len(images))
        for i, arr in enumerate(images):
            comfy.model_management.throw_exception_if_processing_interrupted()
            name = f"image {i} of the batch" if len(images) > 1 else "image"
            rgb = to_rgb_uint8(arr, name)
            found = crop_faces(analyzer, rgb, i, FaceChoice(face, face_index, face_list, on_no_face),
                               CropGeometry(int(crop_size), padding, mask_grow, mask_feather), name)
            for fc, mask in found:
                crops.append(warp_to_crop(rgb_channels(arr), fc))
                masks.append(mask)
                transforms.append(fc)
            previews.append(numbered_faces(rgb, [fc.box for fc, _m in found if fc.has_face],
                                           [fc.face_number for fc, _m in found if fc.has_face]))
            bar.update(1)
        first = next((t for t in transforms if t.has_face), transforms[0])
        return (numpy_to_image([np.clip(c, 0, 1) for c in crops]), numpy_to_mask(masks), transforms,
                float(first.yaw), float(first.pitch), float(first.roll), numpy_to_image(previews))


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
    DESCRIPTION = ("Pastes face crops back into their source images (every face of a group into its own photo, "
                   "later faces over earlier ones); pixels outside the feathered masks stay bit-identical.")

    def paste(self, base, face, face_crop, feather, mask=None):
        if not isinstance(face_crop, (list, tuple)) or not all(isinstance(c, FaceCrop) for c in face_crop):
            raise DenseFaceInputError("face_crop: connect the FACE_CROP output of Dense-Face Crop + Mask")
        bases = [rgb_channels(b) for b in image_to_numpy(base)]
        faces = [rgb_channels(f) for f in image_to_numpy(face)]
        masks = None if mask is None else [m for m in mask.detach().cpu().float().numpy()]
        out = []
        for b, entries in enumerate(_paste_plan(face_crop, len(bases))):
            comfy.model_management.throw_exception_if_processing_interrupted()
            crops = [_per_item(face_crop, k, "face_crop") for k in entries]
            out.append(paste_faces(bases[b], [_per_item(faces, k, "face") for k in entries], crops,
                                   None if masks is None else [_per_item(masks, k, "mask") for k in entries],
                                   feather=None if feather < 0 else feather))
        return (numpy_to_image(out),)


def _paste_plan(face_crop, n_bases: int) -> list[list[int]]:
    """Which crops go into which base image, in paste order: every face of a group into its own photo
    (Crop + Mask records the photo of each face); crops that all name photo 0 pair with the bases by
    position (one crop for every base when there is one)."""
    if n_bases > 1 and all(c.source_index == 0 for c in face_crop):
        if len(face_crop) not in (1, n_bases):
            raise DenseFaceInputError(f"face_crop: {len(face_crop)} crops for {n_bases} base images")
        return [[min(b, len(face_crop) - 1)] for b in range(n_bases)]
    plan: list[list[int]] = [[] for _ in range(n_bases)]
    for k, crop in enumerate(face_crop):
        if crop.source_index >= n_bases:
            raise DenseFaceInputError(f"face_crop: face {k} comes from image {crop.source_index} of its batch, "
                                      f"but base has {n_bases} image(s); paste into the photos it was cropped from")
        plan[crop.source_index].append(k)
    return plan


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
