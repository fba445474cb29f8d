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
from .comfy_side.input_checks import check_choice, check_latent, check_number

log = logging.getLogger("dense_face")

BACKGROUND_NOISE = ["fresh", "fixed"]


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
               blend_end=1.0, final_composite=False):
        check_choice(sampler_name, list(comfy.samplers.KSampler.SAMPLERS), "sampler_name")
        check_choice(scheduler, list(comfy.samplers.KSampler.SCHEDULERS), "scheduler")
        check_choice(background_noise, BACKGROUND_NOISE, "background_noise")
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
        noise = comfy.sample.prepare_noise(samples, seed, latent_image.get("batch_index"))
        result, blends = sample_with_blending(
            model, noise, cfg, sampler_name, sigmas, positive, negative, samples, regen, seed=seed,
            n_blend=LB.blended_step_count(n_steps, blend_end),
            fixed_noise=noise if background_noise == "fixed" else None,
            callback=_progress_callback(model, n_steps),
            check_interrupt=comfy.model_management.throw_exception_if_processing_interrupted)
        self.last_blends = blends  # (step, sigma, blended in place) of every blend, for inspection
        if final_composite:
            r = regen.to(device=result.device, dtype=result.dtype)
            result = r * result + (1.0 - r) * samples.to(device=result.device, dtype=result.dtype)
        out["samples"] = result
        return (out,)


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
