"""Dense annotation targets against the authors' own casia_toy annotations, on real MediaPipe.

The authors' masks/*.png and xyzmaps/*.npy are the reference: our parsing (from landmarks
MediaPipe finds on their image, resized to 256) must overlap theirs (mean IoU >= 0.6) and
our z-buffered depth must correlate with theirs over the face (mean Pearson >= 0.9).
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from dense_face.dense_face_core.dense_targets import (
    NUM_PARSING_CLASSES,
    PARSING_CLASSES,
    PARSING_PALETTE_RGB,
    DenseTargets,
    compute_dense_targets,
    depth_from_landmarks,
    heatmaps_to_points,
    landmark_heatmaps,
    load_parsing_png,
    parsing_from_color,
    parsing_from_landmarks,
    parsing_iou,
    parsing_to_color,
)
from dense_face.dense_face_core.errors import DenseFaceInputError

from conftest import LANDMARKER as TASK, SHARED

CASIA = SHARED / "data" / "casia_toy" / "CASIAFaces" / "0000045"


def _need_shared():
    if not CASIA.is_dir() or not TASK.is_file():
        pytest.skip(f"casia_toy data or MediaPipe model not found under {SHARED} "
                    "(present only on the project's machines)")


@pytest.fixture(scope="module")
def triangles():
    _need_shared()
    from dense_face.dense_face_core.canonical_face import load_canonical_face

    return load_canonical_face(str(TASK)).triangles


@pytest.fixture(scope="module")
def casia(triangles):
    """Per image: name, 256 RGB image, our detected landmarks, authors' class map and depth."""
    import cv2
    from dense_face.dense_face_core.landmarker import FaceAnalyzer

    items = []
    t0 = time.perf_counter()
    with FaceAnalyzer(TASK, max_faces=1) as fa:
        for path in sorted((CASIA / "images").glob("*.jpg")):
            rgb = cv2.imread(str(path))[:, :, ::-1]
            img = cv2.resize(rgb, (256, 256), interpolation=cv2.INTER_AREA)
            faces = fa.detect(img)
            assert faces, f"no face detected in {path.name}"
            items.append({
                "name": path.stem, "image": img, "landmarks": faces[0].landmarks,
                "csv": np.loadtxt(CASIA / "landmarks" / f"{path.stem}.csv", delimiter=","),
                "parsing": load_parsing_png(CASIA / "masks" / f"{path.stem}.png"),
                "depth": np.load(CASIA / "xyzmaps" / f"{path.stem}.npy")[:, :, 2]})
    print(f"\nMediaPipe on {len(items)} casia images: {(time.perf_counter() - t0) * 1e3:.0f} ms incl. model load")
    assert len(items) == 14
    return items


def _iou_table(items, key, size=256):
    ious = np.array([parsing_iou(parsing_from_landmarks(it[key], size), it["parsing"]) for it in items])
    per_class = np.nanmean(ious, axis=0)
    overall = float(np.mean(np.nanmean(ious, axis=1)))  # classes present, then images
    return per_class, overall


def test_parsing_iou_vs_authors_masks(casia):
    per_class, overall = _iou_table(casia, "landmarks")
    print("\nparsing IoU, our MediaPipe landmarks vs authors' masks (256x256, 14 images):")
    for c, name in enumerate(PARSING_CLASSES):
        print(f"  {c} {name:<11} {per_class[c]:.3f}")
    print(f"  mean IoU {overall:.3f}")
    assert overall >= 0.6


def test_parsing_polygons_reproduce_authors_masks_from_their_landmarks(casia):
    """With the authors' CSV landmarks the polygons give back their masks: same region definitions."""
    per_class, overall = _iou_table(casia, "csv")
    print(f"\nparsing IoU from the authors' CSV landmarks: mean {overall:.3f}, "
          f"per class {np.round(per_class, 3).tolist()}")
    assert overall >= 0.95 and per_class.min() >= 0.9


