"""Face-generation mode in a real ComfyUI with tiny models: the invariants of issue 3.

Tiny SD1.5-type UNet/CLIP with random weights (real SD weights are not available here);
Dense-Face weights are random too, made for the tiny geometry with the core's own builder.
"""
from __future__ import annotations


import numpy as np
import pytest
import torch

import tiny_models as tm

STEPS = 3


@pytest.fixture(scope="module")
def env(comfy, tmp_path_factory):
    core = comfy.core
    fam = tm.tiny_family()
    workdir = tmp_path_factory.mktemp("face_mode")
    weights = core.random_weights.build_random_weights(fam, seed=1, dense_head_width=32)
    path = comfy.models_dir / "dense_face" / "tiny_dense_face.safetensors"
    core.weight_file.save_weight_file(path, weights.tensors(), weights.metadata)
    model, clip = tm.tiny_model(seed=0), tm.tiny_clip(workdir, seed=0)
    (dense_face,) = comfy.node("DenseFaceLoader").load(path.name, model=model)
    rng = np.random.default_rng(5)
    face_id = core.id_embedding.FaceID(rng.normal(size=512), "insightface/antelopev2")
    (pose,) = comfy.node("DenseFacePoseEuler").draw(20.0, -5.0, 3.0)
    pos, neg = tm.encode(clip, "a close-up photo of a person"), tm.encode(clip, "")
    return dict(core=core, fam=fam, model=model, clip=clip, dense_face=dense_face, face_id=face_id,
                pose=pose, pos=pos, neg=neg, path=path, workdir=workdir)


def apply(comfy, env, model=None, **kw):
    args = dict(prompt="a close-up photo of * .", adapter_strength=1.0, identity_strength=1.0,
                pose_strength=1.0, start_percent=0.0, end_percent=1.0)
    args.update(kw)
    return comfy.node("DenseFaceApplyPCAdapter").apply(model or env["model"], env["clip"], env["dense_face"],
                                                       env["face_id"], env["pose"], env["neg"], positive=env["pos"],
                                                       **args)


def sample(comfy, model, pos, neg, seed=7, steps=STEPS, cfg=4.0):
    import nodes

    latent = {"samples": torch.zeros(1, 4, 32, 32)}
    with torch.inference_mode():
        return nodes.common_ksampler(model, seed, steps, cfg, "euler", "normal", pos, neg, latent)[0]["samples"]


def test_strengths_zero_equal_base_and_clone_isolation(comfy, env):
    before = sample(comfy, env["model"], env["pos"], env["neg"])
    m0, p0, n0 = apply(comfy, env, prompt="", adapter_strength=0.0, identity_strength=0.0, pose_strength=0.0)
    assert torch.equal(sample(comfy, m0, p0, n0), before)
    m1, p1, n1 = apply(comfy, env)
    patched = sample(comfy, m1, p1, n1)
    assert (patched - before).abs().max() > 1e-3  # face mode really changes the result
    after = sample(comfy, env["model"], env["pos"], env["neg"])
    assert torch.equal(after, before), "the unpatched model changed after patched sampling"
    print(f"face mode vs base: max |diff| {float((patched - before).abs().max()):.4f}; base bit-identical after")


