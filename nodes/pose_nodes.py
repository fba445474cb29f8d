"""Pose image node: yaw, pitch, roll -> the authors' axis drawing."""
from __future__ import annotations

from ..dense_face_core.pose import (ANGLE_LIMIT, POSE_IMAGE_MAX_SIZE, POSE_IMAGE_MIN_SIZE, POSE_IMAGE_SIZE,
                                    draw_pose_image, pose_grid)
from ..dense_face_core.errors import DenseFaceInputError
from ..dense_face_core.face_batch import pose_overrides
from .comfy_side import CATEGORY
from .comfy_side.tensors import numpy_to_image

_ANGLE = {"default": 0.0, "min": -ANGLE_LIMIT, "max": ANGLE_LIMIT, "step": 0.1}
_SIZE = {"default": POSE_IMAGE_SIZE, "min": POSE_IMAGE_MIN_SIZE, "max": POSE_IMAGE_MAX_SIZE, "step": 8}


class DenseFacePoseEuler:
    """PoseEuler -> PoseImage."""

    SEARCH_ALIASES = ["head pose", "pose image", "euler angles", "yaw pitch roll"]  # node search in ComfyUI 0.38+

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "yaw": ("FLOAT", dict(_ANGLE, tooltip="Degrees; positive turns the face to its left "
                                                      "(the authors' 6DRepNet convention).")),
                "pitch": ("FLOAT", dict(_ANGLE, tooltip="Degrees; positive tilts the face up.")),
                "roll": ("FLOAT", dict(_ANGLE, tooltip="Degrees; in-plane rotation.")),
            },
            "optional": {
                "size": ("INT", dict(_SIZE, tooltip="Canvas size. 256 reproduces the authors' training images "
                                                    "pixel for pixel; other sizes scale the drawing.")),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("pose_image",)
    OUTPUT_TOOLTIPS = ("The pose image (three head axes on white) for Apply PC-Adapter's pose_image.",)
    FUNCTION = "draw"
    CATEGORY = CATEGORY
    DESCRIPTION = "Draws the Dense-Face pose image (three coloured head axes) that conditions the pose branch."

    def draw(self, yaw, pitch, roll, size=POSE_IMAGE_SIZE):
        return (numpy_to_image([draw_pose_image(yaw, pitch, roll, size=size)]),)


class DenseFacePoseGrid:
    """A batch of pose images over a yaw x pitch grid (the paper's pose-control figure)."""

    SEARCH_ALIASES = ["head pose", "pose grid", "pose control"]  # node search in ComfyUI 0.38+

    @classmethod
    def INPUT_TYPES(cls):
        rng = dict(_ANGLE, step=0.5)
        steps = {"default": 1, "min": 1, "max": 32}
        return {
            "required": {
                "yaw_from": ("FLOAT", dict(rng, default=-40.0, tooltip="Yaw of the first column (degrees).")),
                "yaw_to": ("FLOAT", dict(rng, default=40.0, tooltip="Yaw of the last column.")),
                "yaw_steps": ("INT", dict(steps, default=5, tooltip="Columns: yaw values from yaw_from to yaw_to.")),
                "pitch_from": ("FLOAT", dict(rng, default=0.0, tooltip="Pitch of the first row (degrees).")),
                "pitch_to": ("FLOAT", dict(rng, default=0.0, tooltip="Pitch of the last row.")),
                "pitch_steps": ("INT", dict(steps, tooltip="Rows: pitch values from pitch_from to pitch_to.")),
                "roll": ("FLOAT", dict(_ANGLE, tooltip="Roll of every pose (degrees).")),
            },
            "optional": {"size": ("INT", dict(_SIZE, tooltip="Canvas size of every pose image."))},
        }

    RETURN_TYPES = ("IMAGE", "INT")
    RETURN_NAMES = ("pose_images", "count")
    OUTPUT_TOOLTIPS = ("Pose images, row by row (pitch rows, yaw columns).", "Number of poses (batch size).")
    FUNCTION = "grid"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Pose images for a grid of head poses; with a latent batch of the same size, each latent "
                   "is generated at its own pose.")

    def grid(self, yaw_from, yaw_to, yaw_steps, pitch_from, pitch_to, pitch_steps, roll, size=POSE_IMAGE_SIZE):
        images = [draw_pose_image(y, p, roll, size=size) for y, p in pose_grid(yaw_from, yaw_to, yaw_steps,
                                                                                 pitch_from, pitch_to, pitch_steps)]
        return (numpy_to_image(images), len(images))


class DenseFacePoseFromFaces:
    """One pose image per face of a FACE_CROP (several faces of a group photo), at the detected angles."""

    SEARCH_ALIASES = ["head pose", "pose per face", "group photo"]  # node search in ComfyUI 0.38+

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "face_crop": ("FACE_CROP", {"tooltip": "From Dense-Face Crop + Mask (face = all or list)."}),
                "overrides": ("STRING", {"default": "", "tooltip":
                              "Angles to change, per face (rows of the batch, 0 first): e.g. "
                              "'1: yaw=20 pitch=-5; 2: roll=0'. Empty = every face at its detected pose."}),
            },
            "optional": {"size": ("INT", dict(_SIZE, tooltip="Canvas size of every pose image."))},
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("pose_images",)
    OUTPUT_TOOLTIPS = ("Pose images, one per face, in the order of the crops (for Apply PC-Adapter).",)
    FUNCTION = "draw"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Pose images for every face of a group: each face keeps its own detected head pose (or the "
                   "angles given for it), so each is regenerated at its own pose.")

    def draw(self, face_crop, overrides="", size=POSE_IMAGE_SIZE):
        if not isinstance(face_crop, (list, tuple)) or not face_crop:
            raise DenseFaceInputError("face_crop: connect the FACE_CROP output of Dense-Face Crop + Mask")
        changes = pose_overrides(overrides, len(face_crop))
        images = []
        for row, fc in enumerate(face_crop):
            angles = {"yaw": fc.yaw, "pitch": fc.pitch, "roll": fc.roll, **changes.get(row, {})}
            images.append(draw_pose_image(angles["yaw"], angles["pitch"], angles["roll"], size=size))
        return (numpy_to_image(images),)


NODE_CLASS_MAPPINGS = {"DenseFacePoseEuler": DenseFacePoseEuler, "DenseFacePoseGrid": DenseFacePoseGrid,
                       "DenseFacePoseFromFaces": DenseFacePoseFromFaces}
NODE_DISPLAY_NAME_MAPPINGS = {"DenseFacePoseEuler": "Dense-Face Pose Image (yaw/pitch/roll)",
                              "DenseFacePoseGrid": "Dense-Face Pose Grid",
                              "DenseFacePoseFromFaces": "Dense-Face Pose Images (one per face)"}
