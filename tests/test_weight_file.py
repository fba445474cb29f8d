"""The Dense-Face weight file and the converter from the authors' checkpoint."""

from __future__ import annotations

import os
import re
from pathlib import Path

import official_layout
import pytest
import torch
from chunked_save import torch_save
from dense_face.dense_face_core import random_weights as RW
from dense_face.dense_face_core import weight_file as wf
from dense_face.dense_face_core.errors import WeightFileError
from dense_face.dense_face_core.families import BaseFamily, register_family
from dense_face.dense_face_core.official_checkpoint import (
    convert_official_checkpoint,
    id_network_path,
    map_official_state_dict,
)
from dense_face.dense_face_core.pose import POSE_IMAGE_SPEC
from safetensors.torch import load_file, save_file

TINY15 = register_family(
    BaseFamily(name="test-wf15", context_dim=32, model_channels=32, num_heads=2)
)
TINY21 = register_family(
    BaseFamily(
        name="test-wf21",
        context_dim=48,
        model_channels=32,
        num_heads=None,
        num_head_channels=16,
        use_linear_in_transformer=True,
    )
)
METADATA_KEYS = {
    "format",
    "format_version",
    "base_family",
    "context_dim",
    "model_channels",
    "channel_mult",
    "num_res_blocks",
    "id_embedding_model",
    "id_embedding_dim",
    "delta",
    "id_delta",
    "placeholder_token",
    "init_word",
    "pose_image_spec",
    "parts",
}


@pytest.fixture(scope="module")
def tiny() -> wf.DenseFaceWeights:
    return RW.build_random_weights(TINY15, seed=3, dense_head_width=16)


@pytest.fixture()
def tiny_file(tiny, tmp_path) -> Path:
    p = tmp_path / "model.safetensors"
    wf.save_weight_file(p, tiny.tensors(), tiny.metadata)
    return p


def _assert_same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k, v in a.items():
        assert v.dtype == b[k].dtype and torch.equal(v, b[k]), k


# ------------------------------------------------------------------------------ round trip
def test_round_trip_bit_exact_and_metadata(tiny, tiny_file, tmp_path):
    loaded = wf.load_weight_file(
        tiny_file, expected_family="test-wf15", expected_context_dim=32
    )
    _assert_same(loaded.tensors(), tiny.tensors())
    assert loaded.family is TINY15 and loaded.has_dense_head
    assert loaded.metadata == tiny.metadata
    _, raw = wf.read_header(tiny_file)
    assert set(raw) == METADATA_KEYS | {
        "dense_head_width",
        "dense_head_output_size",
        "source",
    }
    assert all(isinstance(v, str) for v in raw.values())
    assert raw["parts"] == "pose_branch,pc_adapter,id_projector,dense_head"
    assert (raw["format"], raw["format_version"], raw["delta"], raw["id_delta"]) == (
        "dense-face",
        "1",
        "0.01",
        "0.01",
    )
    assert (raw["placeholder_token"], raw["init_word"], raw["pose_image_spec"]) == (
        "*",
        "person",
        POSE_IMAGE_SPEC,
    )
    assert raw["channel_mult"] == "1,2,4,4" and raw["id_embedding_dim"] == "512"
    assert [f for f in os.listdir(tmp_path) if f != "model.safetensors"] == []
    assert (
        "pc_adapter.input_blocks.1.1.transformer_blocks.0.attn2.per_k.weight"
        in loaded.tensors()
    )
    assert loaded.pc_adapter[
        "input_blocks.1.1.transformer_blocks.0.attn2.per_k.weight"
    ].shape == (32, 32)


def test_without_dense_head_is_recorded(tmp_path):
    w = RW.build_random_weights(TINY15, seed=1, with_dense_head=False)
    p = tmp_path / "nohead.safetensors"
    wf.save_weight_file(p, w.tensors(), w.metadata)
    loaded = wf.load_weight_file(p)
    assert loaded.dense_head is None and not loaded.metadata.has_dense_head
    _, raw = wf.read_header(p)
    assert (
        raw["parts"] == "pose_branch,pc_adapter,id_projector"
        and "dense_head_width" not in raw
    )


