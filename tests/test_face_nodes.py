"""Face-stack nodes in a real ComfyUI on real photos: crop + mask, paste-back, bad input."""
import os

import numpy as np
import pytest
import torch

from dense_face.dense_face_core.images import read_image


def as_image(*arrays):
    return torch.stack([torch.from_numpy(a.astype(np.float32) / 255.0) for a in arrays])


@pytest.fixture(scope="module")
def photos(shared_dir):
    import cv2

    a = read_image(shared_dir / "data/celebs/Barack_Obama/04.jpg")
    b = cv2.resize(read_image(shared_dir / "data/celebs/Fei-Fei_Li/01.jpg"), (a.shape[1], a.shape[0]))
    return a, b


def crop_args(**kw):
    args = dict(crop_size=512, padding=0.0, mask_grow=16.0, mask_feather=8.0, face="largest",
                face_index=0, on_no_face="error")
    args.update(kw)
    return args


def test_crop_mask_batch_and_paste_back(comfy, landmarker_path, photos):
    node = comfy.node("DenseFaceCropMask")
    crop, mask, face_crop, yaw, pitch, roll, _preview = node.crop(as_image(*photos), **crop_args(crop_size=256))
    assert tuple(crop.shape) == (2, 256, 256, 3) and tuple(mask.shape) == (2, 256, 256)
    assert len(face_crop) == 2 and all(fc.has_face for fc in face_crop)
    assert 0.0 <= float(mask.min()) and float(mask.max()) == pytest.approx(1.0)
    assert (yaw, pitch, roll) == (face_crop[0].yaw, face_crop[0].pitch, face_crop[0].roll)
    print(f"crop pose of image 0: yaw {yaw:.1f} pitch {pitch:.1f} roll {roll:.1f}")
    assert abs(roll) < 5.0  # the crop is upright

    base = as_image(*photos)
    new_face = torch.rand_like(crop)
    (out,) = comfy.node("DenseFacePasteBack").paste(base, new_face, face_crop, feather=-1.0, mask=mask)
    assert out.shape == base.shape
    weight = np.stack([comfy.core.paste.warp_mask_back(m.numpy(), fc, comfy.core.paste.auto_feather(fc))
                       for m, fc in zip(mask, face_crop)])
    outside = weight == 0
    assert np.array_equal(out.numpy()[outside], base.numpy()[outside])
    changed = (out.numpy() != base.numpy()).any(-1)
    print(f"paste-back changed {changed.mean():.3%} of pixels, all inside the feathered mask")
    assert changed.any() and not changed[outside].any()


def test_no_face_error_and_pass_through(comfy, landmarker_path):
    blank = torch.full((1, 300, 400, 3), 0.5)
    node = comfy.node("DenseFaceCropMask")
    with pytest.raises(Exception, match="no face found"):
        node.crop(blank, **crop_args())
    crop, mask, face_crop, yaw, pitch, roll, _preview = node.crop(blank, **crop_args(on_no_face="pass through (empty mask)"))
    assert tuple(crop.shape) == (1, 512, 512, 3) and float(mask.abs().max()) == 0.0
    assert not face_crop[0].has_face and (yaw, pitch, roll) == (0.0, 0.0, 0.0)
    (out,) = comfy.node("DenseFacePasteBack").paste(blank, torch.rand(1, 512, 512, 3), face_crop, -1.0, mask)
    assert torch.equal(out, blank)


def test_several_faces_by_index(comfy, landmarker_path):
    import insightface

    group = read_image(os.path.join(os.path.dirname(insightface.__file__), "data", "images", "t1.jpg"))
    node = comfy.node("DenseFaceCropMask")
    boxes = []
    for index in range(3):
        _, _, fc, *_ = node.crop(as_image(group), **crop_args(face="by index", face_index=index, crop_size=256))
        boxes.append(fc[0].box)
    assert len({tuple(np.round(b)) for b in boxes}) == 3
    with pytest.raises(Exception, match="face index 40"):
        node.crop(as_image(group), **crop_args(face="by index", face_index=40))


def test_odd_inputs(comfy, landmarker_path, photos):
    node = comfy.node("DenseFaceCropMask")
    rgba = torch.cat([as_image(photos[0]), torch.ones(1, *photos[0].shape[:2], 1)], dim=-1)
    crop, *_ = node.crop(rgba, **crop_args(crop_size=256))
    assert crop.shape[-1] == 3
    gray = as_image(photos[0]).mean(dim=-1, keepdim=True)
    crop, *_ = node.crop(gray, **crop_args(crop_size=256))
    assert crop.shape[-1] == 3
    nan = as_image(photos[0]).clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(Exception, match="NaN"):
        node.crop(nan, **crop_args())
    # a face far below 64 px
    import cv2

    tiny = np.full((900, 900, 3), 127, np.uint8)
    tiny[10:42, 10:42] = cv2.resize(photos[0], (32, 32), interpolation=cv2.INTER_AREA)
    with pytest.raises(Exception, match="no face|smaller than"):
        node.crop(as_image(tiny), **crop_args())


