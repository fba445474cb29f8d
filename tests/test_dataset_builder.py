"""Dataset builder on real photos (the authors' casia_toy CSV layout, the celebs folders):
outputs against the authors' annotations, kill -9 + resume = byte-identical shards,
bad inputs counted not fatal, and the training datasets read back from the shards."""
from __future__ import annotations

import ast
import csv
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import build_killed_after_first_shard, CASIA, CELEBS, DATASET_ARGS as COMMON, LANDMARKER as TASK, SHARED

# Celebs build: every photo kept (grey ones and small faces too) so each can be compared.
pytestmark = [pytest.mark.filterwarnings("ignore:.*without --insightface-model:UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]
CELEBS_ARGS = ["--keep-grayscale", "--min-crop", "48", "--shard-size", "8", "--crop-sizes", "256,512"]


def _need_shared():
    if not (CASIA.is_dir() and CELEBS.is_dir() and TASK.is_file()):
        pytest.skip(f"shared test data or the MediaPipe model not found under {SHARED} "
                    "(present only on the project's machines)")


def _build(args) -> dict:
    from dense_face.train.dataset_builder import main

    assert main(list(map(str, args)) + COMMON) == 0
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "manifest.json").read_text())


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((folder / "shards").iterdir())}


def export_tiny_arcface(path):
    """A stand-in with ArcFace's interface (1x3x112x112 -> 512): real weights are not downloadable here."""
    from dense_face.dense_face_core.random_weights import export_random_arcface

    return export_random_arcface(path)


@pytest.fixture(scope="module")
def arcface(tmp_path_factory) -> Path:
    _need_shared()
    return export_tiny_arcface(tmp_path_factory.mktemp("insightface") / "buffalo_l" / "w600k_r50.onnx")


@pytest.fixture(scope="module")
def casia_build(tmp_path_factory, arcface) -> Path:
    out = tmp_path_factory.mktemp("casia_shards")
    t0 = time.perf_counter()
    m = _build(["--input", CASIA, "--out", out, "--workers", 2, "--keep-grayscale", "--shard-size", 5,
                "--insightface-model", arcface.parent])
    print(f"\ncasia_toy build: {m['samples']} samples, {len(m['shards'])} shards, "
          f"{time.perf_counter() - t0:.1f} s (2 workers, incl. start-up)")
    return out


@pytest.fixture(scope="module")
def celebs_build(tmp_path_factory) -> Path:
    _need_shared()
    out = tmp_path_factory.mktemp("celebs_shards")
    t0 = time.perf_counter()
    m = _build(["--input", CELEBS, "--out", out, "--workers", 2, *CELEBS_ARGS])
    print(f"\ncelebs build: {m['samples']} samples in {len(m['shards'])} shards, "
          f"{time.perf_counter() - t0:.1f} s (2 workers, incl. start-up)")
    return out


def _samples(out: Path) -> list[dict]:
    """Every sample of a build, decoded: meta, landmarks, parsing (256), depth (256), embedding."""
    from dense_face.train import shards as S

    found = []
    for tar in sorted((out / "shards").glob("*.tar")):
        for key, files in S.iter_shard(tar):
            meta = json.loads(files["meta.json"])
            depth, mask = S.decode_depth(files["depth.png"])
            found.append({"key": key, "meta": meta, "files": files,
                          "landmarks": S.decode_npy(files["landmarks.npy"]),
                          "parsing": S.decode_image(files["parsing.png"]), "depth": depth, "mask": mask,
                          "embedding": (S.decode_npy(files["embedding.npy"]) if "embedding.npy" in files else None)})
    return found


def _their_frame_to_crop256(meta: dict) -> np.ndarray:
    """Affine from the authors' 256 frame (the casia photo resized to 256) to our 256 crop."""
    w, h = meta["source_size"]
    M = np.array(meta["crop"]["matrix"], np.float64)        # photo px -> crop px at crop["size"]
    k = 256 / meta["crop"]["size"]
    to256 = np.array([[k, 0, 0.5 * k - 0.5], [0, k, 0.5 * k - 0.5]])
    M = np.vstack([to256, [0, 0, 1]]) @ np.vstack([M, [0, 0, 1]])
    sx, sy = w / 256, h / 256                                 # their px -> photo px
    A = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])
    return (M @ A)[:2]


# ============================================================== casia_toy vs the authors' annotations

