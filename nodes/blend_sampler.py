"""Dense-Face Latent Blend Sampler: the paper's latent blending on ComfyUI's own sampler machinery.

What it does
------------
Before every denoising step (the first included, none after the last) the latent outside
the face mask is replaced by the original latent noised to that step's sigma, so only the
face is generated (official-code-facts.md section 6 item 4). The mask is taken to latent
size once, by ``dense_face_core.latent_blend.mask_to_latent`` (area average, then the
authors' 0.75 keep threshold), and one step's blend is ``latent_blend.blend_step``.

How it sits on ComfyUI
----------------------
No sampler loop of ours. The schedule comes from ComfyUI's ``comfy.samplers.KSampler``
(scheduler, denoise and the discard-penultimate rule exactly as the stock KSampler); the
sampler is ComfyUI's own object for ``sampler_name`` (``comfy.samplers.sampler_object``, a
``KSAMPLER``), run by ``comfy.sample.sample_custom``. We pass a shallow copy of that object
whose ``sampler_function`` is wrapped: the real sampler function (k-diffusion's
``sample_*``, UniPC, ...) receives a proxy of the model callable it would have received
(``KSamplerX0Inpaint``, where ComfyUI does its own noise-mask inpainting). So every model
evaluation of every sampler passes through the proxy with the latent being denoised and
its sigma, and ControlNets, model patches, CFG, previews and memory management are ComfyUI's.

* A step boundary is a sigma of the schedule: a model call at ``sigmas[j]`` (j < N) starts
  step j. There the proxy blends the latent *in place*. k-diffusion samplers pass their
  own state tensor, so the state itself is blended, as in the authors' DDIM loop, and the
  sampler's update, multistep history and ancestral/SDE noise continue from it. Calls
  between sigmas (the midpoints of dpm_2, dpmpp_sde) are not blended: they are built from
  the blended state. A further call at a schedule sigma within the previous step (heun's
  corrector at ``sigmas[i+1]``; the eta=1 midpoints of dpm_2_ancestral and
  dpmpp_2s_ancestral, which fall exactly on ``sigmas[i+1]``) is blended with that sigma's
  noise, so each sigma has one background noise.
* uni_pc hands the model a rescaled copy of its state: there the blend acts on what the
  model sees. With a 0/1 mask the regenerated region is the same (the sampler update is
  element-wise); only the sampler's own background track, and so the output background
  without ``final_composite``, differs.
* dpm_fast and dpm_adaptive choose their own steps and never meet the schedule's sigmas:
  every model evaluation is blended, at its own sigma, with the noise of the schedule
  step whose interval holds it.
* ComfyUI's noise-mask path is not used (``noise_mask=None``): it also overwrites the
  denoised prediction and always uses the starting noise. A LATENT's ``noise_mask`` is ignored.
* The noised original is the model's ``model_sampling.noise_scaling(sigma, noise, x0)``
  (``x0 + sigma * noise`` for SD1.x/2.x) with ``x0`` after ``process_latent_in``, as
  ComfyUI's samplers see it. Fresh noise: ``latent_blend.step_noise(seed, step)``; fixed:
  the starting noise of ``comfy.sample.prepare_noise`` (what KSampler uses).
* Progress bar and previews: ``latent_preview.prepare_callback``, as KSampler. Interrupts:
  the sampler's own handling, plus a check at every blend.
* Nothing is mutated: not the input latent, not the model (no model_options are set).
"""
from __future__ import annotations

import copy
import logging

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import torch

from ..dense_face_core import latent_blend as LB
from ..dense_face_core.errors import DenseFaceInputError
from .comfy_glue import CATEGORY

try:
    import latent_preview
except ImportError:  # pragma: no cover - every ComfyUI has it; keep the node usable without
    latent_preview = None

log = logging.getLogger("dense_face")

BACKGROUND_NOISE = ["fresh", "fixed"]
# Samplers that take only (sigma_min, sigma_max) from the schedule and choose their own steps.
OWN_STEP_SAMPLERS = frozenset({"dpm_fast", "dpm_adaptive"})


