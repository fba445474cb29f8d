"""Trainer vs ComfyUI noise prediction in low precision (``dense-face bench device``'s equivalence part).

The same check as ``tests/test_equivalence.py`` (fp32, tiny models, CPU), at any geometry, device and
dtype: the same random base weights in the trainer's diffusers UNet and in ComfyUI's UNet (through the
trainer's diffusers -> ldm key map), the same Dense-Face weight file (trainer: ``DenseFaceNet``; ComfyUI:
DenseFaceLoader + DenseFaceApplyPCAdapter with pose branch, PC-adapter, identity query bias and token),
one evaluation at t=500 for the conditional and the authors' unconditional branch.

- reference: the trainer in fp32 on the device;
- per dtype (fp32, fp16, bf16): the trainer as it trains (frozen base cast to the dtype, autocast to it,
  the trainable Dense-Face parts in fp32) and ComfyUI as it samples (UNet built in the dtype; its
  Dense-Face patches follow the model's dtype). The text encoders stay fp32 on the ComfyUI side (as in the
  test: ComfyUI's --fp32-text-enc) and are cast with the base on the trainer side.

Reported per dtype and branch: max |trainer - ComfyUI|, max |each - fp32 reference|, all divided by
max |eps| of the reference (the output's own scale, so the figure does not depend on the random weights'
magnitude).
"""
from __future__ import annotations

import json

import numpy as np
import torch

TIMESTEP = 500
PROMPT = "a close-up photo of * ."
UNIT_ROUNDOFF = {torch.float32: 2.0 ** -24, torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}
# Tolerance on max|trainer - ComfyUI| / max|eps|, per dtype. In fp32 the test's 1e-4 (absolute, |eps| ~ 1-5)
# holds. In a low precision both sides round every layer's output at unit roundoff u (fp16 2^-11 = 4.9e-4,
# bf16 2^-8 = 3.9e-3), but not at the same places: ComfyUI folds the adapter's q/k/v deltas into the
# weights and rounds the folded weight once, the trainer adds the delta's product to the base's in
# autocast; attention kernels accumulate in other orders. Some 25 residual blocks in a row let independent
# rounding errors grow like sqrt(25) = 5, and the largest of ~10^5 outputs sits ~4 standard deviations out:
# 20 u relative to the output's scale (fp16 9.8e-3, bf16 7.8e-2) separates that noise from a real mismatch
# (a part missing or applied twice moves the output by O(1) of its scale; see the test's
# "every part is really active" check), while not failing on the fact that the two runtimes round
# differently. fp32 keeps the test's bound (1e-4 absolute ~ 1e-5 relative).
REL_TOL = {torch.float32: 1e-5, torch.float16: 20 * UNIT_ROUNDOFF[torch.float16],
           torch.bfloat16: 20 * UNIT_ROUNDOFF[torch.bfloat16]}
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def _comfy_eps(model, positive, latent, noise, timestep):
    """ComfyUI's noise prediction at ``timestep`` (cfg 1, one sampler call) and the UNet input it used."""
    import comfy.sample
    import comfy.samplers

    cap: dict = {}

    def sample(m, x, sigmas, extra_args=None, callback=None, disable=None):
        cap["x"] = x.clone()
        cap["denoised"] = m(x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {}))
        return cap["denoised"]

    sigma = model.model.model_sampling.sigma(torch.tensor([float(timestep)]))
    sigmas = torch.cat([sigma.reshape(1), torch.zeros(1)]).float()
    with torch.inference_mode():
        comfy.sample.sample_custom(model, noise, 1.0, comfy.samplers.KSAMPLER(sample), sigmas, positive, positive,
                                   latent, disable_pbar=True, seed=0)
    x, denoised = cap["x"].float().cpu(), cap["denoised"].float().cpu()
    sigma = sigma.float().cpu()
    return (x - denoised) / sigma, x / (sigma ** 2 + 1.0) ** 0.5  # eps, what ComfyUI feeds its UNet