def test_casia_against_authors_annotations(casia_build):
    import cv2
    from dense_face.dense_face_core.dense_targets import load_parsing_png, parsing_iou

    manifest = json.loads((casia_build / "manifest.json").read_text())
    with open(CASIA / "casiaFacesDataset256_1_samples_headpose.csv") as fh:
        rows = {r["face_file"]: r for r in csv.DictReader(fh)}
    assert manifest["layout"] == "csv" and manifest["complete"]
    assert manifest["counts"]["ok"] == 14 and manifest["samples"] == 14 and len(manifest["shards"]) == 3
    assert manifest["embeddings"] == {"present": True, "model": "insightface/buffalo_l", "dim": 512}
    samples = _samples(casia_build)
    assert len(samples) == 14
    pose_err, src_err, ious, corrs, captions = [], [], [], [], []
    for s in samples:
        meta = s["meta"]
        row = rows[meta["source"]]
        pitch, yaw, roll = (float(v) for v in ast.literal_eval(row["head_pose"]))
        assert meta["labels"]["head_pose"] == pytest.approx({"pitch": pitch, "yaw": yaw, "roll": roll})
        p = meta["pose"]
        pose_err.append([abs(p["yaw"] - yaw), abs(p["pitch"] - pitch), abs(p["roll"] - roll)])
        q = meta["source_pose"]
        src_err.append([abs(q["yaw"] - yaw), abs(q["pitch"] - pitch), abs(q["roll"] - roll)])
        # their mask/xyz live in the photo resized to 256; bring them into our crop frame
        A = _their_frame_to_crop256(meta)
        theirs = load_parsing_png(CASIA / row["mask_file"])
        warped = cv2.warpAffine(theirs, A, (256, 256), flags=cv2.INTER_NEAREST,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=10)
        ours = s["parsing"].copy()
        ours[warped == 10] = 10  # outside their frame: ignored by parsing_iou
        ious.append(np.nanmean(parsing_iou(ours, warped)))
        xyz = np.load(CASIA / row["xyz_file"])[:, :, 2]
        zw = cv2.warpAffine(xyz, A, (256, 256), flags=cv2.INTER_NEAREST,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=1.0)
        both = s["mask"] & (zw != 1.0) & (np.abs(zw) < 1.0)
        assert both.sum() > 0.8 * s["mask"].sum()
        corrs.append(np.corrcoef(s["depth"][both], zw[both])[0, 1])
        assert np.all(s["depth"][~s["mask"]] == 1.0)
        captions.append((meta["caption"], meta["caption_source"]))
        emb = s["embedding"]
        assert emb.shape == (512,) and emb.dtype == np.float32 and abs(np.linalg.norm(emb) - 1) < 1e-5
        assert meta["embedding_model"] == "insightface/buffalo_l"
    mae, src_mae = np.mean(pose_err, axis=0), np.mean(src_err, axis=0)
    print(f"\ncasia_toy head pose MAE vs the authors' 6DRepNet labels (yaw, pitch, roll deg): crop "
          f"{mae.round(2).tolist()}, photo {src_mae.round(2).tolist()} (targets 3 / 5 / 4)")
    print(f"parsing mean IoU vs the authors' masks in our crop frame: {np.mean(ious):.3f} "
          f"(min {np.min(ious):.3f}); depth Pearson r vs xyzmaps ch2: mean {np.mean(corrs):.4f}, "
          f"min {np.min(corrs):.4f}")
    print("captions:", *sorted({c for c, _ in captions}), sep="\n  ")
    # casia photos are already aligned crops (our crop turns them < 3 deg), so the crop's pose
    # and the label describe the same frame
    assert mae[0] <= 3.0 and mae[1] <= 5.0 and mae[2] <= 4.0
    assert np.mean(ious) >= 0.6
    assert np.mean(corrs) >= 0.9 and np.min(corrs) >= 0.8
    assert all(c.count("*") == 1 and src.startswith("file:") for c, src in captions)


def test_casia_embeddings_match_encoder(casia_build, arcface):
    """The stored embedding is ArcFaceEncoder's on the photo with the detected landmarks."""
    from dense_face.dense_face_core.id_embedding import ArcFaceEncoder
    from dense_face.dense_face_core.images import read_image
    from dense_face.dense_face_core.landmarker import FaceAnalyzer

    s = _samples(casia_build)[0]
    img = read_image(CASIA / s["meta"]["source"])
    enc = ArcFaceEncoder(arcface, "insightface/buffalo_l")
    with FaceAnalyzer(TASK) as fa:
        face = fa.detect(img)[0]
    assert np.allclose(enc.embed(img, face.points), s["embedding"], atol=1e-5)


