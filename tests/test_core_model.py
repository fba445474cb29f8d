"""Model pieces of face-generation mode: families, PC-adapter, identity, pose branch, dense head."""

from __future__ import annotations

import official_layout
import pytest
import torch
import torch.nn.functional as F
from dense_face.dense_face_core import dense_head as dh
from dense_face.dense_face_core import families as fm
from dense_face.dense_face_core import identity as idn
from dense_face.dense_face_core import pc_adapter as pca
from dense_face.dense_face_core.errors import DenseFaceInputError
from dense_face.dense_face_core.pose_branch import (
    PoseBranch,
    ResBlock,
    timestep_embedding,
)

TINY = fm.register_family(
    fm.BaseFamily(name="test-tiny15", context_dim=12, model_channels=16, num_heads=2)
)


# ------------------------------------------------------------------------------ families
FACT_BLOCKS = (
    [
        (f"input_blocks.{n}.1", ("input", n), c)
        for n, c in ((1, 320), (2, 320), (4, 640), (5, 640), (7, 1280), (8, 1280))
    ]
    + [("middle_block.1", ("middle", 0), 1280)]
    + [
        (
            f"output_blocks.{n}.1",
            ("output", n),
            1280 if n <= 5 else 640 if n <= 8 else 320,
        )
        for n in range(3, 12)
    ]
)


@pytest.mark.parametrize("name", ["sd15", "sd21"])
def test_attention_layers_match_facts(name):
    layers = fm.attention_layers(name)
    assert len(fm.transformer_block_paths(name)) == 16
    assert len(layers) == 32
    expected = [
        (f"{b}.transformer_blocks.0.{a}", blk, c)
        for b, blk, c in FACT_BLOCKS
        for a in ("attn1", "attn2")
    ]
    assert [(x.ldm_path, x.comfy_block, x.channels) for x in layers] == expected
    assert all(x.transformer_index == 0 for x in layers)
    assert fm.attention_layer(
        name, "middle_block.1.transformer_blocks.0.attn2"
    ).diffusers_path == ("mid_block.attentions.0.transformer_blocks.0.attn2")
    assert fm.attention_layer(
        name, "up_blocks.3.attentions.2.transformer_blocks.0.attn1"
    ).ldm_path == ("output_blocks.11.1.transformer_blocks.0.attn1")
    back = fm.diffusers_to_ldm_attention(name)
    assert {back[d]: d for d in back} == fm.ldm_to_diffusers_attention(name)


def test_family_specs():
    sd15, sd21 = fm.get_family("sd15"), fm.get_family("sd21")
    assert (sd15.context_dim, sd15.heads(640)) == (768, 8)
    assert (sd21.context_dim, sd21.heads(640), sd21.use_linear_in_transformer) == (
        1024,
        10,
        True,
    )
    with pytest.raises(DenseFaceInputError, match="sdxl"):
        fm.get_family("sdxl")


@pytest.mark.parametrize("name", ["sd15", "sd21"])
def test_mapping_against_diffusers_unet(name):
    from diffusers import UNet2DConditionModel

    fam = fm.get_family(name)
    # a tenth of the real widths: 320/640/1280 -> 32/64/128
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=tuple(
            fam.model_channels * m // 10 for m in fam.channel_mult
        ),
        layers_per_block=fam.num_res_blocks,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=fam.context_dim // 32,
        attention_head_dim=8,
        norm_num_groups=8,
        use_linear_projection=fam.use_linear_in_transformer,
    )
    modules = dict(unet.named_modules())
    diffusers_attn = [n for n in modules if n.endswith((".attn1", ".attn2"))]
    assert len(diffusers_attn) == 32
    layers = fm.attention_layers(fam)
    assert sorted(a.diffusers_path for a in layers) == sorted(diffusers_attn)
    for a in layers:
        m = modules[a.diffusers_path]
        assert m.to_q.in_features * 10 == a.channels, a
        assert m.to_k.in_features == (
            fam.context_dim // 32 if a.is_cross else a.channels // 10
        )


# ------------------------------------------------------------------------------ PC-adapter
def _random_adapter(family, gen) -> dict[str, torch.Tensor]:
    return {
        k: torch.randn(s, generator=gen) / s[1] ** 0.5
        for k, s in pca.adapter_shapes(family).items()
    }


