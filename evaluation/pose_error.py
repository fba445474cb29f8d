"""Head pose error: our estimator's angles on the generated face against the requested pose, in degrees."""
from __future__ import annotations

from ..dense_face_core.landmarker import Face

ANGLES = ("yaw", "pitch", "roll")


def face_pose(face: Face) -> dict[str, float]:
    """The measured pose (MediaPipe landmarks + solvePnP, the pose the workflows condition on)."""
    return {"yaw": float(face.yaw), "pitch": float(face.pitch), "roll": float(face.roll)}


def angle_error(a: float, b: float) -> float:
    """|a - b| in degrees, wrapped to [0, 180]."""
    return abs((float(a) - float(b) + 180.0) % 360.0 - 180.0)


def pose_errors(target: dict[str, float], measured: dict[str, float]) -> dict[str, float]:
    """Absolute yaw/pitch/roll errors (degrees) and their mean, ``pose_mae``.

    ``pose_mae`` = (|Δyaw| + |Δpitch| + |Δroll|) / 3 with every difference wrapped to
    [-180, 180]; averaged over images it is the mean absolute error over all three angles.
    """
    errs = {f"{a}_err": angle_error(measured[a], target[a]) for a in ANGLES}
    errs["pose_mae"] = sum(errs.values()) / 3.0
    return errs
