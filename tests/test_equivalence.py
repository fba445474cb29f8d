"""Trained weights mean the same in the trainer and in ComfyUI.

For the same tiny base weights, the same Dense-Face weights and the same inputs, the
trainer's diffusers forward (train/model.py) and ComfyUI's patched model (DenseFaceLoader +
DenseFaceApplyPCAdapter in a real in-process ComfyUI) give the same noise prediction, with
pose branch, PC-adapter and identity token all active, for the conditional and the
authors' unconditional branch; the dense head's outputs agree too. The base UNet reaches
ComfyUI through the trainer's diffusers -> ldm key map, proven here against ComfyUI's own
``comfy.utils.unet_to_diffusers``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tiny_models as tm

TOL = 1e-4
TIMESTEP = 500
PROMPT = "a close-up photo of * ."


@pytest.fixture(scope="module")
def setup(comfy, tmp_path_factory):
    from dense_face.dense_face_core.random_weights import build_random_weights
    from dense_face.dense_face_core.weight_file import load_weight_file, save_weight_file
    from dense_face.train.base_models import build_tiny_random, tiny_base_config
    from dense_face.train.model import DenseFaceNet

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: extra threads only fight over shared cores
    fam = tm.tiny_family()
    # ComfyUI's SD15 class builds 8 heads for any unet config (its unet_extra_config): match it
    base = build_tiny_random(tiny_base_config("tiny", seed=3, unet={"attention_head_dim": 8}))
    weights = build_random_weights(fam, seed=1, dense_head_width=32)
    path = comfy.models_dir / "dense_face" / "equivalence_tiny.safetensors"
    save_weight_file(path, weights.tensors(), weights.metadata)
    net = DenseFaceNet(fam, dense_head=True, head_width=32, head_size=64)
    net.load_weight_file_parts(load_weight_file(path))
    net.set_init_embedding(base)
    net.attach(base).eval()
    rng = np.random.default_rng(5)
    emb = rng.normal(size=512).astype(np.float32)
    emb /= np.linalg.norm(emb)
    yield dict(fam=fam, base=base, net=net, path=path, emb=emb, workdir=tmp_path_factory.mktemp("equivalence"))
    net.detach_base()
    torch.set_num_threads(threads)


def test_unet_key_map_equals_comfyui(comfy, setup):
    """Every key of the diffusers UNet maps to the ldm key ComfyUI's own map gives it."""
    import comfy.utils

    from dense_face.train.unet_keys import diffusers_to_ldm_unet_map

    unet = setup["base"].unet
    ours = diffusers_to_ldm_unet_map(unet.state_dict().keys(), unet.config.layers_per_block)
    theirs = comfy.utils.unet_to_diffusers(tm.tiny_unet_config())
    assert set(ours) <= set(theirs), sorted(set(ours) - set(theirs))[:5]
    wrong = {k: (v, theirs[k]) for k, v in ours.items() if theirs[k] != v}
    assert not wrong, list(wrong.items())[:5]
    print(f"\n{len(ours)} diffusers UNet keys: ldm names identical to comfy.utils.unet_to_diffusers")


@pytest.mark.parametrize("family", ["sd15", "sd21"])
def test_full_size_key_map_and_shapes(comfy, family):
    """Full SD1.5/SD2.1 geometry on the meta device: names from our map, shapes from both builders."""
    import comfy.utils
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from diffusers import UNet2DConditionModel

    from dense_face.dense_face_core.families import get_family
    from dense_face.train.base_models import unet_config_for_family
    from dense_face.train.unet_keys import diffusers_to_ldm_unet_map, unet_state_dict_to_ldm

    cfg = tm.full_size_unet_config(family)
    with torch.device("meta"):
        theirs = UNetModel(**cfg, dtype=torch.float32, device="meta").state_dict()
        ours = UNet2DConditionModel(**unet_config_for_family(get_family(family))).state_dict()
    mapped = unet_state_dict_to_ldm(ours, 2)
    comfy_map = comfy.utils.unet_to_diffusers(cfg)
    assert set(mapped) == set(theirs)
    assert all(tuple(mapped[k].shape) == tuple(theirs[k].shape) for k in theirs)
    names = diffusers_to_ldm_unet_map(ours.keys(), 2)
    assert all(comfy_map[k] == v for k, v in names.items())