def _base(c, kv_in, gen):
    return {
        "to_q": torch.randn(c, c, generator=gen) / c**0.5,
        "to_k": torch.randn(c, kv_in, generator=gen) / kv_in**0.5,
        "to_v": torch.randn(c, kv_in, generator=gen) / kv_in**0.5,
        "to_out": torch.randn(c, c, generator=gen) / c**0.5,
        "to_out_bias": torch.randn(c, generator=gen),
    }


@pytest.mark.parametrize(
    "path,use_f",  # use_f: the UNet is given an identity feature
    [
        ("input_blocks.1.1.transformer_blocks.0.attn1", False),
        ("output_blocks.5.1.transformer_blocks.0.attn1", True),
        ("middle_block.1.transformer_blocks.0.attn1", False),
        ("middle_block.1.transformer_blocks.0.attn2", False),
        ("middle_block.1.transformer_blocks.0.attn2", True),
        ("input_blocks.4.1.transformer_blocks.0.attn2", True),
        ("output_blocks.3.1.transformer_blocks.0.attn2", True),
        ("output_blocks.11.1.transformer_blocks.0.attn2", True),
        ("input_blocks.4.1.transformer_blocks.0.attn2", False),
        ("output_blocks.7.1.transformer_blocks.0.attn2", False),
    ],
)
def test_fold_plus_bias_equals_reference(path, use_f):
    gen = torch.Generator().manual_seed(0)
    layer = fm.attention_layer(TINY, path)
    adapter = _random_adapter(TINY, gen)
    w = pca.layer_weights(adapter, path)
    c = layer.channels
    kv_in = TINY.context_dim if layer.is_cross else c
    base = _base(c, kv_in, gen)
    x = torch.randn(2, 6, c, generator=gen)
    ctx = torch.randn(2, 5, TINY.context_dim, generator=gen) if layer.is_cross else None
    f = F.normalize(torch.randn(2, 512, generator=gen), dim=1)
    heads, delta = TINY.heads(c), 0.05
    # the runtime only hands f to the layers that take it, as the authors' UNet does
    f_here = f if use_f and pca.takes_identity_bias(layer) else None
    ref = pca.reference_attention(
        x, base, w, heads, context=ctx, id_feature=f_here, delta=delta
    )

    parts = pca.folded_parts(adapter, TINY, id_feature_given=use_f)
    folded = {p: base[p] + delta * parts.get((path, p), 0) for p in ("to_q", "to_k", "to_v")}
    c_in = x if ctx is None else ctx
    q = F.linear(x, folded["to_q"])
    if f_here is not None:
        q = q + pca.query_bias(f_here, w.feat_to_q, w.per_q, delta)[:, None, :]
    out = F.linear(
        pca.attention(
            q, F.linear(c_in, folded["to_k"]), F.linear(c_in, folded["to_v"]), heads
        ),
        base["to_out"],
        base["to_out_bias"],
    )
    assert (out - ref).abs().max().item() <= 1e-5
    # and the adapter really changes the layer
    plain = F.linear(
        pca.attention(
            F.linear(x, base["to_q"]),
            F.linear(c_in, base["to_k"]),
            F.linear(c_in, base["to_v"]),
            heads,
        ),
        base["to_out"],
        base["to_out_bias"],
    )
    assert (plain - ref).abs().max().item() > 1e-4


def test_fold_key_sets_and_bias_layers():
    adapter = _random_adapter(TINY, torch.Generator().manual_seed(1))
    folds = pca.folded_parts(adapter, TINY)
    assert len(folds) == 32 * 2 + 16 + 1
    assert ("middle_block.1.transformer_blocks.0.attn2", "to_q") in folds
    assert ("input_blocks.1.1.transformer_blocks.0.attn2", "to_q") not in folds
    assert len(pca.folded_parts(adapter, TINY, id_feature_given=False)) == 32 * 3
    bias_layers = pca.identity_bias_layers("sd15")
    assert len(bias_layers) == 15 and all(
        a.is_cross and a.block_name != "middle" for a in bias_layers
    )
    f = torch.randn(3, 512)
    biases = pca.query_biases(f, adapter, TINY)
    assert {k: tuple(v.shape) for k, v in biases.items()} == {
        a.ldm_path: (3, a.channels) for a in pca.identity_bias_layers(TINY)
    }
    with pytest.raises(DenseFaceInputError):
        pca.query_bias(torch.randn(3, 256), torch.randn(16, 512), torch.randn(16, 16))


