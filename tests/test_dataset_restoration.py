"""Optional face restoration in the dataset builder (off by default, recorded per sample).

The real CodeFormer / GFPGAN ONNX exports cannot be downloaded here, so the restorer is a tiny
random-weight ONNX network with their interface (CodeFormer's: image ``x`` 1x3x512x512 float32
in [-1, 1] and fidelity ``w`` as a float64 scalar in, one 1x3x512x512 image out), written with
``onnx.helper``: it tests the code path (loading, pre/post-processing, batching, what the shard
records), not restoration quality.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import CELEBS, LANDMARKER as TASK, SHARED

pytestmark = [pytest.mark.filterwarnings("ignore:.*without --insightface-model:UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def tiny_restorer(path: Path, batch=1, with_fidelity: bool = True) -> Path:
    """x -> clip(x + 0.3 * tanh(conv3x3(x)) * w - 0.1, -1, 1): changes every pixel, keeps the face."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.normal(0, 0.3, (3, 3, 3, 3))).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Tanh", ["c"], ["t"]),
             helper.make_node("Mul", ["t", "k"], ["tk"])]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array(0.3, np.float32), "k"),
             numpy_helper.from_array(np.array(-0.1, np.float32), "b")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 512, 512])]
    if with_fidelity:
        inputs.append(helper.make_tensor_value_info("w", TensorProto.DOUBLE, []))
        nodes += [helper.make_node("Cast", ["w"], ["wf"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["tk", "wf"], ["tkw"])]
        last = "tkw"
    else:
        last = "tk"
    nodes += [helper.make_node("Add", ["x", last], ["s"]), helper.make_node("Add", ["s", "b"], ["s2"]),
              helper.make_node("Clip", ["s2", "lo", "hi"], ["y"])]
    inits += [numpy_helper.from_array(np.array(-1.0, np.float32), "lo"),
              numpy_helper.from_array(np.array(1.0, np.float32), "hi")]
    graph = helper.make_graph(nodes, "tiny_restorer", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3, 512, 512])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def test_restorer_interface(tmp_path):
    from dense_face.dense_face_core.errors import MissingModelError
    from dense_face.train.restoration import OnnxRestorer

    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for s in (512, 256)]
    r = OnnxRestorer(tiny_restorer(tmp_path / "codeformer.onnx"), fidelity=0.7)
    out = r(crops)
    assert [o.shape for o in out] == [(512, 512, 3), (256, 256, 3)] and all(o.dtype == np.uint8 for o in out)
    assert not r.batched and r.uses_fidelity and r.record() == {"model": "codeformer", "fidelity": 0.7}
    # the same numbers as the network applied by hand (the fidelity reaches it)
    x = crops[0].transpose(2, 0, 1)[None].astype(np.float32) / 127.5 - 1
    y = r.session.run(None, {"x": x, "w": np.array(0.7)})[0][0]
    want = np.rint((np.clip(y, -1, 1) + 1) * 127.5).astype(np.uint8).transpose(1, 2, 0)
    assert np.array_equal(out[0], want) and np.abs(out[0].astype(int) - crops[0]).mean() > 1
    assert not np.array_equal(OnnxRestorer(r.path, fidelity=0.1)(crops[:1])[0], out[0])
    # GFPGAN-like (no fidelity, dynamic batch): one run for the batch
    g = OnnxRestorer(tiny_restorer(tmp_path / "gfpgan.onnx", batch="N", with_fidelity=False))
    assert g.batched and g.record() == {"model": "gfpgan", "fidelity": None} and len(g(crops)) == 2
    with pytest.raises(MissingModelError, match="--restore-model .*no such"):
        OnnxRestorer(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(MissingModelError, match="cannot load"):
        OnnxRestorer(tmp_path / "junk.onnx")


def _build(args) -> dict:
    from dense_face.train.dataset_builder import main

    assert main(list(map(str, args)) + ["--landmarker", str(TASK), "--quiet"]) == 0
    return json.loads((Path(args[args.index("--out") + 1]) / "manifest.json").read_text())


def _samples(out: Path) -> dict:
    from dense_face.train import shards as S

    return {key: files for tar in sorted((out / "shards").glob("*.tar")) for key, files in S.iter_shard(tar)}


def test_restoration_in_the_build(tmp_path):
    """Off by default (meta says None); with --restore-model the stored crops are the restored ones,
    the landmarks are found again on them, and every sample records the model and its fidelity."""
    if not (CELEBS.is_dir() and TASK.is_file()):
        pytest.skip(f"shared test data or the MediaPipe model not found under {SHARED}")
    from dense_face.dense_face_core.landmarker import FaceAnalyzer
    from dense_face.train import shards as S
    from dense_face.train.dataset_builder import scan_input
    from dense_face.train.dataset_builder.worker import analyze_item
    from dense_face.train.restoration import OnnxRestorer

    src = tmp_path / "in" / "p"
    src.mkdir(parents=True)
    for i, p in enumerate(sorted((CELEBS / "Barack_Obama").glob("*.jpg"))[:3]):
        (src / f"{i}.jpg").write_bytes(p.read_bytes())
    model = tiny_restorer(tmp_path / "codeformer.onnx")
    common = ["--input", tmp_path / "in", "--workers", 1, "--crop-sizes", "256,512", "--min-crop", 48]
    plain = _build([*common, "--out", tmp_path / "plain"])
    restored = _build([*common, "--out", tmp_path / "restored", "--restore-model", model, "--restore-fidelity", 0.8])
    assert plain["settings"]["restoration"] is None
    assert restored["settings"]["restoration"]["model"] == "codeformer"
    assert restored["settings"]["restoration"]["fidelity"] == 0.8
    a, b = _samples(tmp_path / "plain"), _samples(tmp_path / "restored")
    assert sorted(a) == sorted(b) and len(a) == plain["counts"]["ok"] >= 2
    cfg = {"crop_sizes": (256, 512), "min_crop": 48, "max_pixels": 10**8, "keep_grayscale": False, "tiles": False}
    r = OnnxRestorer(model, fidelity=0.8)
    items = {it.rel: it for it in scan_input(tmp_path / "in").items}
    with FaceAnalyzer(str(TASK), max_faces=4) as fa:
        for key in a:
            ma, mb = json.loads(a[key]["meta.json"]), json.loads(b[key]["meta.json"])
            assert ma["restoration"] is None
            assert mb["restoration"]["model"] == "codeformer" and mb["restoration"]["fidelity"] == 0.8
            assert mb["restoration"]["landmarks"] in ("restored", "photo")
            assert ma["crop"] == mb["crop"] and a[key]["crop_512.jpg"] != b[key]["crop_512.jpg"]
            # the stored crop is the restorer's output on the photo's crop (up to JPEG)
            crop = analyze_item(items[f"p/{key.split('/')[1]}.jpg"], cfg, fa)["crops"][512]
            want = r([crop])[0]
            got = S.decode_image(b[key]["crop_512.jpg"])
            assert np.abs(got.astype(int) - want).mean() < 3 < np.abs(got.astype(int) - crop).mean()
            if mb["restoration"]["landmarks"] == "photo":
                assert a[key]["landmarks.npy"] == b[key]["landmarks.npy"]
    # a file that is not a restorer: one clear error before any image is read
    from dense_face.train.dataset_builder import main

    (tmp_path / "junk.onnx").write_bytes(b"junk")
    for bad in (tmp_path / "junk.onnx", tmp_path / "none.onnx"):
        assert main([*map(str, common), "--out", str(tmp_path / "x"), "--quiet", "--landmarker", str(TASK),
                     "--restore-model", str(bad)]) == 2