def _comfy_models(setup):
    """ComfyUI's tiny UNet and CLIP carrying exactly the trainer's base weights."""
    from dense_face.train.base_models import text_state_dict_hf
    from dense_face.train.unet_keys import unet_state_dict_to_ldm

    base = setup["base"]
    model = tm.tiny_model(seed=0)
    ldm = unet_state_dict_to_ldm(base.unet.state_dict(), base.unet.config.layers_per_block)
    model.model.diffusion_model.load_state_dict(ldm, strict=True)
    # ComfyUI stores text encoders in fp16 by default (even on CPU); its own --fp32-text-enc flag keeps
    # fp32, the precision this comparison is about (in fp16 the conditioning differs by ~1e-3)
    from comfy.cli_args import args

    saved, args.fp32_text_enc = args.fp32_text_enc, True
    try:
        clip = tm.tiny_clip(setup["workdir"], seed=0)
    finally:
        args.fp32_text_enc = saved
    res = clip.cond_stage_model.clip_l.transformer.load_state_dict(text_state_dict_hf(base.text_encoder), strict=False)
    assert not res.unexpected_keys, res.unexpected_keys
    assert all("projection" in k or "position_ids" in k for k in res.missing_keys), res.missing_keys
    return model, clip


def _comfy_eval(model, positive, latent, noise, timestep):
    """One ComfyUI evaluation at ``timestep`` (cfg 1): the sampler's input x, the denoised output and
    the dense-head features captured like DenseFaceAnnotationPredict does."""
    import comfy.sample
    import comfy.samplers

    from dense_face.dense_face_core.dense_head import FEATURE_TAPS

    cap: dict = {}

    def sample(m, x, sigmas, extra_args=None, callback=None, disable=None):
        cap["x"] = x.clone()
        cap["denoised"] = m(x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {}))
        return cap["denoised"]

    unet = model.model.diffusion_model
    feats: dict = {}
    hooks = [unet.output_blocks[t.ldm_output_block][-1].register_forward_hook(
        lambda _m, _i, out, i=t.ldm_output_block: feats.__setitem__(i, out.detach().clone())) for t in FEATURE_TAPS]
    try:
        sigma = model.model.model_sampling.sigma(torch.tensor([float(timestep)]))
        sigmas = torch.cat([sigma.reshape(1), torch.zeros(1)]).float()
        with torch.inference_mode():
            comfy.sample.sample_custom(model, noise, 1.0, comfy.samplers.KSAMPLER(sample), sigmas, positive, positive,
                                       latent, disable_pbar=True, seed=0)
    finally:
        for h in hooks:
            h.remove()
    eps = (cap["x"] - cap["denoised"]) / sigma
    return cap["x"], sigma, eps, [feats[t.ldm_output_block] for t in FEATURE_TAPS]


