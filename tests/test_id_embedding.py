"""Identity embeddings: insightface ArcFace code path on a tiny exported ONNX (real ArcFace
weights cannot be downloaded here), five-point alignment from real MediaPipe landmarks,
the authors' feature files, and the IR-SE50 network."""
import pickle

import numpy as np
import pytest
import torch

from dense_face.dense_face_core import id_embedding as ide
from dense_face.dense_face_core.errors import DenseFaceInputError, MissingModelError, WeightFileError
from dense_face.dense_face_core.images import read_image
from dense_face.dense_face_core.ir_se50 import IRSE50

ARCFACE_TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                 [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)


def export_tiny_arcface(path):
    """A stand-in with ArcFace's interface (1x3x112x112 -> 512): real weights are not downloadable here."""
    from dense_face.dense_face_core.random_weights import export_random_arcface

    return export_random_arcface(path)


@pytest.fixture(scope="module")
def insightface_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("insightface")
    export_tiny_arcface(root / "models" / "buffalo_l" / "w600k_r50.onnx")
    return root


def test_find_recognition_model(insightface_root, tmp_path):
    path = ide.find_insightface_recognition("buffalo_l", [insightface_root])
    assert path.name == "w600k_r50.onnx"
    with pytest.raises(MissingModelError, match="antelopev2.*models/insightface"):
        ide.find_insightface_recognition("antelopev2", [insightface_root])


def test_five_points_align_to_arcface_template(analyzer, shared_dir):
    from skimage.transform import SimilarityTransform

    img = read_image(shared_dir / "data/celebs/Barack_Obama/04.jpg")
    face = analyzer.detect(img)[0]
    pts = ide.five_points(face.points)
    assert pts[0, 0] < pts[1, 0] and pts[3, 0] < pts[4, 0]
    tform = SimilarityTransform.from_estimate(pts, ARCFACE_TEMPLATE_112)
    residual = np.linalg.norm(tform(pts) - ARCFACE_TEMPLATE_112, axis=1)
    print(f"five-point residual after similarity fit to the ArcFace template: {residual.round(2)} px (of 112)")
    # eyes land on the template; nose and mouth differ by face shape and pitch
    assert residual[:2].max() < 3.0 and residual.max() < 8.0


def test_arcface_encoder_real_photos(analyzer, insightface_root, shared_dir):
    enc = ide.ArcFaceEncoder(ide.find_insightface_recognition("buffalo_l", [insightface_root]),
                             "insightface/buffalo_l")
    embs = {}
    for name in ("Barack_Obama/04.jpg", "Oprah_Winfrey/01.jpg"):
        img = read_image(shared_dir / "data/celebs" / name)
        face = analyzer.detect(img)[0]
        e = enc.embed(img, face.points)
        assert e.shape == (512,) and abs(np.linalg.norm(e) - 1) < 1e-5
        assert np.array_equal(e, enc.embed(img, face.points))
        embs[name] = e
    a, b = embs.values()
    assert not np.allclose(a, b)
    fid = ide.average_embeddings([a, b], "insightface/buffalo_l")
    assert fid.count == 2 and abs(np.linalg.norm(fid.embedding) - 1) < 1e-5


def test_authors_feature_file_loads_with_weights_only(shared_dir):
    f = shared_dir / "data/casia_toy/CASIAFaces/0000045/feat_file_v2/001.pth"
    fid = ide.load_feature_file(f, ide.IR_SE50)
    assert fid.embedding.shape == (512,) and fid.model == "ir_se50"


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_feature_file_formats_and_refusals(tmp_path):
    v = np.random.default_rng(0).normal(size=(1, 512)).astype(np.float32)
    np.save(tmp_path / "a.npy", v)
    assert np.allclose(ide.load_feature_file(tmp_path / "a.npy", "m").embedding, v[0] / np.linalg.norm(v))
    from safetensors.numpy import save_file

    save_file({"embedding": v}, str(tmp_path / "a.safetensors"))
    assert ide.load_feature_file(tmp_path / "a.safetensors", "m").model == "m"
    with open(tmp_path / "evil.pth", "wb") as fh:
        pickle.dump(Evil(), fh)
    with pytest.raises(DenseFaceInputError, match="not loaded"):
        ide.load_feature_file(tmp_path / "evil.pth", "m")
    np.save(tmp_path / "short.npy", v[:, :10])
    with pytest.raises(DenseFaceInputError, match="512"):
        ide.load_feature_file(tmp_path / "short.npy", "m")
    with pytest.raises(DenseFaceInputError, match="zeros"):
        ide.FaceID(np.zeros(512), "m")
    with pytest.raises(DenseFaceInputError, match="NaN"):
        ide.FaceID(np.full(512, np.nan), "m")


def test_id_model_mismatch_is_clear():
    ide.check_id_model("ir_se50", "ir_se50")
    with pytest.raises(WeightFileError, match="trained on 'ir_se50'.*'insightface/antelopev2'"):
        ide.check_id_model("insightface/antelopev2", "ir_se50")


def test_ir_se50_architecture(tmp_path):
    net = IRSE50().eval()
    n_params = sum(p.numel() for p in net.parameters())
    assert 43_000_000 < n_params < 44_500_000  # IR-SE50 has ~43.8M parameters
    with torch.inference_mode():
        out = net(torch.rand(2, 3, 256, 256) * 2 - 1)
    assert out.shape == (2, 512) and torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    state = {k: v for k, v in net.state_dict().items()}
    other = IRSE50()
    other.load_facenet_state_dict(state)
    state.pop("body.0.res_layer.1.weight")
    with pytest.raises(WeightFileError, match="missing"):
        IRSE50().load_facenet_state_dict(state)