def _default(options, preferred):
    return preferred if preferred in options else options[0]


# ------------------------------------------------------------------------------------------
# ComfyUI version glue (2024 builds and 0.3.x)
# ------------------------------------------------------------------------------------------
def model_sampling_of(model):
    """The model's sampling object, object patches (ModelSamplingDiscrete & co.) included."""
    if hasattr(model, "get_model_object"):
        return model.get_model_object("model_sampling")
    patches = getattr(model, "object_patches", None) or {}
    return patches.get("model_sampling", model.model.model_sampling)


def schedule_sigmas(model, steps: int, sampler_name: str, scheduler: str, denoise: float) -> torch.Tensor:
    """The sigmas the stock KSampler would use for these settings (CPU float tensor)."""
    if denoise <= 0.0:
        return torch.zeros(0)
    if hasattr(model, "get_model_object"):  # 0.3.x: KSampler reads model.get_model_object("model_sampling")
        target = model
    else:  # 2024: KSampler reads target.model_sampling
        target = _SamplingHolder(model_sampling_of(model))
    ks = comfy.samplers.KSampler(target, steps=steps, device="cpu", sampler=sampler_name, scheduler=scheduler,
                                 denoise=denoise, model_options=model.model_options)
    return ks.sigmas.detach().float().cpu()


class _SamplingHolder:
    def __init__(self, model_sampling):
        self.model_sampling = model_sampling


def _latent_in(model, samples: torch.Tensor) -> torch.Tensor:
    """x0 in sampling space, as comfy.samplers.sample computes it (an all-zero latent is not shifted)."""
    if torch.count_nonzero(samples) == 0:
        return samples
    return model.model.process_latent_in(samples)


def _progress_callback(model, steps: int):
    """ComfyUI's KSampler progress bar and previews."""
    if latent_preview is not None:
        return latent_preview.prepare_callback(model, steps)
    pbar = comfy.utils.ProgressBar(steps)
    return lambda step, x0, x, total: pbar.update_absolute(step + 1, total)


# ------------------------------------------------------------------------------------------
# the blend hook, the model proxy, the wrapped sampler
# ------------------------------------------------------------------------------------------
class BlendHook:
    """State of one sampling run: decides, per model call, whether and how to blend."""

    def __init__(self, sigmas, x0, regen, *, n_blend, fixed_noise=None, seed=0, noise_scaling=None,
                 every_call=False, check_interrupt=None):
        self.sigmas = [float(s) for s in sigmas]  # copied: some samplers edit their schedule in place
        self.x0 = x0
        self.regen = regen
        self.n_blend = int(n_blend)
        self.fixed_noise = fixed_noise
        self.seed = int(seed)
        self.noise_scaling = noise_scaling
        self.every_call = every_call
        self.check_interrupt = check_interrupt
        self._noise = {}
        self._dev = {}
        self.blends = []  # (step, sigma, in_place) for every blend made

    def _on(self, t: torch.Tensor, key: str, x: torch.Tensor) -> torch.Tensor:
        k = (key, x.device, x.dtype)
        if k not in self._dev:
            self._dev[k] = t.to(device=x.device, dtype=x.dtype)
        return self._dev[k]

    def noise_for(self, step: int, x: torch.Tensor) -> torch.Tensor:
        if self.fixed_noise is not None:
            return self._on(self.fixed_noise, "fixed", x)
        if step not in self._noise:  # deterministic per (seed, step): a dropped entry is drawn again identically
            if len(self._noise) >= 2:
                self._noise.pop(next(iter(self._noise)))
            self._noise[step] = LB.step_noise(x.shape, self.seed, step).to(device=x.device, dtype=x.dtype)
        return self._noise[step]

    def step_of(self, s: float):
        if self.every_call:
            return LB.interval_index(s, self.sigmas)
        return LB.schedule_index(s, self.sigmas)

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        if self.n_blend <= 0 or len(self.sigmas) < 2:
            return x
        sig = sigma if isinstance(sigma, torch.Tensor) else torch.tensor(float(sigma))
        s = float(sig.reshape(-1)[0])
        step = self.step_of(s)
        if step is None or step >= self.n_blend:
            return x
        if self.check_interrupt is not None:
            self.check_interrupt()
        if sig.ndim >= 1 and sig.numel() == x.shape[0]:
            sig = sig.reshape([x.shape[0]] + [1] * (x.ndim - 1))
        sig = sig.to(device=x.device, dtype=x.dtype)
        x0 = self._on(self.x0, "x0", x)
        blended = LB.blend_step(x, x0, self.noise_for(step, x), sig, self._on(self.regen, "regen", x),
                                noise_scaling=self.noise_scaling)
        try:
            x.copy_(blended)  # the sampler's own state (k-diffusion passes it as is)
            self.blends.append((step, s, True))
            return x
        except RuntimeError:  # an inference/expanded tensor: blend what the model sees
            self.blends.append((step, s, False))
            return blended


