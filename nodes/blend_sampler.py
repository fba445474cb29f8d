"""Dense-Face Latent Blend Sampler: only the masked face is generated, on any ComfyUI sampler.

How the blend sits on ComfyUI's samplers is told in ``comfy_side/blend_sampling.py``; this
node checks its inputs, takes the mask to latent size (``dense_face_core.latent_blend``) and
calls that glue.
"""
from __future__ import annotations

import logging

import comfy.model_management
import comfy.sample
import comfy.samplers

from ..dense_face_core import latent_blend as LB
from ..dense_face_core.errors import DenseFaceInputError
from .comfy_side import CATEGORY
from .comfy_side.blend_sampling import progress_callback as _progress_callback
from .comfy_side.blend_sampling import sample_with_blending, schedule_sigmas
from .comfy_side.face_rows import row_noise, row_seeds, slice_conditionings, slice_model
from .comfy_side.input_checks import check_choice, check_latent, check_number

log = logging.getLogger("dense_face")

BACKGROUND_NOISE = ["fresh", "fixed"]
BATCH_SEEDS = ["one stream", "per face (seed + row)"]


def _default(options, preferred):
    return preferred if preferred in options else options[0]


class DenseFaceLatentBlendSampler:
    """KSampler with Dense-Face latent blending: only the masked face is generated."""

    SEARCH_ALIASES = ["face swap", "inpaint face", "latent blending"]  # node search in ComfyUI 0.38+

    @classmethod
    def INPUT_TYPES(cls):
        samplers = list(comfy.samplers.KSampler.SAMPLERS)
        schedulers = list(comfy.samplers.KSampler.SCHEDULERS)
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The diffusion model (with the Dense-Face plug-ins applied)."}),
                "positive": ("CONDITIONING", {"tooltip": "Positive conditioning."}),
                "negative": ("CONDITIONING", {"tooltip": "Negative conditioning."}),
                "latent_image": ("LATENT", {"tooltip": "The VAE-encoded face crop: the original latent "
                                                       "kept outside the mask."}),
                "mask": ("MASK", {"tooltip": "Crop-space face mask, 1 = regenerate (any size; area-averaged "
                                             "to latent size). One mask for the batch or one per latent."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff,
                                 "tooltip": "Seed of the starting noise and of the fresh background noise."}),
                "steps": ("INT", {"default": 50, "min": 1, "max": 10000,
                                  "tooltip": "Denoising steps (the authors: 50)."}),
                "cfg": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Classifier-free guidance scale (the authors: 4)."}),
                "sampler_name": (samplers, {"default": _default(samplers, "ddpm"),
                                            "tooltip": "Any ComfyUI sampler. ddpm + ddim_uniform is the "
                                                       "authors' DDIM with eta=1 on timesteps 981..1."}),
                "scheduler": (schedulers, {"default": _default(schedulers, "ddim_uniform"),
                                           "tooltip": "Any ComfyUI scheduler."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "1.0 starts at the noisiest step, as the authors."}),
                "mask_threshold": ("FLOAT", {"default": LB.AUTHORS_KEEP_THRESHOLD, "min": 0.0, "max": 1.0,
                                             "step": 0.01,
                                             "tooltip": "A latent pixel is kept (not regenerated) when its "
                                                        "area-averaged keep value (1 - mask) is >= this; 0.75 "
                                                        "is the authors' (partly-face pixels are regenerated)."}),
                "soft_mask": ("BOOLEAN", {"default": False,
                                          "tooltip": "Blend with the area-averaged mask itself instead of "
                                                     "thresholding it (mask_threshold is then unused)."}),
                "background_noise": (BACKGROUND_NOISE, {"default": "fresh",
                                                        "tooltip": "fresh: new noise for the background at "
                                                                   "every step (the authors). fixed: the starting "
                                                                   "noise at every step."}),
                "blend_end": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                        "tooltip": "Blend before the first floor(blend_end x steps) steps only, "
                                                   "then let the whole latent denoise so the seam harmonises. "
                                                   "1.0 = before every step (the authors)."}),
                "final_composite": ("BOOLEAN", {"default": False,
                                                "tooltip": "After the last step, set the kept region back to "
                                                           "the input latent exactly. Off = the authors: the "
                                                           "background is the model's output."}),
            },
            "optional": {
                "batch_seeds": (BATCH_SEEDS, {"default": BATCH_SEEDS[0], "tooltip":
                                "A batch of several faces: one random stream for the whole batch, or each face "
                                "drawn as a single run with seed + its row (its result then does not depend on "
                                "the other faces, nor on max_batch)."}),
                "max_batch": ("INT", {"default": 0, "min": 0, "max": 4096, "tooltip":
                              "Sample at most this many faces at once (0 = all); larger groups go in chunks "
                              "with one progress bar (chunks use per-face seeds)."}),
            },
        }

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The latent with the face regenerated; decode it and paste it back.",)
    FUNCTION = "sample"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Dense-Face latent blending on ComfyUI's own samplers: before every denoising step the "
                   "latent outside the mask is replaced by the original noised to that step, so only the "
                   "face is generated. Works with every sampler and scheduler.")

    def sample(self, model, positive, negative, latent_image, mask, seed, steps, cfg, sampler_name, scheduler,
               denoise=1.0, mask_threshold=LB.AUTHORS_KEEP_THRESHOLD, soft_mask=False, background_noise="fresh",
               blend_end=1.0, final_composite=False, batch_seeds="one stream", max_batch=0):
        check_choice(sampler_name, list(comfy.samplers.KSampler.SAMPLERS), "sampler_name")
        check_choice(scheduler, list(comfy.samplers.KSampler.SCHEDULERS), "scheduler")
        check_choice(background_noise, BACKGROUND_NOISE, "background_noise")
        check_choice(batch_seeds, BATCH_SEEDS, "batch_seeds")
        if int(steps) < 1:
            raise DenseFaceInputError(f"steps: expected at least 1, got {steps!r}")
        denoise = check_number(denoise, "denoise", 0.0, 1.0)
        blend_end = check_number(blend_end, "blend_end", 0.0, 1.0)
        mask_threshold = check_number(mask_threshold, "mask_threshold", 0.0, 1.0)
        samples = check_latent(latent_image, model)
        batch, _, h, w = samples.shape
        regen = LB.broadcast_mask(LB.mask_to_latent(mask, (h, w), mask_threshold, bool(soft_mask)), batch)
        _warn_about(regen, latent_image, (w, h))

        out = latent_image.copy()
        sigmas = schedule_sigmas(model, int(steps), sampler_name, scheduler, denoise)
        if len(sigmas) < 2:  # denoise 0: nothing to do
            out["samples"] = samples.clone()
            return (out,)
        n_steps = len(sigmas) - 1
        chunk = int(max_batch) if 0 < int(max_batch) < batch else batch
        seeds = row_seeds(seed, batch) if batch_seeds == BATCH_SEEDS[1] or chunk < batch else None
        noise = row_noise(samples, seeds) if seeds else \
            comfy.sample.prepare_noise(samples, seed, latent_image.get("batch_index"))
        run = dict(cfg=cfg, sampler_name=sampler_name, n_blend=LB.blended_step_count(n_steps, blend_end),
                   fixed=background_noise == "fixed", seed=seed)
        if chunk == batch:
            result, blends = _sample_rows(model, positive, negative, samples, regen, noise, seeds, sigmas, run,
                                          _progress_callback(model, n_steps))
        else:
            result, blends = _sample_chunks(model, positive, negative, samples, regen, noise, seeds, sigmas, run,
                                            chunk)
        self.last_blends = blends  # (step, sigma, blended in place) of every blend, for inspection
        if final_composite:
            r = regen.to(device=result.device, dtype=result.dtype)
            result = r * result + (1.0 - r) * samples.to(device=result.device, dtype=result.dtype)
        out["samples"] = result
        return (out,)


