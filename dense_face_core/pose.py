"""Head-pose conventions shared by the pose image, the face analyser and the trainer.

Angles are degrees in the authors' convention, which is 6DRepNet's: pitch (x),
yaw (y), roll (z) from ``euler_from_matrix``. The pose image is the authors'
``draw_axis`` (``tutorial_dataset_tiny.py``) reproduced to the pixel: white
256x256 canvas, yaw negated, X/Y axes 100 px long and Z 200 px, lines from the
integer centre (127, 127) to ends computed from the float centre 127.5 and
truncated, thickness 4, drawn X (red), Y (green), Z (blue).
"""
from __future__ import annotations

import math

import numpy as np

from .errors import DenseFaceInputError

POSE_IMAGE_SIZE = 256
POSE_AXIS_LENGTH = 100
POSE_LINE_THICKNESS = 4
POSE_IMAGE_MIN_SIZE, POSE_IMAGE_MAX_SIZE = 32, 4096
# Any angle is a rotation (beyond +-180 it wraps); one bound keeps widgets, command line and core in step.
ANGLE_LIMIT = 1.0e6
POSE_IMAGE_SPEC = "authors-draw_axis-v1: white 256x256, yaw negated, X/Y 100px, Z 200px, thickness 4, RGB"

_AXIS_COLOURS_RGB = ((255, 0, 0), (0, 255, 0), (0, 0, 255))


def check_angles(yaw: float, pitch: float, roll: float) -> tuple[float, float, float]:
    """Reject NaN/inf and values beyond +-ANGLE_LIMIT; any other angle is a valid rotation, kept as given."""
    out = []
    for name, value in (("yaw", yaw), ("pitch", pitch), ("roll", roll)):
        value = float(value)
        if not math.isfinite(value) or abs(value) > ANGLE_LIMIT:
            raise DenseFaceInputError(f"{name} must be a finite number of degrees within +-{ANGLE_LIMIT:g}, "
                                      f"got {value!r}")
        out.append(value)
    return out[0], out[1], out[2]


def axis_endpoints(yaw: float, pitch: float, roll: float, size: int = POSE_IMAGE_SIZE):
    """End points of the X, Y, Z axes in pixels of a ``size`` canvas (authors' maths at 256)."""
    yaw, pitch, roll = check_angles(yaw, pitch, roll)
    p = math.radians(pitch)
    y = -math.radians(yaw)
    r = math.radians(roll)
    scale = size / POSE_IMAGE_SIZE
    length = POSE_AXIS_LENGTH * scale
    centre = (size - 1) / 2.0
    ends = (
        (length * math.cos(y) * math.cos(r),
         length * (math.cos(p) * math.sin(r) + math.cos(r) * math.sin(p) * math.sin(y))),
        (-length * math.cos(y) * math.sin(r),
         length * (math.cos(p) * math.cos(r) - math.sin(p) * math.sin(y) * math.sin(r))),
        (2 * length * math.sin(y), -2 * length * math.cos(y) * math.sin(p)),
    )
    return [(int(ex + centre), int(ey + centre)) for ex, ey in ends]


def draw_pose_image(yaw: float, pitch: float, roll: float, size: int = POSE_IMAGE_SIZE) -> np.ndarray:
    """RGB uint8 (size, size, 3) pose image; at size 256 identical to the authors' drawing."""
    import cv2

    size = int(size)
    if size < POSE_IMAGE_MIN_SIZE or size > POSE_IMAGE_MAX_SIZE:
        raise DenseFaceInputError(f"pose image size must be between {POSE_IMAGE_MIN_SIZE} and "
                                  f"{POSE_IMAGE_MAX_SIZE} pixels, got {size}")
    img = np.full((size, size, 3), 255, np.uint8)
    start = (int((size - 1) / 2.0), int((size - 1) / 2.0))
    thickness = max(1, int(round(POSE_LINE_THICKNESS * size / POSE_IMAGE_SIZE)))
    for end, colour in zip(axis_endpoints(yaw, pitch, roll, size), _AXIS_COLOURS_RGB):
        cv2.line(img, start, end, colour, thickness)
    return img


def euler_from_matrix(R: np.ndarray) -> tuple[float, float, float]:
    """(pitch, yaw, roll) in degrees from a 3x3 rotation, 6DRepNet's formula."""
    R = np.asarray(R, dtype=np.float64)
    sy = math.hypot(R[0, 0], R[1, 0])
    if sy > 1e-6:
        x = math.atan2(R[2, 1], R[2, 2])
        z = math.atan2(R[1, 0], R[0, 0])
    else:
        x = math.atan2(-R[1, 2], R[1, 1])
        z = 0.0
    y = math.atan2(-R[2, 0], sy)
    return math.degrees(x), math.degrees(y), math.degrees(z)


def matrix_from_euler(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """Inverse of :func:`euler_from_matrix`: R = Rz(roll) @ Ry(yaw) @ Rx(pitch)."""
    x, y, z = (math.radians(a) for a in check_angles(pitch, yaw, roll))
    cx, sx, cy, sy, cz, sz = math.cos(x), math.sin(x), math.cos(y), math.sin(y), math.cos(z), math.sin(z)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def pose_grid(yaw_from: float, yaw_to: float, yaw_steps: int, pitch_from: float, pitch_to: float,
              pitch_steps: int) -> list[tuple[float, float]]:
    """(yaw, pitch) pairs row by row: pitch rows from ``pitch_from``, yaw columns from ``yaw_from``."""
    def span(a, b, n):
        n = int(n)
        if n < 1:
            raise DenseFaceInputError(f"grid steps must be at least 1, got {n}")
        return [float(a)] if n == 1 else [float(a) + (float(b) - float(a)) * i / (n - 1) for i in range(n)]

    return [(y, p) for p in span(pitch_from, pitch_to, pitch_steps) for y in span(yaw_from, yaw_to, yaw_steps)]