def test_random_weights_deterministic_and_nontrivial(tiny):
    again = RW.build_random_weights(TINY15, seed=3, dense_head_width=16)
    _assert_same(again.tensors(), tiny.tensors())
    other = RW.build_random_weights(TINY15, seed=4, dense_head_width=16)
    assert not torch.equal(
        other.pose_branch["zero_convs.0.0.weight"],
        tiny.pose_branch["zero_convs.0.0.weight"],
    )
    for k in (
        "zero_convs.3.0.weight",
        "middle_block_out.0.weight",
        "input_hint_block.14.weight",
        "input_blocks.1.0.out_layers.3.weight",
    ):
        assert tiny.pose_branch[k].abs().sum() > 0, k
    assert all(v.abs().sum() > 0 for v in tiny.pc_adapter.values())
    assert tiny.metadata.extra["source"].startswith("build_random_weights")
    half = RW.build_random_weights(
        TINY15, seed=3, with_dense_head=False, dtype=torch.float16
    )
    assert half.pose_branch["time_embed.0.weight"].dtype == torch.float16
    assert half.id_projector["norm.num_batches_tracked"].dtype == torch.long


def test_sd15_expected_layout_matches_facts():
    meta = wf.WeightMetadata.for_family("sd15", "ir_se50")
    shapes = wf.expected_shapes(meta)
    assert sum(k.startswith("pc_adapter.") for k in shapes) == 128
    assert shapes["id_projector.projector.weight"] == (768, 512)
    assert shapes["pose_branch.middle_block.1.out_layers.3.weight"] == (
        1280,
        1280,
        3,
        3,
    )
    assert shapes[
        "pc_adapter.output_blocks.3.1.transformer_blocks.0.attn2.per_v.weight"
    ] == (1280, 768)
    assert not any(k.startswith("dense_head.") for k in shapes)
    assert wf.validate(shapes, meta.to_dict()) == meta


# ------------------------------------------------------------------------------ refusals
def test_wrong_family_names_both():
    meta21 = wf.WeightMetadata.for_family("sd21", "insightface/antelopev2")
    shapes = wf.expected_shapes(meta21)
    with pytest.raises(
        WeightFileError, match=r"sd21 \(text context 1024\).*sd15 \(text context 768\)"
    ):
        wf.validate(shapes, meta21, expected_family="sd15")
    with pytest.raises(WeightFileError, match=r"1024.*768"):
        wf.validate(shapes, meta21, expected_context_dim=768)


def test_wrong_family_file(tmp_path):
    w = RW.build_random_weights(TINY21, seed=0, with_dense_head=False)
    p = tmp_path / "sd21ish.safetensors"
    wf.save_weight_file(p, w.tensors(), w.metadata)
    with pytest.raises(
        WeightFileError,
        match=r"test-wf21 \(text context 48\).*test-wf15 \(text context 32\)",
    ):
        wf.load_weight_file(p, expected_family="test-wf15")


def test_missing_and_misshaped_tensors(tiny, tmp_path):
    t = tiny.tensors()
    gone = [k for k in t if k.startswith("pc_adapter.output_blocks.")][:7]
    partial = {k: v for k, v in t.items() if k not in gone}
    with pytest.raises(
        WeightFileError, match=r"lacks 7 of \d+ tensors: .*output_blocks.*\(2 more\)"
    ):
        wf.save_weight_file(tmp_path / "x.safetensors", partial, tiny.metadata)
    assert not (tmp_path / "x.safetensors").exists()
    # a file written behind our back is refused on load too
    save_file(
        {k: v.contiguous() for k, v in partial.items()},
        str(tmp_path / "y.safetensors"),
        tiny.metadata.to_dict(),
    )
    with pytest.raises(WeightFileError, match="lacks 7"):
        wf.load_weight_file(tmp_path / "y.safetensors")
    bad = dict(t)
    bad["id_projector.projector.weight"] = torch.zeros(32, 256)
    with pytest.raises(
        WeightFileError,
        match=re.escape(
            "id_projector.projector.weight is [32, 256], expected [32, 512]"
        ),
    ):
        wf.validate(bad, tiny.metadata)
    extra = dict(t, **{"pose_branch.input_blocks.1.1.proj_in.weight": torch.zeros(1)})
    with pytest.raises(WeightFileError, match="unexpected"):
        wf.validate(extra, tiny.metadata)


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin", ".safetensors"])
def test_pickle_refused_with_convert_hint(tmp_path, suffix):
    p = tmp_path / f"model{suffix}"
    torch.save({"state_dict": {"a": torch.zeros(2)}}, p)
    with pytest.raises(
        WeightFileError, match="dense-face convert-official IN.ckpt OUT.safetensors"
    ):
        wf.load_weight_file(p)