class _BlendingModel:
    """Stands in for the model callable a sampler function receives (KSamplerX0Inpaint)."""

    def __init__(self, inner, hook: BlendHook):
        self._inner = inner
        self._hook = hook

    def __call__(self, x, sigma, *args, **kwargs):
        return self._inner(self._hook(x, sigma), sigma, *args, **kwargs)

    def __getattr__(self, name):  # samplers read e.g. model.inner_model.inner_model.model_sampling
        return getattr(self._inner, name)


def blending_sampler(base, make_hook):
    """A copy of ComfyUI sampler object ``base`` whose sampler function sees a blending model.

    ``make_hook(sigmas)`` is called once per sampling run with the schedule it is given.
    """
    fn = getattr(base, "sampler_function", None)
    if fn is None:
        raise DenseFaceInputError(f"sampler_name: ComfyUI's sampler object {type(base).__name__} has no "
                                  f"sampler_function; latent blending cannot wrap it")
    sampler = copy.copy(base)

    def sampler_function(model, x, sigmas, *args, **kwargs):
        return fn(_BlendingModel(model, make_hook(sigmas)), x, sigmas, *args, **kwargs)

    sampler_function.__name__ = getattr(fn, "__name__", "sampler_function")
    sampler.sampler_function = sampler_function
    return sampler


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------
def _check_latent(latent, model) -> torch.Tensor:
    if not isinstance(latent, dict) or not isinstance(latent.get("samples"), torch.Tensor):
        raise DenseFaceInputError("latent_image: expected a LATENT (connect VAE Encode of the face crop)")
    samples = latent["samples"]
    fmt = getattr(getattr(model, "model", None), "latent_format", None)
    channels = int(getattr(fmt, "latent_channels", 4))
    if samples.ndim != 4:
        raise DenseFaceInputError(f"latent_image: expected an image latent (batch, {channels}, height, width), "
                                  f"got shape {tuple(samples.shape)}")
    if samples.shape[1] != channels:
        raise DenseFaceInputError(f"latent_image: has {samples.shape[1]} channels but the model expects "
                                  f"{channels} (encode the crop with this model's VAE)")
    if samples.shape[0] == 0 or samples.shape[2] == 0 or samples.shape[3] == 0:
        raise DenseFaceInputError(f"latent_image: empty latent {tuple(samples.shape)}")
    if not torch.isfinite(samples).all():
        raise DenseFaceInputError("latent_image: contains NaN or infinite values")
    return samples


def _check_choice(value, options, name):
    if value not in options:
        shown = ", ".join(map(str, options[:12])) + (" ..." if len(options) > 12 else "")
        raise DenseFaceInputError(f"{name}: unknown value {value!r}; this ComfyUI offers {shown}")