def test_parsing_64_matches_pooled_authors_masks(casia):
    """The 64x64 training target against the authors' 256 masks pooled 4x4 (majority)."""
    ious = []
    for it in casia:
        gt = it["parsing"].reshape(64, 4, 64, 4).transpose(0, 2, 1, 3).reshape(64, 64, 16)
        counts = np.stack([(gt == c).sum(-1) for c in range(NUM_PARSING_CLASSES)])
        ious.append(parsing_iou(parsing_from_landmarks(it["landmarks"], 64), counts.argmax(0)))
    overall = float(np.mean(np.nanmean(np.array(ious), axis=1)))
    print(f"\nparsing IoU at 64x64 vs pooled authors' masks: {overall:.3f}")
    assert overall >= 0.55


def test_depth_correlates_with_authors_xyzmaps(casia, triangles):
    corrs, slopes = [], []
    for it in casia:
        ours, mask = depth_from_landmarks(it["landmarks"], triangles, 256)
        theirs = it["depth"]
        # Their face pixels are != 1.0; a few corrupt ones hold e.g. -462, so keep |d| < 1.
        both = mask & (theirs != 1.0) & (np.abs(theirs) < 1.0)
        assert both.sum() > 0.85 * mask.sum(), it["name"]
        corrs.append(np.corrcoef(ours[both], theirs[both])[0, 1])
        slopes.append(np.polyfit(ours[both], theirs[both], 1)[0])
        assert np.all(ours[~mask] == 1.0)
    corrs = np.array(corrs)
    print(f"\ndepth Pearson r vs authors' xyzmaps ch2: mean {corrs.mean():.4f}, min {corrs.min():.4f} "
          f"({casia[int(corrs.argmin())]['name']}); fit slope mean {np.mean(slopes):.3f} "
          "(1 = same units as MediaPipe z)")
    assert corrs.mean() >= 0.9 and corrs.min() >= 0.8
    assert 0.8 < np.mean(slopes) < 1.2


def test_heatmap_round_trip():
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(2 / 64, 62 / 64, (478, 2)), rng.uniform(-0.2, 0.3, (478, 1))], 1)
    hm = landmark_heatmaps(pts, 64, 1.0)
    assert hm.shape == (478, 64, 64) and hm.dtype == np.float32
    assert np.allclose(hm.reshape(478, -1).max(1), 1.0)
    iy, ix = np.divmod(hm.reshape(478, -1).argmax(1), 64)
    assert np.all(np.abs(ix - pts[:, 0] * 64) <= 0.5 + 1e-6) and np.all(np.abs(iy - pts[:, 1] * 64) <= 0.5 + 1e-6)
    for method in ("quadratic", "centroid"):
        dec, score = heatmaps_to_points(hm, method)
        err = np.abs(dec - pts[:, :2]).max() * 64
        print(f"\nheatmap encode->decode ({method}): max error {err:.4f} px at 64x64")
        assert dec.shape == (478, 2) and score.shape == (478,) and err < 0.2
    batch, _ = heatmaps_to_points(np.stack([hm, hm[::-1]]))
    assert batch.shape == (2, 478, 2) and np.allclose(batch[1], batch[0][::-1])
    torch = pytest.importorskip("torch")
    dec_t, _ = heatmaps_to_points(torch.from_numpy(hm))
    assert np.allclose(dec_t, heatmaps_to_points(hm)[0])


def test_heatmap_off_map_point_fades_instead_of_border_peak():
    hm = landmark_heatmaps(np.array([[1.5, 0.5], [0.5, 0.5]]), 64)
    assert hm[0].max() < 1e-6 and hm[1].max() == pytest.approx(1.0)