def test_folded_weights_equal_runtime_formula(comfy, env):
    core, fam = env["core"], env["fam"]
    from comfy import model_management

    model_management.unload_all_models()  # newer ComfyUI keeps the last clone's patches applied
    m, _, _ = apply(comfy, env)
    unet = m.model.diffusion_model
    f = torch.as_tensor(env["face_id"].embedding).reshape(1, -1)
    base = {k: v.clone() for k, v in unet.state_dict().items()}
    adapter = env["dense_face"].weights.pc_adapter
    biases = env["dense_face"].query_biases(env["face_id"].embedding)
    m.patch_model()
    try:
        patched = {k: v.clone() for k, v in unet.state_dict().items()}
    finally:
        m.unpatch_model()
    assert all(torch.equal(base[k], v) for k, v in unet.state_dict().items()), "unpatch did not restore"
    torch.manual_seed(0)
    worst = 0.0
    for layer in core.families.attention_layers(fam):
        x = torch.randn(2, 16, layer.channels)
        ctx = torch.randn(2, 7, fam.context_dim) if layer.is_cross else None
        w = core.pc_adapter.layer_weights(adapter, layer.ldm_path)
        lin = lambda key: (lambda t: torch.nn.functional.linear(t, base[f"{layer.ldm_path}.{key}.weight"]))  # noqa: E731
        ref = core.pc_adapter.adapted_qkv(x, lin("to_q"), lin("to_k"), lin("to_v"), w, context=ctx,
                                          id_feature=f if core.pc_adapter.takes_identity_bias(layer) else None,
                                          delta=env["dense_face"].delta)
        c = x if ctx is None else ctx
        q = x @ patched[f"{layer.ldm_path}.to_q.weight"].T
        key = (layer.block_name, layer.block_number, layer.transformer_index)
        if core.pc_adapter.takes_identity_bias(layer):
            q = q + biases[key]
        got = (q, c @ patched[f"{layer.ldm_path}.to_k.weight"].T, c @ patched[f"{layer.ldm_path}.to_v.weight"].T)
        for a, b in zip(got, ref):
            worst = max(worst, float((a - b).abs().max()))
    print(f"fold + runtime bias vs the authors' runtime formula, 32 layers: max |diff| {worst:.2e}")
    assert worst <= 1e-5


def test_every_attention_layer_gets_one_key(comfy, env):
    """Probe patches on every key fire exactly once per UNet forward, for all 32 layers."""
    core, fam = env["core"], env["fam"]
    layers = core.families.attention_layers(fam)
    assert len(layers) == 32 and len({l.ldm_path for l in layers}) == 32
    m = env["model"].clone()
    calls: dict = {}
    from comfy.ldm.modules.attention import optimized_attention

    def probe(tag):
        def fn(q, k, v, extra):
            calls[tag] = calls.get(tag, 0) + 1
            return optimized_attention(q, k, v, extra["n_heads"])
        return fn

    for l in layers:
        tag = (l.attention,) + l.comfy_block + (l.transformer_index,)
        m.set_model_patch_replace(probe(tag), l.attention, *l.comfy_block, l.transformer_index)
    sample(comfy, m, env["pos"], env["neg"], steps=1, cfg=1.0)
    assert len(calls) == 32 and set(calls.values()) == {1}, calls
    middle = [l for l in layers if l.block_name == "middle"]
    assert {l.comfy_block for l in middle} == {("middle", 0)}


@pytest.mark.parametrize("family", ["sd15", "sd21"])
def test_full_size_unet_attention_paths(comfy, family):
    """The ldm paths of the core families exist in ComfyUI's own full-size UNet (built on the meta device)."""
    import comfy.supported_models as sm
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    cfg = tm.full_size_unet_config(family)
    with torch.device("meta"):
        unet = UNetModel(**cfg, dtype=torch.float32, device="meta")
    found = {n for n, _ in unet.named_modules() if n.endswith((".attn1", ".attn2"))}
    ours = {l.ldm_path for l in comfy.core.families.attention_layers(family)}
    assert found == ours
    assert sm  # the supported_models module is importable alongside


def test_composes_with_another_packs_attn2_patch(comfy, env):
    from comfy.ldm.modules.attention import optimized_attention

    seen = {}

    def foreign(q, k, v, extra):  # e.g. an IP-Adapter-like pack: records its q and doubles the output
        seen["q"] = q.detach().clone()
        return 2.0 * optimized_attention(q, k, v, extra["n_heads"])

    other = env["model"].clone()
    other.set_model_attn2_replace(foreign, "input", 1)  # the common 2-tuple key
    m, p, n = apply(comfy, env, model=other, pose_strength=0.0)
    patches = m.model_options["transformer_options"]["patches_replace"]["attn2"]
    ours = patches[("input", 1, 0)]
    assert ours.previous is foreign
    out_both = sample(comfy, m, p, n, steps=1)
    assert ours.calls > 0 and "q" in seen
    # the foreign patch received our biased q: re-run its input without our bias to compare
    m_ours, p2, n2 = apply(comfy, env, pose_strength=0.0)
    out_ours = sample(comfy, m_ours, p2, n2, steps=1)
    out_foreign = sample(comfy, other, p, n, steps=1)
    assert not torch.equal(out_both, out_ours) and not torch.equal(out_both, out_foreign)
    assert ("input", 1) in other.model_options["transformer_options"]["patches_replace"]["attn2"]