def _check_number(value, name, lo, hi):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DenseFaceInputError(f"{name}: expected a number, got {value!r}") from None
    if not (lo <= v <= hi):
        raise DenseFaceInputError(f"{name}: expected a value in [{lo:g}, {hi:g}], got {value!r}")
    return v


# ------------------------------------------------------------------------------------------
# the node
# ------------------------------------------------------------------------------------------
class DenseFaceLatentBlendSampler:
    """KSampler with Dense-Face latent blending: only the masked face is generated."""

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
        _check_choice(sampler_name, list(comfy.samplers.KSampler.SAMPLERS), "sampler_name")
        _check_choice(scheduler, list(comfy.samplers.KSampler.SCHEDULERS), "scheduler")
        _check_choice(background_noise, BACKGROUND_NOISE, "background_noise")
        if int(steps) < 1:
            raise DenseFaceInputError(f"steps: expected at least 1, got {steps!r}")
        denoise = _check_number(denoise, "denoise", 0.0, 1.0)
        blend_end = _check_number(blend_end, "blend_end", 0.0, 1.0)
        mask_threshold = _check_number(mask_threshold, "mask_threshold", 0.0, 1.0)
        samples = _check_latent(latent_image, model)
        batch, _, h, w = samples.shape
        regen = LB.broadcast_mask(LB.mask_to_latent(mask, (h, w), mask_threshold, bool(soft_mask)), batch)
        summary = LB.mask_summary(regen)
        if summary["empty"]:
            log.warning("Dense-Face Latent Blend Sampler: the mask is empty at latent size (%dx%d): nothing "
                        "is regenerated; the output is the input re-noised and denoised (turn on "
                        "final_composite to get the input back exactly).", w, h)
        elif summary["full"]:
            log.info("Dense-Face Latent Blend Sampler: the mask covers the whole latent: plain img2img.")
        if "noise_mask" in latent_image:
            log.warning("Dense-Face Latent Blend Sampler: the LATENT's noise_mask is ignored; the mask input "
                        "decides what is regenerated.")

        out = latent_image.copy()
        sigmas = schedule_sigmas(model, int(steps), sampler_name, scheduler, denoise)
        if len(sigmas) < 2:  # denoise 0: nothing to do
            out["samples"] = samples.clone()
            return (out,)
        n_steps = len(sigmas) - 1
        n_blend = LB.blended_step_count(n_steps, blend_end)

        noise = comfy.sample.prepare_noise(samples, seed, latent_image.get("batch_index"))
        x0 = _latent_in(model, samples)
        model_sampling = model_sampling_of(model)
        every_call = sampler_name in OWN_STEP_SAMPLERS

        hooks = []

        def make_hook(run_sigmas):
            hooks.append(BlendHook(run_sigmas, x0, regen, n_blend=n_blend,
                                   fixed_noise=noise if background_noise == "fixed" else None, seed=seed,
                                   noise_scaling=model_sampling.noise_scaling, every_call=every_call,
                                   check_interrupt=comfy.model_management.throw_exception_if_processing_interrupted))
            return hooks[-1]

        sampler = blending_sampler(comfy.samplers.sampler_object(sampler_name), make_hook)
        callback = _progress_callback(model, n_steps)
        disable_pbar = not comfy.utils.PROGRESS_BAR_ENABLED
        result = comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, samples,
                                            noise_mask=None, callback=callback, disable_pbar=disable_pbar,
                                            seed=seed)
        # (step, sigma, blended in place) of every blend, for inspection; no tensors are kept
        self.last_blends = [b for hook in hooks for b in hook.blends]
        if final_composite:
            r = regen.to(device=result.device, dtype=result.dtype)
            result = r * result + (1.0 - r) * samples.to(device=result.device, dtype=result.dtype)
        out["samples"] = result
        return (out,)


NODE_CLASS_MAPPINGS = {"DenseFaceLatentBlendSampler": DenseFaceLatentBlendSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"DenseFaceLatentBlendSampler": "Dense-Face Latent Blend Sampler"}
