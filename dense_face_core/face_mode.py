"""Face-generation mode, prepared for any runtime: the modules and tensors that ComfyUI's
patches (and the trainer's forward) are made of, computed once from a weight file and an
identity embedding.

Strength semantics (shared by every front end):
- ``adapter``  scales delta in every PC-adapter term (folded q/k/v deltas and the identity
  query bias), so 0 is the base model's attention exactly;
- ``identity`` scales the identity-token offset added to the placeholder's embedding;
- ``pose``     scales the pose branch residuals (ComfyUI's ControlNet strength).
"""
from __future__ import annotations

from dataclasses import dataclass, field
import numpy as np
import torch
from torch import Tensor

from .dense_head import DEFAULT_OUTPUT_SIZE, DEFAULT_WIDTH, DenseHead
from .errors import WeightFileError
from .families import BaseFamily, attention_layers, get_family, known_families
from .identity import IdentityProjector
from .pc_adapter import folded_parts, identity_bias_layers, layer_weights, query_bias
from .pose_branch import PoseBranch
from .weight_file import DenseFaceWeights


def family_for_unet(context_dim: int, model_channels: int, channel_mult, num_res_blocks) -> BaseFamily | None:
    """The registered family with this UNet geometry (None if it is none of them)."""
    nrb = num_res_blocks
    if isinstance(nrb, (list, tuple)):
        if len(set(nrb)) != 1:
            return None
        nrb = nrb[0]
    for name in known_families():
        fam = get_family(name)
        if (fam.context_dim, fam.model_channels, tuple(fam.channel_mult), fam.num_res_blocks) == (
                int(context_dim), int(model_channels), tuple(int(m) for m in channel_mult), int(nrb)):
            return fam
    return None


def check_family(weights: DenseFaceWeights, context_dim: int, model_family: BaseFamily | None) -> None:
    """Refuse weights made for another base model, naming both."""
    wf = weights.family
    name = weights.path or "this Dense-Face file"
    if model_family is None:
        raise WeightFileError(
            f"{name} is for base model {wf.name} (text context {wf.context_dim}) but the MODEL is none of "
            f"the supported families (text context {context_dim}); use an SD1.5 or SD2.1 checkpoint")
    if model_family.name != wf.name:
        raise WeightFileError(
            f"{name} is for base model {wf.name} (text context {wf.context_dim}) but the MODEL is "
            f"{model_family.name} (text context {model_family.context_dim}); load weights trained for this model")


@dataclass(eq=False)  # one loaded file is one object: identity equality, usable as a weak key
class DenseFaceModel:
    """A loaded weight file with its runtime modules built on first use (CPU, eval mode)."""

    weights: DenseFaceWeights
    _modules: dict = field(default_factory=dict, repr=False)

    @property
    def family(self) -> BaseFamily:
        return self.weights.family

    @property
    def delta(self) -> float:
        return float(self.weights.metadata.delta)

    @property
    def id_model(self) -> str:
        return self.weights.metadata.id_embedding_model

    @property
    def pose_weight_dtype(self) -> torch.dtype:
        """The pose branch's dtype in the file (float16 for the authors' release and for exports)."""
        return next(iter(self.weights.pose_branch.values())).dtype

    def pose_branch(self, dtype: torch.dtype | None = None) -> PoseBranch:
        """The pose branch, built once; ``dtype`` is the one to compute in (None: the one already built, else
        the file's, sharing the file's tensors). A runtime asks for what its device computes fast: a CPU
        has no fast float16 convolutions, so a float16 file runs there in float32."""
        net = self._modules.get("pose")
        if net is None or (dtype is not None and net.dtype != dtype):
            tensors = self.weights.pose_branch
            if dtype is not None:
                tensors = {k: v.to(dtype) for k, v in tensors.items()}
            with torch.device("meta"):
                net = PoseBranch.for_family(self.family)
            net.load_state_dict(tensors, assign=True, strict=True)
            self._modules["pose"] = net = net.eval().requires_grad_(False)
        return net

    def id_projector(self) -> IdentityProjector:
        if "id" not in self._modules:
            meta = self.weights.metadata
            net = IdentityProjector.for_family(self.family, int(meta.id_embedding_dim), float(meta.id_delta))
            net.load_state_dict(self.weights.id_projector, strict=True)
            self._modules["id"] = net.eval().requires_grad_(False)
        return self._modules["id"]

    def dense_head(self) -> DenseHead:
        if not self.weights.has_dense_head:
            name = self.weights.path or "this weight file"
            raise WeightFileError(f"{name} has no dense annotation head (the authors' release has none, and it was "
                                  f"exported without one), so it cannot predict annotations; use weights trained "
                                  f"with the head (dense-face train), or set the node's without_head to "
                                  f"'blank pictures with a note'")
        if "head" not in self._modules:
            meta = self.weights.metadata
            net = DenseHead.for_family(self.family, width=meta.dense_head_width or DEFAULT_WIDTH,
                                       output_size=meta.dense_head_output_size or DEFAULT_OUTPUT_SIZE)
            net.load_state_dict(self.weights.dense_head, strict=True)
            self._modules["head"] = net.eval().requires_grad_(False)
        return self._modules["head"]

    def folded_weight_parts(self) -> dict[str, Tensor]:
        """``{"<ldm attention path>.to_q|to_k|to_v.weight": per_*}``, the file's own tensors: the weight delta
        of each key is ``self.delta * tensor``. The runtime multiplies (ComfyUI in float32 whatever the file's
        dtype), so a float16 file gives what a float32 file of the same values gives, with no scaled copies."""
        parts = folded_parts(self.weights.pc_adapter, self.family, id_feature_given=True)
        return {f"{path}.{proj}.weight": t for (path, proj), t in parts.items()}

    def query_biases(self, embedding: np.ndarray | Tensor) -> dict[tuple[str, int, int], Tensor]:
        """Identity query bias (1, C) per input/output cross-attention, keyed by ComfyUI block key; float32
        whatever the file's dtype (the runtime casts it to the model's)."""
        f = torch.as_tensor(np.asarray(embedding, np.float32)).reshape(1, -1)
        out = {}
        for layer in identity_bias_layers(self.family):
            w = layer_weights(self.weights.pc_adapter, layer.ldm_path)
            key = (layer.block_name, layer.block_number, layer.transformer_index)
            out[key] = query_bias(f, w.feat_to_q.float(), w.per_q.float(), self.delta)
        return out

    def identity_offset(self, embedding: np.ndarray | Tensor) -> Tensor:
        """(context_dim,) offset for the placeholder token: id_delta * BN(projector(f)) (eval mode)."""
        f = torch.as_tensor(np.asarray(embedding, np.float32)).reshape(1, -1)
        with torch.no_grad():
            return self.id_projector()(f)[0]


def attention_param_keys(family: BaseFamily) -> list[str]:
    """Every q/k/v weight name the adapter may touch, in the ldm layout."""
    return [f"{layer.ldm_path}.{proj}.weight" for layer in attention_layers(family)
            for proj in ("to_q", "to_k", "to_v")]