def test_adapter_shapes_sd15_match_facts():
    shapes = pca.adapter_shapes("sd15")
    assert len(shapes) == 128
    assert shapes["input_blocks.1.1.transformer_blocks.0.attn2.per_k.weight"] == (
        320,
        768,
    )
    assert shapes["middle_block.1.transformer_blocks.0.attn1.per_v.weight"] == (
        1280,
        1280,
    )
    assert shapes["output_blocks.6.1.transformer_blocks.0.attn2.feat_to_q.weight"] == (
        640,
        512,
    )
    assert pca.adapter_shapes("sd21")[
        "output_blocks.9.1.transformer_blocks.0.attn2.per_v.weight"
    ] == (320, 1024)


def test_adapter_layer_module_trains_through_reference():
    to_q, to_k, to_v = (
        torch.nn.Linear(16, 16, bias=False),
        torch.nn.Linear(12, 16, bias=False),
        torch.nn.Linear(12, 16, bias=False),
    )
    layer = pca.PCAdapterLayer.from_base(to_q, to_k, to_v)
    assert torch.equal(layer.per_k.weight, to_k.weight) and set(layer.state_dict()) == {
        "per_q.weight",
        "per_k.weight",
        "per_v.weight",
        "feat_to_q.weight",
    }
    q, k, v = pca.adapted_qkv(
        torch.randn(1, 4, 16),
        to_q,
        to_k,
        to_v,
        layer.weights(),
        context=torch.randn(1, 3, 12),
        id_feature=torch.randn(1, 512),
    )
    (q.sum() + k.sum() + v.sum()).backward()
    assert all(p.grad is not None for p in layer.parameters())


# ------------------------------------------------------------------------------ identity
def test_identity_projector_eval_and_train_batch_one():
    torch.manual_seed(0)
    proj = idn.IdentityProjector(context_dim=24)
    with torch.no_grad():
        proj.norm.running_mean.normal_()
        proj.norm.running_var.uniform_(0.5, 2)
    f = idn.l2_normalize_embedding(torch.randn(3, 512))
    proj.eval()
    expect = 0.01 * (
        (f @ proj.projector.weight.T - proj.norm.running_mean)
        / (proj.norm.running_var + proj.norm.eps).sqrt()
        * proj.norm.weight
        + proj.norm.bias
    )
    assert torch.allclose(proj(f), expect, atol=1e-6)
    proj.train()
    out = proj(f[:1])
    assert out.shape == (1, 24) and proj.norm.num_batches_tracked.item() == 1
    assert set(proj.state_dict()) == {
        "projector.weight",
        "norm.weight",
        "norm.bias",
        "norm.running_mean",
        "norm.running_var",
        "norm.num_batches_tracked",
    }


def test_inject_identity_tokens():
    emb = torch.randn(2, 7, 8)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[0, 3] = mask[1, 2] = mask[1, 5] = True
    init, e = torch.randn(8), torch.randn(2, 8)
    out = idn.inject_identity_tokens(emb, mask, init, e)
    assert torch.equal(out[~mask], emb[~mask])
    assert (
        torch.allclose(out[0, 3], init + e[0])
        and torch.allclose(out[1, 5], init + e[1])
        and torch.allclose(out[1, 2], init + e[1])
    )
    with pytest.raises(DenseFaceInputError):
        idn.inject_identity_tokens(emb, mask[:, :3], init, e)
    assert (idn.PLACEHOLDER_TOKEN, idn.INIT_WORD) == ("*", "person")


def test_l2_normalize_rejects_bad_features():
    out = idn.l2_normalize_embedding([3.0] + [0.0] * 511, name="reference face")
    assert out.shape == (1, 512) and out[0, 0] == 1
    bad = torch.zeros(512)
    with pytest.raises(DenseFaceInputError, match="reference face.*zero"):
        idn.l2_normalize_embedding(bad, name="reference face")
    bad[3] = float("nan")
    with pytest.raises(DenseFaceInputError, match="reference face.*NaN"):
        idn.l2_normalize_embedding(bad, name="reference face")
    with pytest.raises(DenseFaceInputError, match="shape"):
        idn.l2_normalize_embedding(torch.ones(2, 128))