def test_corrupted_truncated_and_foreign_files(tiny_file, tmp_path):
    data = tiny_file.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightFileError, match="truncated"):
        wf.load_weight_file(cut)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"hello, this is not a tensor file at all" * 3)
    with pytest.raises(WeightFileError, match="not a valid safetensors"):
        wf.load_weight_file(junk)
    garbled = tmp_path / "garbled.safetensors"
    garbled.write_bytes(data[:8] + b"#" * 20 + data[28:])
    with pytest.raises(WeightFileError, match="corrupted"):
        wf.load_weight_file(garbled)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(WeightFileError, match="truncated or empty"):
        wf.load_weight_file(empty)
    foreign = tmp_path / "controlnet.safetensors"
    save_file({"x": torch.zeros(3)}, str(foreign))
    with pytest.raises(WeightFileError, match="not a Dense-Face weight file"):
        wf.load_weight_file(foreign)


def test_unknown_format_version_and_family(tiny, tmp_path):
    meta = tiny.metadata.to_dict()
    with pytest.raises(WeightFileError, match="format version 7"):
        wf.validate(tiny.tensors(), {**meta, "format_version": "7"})
    with pytest.raises(WeightFileError, match="unknown base model family 'sd9'"):
        wf.validate(tiny.tensors(), {**meta, "base_family": "sd9"})
    with pytest.raises(WeightFileError, match="'init_word' is missing"):
        wf.validate(tiny.tensors(), {k: v for k, v in meta.items() if k != "init_word"})
    with pytest.raises(WeightFileError, match="pose images"):
        wf.validate(tiny.tensors(), {**meta, "pose_image_spec": "something else"})


def test_save_is_atomic(tiny, tiny_file, monkeypatch):
    before = tiny_file.read_bytes()

    from dense_face.dense_face_core import safetensors_writer

    def crash(fh, tensor):  # the header and part of the data are on disk when the power goes
        fh.write(b"half a tensor")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(safetensors_writer, "_write_tensor", crash)
    with pytest.raises(KeyboardInterrupt):
        wf.save_weight_file(tiny_file, tiny.tensors(), tiny.metadata)
    assert tiny_file.read_bytes() == before
    assert os.listdir(tiny_file.parent) == [tiny_file.name]


# ------------------------------------------------------------------------------ converter
FACT_BLOCKS = (
    [
        (f"input_blocks.{n}.1", c)
        for n, c in ((1, 320), (2, 320), (4, 640), (5, 640), (7, 1280), (8, 1280))
    ]
    + [("middle_block.1", 1280)]
    + [
        (f"output_blocks.{n}.1", 1280 if n <= 5 else 640 if n <= 8 else 320)
        for n in range(3, 12)
    ]
)


