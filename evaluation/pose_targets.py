"""The pose each result image was asked for, read off the workflow the run executed."""
from __future__ import annotations

from pathlib import Path

from ..headless import runner as R
from .outputs import linked_node, saved_image_of
from .photos import face_in_file
from .pose_error import ANGLES, face_pose

GRID_KEYS = ("yaw_from", "yaw_to", "yaw_steps", "pitch_from", "pitch_to", "pitch_steps", "roll")


def pose_targets(wf: dict, run_dir: Path, summary: dict, analyzer, count: int) -> tuple[list[dict | None], str]:
    """The pose each result image was asked for, and where it came from.

    Pose grid: its yaw x pitch grid (row by row, the batch order). Pose Image node: numbers
    set on it (``--yaw/--pitch/--roll``), or, where it is linked to the face crop's detected
    angles, the pose of the face our estimator measures in the image that crop node read
    (the base image of the personalisation workflow, the target photo of face swap).
    """
    grids = R.nodes_of(wf, "DenseFacePoseGrid")
    if grids:
        return _grid_poses(wf[grids[0]]["inputs"], count)
    eulers = R.nodes_of(wf, "DenseFacePoseEuler")
    if not eulers:
        return [None] * count, "no pose node in the workflow"
    return _euler_poses(wf, wf[eulers[0]]["inputs"], run_dir, summary, analyzer, count)


def _grid_poses(g: dict, count: int) -> tuple[list[dict | None], str]:
    """The Pose Grid's poses in batch order, where its inputs are numbers and match the images."""
    from ..dense_face_core.pose import pose_grid

    if not all(isinstance(g.get(k), (int, float)) for k in GRID_KEYS):
        return [None] * count, "pose grid inputs are linked, not numbers"
    poses = [{"yaw": y, "pitch": p, "roll": float(g["roll"])} for y, p in pose_grid(*(g[k] for k in GRID_KEYS[:6]))]
    if len(poses) != count:
        return [None] * count, f"pose grid has {len(poses)} poses but {count} result images"
    return poses, "pose grid"


def _euler_poses(wf: dict, inputs: dict, run_dir: Path, summary: dict, analyzer,
                 count: int) -> tuple[list[dict | None], str]:
    """The Pose Image node's angles: set numbers, or those the face crop detected (measured again here)."""
    target, measured, source = {}, None, []
    for a in ANGLES:
        v = inputs.get(a)
        if isinstance(v, (int, float)):
            target[a] = float(v)
            source.append(f"{a} set")
            continue
        _, crop = linked_node(wf, v)
        if crop is None or crop["class_type"] != "DenseFaceCropMask":
            return [None] * count, f"pose input {a} comes from an unknown node"
        if measured is None:
            measured, where = _crop_pose(wf, crop, run_dir, summary, analyzer)
            if measured is None:
                return [None] * count, where
            source.append(where)
        target[a] = measured[a]
    return [dict(target)] * count, ", ".join(dict.fromkeys(source))


def _crop_pose(wf: dict, crop: dict, run_dir: Path, summary: dict, analyzer) -> tuple[dict | None, str]:
    """(pose of the face the crop node picked, measured on the saved image it read; where) or (None, why not)."""
    img_path = saved_image_of(wf, crop["inputs"].get("image"), run_dir, summary)
    if img_path is None or not img_path.is_file():
        return None, "the image the pose was detected in was not saved"
    which = crop["inputs"].get("face", "largest")
    which = "largest" if which == "largest" else int(crop["inputs"].get("face_index", 0))
    _, face = face_in_file(analyzer, img_path, which)
    if face is None:
        return None, f"no face in {img_path.name} to take the target pose from"
    return face_pose(face), f"detected in {img_path.name}"