def test_identity_token_equals_manual_text_encoder(comfy, env):
    clip, dense_face, face_id = env["clip"], env["dense_face"], env["face_id"]
    _, p, _ = apply(comfy, env, prompt="a photo of * smiling", adapter_strength=0.0, pose_strength=0.0,
                    identity_strength=0.7)
    got = p[0][0]
    # manual: tokens -> input embeddings with the placeholder row replaced -> CLIP text transformer
    enc = clip.cond_stage_model.clip_l
    tok = clip.tokenizer.clip_l.tokenizer
    ids = [49406] + tok("a photo of * smiling", add_special_tokens=False)["input_ids"]
    ids = ids + [49407] * (77 - len(ids))
    star = tok("*", add_special_tokens=False)["input_ids"][0]
    person = tok("person", add_special_tokens=False)["input_ids"][0]
    text_model = enc.transformer.text_model
    table = text_model.embeddings.token_embedding.weight
    with torch.no_grad():
        emb = table[torch.tensor(ids)].clone()
        offset = 0.7 * dense_face.identity_offset(face_id.embedding)
        emb[torch.tensor(ids) == star] = table[person] + offset
        x = emb[None] + text_model.embeddings.position_embedding.weight[None, :77]
        causal = torch.full((77, 77), float("-inf")).triu_(1)
        x = text_model.encoder(x, mask=causal)[0]
        manual = text_model.final_layer_norm(x)
    diff = float((got - manual).abs().max())
    print(f"identity-token conditioning vs manual text-encoder computation: max |diff| {diff:.2e}")
    assert diff < 1e-5


def test_placeholder_missing_is_a_clear_error(comfy, env):
    with pytest.raises(ValueError, match="placeholder"):
        apply(comfy, env, prompt="a photo of a person")
    with pytest.raises(ValueError, match="prompt is empty and no positive"):
        comfy.node("DenseFaceApplyPCAdapter").apply(env["model"], env["clip"], env["dense_face"], env["face_id"],
                                                    env["pose"], env["neg"], prompt=" ")


def test_pose_grid_batch_gives_each_latent_its_pose(comfy, env):
    images, count = comfy.node("DenseFacePoseGrid").grid(-30.0, 30.0, 3, 0.0, 10.0, 2, 0.0)
    assert count == 6 and tuple(images.shape) == (6, 256, 256, 3)
    ref = comfy.core.pose.draw_pose_image(30.0, 10.0, 0.0)
    assert np.array_equal((images[5].numpy() * 255).round().astype(np.uint8), ref)
    m, p, n = apply(comfy, env, pose_strength=1.0)
    _, pg, ng = comfy.node("DenseFaceApplyPCAdapter").apply(env["model"], env["clip"], env["dense_face"],
                                                            env["face_id"], images[:2], env["neg"],
                                                            prompt="a close-up photo of * .")
    import nodes

    latent = {"samples": torch.zeros(2, 4, 32, 32)}
    with torch.inference_mode():
        out = nodes.common_ksampler(m, 3, 1, 4.0, "euler", "normal", pg, ng, latent)[0]["samples"]
    # same noise, same prompt: the two latents differ only through their poses
    assert pg[0][1]["control"].control_model.last_unique_rows == 2
    assert not torch.equal(out[0], out[1])