def _authors_state_dict() -> dict[str, torch.Tensor]:
    """Exactly the authors' names and shapes (fp16 and constant fills keep it cheap; each tensor
    gets its own value so a mix-up is visible), plus tensors the converter must ignore."""
    sd: dict[str, torch.Tensor] = {}
    counter = iter(range(1, 10_000))

    def put(name, shape, dtype=torch.float16):
        sd[name] = torch.full(shape, float(next(counter)), dtype=dtype)

    for block, c in FACT_BLOCKS:
        for attn in ("attn1", "attn2"):
            kv = 768 if attn == "attn2" else c
            base = f"model.diffusion_model.{block}.transformer_blocks.0.{attn}"
            for part, shape in (
                ("per_q", (c, c)),
                ("per_k", (c, kv)),
                ("per_v", (c, kv)),
                ("feat_to_q", (c, 512)),
            ):
                put(f"{base}.{part}.weight", shape)
            for proj, shape in (("to_q", (c, c)), ("to_k", (c, kv))):
                put(f"{base}.{proj}.weight", shape)  # base UNet: ignored
    for k, shape in official_layout.pose_branch_shapes().items():
        put(f"control_model.{k}", shape)
    put("model.diffusion_model.input_blocks.0.0.weight", (320, 4, 3, 3))
    put("model.diffusion_model.out.2.weight", (4, 320, 3, 3))
    put("embedding_manager.projector.weight", (768, 512), torch.float32)
    for k in ("weight", "bias", "running_mean", "running_var"):
        put(f"embedding_manager.projector_norm.{k}", (768,), torch.float32)
    sd["embedding_manager.projector_norm.num_batches_tracked"] = torch.tensor(1234)
    sd["embedding_manager.string_to_param_dict.*"] = torch.randn(1, 768)
    sd["embedding_manager.initial_embeddings.*"] = torch.randn(1, 768)
    for k, shape in (
        ("input_layer.0.weight", (64, 3, 3, 3)),
        ("body.0.res_layer.1.weight", (64, 64, 3, 3)),
        ("output_layer.3.weight", (512, 25088)),
    ):
        put(f"id_loss_func.facenet.{k}", shape, torch.float32)
    for k in ("betas", "alphas_cumprod", "sqrt_alphas_cumprod"):
        sd[k] = torch.linspace(0, 1, 1000)
    put(
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
        (49408, 8),
    )
    sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = (
        torch.arange(77)[None]
    )
    return sd


@pytest.fixture(scope="module")
def authors_sd():
    return _authors_state_dict()


def test_convert_authors_checkpoint_bit_exact(authors_sd, tmp_path):
    ckpt = tmp_path / "denseface.ckpt"
    torch_save({"state_dict": authors_sd, "epoch": 3, "global_step": 1000}, ckpt)
    out = tmp_path / "dense_face_sd15.safetensors"
    summary = convert_official_checkpoint(ckpt, out)
    id_path = id_network_path(out)
    assert id_path.name == "dense_face_sd15.ir_se50.safetensors"
    assert summary["output"] == str(out) and summary["id_network"] == str(id_path)
    assert (
        summary["pc_adapter_tensors"],
        summary["id_projector_tensors"],
        summary["id_network_tensors"],
    ) == (128, 7, 3)
    assert summary["pose_branch_tensors"] == len(official_layout.pose_branch_shapes())
    assert summary["ignored_tensors"] == 2 * 32 + 2 + 1 + 3 + 2
    w = wf.load_weight_file(out, expected_family="sd15", expected_context_dim=768)
    assert (
        w.metadata.id_embedding_model == "ir_se50"
        and w.metadata.id_embedding_dim == 512
    )
    assert (
        w.metadata.base_family == "sd15"
        and not w.has_dense_head
        and w.metadata.has_init_embedding
    )
    for key, v in w.pc_adapter.items():
        assert torch.equal(v, authors_sd["model.diffusion_model." + key]), key
    for key, v in w.pose_branch.items():
        assert torch.equal(v, authors_sd["control_model." + key]), key
    assert torch.equal(
        w.id_projector["projector.weight"],
        authors_sd["embedding_manager.projector.weight"],
    )
    for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(
            w.id_projector[f"norm.{k}"],
            authors_sd[f"embedding_manager.projector_norm.{k}"],
        )
    assert torch.equal(
        w.init_embedding, authors_sd["embedding_manager.string_to_param_dict.*"][0]
    )
    facenet = load_file(str(id_path))
    assert set(facenet) == {
        "input_layer.0.weight",
        "body.0.res_layer.1.weight",
        "output_layer.3.weight",
    }
    assert torch.equal(
        facenet["output_layer.3.weight"],
        authors_sd["id_loss_func.facenet.output_layer.3.weight"],
    )
    assert sorted(os.listdir(tmp_path)) == sorted([ckpt.name, out.name, id_path.name])