class Equivalence:
    """One trainer base + Dense-Face net and the ComfyUI side at ``family``'s geometry."""

    def __init__(self, host, family, base_cfg: dict, device, head_width: int, unet_config_fn):
        """``base_cfg``: the trainer's ``base`` section (tiny_random at the family's geometry);
        ``unet_config_fn(dtype)``: ComfyUI's ldm UNet kwargs in that dtype."""
        from ..dense_face_core.dense_head import DEFAULT_OUTPUT_SIZE
        from ..dense_face_core.random_weights import build_random_weights
        from ..dense_face_core.weight_file import load_weight_file, save_weight_file
        from ..train.base_models import load_base
        from ..train.model import DenseFaceNet

        self.host, self.device, self.unet_config_fn = host, torch.device(device), unet_config_fn
        self.base = load_base(base_cfg)
        weights = build_random_weights(family, seed=1, dense_head_width=head_width)
        folder = host.workdir / "models" / "dense_face"
        host.add_model_dir("dense_face", folder)
        self.path = folder / "bench_equivalence.safetensors"
        save_weight_file(self.path, weights.tensors(), weights.metadata)
        self.net = DenseFaceNet(weights.family, dense_head=True, head_width=head_width, head_size=DEFAULT_OUTPUT_SIZE)
        self.net.load_weight_file_parts(load_weight_file(self.path))
        self.net.set_init_embedding(self.base)
        self.net.attach(self.base).eval()
        self.net.to(self.device)
        self.fp32 = {name: {k: v.detach().clone() for k, v in m.state_dict().items()}
                     for name, m in self.base.modules().items()}
        rng = np.random.default_rng(5)
        emb = rng.normal(size=512).astype(np.float32)
        self.emb = emb / np.linalg.norm(emb)
        self.clip = self._comfy_clip()
        from ..dense_face_core.pose import draw_pose_image

        self.pose = torch.from_numpy(draw_pose_image(25.0, -10.0, 5.0).astype(np.float32) / 255.0)[None]
        gen = torch.Generator().manual_seed(11)
        size = int(base_cfg.get("sample_size") or 32)
        self.latent = torch.randn(1, 4, size, size, generator=gen)
        self.noise = torch.randn(1, 4, size, size, generator=gen)

    def _comfy_clip(self):
        """ComfyUI's CLIP with the trainer's text weights, fp32 (ComfyUI's own --fp32-text-enc)."""
        from comfy.cli_args import args

        from ..headless import random_sd as rm
        from ..train.base_models import text_state_dict_hf

        config = self.host.workdir / "bench_equivalence_clip.json"
        config.write_text(json.dumps(self.base.text_encoder.config.to_dict()))
        saved, args.fp32_text_enc = args.fp32_text_enc, True
        try:
            clip = rm.build_clip(seed=0, textmodel_json_config=str(config))
        finally:
            args.fp32_text_enc = saved
        res = clip.cond_stage_model.clip_l.transformer.load_state_dict(text_state_dict_hf(self.base.text_encoder),
                                                                        strict=False)
        if res.unexpected_keys or not all("projection" in k or "position_ids" in k for k in res.missing_keys):
            raise RuntimeError(f"CLIP weights do not fit: {res.unexpected_keys[:3]} {res.missing_keys[:3]}")
        return clip

    def _base_to(self, dtype) -> None:
        for name, m in self.base.modules().items():
            m.to(self.device, dtype=torch.float32)
            m.load_state_dict(self.fp32[name])
            if dtype != torch.float32:
                m.to(dtype=dtype)

    def _trainer_eps(self, x_t, caption, dtype):
        import contextlib

        net, dev = self.net, self.device
        ids, mask = net.tokenize([caption], dev)
        f = torch.from_numpy(self.emb)[None].to(dev)
        hint = self.pose.movedim(-1, 1).to(dev, dtype)
        autocast = torch.autocast(dev.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
        with torch.no_grad(), autocast:
            out = net(x_t.to(dev, dtype), torch.tensor([float(TIMESTEP)], device=dev), ids, mask, f,
                      torch.ones(1, device=dev), hint, with_dense=False)
        return out["pred"].float().cpu()

    def _comfy_model(self, dtype):
        from ..headless import random_sd as rm
        from ..train.unet_keys import unet_state_dict_to_ldm

        model = rm.build_unet(self.unet_config_fn(dtype), seed=0)
        unet = self.base.unet
        ldm = unet_state_dict_to_ldm(self.fp32["unet"], unet.config.layers_per_block)
        model.model.diffusion_model.load_state_dict(ldm, strict=True)
        return model

    def run(self, dtypes=(torch.float32, torch.float16, torch.bfloat16)) -> dict:
        from ..headless import random_sd as rm

        host = self.host
        negative = rm.encode(self.clip, "")
        results = {}
        reference: dict[str, torch.Tensor] = {}
        x_t: dict[str, torch.Tensor] = {}
        for dtype in dtypes:
            model = self._comfy_model(dtype)
            (dense_face,) = host.node("DenseFaceLoader").load(self.path.name, model=model)
            face_id = host.core.id_embedding.FaceID(self.emb, dense_face.id_model)
            m, pos, neg = host.node("DenseFaceApplyPCAdapter").apply(model, self.clip, dense_face, face_id, self.pose,
                                                                     negative, prompt=PROMPT)
            row = {}
            for branch, caption, conditioning in (("cond", PROMPT, pos), ("uncond", "", neg)):
                eps_comfy, x = _comfy_eps(m, conditioning, self.latent, self.noise, TIMESTEP)
                if branch not in reference:  # the fp32 trainer on the device, on ComfyUI's own UNet input
                    self._base_to(torch.float32)
                    x_t[branch] = x
                    reference[branch] = self._trainer_eps(x, caption, torch.float32)
                self._base_to(dtype)
                eps_trainer = self._trainer_eps(x_t[branch], caption, dtype)
                ref = reference[branch]
                scale = float(ref.abs().max())
                row[branch] = {
                    "eps_max": scale,
                    "trainer_vs_comfy": float((eps_trainer - eps_comfy).abs().max()) / scale,
                    "trainer_vs_fp32": float((eps_trainer - ref).abs().max()) / scale,
                    "comfy_vs_fp32": float((eps_comfy - ref).abs().max()) / scale,
                }
            worst = max(r["trainer_vs_comfy"] for r in row.values())
            results[DTYPE_NAMES[dtype]] = dict(row, worst=worst, tolerance=REL_TOL[dtype], ok=worst <= REL_TOL[dtype])
            del m, model, dense_face
        self._base_to(torch.float32)
        return results

    def close(self) -> None:
        self.net.detach_base()
