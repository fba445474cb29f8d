"""Rows of a face batch: each face of a group its own seed, and a batch cut into chunks.

A group photo's faces are one latent batch, face ``i`` in row ``i`` with its own identity
(conditioning row, query-bias row) and pose (ControlNet hint row). For the result of a face
not to depend on the others, every random draw of row ``i`` is the one a single run with
``seed + i`` makes: the starting noise, the fresh background noise of latent blending, and
the sampler's own noise (one generator, or one Brownian tree, per row). With that, a batch
can be cut into chunks of ``max_batch`` rows (``slice_model`` / ``slice_conditionings``)
without changing any face.
"""
from __future__ import annotations

import inspect

import torch

import comfy.sample

from .query_bias import QueryBiasPatch


def row_seeds(seed: int, rows: int) -> list[int]:
    return [int(seed) + i for i in range(rows)]


def row_noise(samples: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    """Starting noise of every row as a single run with that row's seed draws it."""
    return torch.cat([comfy.sample.prepare_noise(samples[i:i + 1], s) for i, s in enumerate(seeds)], dim=0)


def row_noise_sampler(sampler_name: str, x: torch.Tensor, sigmas: torch.Tensor, seeds: list[int]):
    """The sampler's noise, row by row (Brownian trees for the SDE samplers, plain draws otherwise)."""
    if "sde" in sampler_name:
        from comfy.k_diffusion.sampling import BrownianTreeNoiseSampler

        positive = sigmas[sigmas > 0]
        return BrownianTreeNoiseSampler(x, positive.min(), sigmas.max(), seed=list(seeds),
                                        cpu=not sampler_name.endswith("_gpu"))
    gens = [torch.Generator(device=x.device).manual_seed(int(s)) for s in seeds]
    shape = (1,) + tuple(x.shape[1:])

    def sample(sigma, sigma_next):
        return torch.cat([torch.randn(shape, dtype=x.dtype, layout=x.layout, device=x.device, generator=g)
                          for g in gens], dim=0)
    return sample


def accepts_noise_sampler(fn) -> bool:
    try:
        return "noise_sampler" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def slice_model(model, start: int, stop: int):
    """A clone whose per-face query biases keep rows ``start:stop`` only."""
    clone = model.clone()
    to = dict(clone.model_options.get("transformer_options", {}))
    replace = dict(to.get("patches_replace", {}))
    attn2 = {key: (p.rows(start, stop) if isinstance(p, QueryBiasPatch) else p)
             for key, p in replace.get("attn2", {}).items()}
    if attn2:
        replace["attn2"] = attn2
        to["patches_replace"] = replace
        clone.model_options["transformer_options"] = to
    return clone


def _slice_rows(value, start: int, stop: int, rows: int):
    return value[start:stop] if isinstance(value, torch.Tensor) and value.shape[0] == rows else value


def _slice_control(control, start: int, stop: int, rows: int, memo: dict):
    """One sliced copy per ControlNet: positive and negative keep sharing it, so ComfyUI still runs cond and
    uncond in one batch (the same batch shapes as a single-face run)."""
    if control is None:
        return None
    if id(control) not in memo:
        part = control.copy()
        hint = getattr(control, "cond_hint_original", None)
        part.cond_hint_original = _slice_rows(hint, start, stop, rows)
        part.set_previous_controlnet(_slice_control(control.previous_controlnet, start, stop, rows, memo))
        memo[id(control)] = (control, part)  # the original kept alive so its id stays its own
    return memo[id(control)][1]


def slice_conditionings(conditionings, start: int, stop: int, rows: int) -> list:
    """Each CONDITIONING (positive, negative, ...) for rows ``start:stop`` of a batch of ``rows``: per-face
    tensors and pose hints sliced, a ControlNet they share still shared."""
    memo: dict = {}
    sliced = []
    for conditioning in conditionings:
        out = []
        for cond, extra in conditioning:
            extra = dict(extra)
            if "pooled_output" in extra:
                extra["pooled_output"] = _slice_rows(extra["pooled_output"], start, stop, rows)
            if extra.get("control") is not None:
                extra["control"] = _slice_control(extra["control"], start, stop, rows, memo)
            out.append([_slice_rows(cond, start, stop, rows), extra])
        sliced.append(out)
    return sliced