def test_trainer_forward_equals_comfyui(comfy, setup):
    from dense_face.dense_face_core.id_embedding import FaceID
    from dense_face.dense_face_core.pose import draw_pose_image

    net = setup["net"]
    model, clip = _comfy_models(setup)
    (dense_face,) = comfy.node("DenseFaceLoader").load(setup["path"].name, model=model)
    face_id = comfy.core.id_embedding.FaceID(setup["emb"], dense_face.id_model)
    assert np.allclose(FaceID(setup["emb"], "x").embedding, face_id.embedding)
    pose_u8 = draw_pose_image(25.0, -10.0, 5.0)
    pose = torch.from_numpy(pose_u8.astype(np.float32) / 255.0)[None]  # BHWC, ComfyUI IMAGE
    negative = tm.encode(clip, "")
    m, pos, neg = comfy.node("DenseFaceApplyPCAdapter").apply(model, clip, dense_face, face_id, pose, negative,
                                                              prompt=PROMPT)
    gen = torch.Generator().manual_seed(11)
    latent = torch.randn(1, 4, 32, 32, generator=gen)
    noise = torch.randn(1, 4, 32, 32, generator=gen)

    f = torch.from_numpy(face_id.embedding)[None]
    hint = pose.movedim(-1, 1)
    report = []
    for name, caption, conditioning in (("cond", PROMPT, pos), ("uncond", "", neg)):
        x, sigma, eps_comfy, feats_comfy = _comfy_eval(m, conditioning, latent, noise, TIMESTEP)
        x_t = x / (sigma ** 2 + 1.0) ** 0.5  # what ComfyUI feeds its UNet (calculate_input)
        with torch.no_grad():
            ids, mask = net.tokenize([caption])
            assert int(mask.sum()) == (1 if caption else 0)
            out = net(x_t, torch.tensor([float(TIMESTEP)]), ids, mask, f, torch.ones(1), hint)
            pred_head = out["dense"]
            comfy_head = dense_face.dense_head()([t.float() for t in feats_comfy])
        text_diff = float((out["context"] - conditioning[0][0]).abs().max())
        eps_diff = float((out["pred"] - eps_comfy).abs().max())
        head_diff = max(float((pred_head[k] - comfy_head[k]).abs().max()) for k in pred_head)
        report.append(f"{name}: text {text_diff:.1e}, noise prediction {eps_diff:.1e} "
                      f"(|eps| max {float(eps_comfy.abs().max()):.2f}), dense head {head_diff:.1e}")
        assert text_diff <= TOL and eps_diff <= TOL and head_diff <= TOL, report[-1]

    # every part is really active: dropping any one of them changes the trainer's prediction
    x, sigma, eps_comfy, _ = _comfy_eval(m, pos, latent, noise, TIMESTEP)
    x_t = x / (sigma ** 2 + 1.0) ** 0.5
    ids, mask = net.tokenize([PROMPT])
    t = torch.tensor([float(TIMESTEP)])
    with torch.no_grad():
        full = net(x_t, t, ids, mask, f, torch.ones(1), hint, with_dense=False)["pred"]
        no_pose = net(x_t, t, ids, mask, f, torch.ones(1), hint, with_dense=False, pose_scale=0.0)["pred"]
        no_id = net(x_t, t, ids, mask, f, torch.zeros(1), hint, with_dense=False)["pred"]
        no_token = net(x_t, t, ids, torch.zeros_like(mask), f, torch.ones(1), hint, with_dense=False)["pred"]
    for what, other in (("pose branch", no_pose), ("identity", no_id), ("identity token", no_token)):
        assert float((full - other).abs().max()) > 10 * TOL, f"{what} has no visible effect"
    print("\ntrainer vs ComfyUI, tiny models, t=500:\n  " + "\n  ".join(report))


def test_single_file_checkpoint_offline(comfy, setup, tmp_path):
    """An original-layout checkpoint (ComfyUI's tiny VAE, our UNet/CLIP) loads through the trainer's
    offline single-file path with local configs: same tensors, same VAE decode as ComfyUI's."""
    from safetensors.torch import save_file

    from dense_face.train.base_models import load_single_file, text_state_dict_hf
    from dense_face.train.unet_keys import unet_state_dict_to_ldm

    base = setup["base"]
    vae = tm.tiny_vae(seed=2)
    sd = {"model.diffusion_model." + k: v.contiguous() for k, v in
          unet_state_dict_to_ldm(base.unet.state_dict(), 2).items()}
    sd.update({"cond_stage_model.transformer." + k: v.contiguous() for k, v in text_state_dict_hf(base.text_encoder).items()})
    sd.update({"first_stage_model." + k: v.contiguous() for k, v in vae.first_stage_model.state_dict().items()})
    path = tmp_path / "tiny_sd.safetensors"
    save_file(sd, str(path))
    loaded = load_single_file({"path": str(path), "family": "tiny", "tokenizer": None, "prediction_type": None,
                               "sample_size": 32, "text_encoder": {},
                               "vae": {"block_out_channels": [32, 64, 128, 128], "layers_per_block": 2,
                                       "norm_num_groups": 32}})
    for mine, orig in ((loaded.unet, base.unet), (loaded.text_encoder, base.text_encoder)):
        a, b = mine.state_dict(), orig.state_dict()
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = loaded.vae.decode(z).sample
        theirs = vae.first_stage_model.decode(z)
    assert float((ours - theirs).abs().max()) <= TOL
