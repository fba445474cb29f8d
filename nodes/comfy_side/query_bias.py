"""The identity query bias as an attn2 replace patch that composes with other packs' patches.

Input/output-block cross-attentions get ``q += strength * delta * per_q(feat_to_q(f))``
(official-code-facts section 2): a per-sample vector, the one part of the PC-adapter that
cannot fold into weights. The patch wraps whatever replace patch another pack registered
at that block (both apply) and follows ComfyUI's patch protocol: ``to()`` moves its tensors
once when ComfyUI moves the model's patches (no cast per attention call), ``models()`` hands
ComfyUI the extra models of the patch it wraps.
"""
from __future__ import annotations

import torch

from ...dense_face_core.errors import DenseFaceError


class QueryBiasPatch:
    """attn2 replace patch: ``q += strength * bias`` (within a sigma range), then the previous patch or
    ComfyUI's attention."""

    def __init__(self, bias: torch.Tensor, strength: float, sigma_range: tuple[float, float] | None = None,
                 previous=None):
        rows = bias.shape[0] if bias.ndim == 2 else 1  # one row per face of a group, or one for all
        self.scaled_bias = (float(strength) * bias).reshape(rows, 1, -1)
        self.strength = float(strength)
        self.sigma_range = sigma_range  # (sigma at start_percent, sigma at end_percent); None = every step
        self.previous = previous
        self._stats = {"calls": 0}  # shared by the moved copies (to() below), read by tests and benchmarks

    @property
    def calls(self) -> int:
        return self._stats["calls"]

    def to(self, device_or_dtype):
        """ComfyUI moves patches with the model (a device, then the model's dtype) and keeps what this returns:
        a moved copy, so clones that share this patch on other devices (multi-GPU) never see it change.

        An 8-bit storage dtype (fp8 weights computed in a wider type) is not taken: the bias would
        lose its precision, and the call casts it to the attention's own dtype instead."""
        if isinstance(device_or_dtype, torch.dtype) and device_or_dtype.itemsize < 2:
            return self
        bias = self.scaled_bias.to(device_or_dtype)
        previous = self.previous.to(device_or_dtype) if hasattr(self.previous, "to") else self.previous
        if bias is self.scaled_bias and previous is self.previous:
            return self  # nothing moves (also what ComfyUI's detach at interpreter exit asks for)
        moved = self._copy()
        moved.scaled_bias, moved.previous = bias, previous
        return moved

    def _copy(self) -> QueryBiasPatch:
        """A shallow copy without the copy module, whose reduce path imports (fails at interpreter exit)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def rows(self, start: int, stop: int) -> QueryBiasPatch:
        """The patch for faces ``start:stop`` of a group (a chunk of its latent batch); one row stays one."""
        part = self._copy()
        if self.scaled_bias.shape[0] > 1:
            part.scaled_bias = self.scaled_bias[start:stop]
        return part

    def models(self) -> list:
        """Extra models ComfyUI must load for this patch: none of ours, those of the patch we wrap."""
        return list(self.previous.models()) if hasattr(self.previous, "models") else []

    def active(self, extra_options) -> bool:
        if self.sigma_range is None:
            return True
        sigmas = extra_options.get("sigmas")
        if sigmas is None:
            raise DenseFaceError("Dense-Face identity query bias: start_percent/end_percent need the step's sigma, "
                                 "but this model was called without ComfyUI's sampler (no 'sigmas' in "
                                 "transformer_options); use start_percent 0 and end_percent 1 here")
        s = float(sigmas.reshape(-1)[0])
        start, end = self.sigma_range
        return end <= s <= start

    def __call__(self, q, k, v, extra_options):
        self._stats["calls"] += 1
        if self.strength != 0.0 and self.active(extra_options):
            bias = self.scaled_bias
            if bias.device != q.device or bias.dtype != q.dtype:  # a caller that did not move the patches
                bias = bias.to(device=q.device, dtype=q.dtype)
            if bias.shape[0] > 1:  # per face: the rows come as [cond faces..., uncond faces...] (cond_or_uncond)
                if q.shape[0] % bias.shape[0]:
                    raise DenseFaceError(f"Dense-Face identity query bias: {bias.shape[0]} faces but a batch of "
                                         f"{q.shape[0]} rows; give the sampler one latent per face")
                bias = bias.repeat(q.shape[0] // bias.shape[0], 1, 1)
            q = q + bias
        if self.previous is not None:
            return self.previous(q, k, v, extra_options)
        from comfy.ldm.modules.attention import optimized_attention

        kwargs = {}
        if "attn_precision" in extra_options:  # 0.3.x: as ComfyUI's own CrossAttention calls it (SD2 fp32 upcast,
            kwargs = {"attn_precision": extra_options["attn_precision"],  # attention overrides); 2024: 4 args
                      "transformer_options": extra_options}
        return optimized_attention(q, k, v, extra_options["n_heads"], **kwargs)


def install_query_biases(model, biases: dict, strength: float, sigma_range=None) -> list[QueryBiasPatch]:
    """Register one QueryBiasPatch per block on ``model`` (a clone), wrapping existing replace patches."""
    to = model.model_options.setdefault("transformer_options", {})
    replace = to.setdefault("patches_replace", {}).setdefault("attn2", {})
    installed = []
    for (name, number, index), bias in biases.items():
        previous = replace.get((name, number, index), replace.get((name, number)))
        patch = QueryBiasPatch(bias, strength, sigma_range, previous)
        model.set_model_attn2_replace(patch, name, number, index)
        installed.append(patch)
    return installed