def test_pose_branch_through_controlnet_machinery(comfy, env):
    base = sample(comfy, env["model"], env["pos"], env["neg"])
    m, p1, n1 = apply(comfy, env, prompt="", adapter_strength=0.0, identity_strength=0.0, pose_strength=1.0)
    control = p1[0][1]["control"]
    assert n1[0][1]["control"] is control  # one ControlNet serves cond and uncond, like the stock node
    out1 = sample(comfy, m, p1, n1)
    assert control.control_model.last_unique_rows == 1  # cond+uncond rows computed once
    _, p2, n2 = apply(comfy, env, prompt="", adapter_strength=0.0, identity_strength=0.0, pose_strength=2.0)
    out2 = sample(comfy, m, p2, n2)
    assert not torch.equal(out1, base) and not torch.equal(out2, out1)
    # a percent window that contains no step equals no pose branch at all; half a window is in between
    _, p3, n3 = apply(comfy, env, prompt="", adapter_strength=0.0, identity_strength=0.0, pose_strength=1.0,
                      start_percent=0.2, end_percent=0.3)
    assert torch.equal(sample(comfy, m, p3, n3), base)
    _, p4, n4 = apply(comfy, env, prompt="", adapter_strength=0.0, identity_strength=0.0, pose_strength=1.0,
                      start_percent=0.0, end_percent=0.5)
    half = sample(comfy, m, p4, n4)
    assert not torch.equal(half, base) and not torch.equal(half, out1)
    # chaining: a stock ControlNet attached first stays in the chain and still acts
    stock = tiny_stock_controlnet(comfy)
    import nodes

    ps, ns = nodes.ControlNetApplyAdvanced().apply_controlnet(env["pos"], env["neg"], stock, env["pose"], 1.0, 0.0, 1.0)
    _, pc, nc = comfy.node("DenseFaceApplyPCAdapter").apply(env["model"], env["clip"], env["dense_face"],
                                                            env["face_id"], env["pose"], ns, positive=ps, prompt="",
                                                            adapter_strength=0.0, identity_strength=0.0,
                                                            pose_strength=1.0, start_percent=0.0, end_percent=1.0)
    assert pc[0][1]["control"].previous_controlnet is ps[0][1]["control"]
    stock_calls = stock.control_model.calls
    out_chain = sample(comfy, env["model"], pc, nc)
    assert stock.control_model.calls > stock_calls
    assert not torch.equal(out_chain, out1) and not torch.equal(out_chain, sample(comfy, env["model"], ps, ns))


def tiny_stock_controlnet(comfy):
    """ComfyUI's own cldm ControlNet at the tiny width (attention-free config), random weights, call-counted."""
    control = tm.random_models.build_stock_controlnet(tm.tiny_unet_config(), seed=3, attention=False)
    net = control.control_model
    calls = {"n": 0}
    forward = net.forward

    def counted(*a, **k):
        calls["n"] += 1
        return forward(*a, **k)

    net.forward = counted
    type(net).calls = property(lambda self: calls["n"])
    return control


def test_pose_dedup_is_exact(comfy, env):
    from importlib import import_module

    patches = import_module("dense_face.nodes.comfy_side.pose_control")
    branch = env["dense_face"].pose_branch()
    wrapper = patches.PoseControlModel(branch)
    torch.manual_seed(1)
    x = torch.randn(1, 4, 32, 32)
    hint = torch.rand(1, 3, 256, 256)
    t = torch.tensor([500.0])
    with torch.no_grad():
        once = branch(x, hint, t)
        got = wrapper(torch.cat([x, x]), torch.cat([hint, hint]), torch.cat([t, t]))
        full = branch(torch.cat([x, x]), torch.cat([hint, hint]), torch.cat([t, t]))
    outs = got if isinstance(got, list) else got["output"] + got["middle"]
    assert wrapper.last_unique_rows == 1
    # the encoded hint is reused on the next step (same pose image) and recomputed for a new one
    flat = lambda r: r if isinstance(r, list) else r["output"] + r["middle"]  # noqa: E731
    with torch.no_grad():
        again = flat(wrapper(torch.cat([x, x]), torch.cat([hint, hint]), torch.cat([t, t])))
        other_hint = torch.rand(1, 3, 256, 256)
        fresh = flat(wrapper(torch.cat([x, x]), torch.cat([other_hint, other_hint]), torch.cat([t, t])))
        direct = branch(x, other_hint, t)
    assert all(torch.equal(a, b) for a, b in zip(again, outs))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(fresh, direct))
    for a, b, c in zip(outs, once, full):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[0])
        assert float((a - c).abs().max()) <= 1e-5  # batch-2 evaluation agrees to float rounding