# ============================================================== celebs (folder layout)

def test_celebs_landmarks_and_counts(celebs_build):
    manifest = json.loads((celebs_build / "manifest.json").read_text())
    n_photos = len(list(CELEBS.glob("*/*.jpg")))
    assert manifest["layout"] == "folders" and manifest["complete"]
    assert manifest["identities"]["total"] == 6 and manifest["identities"]["with_samples"] == 6
    assert sum(manifest["counts"].values()) == n_photos
    assert manifest["embeddings"]["present"] is False and "insightface-model" in manifest["embeddings"]["note"]
    samples = _samples(celebs_build)
    assert len(samples) == manifest["samples"] >= n_photos - 2
    errs, diffs = [], []
    for s in samples:
        meta = s["meta"]
        size = meta["crop"]["size"]
        M = np.vstack([np.array(meta["crop"]["matrix"]), [0, 0, 1]])
        crop_px = s["landmarks"][:, :2].astype(np.float64) * size - 0.5
        photo_px = (np.linalg.inv(M)[:2, :2] @ crop_px.T).T + np.linalg.inv(M)[:2, 2]
        src = CELEBS / meta["source"]
        ref = np.array(json.loads(src.with_name(src.stem + ".landmarks.json").read_text())["dense"])
        w, h = meta["source_size"]
        ref_px = ref[:, :2] * [w, h] - 0.5
        face = (ref_px.max(0) - ref_px.min(0)).max()
        errs.append(np.linalg.norm(photo_px - ref_px, axis=1).mean() / face)
        assert s["key"] == f"{meta['identity']}/{src.stem}"
        if len(errs) % 10 == 1:  # the stored crops are the photo warped by the stored matrix
            from dense_face.dense_face_core.crop import warp_affine
            from dense_face.dense_face_core.images import read_image
            from dense_face.train import shards as S

            photo = read_image(src)
            for c in (256, 512):
                k = c / size
                Mc = np.array([[k, 0, 0.5 * k - 0.5], [0, k, 0.5 * k - 0.5]]) @ M
                again = warp_affine(photo, Mc, (c, c)).astype(np.float32)
                stored = S.decode_image(s["files"][f"crop_{c}.jpg"]).astype(np.float32)
                diffs.append(np.abs(again - stored).mean())
    errs = np.array(errs)
    print(f"\nstored crops vs the photo re-warped with meta's crop matrix: mean abs diff "
          f"{np.mean(diffs):.2f} levels (max {np.max(diffs):.2f}; JPEG q95 + INTER_AREA 256)")
    assert np.max(diffs) < 4.0
    print(f"\ncelebs: {len(samples)}/{n_photos} samples; stored landmarks mapped back to the photo vs the "
          f"annotations: mean {errs.mean():.3%}, worst {errs.max():.3%} of face size; counts "
          f"{ {k: v for k, v in manifest['counts'].items() if v} }")
    assert errs.mean() <= 0.005


def test_kill_and_resume_gives_identical_shards(celebs_build, tmp_path):
    """kill -9 after the first shard, re-run (other worker count): same bytes as one clean run."""
    out = tmp_path / "killed"
    build_killed_after_first_shard(["--input", str(CELEBS), "--out", str(out), "--workers", "1", *CELEBS_ARGS, *COMMON],
                                   out)
    done_at_kill = len(list((out / "shards").glob("shard-*.json")))
    total = len(json.loads((celebs_build / "manifest.json").read_text())["shards"])
    assert 1 <= done_at_kill < total, "the build finished before it could be killed"
    assert not (out / "manifest.json").exists()
    m = _build(["--input", CELEBS, "--out", out, "--workers", 2, *CELEBS_ARGS])
    assert m["complete"]
    assert not [p for p in (out / "shards").iterdir() if p.name.startswith(".")], "temp files left"
    clean, resumed = _hashes(celebs_build), _hashes(out)
    print(f"\nkilled after {done_at_kill}/{total} shards; resumed: {len(resumed)} files, byte-identical: "
          f"{clean == resumed}")
    assert clean == resumed
    # a finished build is skipped entirely
    t0 = time.perf_counter()
    _build(["--input", CELEBS, "--out", out, "--workers", 2, *CELEBS_ARGS])
    assert _hashes(out) == clean and time.perf_counter() - t0 < 5


