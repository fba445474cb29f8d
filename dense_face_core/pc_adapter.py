"""PC-adapter maths (official-code-facts section 2).

Every attention layer carries bias-free ``per_q/per_k/per_v`` (shaped like ``to_q/to_k/to_v``)
and ``feat_to_q`` [C, id_dim]. Because everything is linear and bias-free, the adapter is
mostly a weight delta: only the query of cross-attention in input/output blocks depends on
the identity feature, and there it is a per-sample constant, i.e. a query bias. This module
states the authors' runtime formula once (for the trainer and as the test oracle) and the
fold that the ComfyUI side applies as weight patches plus a runtime bias.

Adapter tensors are passed as a mapping keyed like the weight file without its prefix:
``"<ldm attention path>.per_q.weight"`` etc.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import DenseFaceInputError
from .families import AttentionLayer, BaseFamily, attention_layers, get_family

DEFAULT_DELTA = 0.01
ID_FEATURE_DIM = 512
ADAPTER_PARTS = ("per_q", "per_k", "per_v", "feat_to_q")


class AdapterWeights(NamedTuple):
    """The four adapter matrices of one attention layer (nn.Linear weight layout [out, in])."""

    per_q: Tensor
    per_k: Tensor
    per_v: Tensor
    feat_to_q: Tensor


def adapter_key(path: str, part: str) -> str:
    return f"{path}.{part}.weight"


def kv_width(family: str | BaseFamily, layer) -> int:
    """Input width of an attention layer's k/v: the text context for cross-attention, its own width otherwise."""
    return get_family(family).context_dim if layer.is_cross else layer.channels


def adapter_shapes(
    family: str | BaseFamily, id_dim: int = ID_FEATURE_DIM
) -> dict[str, tuple[int, ...]]:
    """Expected shape of every adapter tensor, keyed ``<ldm path>.<part>.weight``."""
    fam = get_family(family)
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in attention_layers(fam):
        c = layer.channels
        kv_in = kv_width(fam, layer)
        shapes[adapter_key(layer.ldm_path, "per_q")] = (c, c)
        shapes[adapter_key(layer.ldm_path, "per_k")] = (c, kv_in)
        shapes[adapter_key(layer.ldm_path, "per_v")] = (c, kv_in)
        shapes[adapter_key(layer.ldm_path, "feat_to_q")] = (c, id_dim)
    return shapes


def layer_weights(tensors: Mapping[str, Tensor], path: str) -> AdapterWeights:
    try:
        return AdapterWeights(*(tensors[adapter_key(path, p)] for p in ADAPTER_PARTS))
    except KeyError as e:
        raise DenseFaceInputError(
            f"PC-adapter tensor {e.args[0]!r} is missing"
        ) from None


def takes_identity_bias(layer: AttentionLayer) -> bool:
    """Cross-attention in input/output blocks: the authors pass the identity feature there only
    (the middle block never receives it, attn1 never does)."""
    return layer.is_cross and layer.block_name in ("input", "output")


def identity_bias_layers(family: str | BaseFamily) -> tuple[AttentionLayer, ...]:
    return tuple(a for a in attention_layers(family) if takes_identity_bias(a))


# ---------------------------------------------------------------- reference runtime formula
def adapted_qkv(
    x: Tensor,
    to_q: Callable[[Tensor], Tensor],
    to_k: Callable[[Tensor], Tensor],
    to_v: Callable[[Tensor], Tensor],
    adapter: AdapterWeights,
    *,
    context: Tensor | None = None,
    id_feature: Tensor | None = None,
    delta: float = DEFAULT_DELTA,
) -> tuple[Tensor, Tensor, Tensor]:
    """The authors' q/k/v (X:734-760). Pass ``id_feature`` (B, id_dim) only where
    :func:`takes_identity_bias` holds; elsewhere the adapter's query input is x itself.

    ``to_q/to_k/to_v`` are the base projections (e.g. a diffusers ``Attention``'s Linear
    modules), so gradients flow into the adapter weights when the trainer calls this.
    """
    c = x if context is None else context
    if id_feature is not None:
        o = F.linear(id_feature.to(x.dtype), adapter.feat_to_q)[:, None, :].expand(
            -1, x.shape[1], -1
        )
    else:
        o = x
    q = to_q(x) + delta * F.linear(o, adapter.per_q)
    k = to_k(c) + delta * F.linear(c, adapter.per_k)
    v = to_v(c) + delta * F.linear(c, adapter.per_v)
    return q, k, v