def test_float16_file_computes_its_pose_branch_in_comfyuis_controlnet_dtype(comfy, env):
    """The authors' release and every export store float16. ComfyUI runs a float16 ControlNet file in float32
    on a CPU (no fast float16 convolutions there); ours must too. Same pictures as a float32 file holding the same float16-rounded values; the loaded file's
    tensors stay float16."""
    core = env["core"]
    half = {k: v.half() for k, v in env["dense_face"].weights.tensors().items()}
    paths = {}
    for name, tensors in (("half", half), ("rounded", {k: v.float() for k, v in half.items()})):
        paths[name] = comfy.models_dir / "dense_face" / f"tiny_{name}.safetensors"
        core.weight_file.save_weight_file(paths[name], tensors, env["dense_face"].weights.metadata)
    outs = {}
    for name, path in paths.items():
        (dense_face,) = comfy.node("DenseFaceLoader").load(path.name, model=env["model"])
        m, p, n = comfy.node("DenseFaceApplyPCAdapter").apply(
            env["model"], env["clip"], dense_face, env["face_id"], env["pose"], env["neg"], positive=env["pos"],
            prompt="a close-up photo of * .", adapter_strength=1.0, identity_strength=1.0, pose_strength=1.0,
            start_percent=0.0, end_percent=1.0)
        assert p[0][1]["control"].control_model.dtype == torch.float32  # ComfyUI's choice on a CPU
        outs[name] = sample(comfy, m, p, n)
        if name == "half":
            assert all(v.dtype == torch.float16 for v in dense_face.weights.pose_branch.values())
    assert torch.equal(outs["half"], outs["rounded"])


def test_control_dtype_follows_comfyuis_choice(comfy, monkeypatch):
    """The pose branch computes in what ComfyUI picks for a ControlNet file of its dtype on its device (a GPU's
    float16, a manual-cast bfloat16), also through another pack's wrapper with the oldest signature."""
    from importlib import import_module

    from comfy import model_management as mm

    control_dtype = import_module("dense_face.nodes.comfy_side.pose_control").control_dtype
    assert control_dtype(torch.float16) == torch.float32  # this CPU
    monkeypatch.setattr(mm, "unet_dtype", lambda device=None, model_params=0: torch.float16)
    monkeypatch.setattr(mm, "unet_manual_cast", lambda dtype, device, *a, **k: None)
    assert control_dtype(torch.float16) == torch.float16
    monkeypatch.setattr(mm, "unet_manual_cast", lambda dtype, device, *a, **k: torch.bfloat16)
    assert control_dtype(torch.float32) == torch.bfloat16


def test_wrong_family_and_bad_files(comfy, env, tmp_path):
    core = env["core"]
    sd15 = core.random_weights.build_random_weights("sd15", with_dense_head=False)
    path = comfy.models_dir / "dense_face" / "sd15_weights.safetensors"
    core.weight_file.save_weight_file(path, sd15.tensors(), sd15.metadata)
    loader = comfy.node("DenseFaceLoader")
    with pytest.raises(Exception, match=r"sd15 \(text context 768\).*tiny \(text context 32\)"):
        loader.load(path.name, model=env["model"])
    bad = comfy.models_dir / "dense_face" / "corrupt.safetensors"
    bad.write_bytes(env["path"].read_bytes()[: 5000])
    with pytest.raises(Exception, match="corrupt|truncated"):
        loader.load(bad.name)
    pkl = comfy.models_dir / "dense_face" / "weights.ckpt"
    torch.save({"state_dict": {}}, pkl)
    with pytest.raises(Exception):
        loader.load(pkl.name)
    with pytest.raises(Exception, match="not found"):
        loader.load("nope.safetensors")
    wrong_id = core.id_embedding.FaceID(np.ones(512), "ir_se50")
    with pytest.raises(Exception, match="trained on 'insightface/antelopev2'"):
        comfy.node("DenseFaceApplyPCAdapter").apply(env["model"], env["clip"], env["dense_face"], wrong_id,
                                                    env["pose"], env["neg"], positive=env["pos"])