# ------------------------------------------------------------------------------ pose branch
def test_pose_branch_full_size_keys_match_authors():
    with torch.device("meta"):
        branch = PoseBranch()
    got = {k: tuple(v.shape) for k, v in branch.state_dict().items()}
    expected = official_layout.pose_branch_shapes()
    assert got == expected
    assert not any(
        ".1." in k and k.startswith("input_blocks") and k.split(".")[2] == "1"
        for k in got
    )
    assert (
        "input_blocks.4.0.skip_connection.weight" in got
        and "input_blocks.7.0.skip_connection.weight" in got
    )


def _tiny_branch(seed=0) -> PoseBranch:
    torch.manual_seed(seed)
    return PoseBranch(
        model_channels=32, channel_mult=(1, 2), num_res_blocks=1, hint_channels=3
    ).eval()


def test_pose_branch_fresh_outputs_are_zero_and_shaped():
    branch = _tiny_branch()
    x, hint = torch.randn(2, 4, 8, 8), torch.rand(2, 3, 64, 64)
    outs = branch(x, hint, torch.tensor([10, 500]), context=torch.randn(2, 5, 12))
    assert [tuple(o.shape) for o in outs] == [
        (2, 32, 8, 8),
        (2, 32, 8, 8),
        (2, 32, 4, 4),
        (2, 64, 4, 4),
        (2, 64, 4, 4),
    ]
    assert all(torch.count_nonzero(o) == 0 for o in outs)
    full = PoseBranch.__init__.__defaults__
    assert full[:3] == (320, (1, 2, 4, 4), 2)


def test_pose_branch_cfg_halves_identical_and_context_unused():
    branch = _tiny_branch()
    for p in branch.parameters():  # undo zero-inits so the test means something
        if not p.any():
            torch.nn.init.normal_(p, std=0.05)
    x, hint, t = (
        torch.randn(1, 4, 8, 8),
        torch.rand(1, 3, 64, 64),
        torch.tensor([321.0]),
    )
    outs = branch(
        x.repeat(2, 1, 1, 1),
        hint.repeat(2, 1, 1, 1),
        t.repeat(2),
        context=torch.randn(2, 5, 12),
    )
    single = branch(x, hint, t)
    for o, s in zip(outs, single):
        assert o.abs().max() > 0
        assert torch.equal(o[0], o[1])
        assert torch.allclose(o[:1], s, atol=1e-5)
    half = branch.to(torch.bfloat16)(x.bfloat16(), hint, t)
    assert half[0].dtype == torch.bfloat16 and branch.dtype == torch.bfloat16


def test_timestep_embedding_matches_diffusers():
    from diffusers.models.embeddings import TimestepEmbedding, get_timestep_embedding

    t = torch.tensor([0.0, 1.0, 20.0, 981.0, 999.0])
    ours = timestep_embedding(t, 320)
    theirs = get_timestep_embedding(
        t, 320, flip_sin_to_cos=True, downscale_freq_shift=0
    )
    assert (ours - theirs).abs().max() <= 1e-5
    branch = _tiny_branch()
    te = TimestepEmbedding(32, 128)
    te.linear_1.load_state_dict(branch.time_embed[0].state_dict())
    te.linear_2.load_state_dict(branch.time_embed[2].state_dict())
    assert (
        te(timestep_embedding(t, 32)) - branch.time_embed(timestep_embedding(t, 32))
    ).abs().max() <= 1e-5