def test_palette_round_trip(casia):
    assert PARSING_PALETTE_RGB.shape == (10, 3) and len({tuple(c) for c in PARSING_PALETTE_RGB}) == 10
    import cv2

    for it in casia[:4]:
        ours = parsing_from_landmarks(it["landmarks"], 256)
        assert np.array_equal(parsing_from_color(parsing_to_color(ours)), ours)
        png = cv2.imread(str(CASIA / "masks" / f"{it['name']}.png"))[:, :, ::-1]
        assert np.array_equal(parsing_to_color(it["parsing"]), png)  # theirs -> class map -> colour: exact
    assert set(np.unique(casia[0]["parsing"])) == set(range(10))
    bad = parsing_to_color(ours).copy()
    bad[0, 0] = (1, 2, 3)
    with pytest.raises(DenseFaceInputError, match="palette"):
        parsing_from_color(bad)
    assert parsing_from_color(bad, strict=False)[0, 0] == 255


def test_class_layout_left_right(casia):
    """Classes 2/4 (right brow/eye) lie on the image's left, 7/9 on its right, as in theirs."""
    for it in casia[:3]:
        for cm in (it["parsing"], parsing_from_landmarks(it["landmarks"], 256)):
            cx = {c: np.nonzero(cm == c)[1].mean() for c in (2, 4, 7, 9)}
            assert cx[2] < 128 < cx[7] and cx[4] < 128 < cx[9]


def test_compute_dense_targets_shapes_and_timing(casia, triangles):
    lms = casia[0]["landmarks"]
    t = compute_dense_targets(lms, triangles=triangles)
    assert isinstance(t, DenseTargets)
    assert t.heatmaps.shape == (478, 64, 64) and t.heatmaps.dtype == np.float32
    assert t.parsing.shape == (64, 64) and t.parsing.dtype == np.uint8 and t.parsing.max() < 10
    assert t.depth.shape == (64, 64) and t.depth.dtype == np.float32
    assert t.depth_mask.shape == (64, 64) and t.depth_mask.dtype == bool
    assert np.all(t.depth[~t.depth_mask] == 1.0) and np.all(np.abs(t.depth[t.depth_mask]) < 0.5)
    # the face mask and the parsing's non-background agree (both are the face oval)
    agree = ((t.parsing > 0) == t.depth_mask).mean()
    assert agree > 0.97
    big = compute_dense_targets(lms, triangles=triangles, heatmap_size=32, parsing_size=(256, 192),
                                depth_size=128)
    assert big.heatmaps.shape == (478, 32, 32) and big.parsing.shape == (256, 192)
    assert big.depth.shape == (128, 128)
    # the Face object itself is accepted too
    from dense_face.dense_face_core.landmarker import Face
    face = Face(lms, (256, 256), 0.0, 0.0, 0.0, np.eye(3))
    assert np.array_equal(compute_dense_targets(face, triangles=triangles).parsing, t.parsing)

    def per_image(fn, n=30):
        fn()
        ts = []
        for _ in range(n):
            s = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - s)
        return np.median(ts) * 1e3

    print("\nper-image cost (median ms): "
          f"heatmaps 478x64x64 {per_image(lambda: landmark_heatmaps(lms)):.2f}, "
          f"parsing 64 {per_image(lambda: parsing_from_landmarks(lms, 64)):.2f}, "
          f"parsing 256 {per_image(lambda: parsing_from_landmarks(lms, 256)):.2f}, "
          f"depth 64 {per_image(lambda: depth_from_landmarks(lms, triangles, 64)):.2f}, "
          f"depth 256 {per_image(lambda: depth_from_landmarks(lms, triangles, 256)):.2f}, "
          f"all three at 64 {per_image(lambda: compute_dense_targets(lms, triangles=triangles)):.2f}, "
          f"decode {per_image(lambda: heatmaps_to_points(t.heatmaps)):.2f}")