def test_annotation_predict_one_forward(comfy, env):
    m, p, n = apply(comfy, env)
    unet = m.model.diffusion_model
    count = {"n": 0}
    hook = unet.register_forward_pre_hook(lambda *a: count.__setitem__("n", count["n"] + 1))
    try:
        latent = {"samples": torch.randn(1, 4, 32, 32)}
        depth, parsing, masks, lms = comfy.node("DenseFaceAnnotationPredict").predict(m, env["dense_face"], latent,
                                                                                      p, 50, 0)
    finally:
        hook.remove()
    assert count["n"] == 1
    assert tuple(depth.shape) == (1, 256, 256, 3) and tuple(parsing.shape) == (1, 256, 256, 3)
    assert tuple(masks.shape) == (10, 256, 256) and tuple(lms.shape) == (1, 256, 256, 3)
    assert torch.allclose(masks.sum(0), torch.ones(256, 256))  # one class per pixel


def test_query_bias_patch_follows_comfy_patch_protocol(comfy, env):
    """ComfyUI moves patches with the model (model_patches_to) and asks them for extra models: ours move
    their bias once and pass both calls on to the patch they wrap; a restricted percent range needs sigmas."""
    from dense_face.dense_face_core.errors import DenseFaceError
    from dense_face.nodes.comfy_side.query_bias import QueryBiasPatch

    class Foreign:  # another pack's replace patch with the protocol (e.g. an adapter holding a model)
        def __init__(self):
            self.moved = []

        def to(self, device_or_dtype):
            self.moved.append(device_or_dtype)
            return self

        def models(self):
            return ["foreign-model"]

        def __call__(self, q, k, v, extra):
            from comfy.ldm.modules.attention import optimized_attention

            return optimized_attention(q, k, v, extra["n_heads"])

    foreign = Foreign()
    other = env["model"].clone()
    other.set_model_attn2_replace(foreign, "output", 3)
    m, _p, _n = apply(comfy, env, model=other, pose_strength=0.0)
    ours = m.model_options["transformer_options"]["patches_replace"]["attn2"][("output", 3, 0)]
    foreign = ours.previous  # ComfyUI's clone() deep-copies model_options: the wrapped patch is a copy
    assert isinstance(ours, QueryBiasPatch) and isinstance(foreign, Foreign) and ours.models() == ["foreign-model"]
    replace = m.model_options["transformer_options"]["patches_replace"]["attn2"]
    m.model_patches_to(torch.float16)
    moved = replace[("output", 3, 0)]
    assert moved.scaled_bias.dtype == torch.float16 and foreign.moved[-1] == torch.float16
    assert ours.scaled_bias.dtype == torch.float32  # a moved copy: the object other clones share is unchanged
    assert moved.to(torch.float16) is moved  # nothing to move: no copy (ComfyUI's detach at interpreter exit)
    m.model_patches_to(torch.float32)
    m.model_patches_to(torch.float8_e4m3fn)
    assert replace[("output", 3, 0)].scaled_bias.dtype == torch.float32  # an 8-bit storage dtype is not taken

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 4, 8, generator=gen) for _ in range(3))  # attention that depends on q
    windowed = QueryBiasPatch(torch.ones(1, q.shape[-1]), 1.0, sigma_range=(10.0, 1.0))
    with pytest.raises(DenseFaceError, match="sigma"):
        windowed(q, k, v, {"n_heads": 1})
    inside = windowed(q, k, v, {"n_heads": 1, "sigmas": torch.tensor([5.0])})
    outside = windowed(q, k, v, {"n_heads": 1, "sigmas": torch.tensor([20.0])})
    whole = QueryBiasPatch(torch.ones(1, q.shape[-1]), 1.0)(q, k, v, {"n_heads": 1})  # no sigma needed
    assert torch.equal(inside, whole) and not torch.equal(inside, outside)