class Hyper:
    """Stands in for the training config objects a Lightning checkpoint may pickle."""

    lr = 1e-6


def test_convert_refuses_pickled_objects(tmp_path):
    ckpt = tmp_path / "with_hparams.ckpt"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "hyper_parameters": Hyper()}, ckpt)
    with pytest.raises(WeightFileError) as err:
        convert_official_checkpoint(ckpt, tmp_path / "out.safetensors")
    msg = str(err.value)
    assert (
        "weights_only=True" in msg
        and "Hyper" in msg
        and "dense-face convert-official IN.safetensors" in msg
    )
    assert not (tmp_path / "out.safetensors").exists()


def test_convert_missing_adapter_tensors_listed(authors_sd):
    sd = dict(authors_sd)
    dropped = [k for k in sd if k.endswith("attn2.feat_to_q.weight")][:4]
    for k in dropped:
        del sd[k]
    with pytest.raises(
        WeightFileError, match=r"lacks 4 Dense-Face tensors: " + re.escape(dropped[0])
    ):
        map_official_state_dict(sd, "denseface.ckpt")


def test_convert_safetensors_export_of_tiny_state_dict(tmp_path):
    """A .safetensors export of the state dict is accepted too (tiny geometry keeps it cheap)."""
    w = RW.build_random_weights(TINY15, seed=7, with_dense_head=False)
    sd = {}
    for k, v in w.pc_adapter.items():
        sd[f"model.diffusion_model.{k}"] = v
    for k, v in w.pose_branch.items():
        sd[f"control_model.{k}"] = v
    sd["embedding_manager.projector.weight"] = w.id_projector["projector.weight"]
    for k in ("weight", "bias", "running_mean", "running_var"):
        sd[f"embedding_manager.projector_norm.{k}"] = w.id_projector[f"norm.{k}"]
    src = tmp_path / "export.safetensors"
    save_file(sd, str(src))
    out = tmp_path / "converted.safetensors"
    summary = convert_official_checkpoint(src, out)
    assert summary["id_network"] is None and summary["ignored_tensors"] == 0
    loaded = wf.load_weight_file(out, expected_family="test-wf15")
    expect = {**w.tensors()}
    expect["id_projector.norm.num_batches_tracked"] = torch.tensor(0)
    _assert_same(loaded.tensors(), expect)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(src.read_bytes()[:1000])
    with pytest.raises(WeightFileError, match="corrupted or truncated"):
        convert_official_checkpoint(corrupt, tmp_path / "c.safetensors")


def test_convert_official_command_line(authors_sd, tmp_path):
    """`dense-face convert-official IN.ckpt OUT.safetensors`, as a user runs it."""
    import subprocess
    import sys

    ckpt = tmp_path / "authors.ckpt"
    torch_save({"state_dict": authors_sd}, ckpt)
    out = tmp_path / "dense_face" / "converted.safetensors"
    proc = subprocess.run([sys.executable, "-m", "dense_face.cli", "convert-official", str(ckpt), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "pc_adapter_tensors: 128" in proc.stdout
    assert wf.load_weight_file(out).metadata.id_embedding_model == "ir_se50"
    assert (tmp_path / "dense_face" / "converted.ir_se50.safetensors").is_file()
    bad = subprocess.run([sys.executable, "-m", "dense_face.cli", "convert-official", str(tmp_path / "none.ckpt"),
                          str(tmp_path / "x.safetensors")], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "none.ckpt" in bad.stderr and "Traceback" not in bad.stderr