@pytest.mark.parametrize("bad, match", [
    (np.full((478, 3), np.nan), "NaN"),
    (np.zeros((478, 2)), r"\(N, 3\)"),
    (np.zeros((100, 3)), "478"),
    (np.zeros((478, 3, 1)), "shape"),
    ("not landmarks", "landmarks"),
])
def test_bad_landmarks_are_named(bad, match):
    tri = np.array([[0, 1, 2]])
    with pytest.raises(DenseFaceInputError, match=match) as exc:
        compute_dense_targets(bad, triangles=tri)
    assert "landmarks" in str(exc.value)


def test_bad_other_inputs():
    lms = np.random.default_rng(1).uniform(0.2, 0.8, (478, 3))
    with pytest.raises(DenseFaceInputError, match="triangles"):
        compute_dense_targets(lms, triangles=np.array([[0, 1, 999]]))
    with pytest.raises(DenseFaceInputError, match="triangles"):
        depth_from_landmarks(lms, np.zeros((4, 2), int))
    with pytest.raises(DenseFaceInputError, match="size"):
        parsing_from_landmarks(lms, 0)
    with pytest.raises(DenseFaceInputError, match="heatmaps"):
        heatmaps_to_points(np.zeros((64, 64)))
    with pytest.raises(DenseFaceInputError, match="NaN"):
        heatmaps_to_points(np.full((2, 8, 8), np.nan))
    with pytest.raises(DenseFaceInputError, match="parsing mask"):
        load_parsing_png("/nonexistent/mask.png")


def test_depth_z_buffer_keeps_nearest():
    """Two overlapping triangles: the nearer (smaller z) one wins wherever both cover."""
    lms = np.array([[0.1, 0.1, 0.5], [0.9, 0.1, 0.5], [0.1, 0.9, 0.5],
                    [0.3, 0.3, -0.5], [0.9, 0.3, -0.5], [0.3, 0.9, -0.5]])
    depth, mask = depth_from_landmarks(np.pad(lms, ((0, 462), (0, 0)), constant_values=0.5),
                                       np.array([[0, 1, 2], [3, 4, 5]]), 32)
    assert mask[12, 12] and depth[12, 12] == pytest.approx(-0.5)  # covered by both
    assert depth[18, 18] == pytest.approx(-0.5)  # only the near one
    assert depth[4, 4] == pytest.approx(0.5) and not mask[0, 0] and depth[0, 0] == 1.0


def test_visualisations(casia, triangles):
    from dense_face.dense_face_core import annotation_vis as vis

    it = casia[0]
    t = compute_dense_targets(it["landmarks"], triangles=triangles, parsing_size=256, depth_size=256)
    col = vis.parsing_image(t.parsing)
    assert col.dtype == np.uint8 and col.shape == (256, 256, 3)
    assert np.array_equal(col[0, 0], PARSING_PALETTE_RGB[0])
    over = vis.parsing_image(t.parsing, it["image"], alpha=0.4)
    assert over.shape == (256, 256, 3)
    d = vis.depth_image(t.depth, t.depth_mask)
    assert d.shape == (256, 256, 3) and d.dtype == np.uint8
    assert np.all(d[~t.depth_mask] == 0) and d[t.depth_mask].max() == 255
    assert np.all(vis.depth_image(t.depth, background="white")[~t.depth_mask] == 255)
    assert vis.depth_image(t.depth, t.depth_mask, colormap="turbo").shape == (256, 256, 3)
    dots = vis.draw_landmarks(it["image"], it["landmarks"], color=(255, 0, 0))
    assert dots.shape == it["image"].shape and (dots != it["image"]).any()
    panel = vis.annotation_panel(it["image"], it["landmarks"], t, height=256)
    assert panel.dtype == np.uint8 and panel.ndim == 3 and panel.shape[1] >= 4 * 256
    tile = vis.tile_images([it["image"], col, t.heatmaps.max(0)], height=128, gap=0)
    assert tile.shape == (128, 384, 3)
    with pytest.raises(DenseFaceInputError):
        vis.tile_images([])