def test_dense_features_captured_by_comfy_patches_equal_the_block_outputs(comfy, env):
    """The output-block patch + ``out`` object patch see exactly the outputs of output blocks 5, 8, 11
    (checked against forward hooks on the blocks' last layers), and the connected model stays unpatched."""
    from dense_face.nodes.comfy_side.dense_capture import _RecordingOut, capture_decoder_features

    m, p, _n = apply(comfy, env)
    unet = m.model.diffusion_model
    out_before = unet.out  # a capture clone of an earlier test may still be patched in (until a model loads)
    layers = list(out_before)
    hooked = {}
    hooks = [unet.output_blocks[b][-1].register_forward_hook(
        lambda _m, _i, out, b=b: hooked.__setitem__(b, out.detach().clone())) for b in (5, 8, 11)]
    samples = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    try:
        with torch.inference_mode():
            captured = capture_decoder_features(m, samples, p, timestep=300, seed=4, blocks=(5, 8, 11))
    finally:
        for h in hooks:
            h.remove()
    assert sorted(captured) == [5, 8, 11]
    for b in (5, 8, 11):
        assert captured[b].shape == hooked[b].shape and torch.equal(captured[b], hooked[b]), b
    assert "output_block_patch" not in m.model_options["transformer_options"].get("patches", {})
    with torch.inference_mode():
        again = capture_decoder_features(m, samples, p, timestep=300, seed=4, blocks=(5, 8, 11))
    assert all(torch.equal(again[b], captured[b]) for b in (5, 8, 11))  # a second run: same, no nested wrap
    # the stand-in holds the very same layers under the same names (no nesting, no new weight paths)
    assert isinstance(unet.out, _RecordingOut) and all(a is b for a, b in zip(unet.out, layers))
    assert [n for n, _ in unet.out.named_parameters()] == [n for n, _ in torch.nn.Sequential(*layers).named_parameters()]
    sample(comfy, env["model"], env["pos"], env["neg"], steps=1)  # ComfyUI undoes the clone's patches
    assert not isinstance(unet.out, _RecordingOut) and all(a is b for a, b in zip(unet.out, layers))


@pytest.mark.parametrize("family", ["sd15", "sd21"])
def test_placeholder_and_init_word_are_single_tokens_with_comfyuis_tokenizers(comfy, family):
    """SD1 pads with the end token, SD2 with 0: the identity token's words are found either way."""
    import importlib

    import comfy.sd1_clip

    try:  # 0.3.x keeps it under text_encoders/, 2024 builds at the top of comfy/
        sd2_clip = importlib.import_module("comfy.text_encoders.sd2_clip")
    except ImportError:
        sd2_clip = importlib.import_module("comfy.sd2_clip")
    from dense_face.dense_face_core.errors import DenseFaceInputError
    from dense_face.nodes.comfy_side.identity_token import _single_token_id

    class TokenizerOnly:  # what _single_token_id uses of a CLIP: its tokenizer and tokenize()
        tokenizer = comfy.sd1_clip.SD1Tokenizer() if family == "sd15" else sd2_clip.SD2Tokenizer()

        def tokenize(self, text):
            return self.tokenizer.tokenize_with_weights(text)

    clip = TokenizerOnly()
    person, star = _single_token_id(clip, "person", "init word"), _single_token_id(clip, "*", "placeholder")
    assert person != star and min(person, star) > 0
    with pytest.raises(DenseFaceInputError, match="not a single CLIP token"):
        _single_token_id(clip, "two words", "placeholder")