def test_missing_landmarker_names_file_folder_and_url(comfy):
    node = comfy.node("DenseFaceCropMask")
    with pytest.raises(Exception) as info:
        node.crop(torch.zeros(1, 64, 64, 3), **crop_args(), landmarker="missing.task")
    for part in ("missing.task", "face_landmarker.task", "ComfyUI/models/mediapipe/",
                 "https://storage.googleapis.com/mediapipe-models/face_landmarker/"):
        assert part in str(info.value)


def test_annotation_targets_node(comfy, landmarker_path, photos):
    lms, parsing, depth, face_mask = comfy.node("DenseFaceAnnotationTargets").annotate(as_image(photos[0]), 128)
    assert tuple(parsing.shape) == (1, 128, 128, 3) and tuple(depth.shape) == (1, 128, 128, 3)
    assert tuple(lms.shape[1:3]) == photos[0].shape[:2]
    assert 0.1 < float(face_mask.mean()) < 0.9


def test_id_encoder_and_embedding_nodes(comfy, landmarker_path, photos, shared_dir):
    from dense_face.dense_face_core.random_weights import export_random_arcface

    export_random_arcface(comfy.models_dir / "insightface" / "models" / "nodetest_RANDOM" / "arcface.onnx")
    node = comfy.node("DenseFaceIDEncoder")
    assert "insightface/nodetest_RANDOM" in node.INPUT_TYPES()["required"]["id_model"][0]
    (one,) = node.encode(as_image(photos[0]), "insightface/nodetest_RANDOM", "CPU")
    (two,) = node.encode(as_image(photos[0], photos[0]), "insightface/nodetest_RANDOM", "CPU")
    assert one.model == "insightface/nodetest_RANDOM" and two.count == 2
    assert np.allclose(one.embedding, two.embedding, atol=1e-6)  # the same photo twice averages to itself
    with pytest.raises(Exception, match="antelopev2.*models/insightface"):
        node.encode(as_image(photos[0]), "insightface/antelopev2", "CPU")
    with pytest.raises(Exception, match="no face found"):
        node.encode(torch.full((1, 128, 128, 3), 0.5), "insightface/nodetest_RANDOM", "CPU")
    # the authors' IR-SE50, as dense-face convert-official extracts it
    from safetensors.torch import save_file

    from dense_face.dense_face_core.ir_se50 import IRSE50

    save_file(IRSE50().state_dict(), str(comfy.models_dir / "dense_face" / "authors.ir_se50.safetensors"))
    choice = "ir_se50:authors.ir_se50.safetensors"
    assert choice in comfy.node("DenseFaceIDEncoder").INPUT_TYPES()["required"]["id_model"][0]
    (irse,) = node.encode(as_image(photos[0]), choice, "CPU")
    assert irse.model == "ir_se50" and irse.embedding.shape == (512,)



def test_load_id_embedding_chooses_only_files_comfyui_knows(comfy, shared_dir, tmp_path):
    """The authors' feat_file_v2 from models/dense_face/embeddings/ or the input folder (two files with one
    name stay apart); a path string, even to a real file, is never read."""
    import shutil

    import folder_paths

    feat_dir = shared_dir / "data/casia_toy/CASIAFaces/0000045/feat_file_v2"
    stored = comfy.models_dir / "dense_face" / "embeddings"
    stored.mkdir(parents=True, exist_ok=True)
    comfy.add_model_dir("dense_face_embeddings", stored)
    shutil.copy(feat_dir / "001.pth", stored / "person.pth")
    inputs = tmp_path / "input"
    inputs.mkdir()
    shutil.copy(feat_dir / "002.pth", inputs / "person.pth")  # the same name, another identity
    (inputs / "photo.png").write_bytes(b"not an embedding")
    old_input = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(inputs))
    try:
        node = comfy.node("DenseFaceLoadIDEmbedding")
        choices = node.INPUT_TYPES()["required"]["embedding"][0]
        assert "person.pth" in choices and "person.pth [input]" in choices and "photo.png [input]" not in choices
        (from_models,) = node.load("person.pth", "ir_se50")
        (from_input,) = node.load("person.pth [input]", "ir_se50")
        assert from_models.model == "ir_se50" and abs(float(np.linalg.norm(from_models.embedding)) - 1) < 1e-5
        assert not np.allclose(from_models.embedding, from_input.embedding)
        for bad in (str(feat_dir / "001.pth"), "../../../etc/passwd", "../input/person.pth", "  "):
            with pytest.raises(Exception, match="embeddings/ or in the input folder"):
                node.load(bad, "ir_se50")
    finally:
        folder_paths.set_input_directory(old_input)
