"""Pose image node: yaw, pitch, roll -> the authors' axis drawing."""
from __future__ import annotations

from ..dense_face_core.pose import POSE_IMAGE_SIZE, draw_pose_image
from .comfy_glue import CATEGORY, numpy_to_image

_ANGLE = {"default": 0.0, "min": -180.0, "max": 180.0, "step": 0.1}


class DenseFacePoseEuler:
    """PoseEuler -> PoseImage."""

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
                "size": ("INT", {"default": POSE_IMAGE_SIZE, "min": 64, "max": 2048, "step": 8,
                                 "tooltip": "Canvas size. 256 reproduces the authors' training images "
                                            "pixel for pixel; other sizes scale the drawing."}),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("pose_image",)
    FUNCTION = "draw"
    CATEGORY = CATEGORY
    DESCRIPTION = "Draws the Dense-Face pose image (three coloured head axes) that conditions the pose branch."

    def draw(self, yaw, pitch, roll, size=POSE_IMAGE_SIZE):
        return (numpy_to_image([draw_pose_image(yaw, pitch, roll, size=size)]),)


NODE_CLASS_MAPPINGS = {"DenseFacePoseEuler": DenseFacePoseEuler}
NODE_DISPLAY_NAME_MAPPINGS = {"DenseFacePoseEuler": "Dense-Face Pose Image (yaw/pitch/roll)"}
