"""The pose image must equal the authors' drawing pixel for pixel (golden images in ../shared)."""
import json

import numpy as np
import pytest
from PIL import Image

from dense_face.dense_face_core.errors import DenseFaceInputError
from dense_face.dense_face_core.pose import draw_pose_image, euler_from_matrix, matrix_from_euler


def _golden(shared_dir):
    root = shared_dir / "data" / "pose_axis"
    return [(root / e["file"], e) for e in json.loads((root / "index.json").read_text())["images"]]


def test_pose_image_pixel_identical_to_authors(shared_dir):
    cases = _golden(shared_dir)
    assert len(cases) == 12
    for path, e in cases:
        golden = np.asarray(Image.open(path).convert("RGB"))
        ours = draw_pose_image(e["yaw"], e["pitch"], e["roll"])
        diff = int((golden != ours).any(axis=-1).sum())
        print(f"{path.name} yaw={e['yaw']} pitch={e['pitch']} roll={e['roll']}: {diff} differing pixels")
        assert ours.dtype == np.uint8 and ours.shape == (256, 256, 3)
        assert diff == 0


def test_pose_image_angles_change_drawing():
    base = draw_pose_image(0, 0, 0)
    for angles in [(10, 0, 0), (0, 10, 0), (0, 0, 10), (120, -100, 200)]:
        assert (draw_pose_image(*angles) != base).any(), angles


def test_pose_image_other_sizes_scale():
    small = draw_pose_image(20, 10, 5, size=256)
    big = draw_pose_image(20, 10, 5, size=512)
    assert big.shape == (512, 512, 3)
    down = np.asarray(Image.fromarray(big).resize((256, 256), Image.NEAREST))
    assert (down != small).any(axis=-1).mean() < 0.02


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_pose_image_rejects_non_finite(bad):
    with pytest.raises(DenseFaceInputError, match="yaw"):
        draw_pose_image(bad, 0, 0)


def test_pose_image_rejects_bad_size():
    with pytest.raises(DenseFaceInputError, match="size"):
        draw_pose_image(0, 0, 0, size=8)


def test_euler_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p, y, r = rng.uniform(-80, 80, 3)
        got = euler_from_matrix(matrix_from_euler(p, y, r))
        assert np.allclose(got, (p, y, r), atol=1e-9)
