"""The loss of one micro-batch, and the randomness it draws: a pure function of (seed, step,
micro-step, rank), which is what makes a resumed run continue exactly."""
from __future__ import annotations

import numpy as np
import torch

from ..dense_face_core.dense_head import dense_losses


def step_generator(seed: int, step: int, micro: int, rank: int) -> torch.Generator:
    """The randomness of one micro-step of one rank (timesteps, noise, dropout, posterior sample)."""
    s = int(np.random.SeedSequence([int(seed), int(step), int(micro), int(rank)]).generate_state(1)[0])
    return torch.Generator().manual_seed(s)


class MicroStep:
    """Loss of one micro-batch: VAE latents, noise and timestep, CFG dropout, the face-mode forward,
    eps-MSE + lambda-weighted dense losses (paper Eq. 8), dense features at the sampled timestep.

    Dropout for classifier-free guidance, as the authors sample the unconditional branch:
    - caption dropout: the prompt becomes "" - no placeholder, so no identity token - while the
      identity feature still reaches the PC-adapter (the authors' uncond: empty prompt, f kept);
    - identity dropout: the caption stays but the identity is gone everywhere: the placeholder
      keeps the plain init-word embedding and the adapter's identity input is zero (no query bias).
    """

    def __init__(self, cfg, model, net, base, device, weight_dtype, dense_on: bool):
        t, lo = cfg["train"], cfg["loss"]
        self.model, self.net, self.base, self.device, self.dtype = model, net, base, device, weight_dtype
        self.dense_on = dense_on
        self.sample_latents = cfg["data"]["latents"] == "sample"
        self.scaling = float(getattr(base.vae.config, "scaling_factor", 0.18215))
        sched = base.noise_scheduler
        self.t_lo, t_hi = (int(v) for v in t["timestep_range"])
        self.t_hi = min(t_hi, sched.config.num_train_timesteps)
        self.p_cap, self.p_id = float(t["caption_dropout"]), float(t["identity_dropout"])
        self.lambdas = (float(lo["lambda_landmark"]), float(lo["lambda_parsing"]), float(lo["lambda_depth"]))

    @torch.no_grad()
    def latents(self, image, g):
        dist = self.base.vae.encode(image.to(self.device, self.dtype)).latent_dist
        lat = dist.mean
        if self.sample_latents:  # the authors encode with a posterior sample
            lat = lat + dist.std * torch.randn(lat.shape, generator=g).to(self.device, lat.dtype)
        return lat.float() * self.scaling

    def loss(self, batch, g):
        from .model import dense_targets, diffusion_target, mse

        dev, sched = self.device, self.base.noise_scheduler
        b = batch["image"].shape[0]
        latents = self.latents(batch["image"], g)
        noise = torch.randn(latents.shape, generator=g).to(dev)
        timesteps = torch.randint(self.t_lo, self.t_hi, (b,), generator=g).to(dev)
        drop_caption = (torch.rand(b, generator=g) < self.p_cap).tolist()
        drop_identity = torch.rand(b, generator=g) < self.p_id
        id_keep = (~drop_identity & batch["has_embedding"].bool()).float().to(dev)
        captions = ["" if dc else c for dc, c in zip(drop_caption, batch["caption"])]
        input_ids, placeholder = self.net.tokenize(captions, dev)
        noisy = sched.add_noise(latents, noise, timesteps)
        target = diffusion_target(sched, latents, noise, timesteps)
        res = self.model(noisy.to(self.dtype), timesteps, input_ids, placeholder, batch["embedding"].to(dev), id_keep,
                         batch["pose_image"].to(dev, self.dtype), with_dense=self.dense_on)
        loss_eps = mse(res["pred"], target)
        zero = torch.zeros((), device=dev)
        terms = {"eps": loss_eps, "landmark": zero, "parsing": zero, "depth": zero}
        loss = loss_eps
        if self.dense_on:
            targets = {k: v.to(dev) for k, v in dense_targets(batch).items()}
            dense = dense_losses(res["dense"], targets, *self.lambdas)
            terms.update({k: dense[k] for k in ("landmark", "parsing", "depth")})
            loss = loss + dense["total"]
        terms["loss"] = loss
        return loss, terms