def _sample_rows(model, positive, negative, samples, regen, noise, seeds, sigmas, run, callback):
    return sample_with_blending(
        model, noise, run["cfg"], run["sampler_name"], sigmas, positive, negative, samples, regen, seed=run["seed"],
        n_blend=run["n_blend"], fixed_noise=noise if run["fixed"] else None, callback=callback,
        check_interrupt=comfy.model_management.throw_exception_if_processing_interrupted, seeds=seeds)


def _sample_chunks(model, positive, negative, samples, regen, noise, seeds, sigmas, run, chunk):
    """Faces ``chunk`` at a time, each chunk with its rows of identities, poses and seeds; one progress bar."""
    import torch

    batch, n_steps = samples.shape[0], len(sigmas) - 1
    starts = list(range(0, batch, chunk))
    bar = comfy.utils.ProgressBar(n_steps * len(starts))
    results, blends = [], []
    for k, a in enumerate(starts):
        b = min(a + chunk, batch)
        pos, neg = slice_conditionings((positive, negative), a, b, batch)
        out, made = _sample_rows(
            slice_model(model, a, b), pos, neg, samples[a:b], regen[a:b], noise[a:b], seeds[a:b], sigmas, run,
            lambda step, x0, x, total, k=k: bar.update_absolute(k * n_steps + step + 1, n_steps * len(starts)))
        results.append(out)
        blends += made
    return torch.cat(results, dim=0), blends


def _warn_about(regen, latent_image, size) -> None:
    summary = LB.mask_summary(regen)
    if summary["empty"]:
        log.warning("Dense-Face Latent Blend Sampler: the mask is empty at latent size (%dx%d): nothing "
                    "is regenerated; the output is the input re-noised and denoised (turn on "
                    "final_composite to get the input back exactly).", *size)
    elif summary["full"]:
        log.info("Dense-Face Latent Blend Sampler: the mask covers the whole latent: plain img2img.")
    if "noise_mask" in latent_image:
        log.warning("Dense-Face Latent Blend Sampler: the LATENT's noise_mask is ignored; the mask input "
                    "decides what is regenerated.")


NODE_CLASS_MAPPINGS = {"DenseFaceLatentBlendSampler": DenseFaceLatentBlendSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"DenseFaceLatentBlendSampler": "Dense-Face Latent Blend Sampler"}