def attention(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    """Plain softmax attention, scale dim_head^-0.5, no mask (X:768-775)."""
    b, n, inner = q.shape
    d = inner // heads

    def split(t: Tensor) -> Tensor:
        return t.reshape(b, t.shape[1], heads, d).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.transpose(1, 2).reshape(b, n, inner)


def reference_attention(
    x: Tensor,
    base: Mapping[str, Tensor],
    adapter: AdapterWeights,
    heads: int,
    *,
    context: Tensor | None = None,
    id_feature: Tensor | None = None,
    delta: float = DEFAULT_DELTA,
) -> Tensor:
    """Whole adapted attention layer from raw weights; ``base`` holds ``to_q/to_k/to_v`` and
    ``to_out`` weights and optional ``to_out_bias``. The oracle for the fold."""
    q, k, v = adapted_qkv(
        x,
        lambda t: F.linear(t, base["to_q"]),
        lambda t: F.linear(t, base["to_k"]),
        lambda t: F.linear(t, base["to_v"]),
        adapter,
        context=context,
        id_feature=id_feature,
        delta=delta,
    )
    return F.linear(attention(q, k, v, heads), base["to_out"], base.get("to_out_bias"))


class PCAdapterLayer(nn.Module):
    """Trainable adapter of one attention layer; state_dict keys match the weight file."""

    def __init__(self, channels: int, kv_in: int, id_dim: int = ID_FEATURE_DIM) -> None:
        super().__init__()
        self.per_q = nn.Linear(channels, channels, bias=False)
        self.per_k = nn.Linear(kv_in, channels, bias=False)
        self.per_v = nn.Linear(kv_in, channels, bias=False)
        self.feat_to_q = nn.Linear(id_dim, channels, bias=False)

    @classmethod
    def for_layer(cls, family: str | BaseFamily, layer, id_dim: int = ID_FEATURE_DIM) -> PCAdapterLayer:
        """The adapter of one ``families.AttentionLayer`` of ``family``."""
        return cls(layer.channels, kv_width(family, layer), id_dim)

    def weights(self) -> AdapterWeights:
        return AdapterWeights(
            self.per_q.weight,
            self.per_k.weight,
            self.per_v.weight,
            self.feat_to_q.weight,
        )

    @classmethod
    def from_base(
        cls,
        to_q: nn.Linear,
        to_k: nn.Linear,
        to_v: nn.Linear,
        id_dim: int = ID_FEATURE_DIM,
    ) -> PCAdapterLayer:
        """Start from copies of the base projections, as the authors do (ATT:200-209)."""
        layer = cls(to_q.out_features, to_k.in_features, id_dim)
        with torch.no_grad():
            layer.per_q.weight.copy_(to_q.weight)
            layer.per_k.weight.copy_(to_k.weight)
            layer.per_v.weight.copy_(to_v.weight)
        return layer.to(to_q.weight.device, to_q.weight.dtype)


# ---------------------------------------------------------------- fold for ComfyUI
def folded_parts(
    tensors: Mapping[str, Tensor],
    family: str | BaseFamily,
    *,
    id_feature_given: bool = True,
) -> dict[tuple[str, str], Tensor]:
    """The adapter tensors whose ``delta`` multiples are exact weight deltas, ``{(ldm attention path,
    "to_q"|"to_k"|"to_v"): per_*}``, unscaled: a runtime multiplies by ``delta`` in its own precision
    instead of holding scaled copies.

    With an identity feature, input/output cross-attention queries are NOT folded (they get
    :func:`query_bias` at runtime). Without one the authors' formula uses ``o = x`` there,
    which is linear again, so ``id_feature_given=False`` folds those queries too.
    """
    out: dict[tuple[str, str], Tensor] = {}
    for layer in attention_layers(family):
        w = layer_weights(tensors, layer.ldm_path)
        out[(layer.ldm_path, "to_k")] = w.per_k
        out[(layer.ldm_path, "to_v")] = w.per_v
        if not (id_feature_given and takes_identity_bias(layer)):
            out[(layer.ldm_path, "to_q")] = w.per_q
    return out


def query_bias(
    f: Tensor, feat_to_q_w: Tensor, per_q_w: Tensor, delta: float = DEFAULT_DELTA
) -> Tensor:
    """(B, C) bias added to every query token: delta * per_q(feat_to_q(f)). Add it to both CFG
    halves (the authors give the identity to the unconditional half too, BL:237)."""
    if f.ndim != 2 or f.shape[1] != feat_to_q_w.shape[1]:
        raise DenseFaceInputError(
            f"identity feature must have shape (batch, {feat_to_q_w.shape[1]}), got {tuple(f.shape)}"
        )
    f = f.to(feat_to_q_w.dtype)
    return delta * F.linear(F.linear(f, feat_to_q_w), per_q_w)


def query_biases(
    f: Tensor,
    tensors: Mapping[str, Tensor],
    family: str | BaseFamily,
    delta: float = DEFAULT_DELTA,
) -> dict[str, Tensor]:
    """:func:`query_bias` for every layer that takes it, keyed by ldm attention path."""
    out = {}
    for layer in identity_bias_layers(family):
        w = layer_weights(tensors, layer.ldm_path)
        out[layer.ldm_path] = query_bias(f, w.feat_to_q, w.per_q, delta)
    return out