def test_shard_partition_across_machines(celebs_build, tmp_path):
    """--shard 0/2 then 1/2 into one folder = the same shards as one run; the manifest completes."""
    out = tmp_path / "parts"
    common = ["--input", CELEBS, "--out", out, "--workers", 1, *CELEBS_ARGS, "--max-images", 40]
    m0 = _build([*common, "--shard", "0/2"])  # first 40 images = the first 3 identities = 3 units
    assert not m0["complete"] and m0["pending_units"] == ["shard-000001"]
    m1 = _build([*common, "--shard", "1/2"])
    assert m1["complete"] and sum(m1["counts"].values()) == 40
    full, parts = _hashes(celebs_build), _hashes(out)
    assert sorted(parts) == [f"shard-00000{i}.{e}" for i in range(3) for e in ("json", "tar")]
    assert all(parts[name] == full[name] for name in parts)


# ============================================================== bad inputs

def test_bad_inputs_are_counted_not_fatal(tmp_path):
    _need_shared()
    import cv2
    from PIL import Image

    src = tmp_path / "in"
    good = CELEBS / "Oprah_Winfrey" / "01.jpg"
    person = src / "person"
    person.mkdir(parents=True)
    data = good.read_bytes()
    (person / "a_good.jpg").write_bytes(data)
    (person / "b_copy_of_good.jpg").write_bytes(data)                        # duplicate
    (person / "c_truncated.jpg").write_bytes(data[: len(data) // 3])         # truncated JPEG
    (person / "d_garbage.jpg").write_bytes(b"this is not an image" * 50)    # unreadable
    Image.open(good).convert("L").save(person / "e_grey.png")                # grayscale
    (person / "notes.txt").write_text("not an image: ignored")
    big = np.full((4000, 6000, 3), 200, np.uint8)                            # 6000x4000, face pasted
    face = cv2.imread(str(CELEBS / "Barack_Obama" / "04.jpg"))
    big[1000:1000 + face.shape[0] * 3, 2000:2000 + face.shape[1] * 3] = cv2.resize(
        face, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)[: 3000]
    cv2.imwrite(str(person / "f_huge.jpg"), big, [cv2.IMWRITE_JPEG_QUALITY, 80])
    cv2.imwrite(str(person / "g_noface.png"), np.tile(np.uint8([[[40, 120, 200]]]), (300, 300, 1)))
    small = cv2.resize(cv2.imread(str(good)), (96, 96), interpolation=cv2.INTER_AREA)
    canvas = np.full((400, 400, 3), 128, np.uint8)
    canvas[150:246, 150:246] = small
    cv2.imwrite(str(person / "h_small_face.png"), canvas)
    (src / "empty_person").mkdir()                                           # empty identity
    (src / "loose.jpg").write_bytes(data)                                    # not in an identity
    out = tmp_path / "out"
    m = _build(["--input", src, "--out", out, "--workers", 2, "--shard-size", 4])
    c = m["counts"]
    print(f"\nbad inputs: counts { {k: v for k, v in c.items() if v} }; failures:")
    for reason, f in m["failures"].items():
        print(f"  {f['count']} x {reason}  e.g. {f['examples'][0]}")
    assert c["ok"] == 2 and m["downscaled_images"] == 1
    assert c["duplicate"] == 1 and c["unreadable"] == 2 and c["grayscale"] == 1
    assert c["no_face"] + c["too_small"] == 2 and c["empty_identity"] == 1 and c["no_identity"] == 1
    assert m["identities"] == {"total": 2, "with_samples": 1, "with_one_sample": 0, "empty": 1}
    assert any("truncated" in r for r in m["failures"])
    huge = next(s for s in _samples(out) if s["meta"]["source"].endswith("f_huge.jpg"))
    assert huge["meta"]["source_size"] == [6000, 4000] and max(huge["meta"]["decoded_size"]) <= 4096


# ============================================================== captions

def test_caption_selection():
    from dense_face.train.captions import TEMPLATE, best_caption, caption_for, to_placeholder_caption

    assert to_placeholder_caption("a man with a beard and a tie") == "a * with a beard and a tie"
    assert to_placeholder_caption("A woman with a smile on her face") == "A * with a smile on her face"
    assert to_placeholder_caption("arafed asian man in a suit") == "an asian * in a suit"
    assert to_placeholder_caption("arafed image of a man") == "an image of a *"
    assert to_placeholder_caption("two men in masks and hats") is None          # not one person
    assert to_placeholder_caption("bruce lee in the movie the big boss") is None  # no subject word
    assert to_placeholder_caption("[ unused0 ] in a striped shirt.") is None       # captioner junk
    assert to_placeholder_caption("the batman logo on a shirt") is None             # whole words only
    got = best_caption({"bruce lee in the movie": 0.33, "a man in a hat": 0.25, "a young man smiling": 0.29})
    assert got == ("a young * smiling", "a young man smiling")
    cap = caption_for([CASIA / "CASIAFaces/0000045/captions/001.json"] if CASIA.is_dir() else [], [])
    if CASIA.is_dir():  # best CLIP score with a subject: blip-base 0.291
        assert cap == {"caption": "a * with a green wig and a pink shirt",
                       "caption_original": "a man with a green wig and a pink shirt",
                       "caption_source": "file:001.json"}
    assert caption_for([], ["no subject here"])["caption"] == TEMPLATE


# ============================================================== the training datasets

def test_pair_dataset_fields(casia_build):
    import torch
    from dense_face.dense_face_core.dense_targets import parsing_from_landmarks, parsing_iou
    from dense_face.dense_face_core.pose import draw_pose_image
    from dense_face.train.dataset import DenseFacePairs

    ds = DenseFacePairs(casia_build, seed=3, require_embeddings=True)
    assert len(ds) == 14 and ds.has_embeddings
    stored = {s["key"]: s for s in _samples(casia_build)}
    t0 = time.perf_counter()
    items = [ds[i] for i in range(len(ds))]
    ms = (time.perf_counter() - t0) * 1e3 / len(ds)
    for x in items:
        assert x["identity"] == "0000045" and x["reference_key"] != x["key"] and not x["same_image"]
        assert x["image"].shape == (3, 256, 256) and x["image"].dtype == torch.float32
        assert -1.0 <= x["image"].min() and x["image"].max() <= 1.0 and x["image"].min() < -0.5
        assert x["pose_image"].shape == (3, 256, 256) and 0 <= x["pose_image"].min() and x["pose_image"].max() <= 1
        p = x["pose"].tolist()
        meta = stored[x["key"]]["meta"]
        assert p == pytest.approx([meta["pose"]["pitch"], meta["pose"]["yaw"], meta["pose"]["roll"]])
        ref = torch.from_numpy(draw_pose_image(meta["pose"]["yaw"], meta["pose"]["pitch"], meta["pose"]["roll"]))
        assert torch.equal(x["pose_image"], ref.permute(2, 0, 1).float() / 255)
        assert x["embedding"].shape == (512,) and bool(x["has_embedding"])
        assert torch.equal(x["embedding"], torch.from_numpy(stored[x["reference_key"]]["embedding"]))
        assert x["caption"] == meta["caption"] and "*" in x["caption"]
        hm = x["heatmaps"]
        assert hm.shape == (478, 64, 64) and hm.dtype == torch.float32 and float(hm.max()) == pytest.approx(1.0)
        lm = x["landmarks"].numpy()
        inside = ((lm[:, :2] > 0.01) & (lm[:, :2] < 0.98)).all(1)
        peak = hm.flatten(1).argmax(1).numpy()
        rc = np.stack([peak // 64, peak % 64], 1)
        expect = np.rint(lm[:, [1, 0]] * 64)
        assert np.abs(rc - expect)[inside].max() <= 1 and (rc == expect).all(1)[inside].mean() > 0.99
        assert x["parsing"].shape == (64, 64) and x["parsing"].dtype == torch.int64
        assert 0 <= int(x["parsing"].min()) and int(x["parsing"].max()) <= 9
        iou = np.nanmean(parsing_iou(x["parsing"].numpy().astype(np.uint8), parsing_from_landmarks(lm, 64)))
        assert iou > 0.8
        assert x["depth"].shape == (1, 64, 64) and x["depth_mask"].shape == (1, 64, 64)
        face = x["depth_mask"] > 0
        assert torch.all(x["depth"][~face] == 1.0) and x["depth"][face].abs().max() < 0.6
        assert 0.2 < float(x["depth_mask"].mean()) < 0.8
    # deterministic for a seed; another epoch redraws references; picklable with open handles
    import pickle

    again = pickle.loads(pickle.dumps(ds))  # ds has open shard files by now
    assert [again[i]["reference_key"] for i in range(14)] == [x["reference_key"] for x in items]
    again.set_epoch(1)
    assert [again[i]["reference_key"] for i in range(14)] != [x["reference_key"] for x in items]
    print(f"\nDenseFacePairs: {ms:.1f} ms per sample (decode + 478x64x64 heatmaps + pose image)")


def test_pair_dataset_celebs_and_missing_embeddings(celebs_build):
    from dense_face.dense_face_core.errors import DenseFaceInputError
    from dense_face.train.dataset import DenseFacePairs

    with pytest.warns(UserWarning, match="without --insightface-model"):
        ds = DenseFacePairs(celebs_build)
    with pytest.raises(DenseFaceInputError, match="insightface-model"):
        DenseFacePairs(celebs_build, require_embeddings=True)
    for i in range(0, len(ds), 7):
        x = ds[i]
        assert x["reference_key"].split("/")[0] == x["key"].split("/")[0] == x["identity"].replace(" ", "_")
        assert x["reference_key"] != x["key"] and not bool(x["has_embedding"])
        assert float(x["embedding"].abs().sum()) == 0.0


def test_stream_splits_by_rank_and_worker(casia_build, celebs_build):
    import torch
    from dense_face.train.dataset import DenseFaceStream

    # casia: 3 shards (its one identity cut in 5s) over 2 ranks; celebs: 6 shards (one per identity)
    for build in (casia_build, celebs_build):
        everything = _all_keys(build)
        per_rank = []
        for rank in (0, 1):
            keys = list(DenseFaceStream(build, seed=1, rank=rank, world_size=2, shuffle_buffer=16).iter_keys())
            again = list(DenseFaceStream(build, seed=1, rank=rank, world_size=2, shuffle_buffer=16).iter_keys())
            assert keys == again  # deterministic
            per_rank.append(keys)
            for key, ref, ident, same in keys:
                assert key.split("/")[0] == ref.split("/")[0] and (ref == key) == same
                assert not same  # every identity (and casia shard) has several images
        k0, k1 = ({k[0] for k in r} for r in per_rank)
        assert not k0 & k1 and sorted(k0 | k1) == sorted(everything) and k0 and k1
    # another seed: another order; a batch of 8 mixes identities thanks to the shuffle buffer
    other = [k[0] for k in DenseFaceStream(celebs_build, seed=2, world_size=1, rank=0).iter_keys()]
    assert other != [k[0] for k in DenseFaceStream(celebs_build, seed=1, world_size=1, rank=0).iter_keys()]
    assert len({k.split("/")[0] for k in other[:8]}) >= 3
    # DataLoader workers split further (2 ranks x 2 workers = 4 consumers): nothing lost or repeated
    keys = []
    for rank in (0, 1):
        ds = DenseFaceStream(celebs_build, seed=2, rank=rank, world_size=2, shuffle_buffer=8)
        batches = list(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2))
        keys += [k for b in batches for k in b["key"]]
    b = batches[0]
    assert b["image"].shape == (4, 3, 256, 256) and b["heatmaps"].shape == (4, 478, 64, 64)
    assert b["parsing"].dtype == torch.int64 and len(b["caption"]) == 4
    assert sorted(keys) == sorted(_all_keys(celebs_build))
    # fewer shards than consumers: identity groups are dealt out instead
    parts = [{k[0] for k in DenseFaceStream(celebs_build, rank=r, world_size=8).iter_keys()} for r in range(8)]
    assert sum(len(p) for p in parts) == 85 and len(set().union(*parts)) == 85
    assert sum(1 for p in parts if p) == 6  # six identities -> six busy ranks


def _all_keys(build) -> list[str]:
    from dense_face.train.dataset import shard_samples

    return [s["key"] for p in sorted((build / "shards").glob("*.tar")) for s in shard_samples(p)]


def test_cli_arguments_rejected(tmp_path):
    from dense_face.train.dataset_builder import main

    with pytest.raises(SystemExit) as e:
        main(["--input", str(tmp_path), "--out", str(tmp_path / "o"), "--shard", "2/2"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        main(["--input", str(tmp_path), "--out", str(tmp_path / "o"), "--crop-sizes", "abc"])
    assert main(["--input", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--quiet",
                 "--landmarker", str(TASK)]) == 2 if TASK.is_file() else True


def _tiny_blip(folder: Path) -> Path:
    """A random-weight BLIP captioner saved locally (a real one cannot be downloaded here)."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor

    try:
        from transformers import BlipImageProcessorPil as ImageProcessor  # no torchvision needed
    except ImportError:
        from transformers import BlipImageProcessor as ImageProcessor
    folder.mkdir(parents=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "man", "woman", "with", "hat", "photo",
             "of", "the", "in", "smiling", "[DEC]"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    cfg = BlipConfig(vision_config=dict(small, image_size=32, patch_size=16),
                     text_config=dict(small, vocab_size=len(words), encoder_hidden_size=32, bos_token_id=15,
                                      pad_token_id=0, sep_token_id=3), projection_dim=32)
    torch.manual_seed(0)
    BlipForConditionalGeneration(cfg).eval().save_pretrained(folder)
    BlipProcessor(ImageProcessor(size={"height": 32, "width": 32}),
                  BertTokenizer(str(folder / "vocab.txt"), bos_token="[DEC]")).save_pretrained(folder)
    return folder


def test_local_captioner_used_when_no_caption_file(tmp_path, monkeypatch):
    """--captioner loads a transformers model from a folder, offline, for photos without captions."""
    _need_shared()
    from dense_face.train import captions

    model = _tiny_blip(tmp_path / "blip")
    calls = []
    original = captions.LocalCaptioner.__call__

    def spy(self, image):
        calls.append(image.shape)
        return original(self, image)

    monkeypatch.setattr(captions.LocalCaptioner, "__call__", spy)
    person = tmp_path / "in" / "someone"
    person.mkdir(parents=True)
    (person / "01.jpg").write_bytes((CELEBS / "Yann_LeCun" / "01.jpg").read_bytes())
    m = _build(["--input", tmp_path / "in", "--out", tmp_path / "out", "--workers", 1, "--captioner", model])
    assert m["counts"]["ok"] == 1 and len(calls) == 1 and m["settings"]["captioner"] == "blip"
    meta = _samples(tmp_path / "out")[0]["meta"]
    # random weights rarely name a subject: then the template stands in, and says so
    assert meta["caption_source"] in ("captioner", "template") and "*" in meta["caption"]
    with pytest.raises(Exception, match="not a folder"):
        captions.LocalCaptioner(str(tmp_path / "missing"))


def crash_on_marked(work):
    """Worker stand-in that dies (like a native crash) on a chunk holding a file named *crash*."""
    from dense_face.train.dataset_builder import process_chunk

    if any("crash" in item.rel for item in work.items):
        os._exit(3)
    return process_chunk(work)


def test_worker_crash_is_isolated(tmp_path):
    """A worker dying on one image costs that image (outcome 'crashed'), not the build: the chunk it
    was in is retried alone, then image by image."""
    _need_shared()
    from dense_face.train.dataset_builder import Item, _run_items
    from dense_face.train.dataset_builder.chunks import Chunk

    photos = sorted((CELEBS / "Oprah_Winfrey").glob("*.jpg"))[:6]
    items = [Item("o", str(p), f"o/{'crash' if i == 1 else 'ok'}{i}.jpg", 1) for i, p in enumerate(photos)]
    chunks = [Chunk(0, 0, items[:4]), Chunk(0, 4, items[4:])]
    cfg = {"landmarker": str(TASK), "crop_sizes": (256,), "min_crop": 48, "max_pixels": 10**8,
           "keep_grayscale": True, "tiles": False, "arcface_onnx": None, "embedding_model": None,
           "captioner": None, "workers": 2}
    got = []
    _run_items(cfg, [(c.slot, c) for c in chunks],
               lambda slot, res: got.extend((slot[1] + k, r["outcome"]) for k, r in enumerate(res)), 2,
               fn=crash_on_marked)
    assert got == [(0, "ok"), (1, "crashed"), (2, "ok"), (3, "ok"), (4, "ok"), (5, "ok")]


def test_insightface_model_argument(arcface, tmp_path):
    from dense_face.train.dataset_builder import _resolve_insightface, main

    assert _resolve_insightface(str(arcface)) == (str(arcface), "insightface/buffalo_l")
    onnx, name = _resolve_insightface(str(arcface.parent))
    assert Path(onnx) == arcface and name == "insightface/buffalo_l"
    (tmp_path / "in" / "p").mkdir(parents=True)
    assert main(["--input", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--quiet",
                 "--landmarker", str(TASK), "--insightface-model", str(tmp_path / "nope.onnx")]) == 2