@pytest.mark.parametrize("cin,cout", [(32, 32), (32, 64)])
def test_resblock_matches_diffusers(cin, cout):
    from diffusers.models.resnet import Downsample2D, ResnetBlock2D

    torch.manual_seed(0)
    ours = ResBlock(cin, 128, cout)
    torch.nn.init.normal_(ours.out_layers[3].weight, std=0.05)
    theirs = ResnetBlock2D(
        in_channels=cin, out_channels=cout, temb_channels=128, groups=32, eps=1e-5
    )
    names = {
        "in_layers.0": "norm1",
        "in_layers.2": "conv1",
        "emb_layers.1": "time_emb_proj",
        "out_layers.0": "norm2",
        "out_layers.3": "conv2",
        "skip_connection": "conv_shortcut",
    }
    sd = {}
    for k, v in ours.state_dict().items():
        mod, leaf = k.rsplit(".", 1)
        sd[f"{names[mod]}.{leaf}"] = v
    theirs.load_state_dict(sd, strict=True)
    x, emb = torch.randn(2, cin, 8, 8), torch.randn(2, 128)
    assert (ours(x, emb) - theirs(x, emb)).abs().max() <= 1e-5
    branch = _tiny_branch()
    down = Downsample2D(32, use_conv=True, padding=1, name="op")
    down.conv.load_state_dict(branch.input_blocks[2][0].op.state_dict())
    y = torch.randn(1, 32, 8, 8)
    assert (down(y) - branch.input_blocks[2][0](y)).abs().max() <= 1e-5


# ------------------------------------------------------------------------------ dense head
def test_dense_head_constants_and_size():
    assert (
        dh.feature_channels("sd15") == (1280, 640, 320) == dh.feature_channels("sd21")
    )
    assert [(t.ldm_output_block, t.diffusers_up_block) for t in dh.FEATURE_TAPS] == [
        (5, 1),
        (8, 2),
        (11, 3),
    ]
    n = sum(p.numel() for p in dh.DenseHead.for_family("sd15").parameters())
    assert dh.DEFAULT_WIDTH == 128 and 0.5e6 < n < 2e6  # small beside the UNet (<1 % of its parameters)
    wide = sum(p.numel() for p in dh.DenseHead.for_family("sd15", width=256).parameters())
    assert 2e6 < wide < 6e6


@pytest.mark.parametrize("latent", [32, 64])
def test_dense_head_any_latent_size(latent):
    head = dh.DenseHead.for_family("sd15", width=16)
    feats = [
        torch.randn(1, 1280, latent // 2, latent // 2),
        torch.randn(1, 640, latent, latent),
        torch.randn(1, 320, latent, latent),
    ]
    out = head(feats)
    assert out["landmarks"].shape == (1, 478, 64, 64)
    assert out["parsing"].shape == (1, 10, 64, 64)
    assert out["depth"].shape == (1, 1, 64, 64)
    with pytest.raises(DenseFaceInputError):
        head(feats[:2])


def test_dense_losses_terms_and_overfit():
    torch.manual_seed(0)
    head = dh.DenseHead((32, 16, 8), width=16, output_size=64)
    feats = [
        torch.randn(2, 32, 8, 8),
        torch.randn(2, 16, 16, 16),
        torch.randn(2, 8, 16, 16),
    ]
    parsing = torch.randint(0, 10, (2, 64, 64))
    face = (torch.rand(2, 64, 64) > 0.5).float()
    target = {
        "landmarks": torch.rand(2, 478, 64, 64),
        "parsing": F.one_hot(parsing, 10).permute(0, 3, 1, 2).to(torch.uint8),
        "depth": torch.randn(2, 1, 64, 64),
        "face_mask": face,
    }
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    first = None
    for _ in range(20):
        losses = dh.dense_losses(head(feats), target, 1.0, 0.5, 2.0)
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
        first = first if first is not None else {k: v.item() for k, v in losses.items()}
    assert set(losses) == {"landmark", "parsing", "depth", "total"}
    # random targets have a high floor (CE ~ ln 10); the sanity check is that every term falls
    assert losses["total"].item() < 0.85 * first["total"]
    assert all(losses[k].item() < first[k] for k in ("landmark", "parsing", "depth"))
    # the depth term ignores the background and the parsing term ignores class-less pixels
    pred = head(feats)
    moved = {**pred, "depth": pred["depth"] + 5 * (1 - face[:, None])}
    a, b = (
        dh.dense_losses(pred, {"depth": target["depth"], "face_mask": face}),
        dh.dense_losses(moved, {"depth": target["depth"], "face_mask": face}),
    )
    assert torch.allclose(a["depth"], b["depth"])
    empty = torch.zeros(2, 10, 64, 64)
    empty[:, 3, :32] = 1
    ce = dh.dense_losses(pred, {"parsing": empty})["parsing"]
    assert torch.allclose(
        ce, F.cross_entropy(pred["parsing"][:, :, :32], torch.full((2, 32, 64), 3))
    )
