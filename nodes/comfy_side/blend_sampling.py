"""The paper's latent blending on ComfyUI's own sampler machinery (the glue behind the blend sampler node).

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

import comfy.sample
import comfy.samplers
import comfy.utils
import torch

from ...dense_face_core import latent_blend as LB
from ...dense_face_core.errors import DenseFaceInputError
from .face_rows import accepts_noise_sampler, row_noise_sampler

try:
    import latent_preview
except ImportError:  # pragma: no cover - every ComfyUI has it; keep the node usable without
    latent_preview = None

# Samplers that take only (sigma_min, sigma_max) from the schedule and choose their own steps.
OWN_STEP_SAMPLERS = frozenset({"dpm_fast", "dpm_adaptive"})


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


def latent_in(model, samples: torch.Tensor) -> torch.Tensor:
    """x0 in sampling space, as comfy.samplers.sample computes it (an all-zero latent is not shifted)."""
    if torch.count_nonzero(samples) == 0:
        return samples
    return model.model.process_latent_in(samples)


def progress_callback(model, steps: int):
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
                 every_call=False, check_interrupt=None, seeds=None):
        self.sigmas = [float(s) for s in sigmas]  # copied: some samplers edit their schedule in place
        self.x0 = x0
        self.regen = regen
        self.n_blend = int(n_blend)
        self.fixed_noise = fixed_noise
        self.seed = int(seed)
        self.seeds = list(seeds) if seeds else None  # one per row: each face as a single run with its seed
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
            if self.seeds and len(self.seeds) == x.shape[0]:
                row = (1,) + tuple(x.shape[1:])
                noise = torch.cat([LB.step_noise(row, s, step) for s in self.seeds], dim=0)
            else:
                noise = LB.step_noise(x.shape, self.seed, step)
            self._noise[step] = noise.to(device=x.device, dtype=x.dtype)
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


def blending_sampler(base, make_hook, noise_sampler_for=None):
    """A copy of ComfyUI sampler object ``base`` whose sampler function sees a blending model.

    ``make_hook(sigmas)`` is called once per sampling run with the schedule it is given;
    ``noise_sampler_for(x, sigmas)``, when given, supplies the noise of samplers that draw some.
    """
    fn = getattr(base, "sampler_function", None)
    if fn is None:
        raise DenseFaceInputError(f"sampler_name: ComfyUI's sampler object {type(base).__name__} has no "
                                  f"sampler_function; latent blending cannot wrap it")
    sampler = copy.copy(base)

    def sampler_function(model, x, sigmas, *args, **kwargs):
        if noise_sampler_for is not None and kwargs.get("noise_sampler") is None and accepts_noise_sampler(fn):
            kwargs["noise_sampler"] = noise_sampler_for(x, sigmas)
        return fn(_BlendingModel(model, make_hook(sigmas)), x, sigmas, *args, **kwargs)

    sampler_function.__name__ = getattr(fn, "__name__", "sampler_function")
    sampler.sampler_function = sampler_function
    return sampler


def sample_with_blending(model, noise, cfg, sampler_name, sigmas, positive, negative, samples, regen, *, seed,
                         n_blend, fixed_noise, callback, check_interrupt, seeds=None):
    """``comfy.sample.sample_custom`` with the blend in front of every model call; (result, blends made).

    With ``seeds`` (one per row) every random draw of row i is that of a single run with seeds[i]."""
    x0 = latent_in(model, samples)
    model_sampling = model_sampling_of(model)
    hooks = []

    def make_hook(run_sigmas):
        hooks.append(BlendHook(run_sigmas, x0, regen, n_blend=n_blend, fixed_noise=fixed_noise, seed=seed,
                               noise_scaling=model_sampling.noise_scaling,
                               every_call=sampler_name in OWN_STEP_SAMPLERS, check_interrupt=check_interrupt,
                               seeds=seeds))
        return hooks[-1]

    rows = (lambda x, s: row_noise_sampler(sampler_name, x, s, seeds)) if seeds else None
    sampler = blending_sampler(comfy.samplers.sampler_object(sampler_name), make_hook, rows)
    result = comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, samples,
                                        noise_mask=None, callback=callback,
                                        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    return result, [b for hook in hooks for b in hook.blends]
