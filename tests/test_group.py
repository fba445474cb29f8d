"""Several faces, several identities: every face of a group photo personalised in one run.

Real photos (insightface's group photo t1.jpg: six faces of about 100 px that only the tiled
detection finds), a real ComfyUI, tiny random-weight models (so identities are proven on the
rows of the identity token and of the query bias, not on pictures).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import tiny_models as tm
from dense_face.dense_face_core.images import read_image


def as_image(*arrays):
    return torch.stack([torch.from_numpy(a.astype(np.float32) / 255.0) for a in arrays])


def crop_args(**kw):
    args = dict(crop_size=256, padding=0.0, mask_grow=16.0, mask_feather=8.0, face="all", face_index=0,
                on_no_face="error")
    args.update(kw)
    return args


@pytest.fixture(scope="module")
def group():
    import insightface

    return read_image(os.path.join(os.path.dirname(insightface.__file__), "data", "images", "t1.jpg"))


@pytest.fixture(scope="module")
def env(comfy, tmp_path_factory):
    core = comfy.core
    fam = tm.tiny_family()
    weights = core.random_weights.build_random_weights(fam, seed=1, dense_head_width=32)
    path = comfy.models_dir / "dense_face" / "group_tiny.safetensors"
    core.weight_file.save_weight_file(path, weights.tensors(), weights.metadata)
    model, clip = tm.tiny_model(seed=0), tm.tiny_clip(tmp_path_factory.mktemp("group"), seed=0)
    (dense_face,) = comfy.node("DenseFaceLoader").load(path.name, model=model)
    rng = np.random.default_rng(7)
    ids = [core.id_embedding.FaceID(rng.normal(size=512), "insightface/antelopev2") for _ in range(3)]
    return dict(core=core, model=model, clip=clip, dense_face=dense_face, ids=ids, neg=tm.encode(clip, ""))


def test_all_faces_in_a_stable_order_with_a_numbered_preview(comfy, landmarker_path, group):
    node = comfy.node("DenseFaceCropMask")
    crop, mask, face_crop, _y, _p, _r, preview = node.crop(as_image(group), **crop_args())
    centres = [(fc.box[0] + fc.box[2]) / 2 for fc in face_crop]
    assert len(face_crop) == 6 and tuple(crop.shape) == (6, 256, 256, 3) and tuple(mask.shape) == (6, 256, 256)
    assert centres == sorted(centres) and [fc.face_number for fc in face_crop] == list(range(6))
    assert all(fc.source_index == 0 for fc in face_crop) and tuple(preview.shape) == (1, *group.shape)
    assert float((preview[0].numpy() * 255).round().astype(np.uint8).astype(int).sum()) != float(group.sum())
    _c, _m, picked, *_ = node.crop(as_image(group), **crop_args(face="list", face_list="4, 1"))
    assert [fc.face_number for fc in picked] == [4, 1] and picked[0].box == face_crop[4].box
    with pytest.raises(Exception, match="face 9 requested but 6 face"):
        node.crop(as_image(group), **crop_args(face="list", face_list="9"))


def test_two_group_photos_paste_every_face_into_its_own_photo(comfy, landmarker_path, group):
    """A batch of two photos: faces know their photo; outside the union of the feathered masks each photo is
    bit-identical, and every face region is re-painted."""
    from dense_face.dense_face_core.paste import auto_feather, warp_mask_back

    photos = as_image(group, group[:, ::-1].copy())
    crop, mask, face_crop, *_ = comfy.node("DenseFaceCropMask").crop(photos, **crop_args())
    assert len(face_crop) == 12 and [fc.source_index for fc in face_crop] == [0] * 6 + [1] * 6
    new = torch.rand_like(crop)
    (out,) = comfy.node("DenseFacePasteBack").paste(photos, new, face_crop, feather=-1.0, mask=mask)
    for b in range(2):
        weights = [warp_mask_back(mask[k].numpy(), fc, auto_feather(fc)) for k, fc in enumerate(face_crop)
                   if fc.source_index == b]
        union = np.max(weights, axis=0) > 0
        changed = (out[b].numpy() != photos[b].numpy()).any(-1)
        assert not changed[~union].any()
        assert all(changed[w > 0].mean() > 0.5 for w in weights)  # each face of this photo re-painted


def test_overlapping_faces_are_composited_in_order(comfy, landmarker_path, group):
    from dense_face.dense_face_core.paste import auto_feather, paste_back, warp_mask_back

    crop, mask, face_crop, *_ = comfy.node("DenseFaceCropMask").crop(as_image(group),
                                                                     **crop_args(face="list", face_list="0,0"))
    first, second = torch.zeros_like(crop[:1]), torch.ones_like(crop[:1])
    (out,) = comfy.node("DenseFacePasteBack").paste(as_image(group), torch.cat([first, second]), face_crop,
                                                    feather=-1.0, mask=mask)
    base = as_image(group)[0].numpy()
    expected = paste_back(paste_back(base, first[0].numpy(), face_crop[0], mask[0].numpy()),
                          second[0].numpy(), face_crop[1], mask[1].numpy())
    assert np.array_equal(out[0].numpy(), expected)  # the later face over the earlier one
    full = warp_mask_back(mask[1].numpy(), face_crop[1], auto_feather(face_crop[1])) >= 0.999
    assert full.any() and np.allclose(out[0].numpy()[full], 1.0, atol=1e-2)  # the second face covers the first


def test_each_face_gets_its_identity_on_the_token_and_query_bias_rows(comfy, env):
    """Three faces (three pose images), three identities, mapping '0:2, 1:0': row r of the conditioning and of
    every query bias is exactly what identity rows[r] alone gives."""
    from dense_face.dense_face_core.id_embedding import FaceIDBatch
    from dense_face.nodes.comfy_side.identity_token import encode_with_identity

    poses, _count = comfy.node("DenseFacePoseGrid").grid(-20.0, 20.0, 3, 0.0, 0.0, 1, 0.0)
    df, ids = env["dense_face"], env["ids"]
    model, positive, _neg = comfy.node("DenseFaceApplyPCAdapter").apply(
        env["model"], env["clip"], df, FaceIDBatch(tuple(ids)), poses, env["neg"], prompt="a photo of * .",
        pose_strength=0.0, face_to_identity="0:2, 1:0")
    rows = [2, 0, 2]
    cond = positive[0][0]
    assert cond.shape[0] == 3
    meta = df.weights.metadata
    for r, ident in enumerate(rows):
        alone = encode_with_identity(env["clip"], "a photo of * .", meta.placeholder_token, meta.init_word,
                                     df.identity_offset(ids[ident].embedding))[0][0]
        assert torch.equal(cond[r:r + 1], alone), r
    patches = model.model_options["transformer_options"]["patches_replace"]["attn2"]
    for key, patch in patches.items():
        expected = torch.cat([df.query_biases(ids[i].embedding)[key] for i in rows])
        assert torch.equal(patch.scaled_bias[:, 0], expected), key
    with pytest.raises(Exception, match="face_to_identity"):
        comfy.node("DenseFaceApplyPCAdapter").apply(env["model"], env["clip"], df, FaceIDBatch(tuple(ids)), poses,
                                                    env["neg"], face_to_identity="5:0")


def _blend(comfy, env, face_id, poses, latent, mask, **kw):
    model, pos, neg = comfy.node("DenseFaceApplyPCAdapter").apply(env["model"], env["clip"], env["dense_face"],
                                                                  face_id, poses, env["neg"])
    args = dict(seed=11, steps=3, cfg=4.0, sampler_name="ddpm", scheduler="ddim_uniform")
    args.update(kw)
    with torch.inference_mode():
        (out,) = comfy.node("DenseFaceLatentBlendSampler").sample(model, pos, neg, {"samples": latent}, mask, **args)
    return out["samples"]


def test_batched_faces_equal_single_face_runs_and_chunks(comfy, env):
    """Two faces in one sampling call (per-face seeds) give what two single-face runs give with seed + i, with
    their own identity and pose; max_batch=1 (chunks) gives the same again."""
    from dense_face.dense_face_core.id_embedding import FaceIDBatch

    poses, _count = comfy.node("DenseFacePoseGrid").grid(-25.0, 25.0, 2, 0.0, 0.0, 1, 0.0)
    latent = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(2, 256, 256)
    mask[:, 64:192, 64:192] = 1.0
    ids = FaceIDBatch(tuple(env["ids"][:2]))
    batched = _blend(comfy, env, ids, poses, latent, mask, batch_seeds="per face (seed + row)")
    chunked = _blend(comfy, env, ids, poses, latent, mask, max_batch=1)
    singles = torch.cat([_blend(comfy, env, env["ids"][i], poses[i:i + 1], latent[i:i + 1], mask[i:i + 1],
                                seed=11 + i) for i in range(2)])
    assert (batched - batched.mean()).abs().max() > 1e-3  # a real result, not zeros
    print(f"\nbatched vs single runs: max |diff| {float((batched - singles).abs().max()):.2e}; "
          f"chunks of 1 vs single runs: {float((chunked - singles).abs().max()):.2e}; latent scale "
          f"{float(singles.abs().max()):.2f}")
    # Chunks run exactly the single runs' batch shapes: bit-identical. One batch of two faces runs the pose
    # branch on two rows instead of one, where CPU convolutions round differently (~1e-7 at the first
    # step); three steps of random weights at cfg 4 grow that to ~2e-4 on latents up to ~90 (2e-6 of it).
    assert torch.equal(chunked, singles), float((chunked - singles).abs().max())
    scale = float(singles.abs().max())
    assert torch.allclose(batched, singles, rtol=0, atol=1e-5 * scale), (float((batched - singles).abs().max()), scale)
    swapped = torch.cat([_blend(comfy, env, env["ids"][1 - i], poses[i:i + 1], latent[i:i + 1], mask[i:i + 1],
                                seed=11 + i) for i in range(2)])
    assert (batched - swapped).abs().max() > 1e-4  # the identities really differ per face


def test_id_encoder_groups_references_into_identities(comfy, landmarker_path, group):
    from dense_face.dense_face_core.id_embedding import FaceIDBatch
    from dense_face.dense_face_core.random_weights import export_random_arcface

    export_random_arcface(comfy.models_dir / "insightface" / "models" / "grouptest_RANDOM" / "arcface.onnx")
    crop, *_ = comfy.node("DenseFaceCropMask").crop(as_image(group), **crop_args(crop_size=512, face="list",
                                                                                   face_list="0,1,2"))
    node = comfy.node("DenseFaceIDEncoder")
    (each,) = node.encode(crop, "insightface/grouptest_RANDOM", "CPU", group_by="each")
    (pairs,) = node.encode(crop, "insightface/grouptest_RANDOM", "CPU", group_by="0+1, 2")
    (one,) = node.encode(crop, "insightface/grouptest_RANDOM", "CPU")
    assert isinstance(each, FaceIDBatch) and len(each.items) == 3 and [f.count for f in pairs.items] == [2, 1]
    assert np.allclose(pairs.items[1].embedding, each.items[2].embedding)
    assert not isinstance(one, FaceIDBatch) and one.count == 3
    (chained,) = node.encode(crop[2:3], "insightface/grouptest_RANDOM", "CPU", group_by="each", face_id=pairs)
    assert [f.count for f in chained.items] == [2, 1, 1]  # the chained face_id's identities first
    assert np.allclose(chained.items[2].embedding, each.items[2].embedding)


def test_pose_per_face_follows_the_detected_angles_with_overrides(comfy, landmarker_path, group):
    from dense_face.dense_face_core.pose import draw_pose_image

    _c, _m, faces, *_ = comfy.node("DenseFaceCropMask").crop(as_image(group), **crop_args(face="list",
                                                                                         face_list="0, 3"))
    (poses,) = comfy.node("DenseFacePoseFromFaces").draw(faces, "1: yaw=20 roll=-5", size=256)
    got = (poses.numpy() * 255).round().astype(np.uint8)
    assert got.shape == (2, 256, 256, 3)
    assert np.array_equal(got[0], draw_pose_image(faces[0].yaw, faces[0].pitch, faces[0].roll, size=256))
    assert np.array_equal(got[1], draw_pose_image(20.0, faces[1].pitch, -5.0, size=256))
    assert not np.array_equal(got[1], draw_pose_image(faces[1].yaw, faces[1].pitch, faces[1].roll, size=256))
    with pytest.raises(Exception, match="face 2 does not exist"):
        comfy.node("DenseFacePoseFromFaces").draw(faces, "2: yaw=1")


def test_core_crop_faces_numbers_faces_and_passes_blank_photos_through(landmarker_path, group):
    """The core rule the crop node calls, without ComfyUI: the chosen faces keep their left-to-right numbers
    and photo index; a photo without a face is an error, or a pass-through square with an empty mask."""
    from dense_face.dense_face_core.errors import NoFaceError
    from dense_face.dense_face_core.face_crops import CropGeometry, FaceChoice, crop_faces
    from dense_face.dense_face_core.landmarker import FaceAnalyzer

    analyzer = FaceAnalyzer(str(landmarker_path), max_faces=8)
    found = crop_faces(analyzer, group, 3, FaceChoice("list", face_list="5, 0"), CropGeometry(256))
    assert [(fc.face_number, fc.source_index, m.shape) for fc, m in found] == [(5, 3, (256, 256)), (0, 3, (256, 256))]
    assert all(m.max() > 0.99 for _fc, m in found)
    blank = np.full((300, 400, 3), 128, np.uint8)
    with pytest.raises(NoFaceError):
        crop_faces(analyzer, blank, 0, FaceChoice("largest"), CropGeometry(256))
    ((fc, mask),) = crop_faces(analyzer, blank, 1, FaceChoice("largest", on_no_face="pass through"), CropGeometry(256))
    assert not fc.has_face and fc.source_index == 1 and not mask.any()
