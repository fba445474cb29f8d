"""Face-generation mode on diffusers modules, built from the core definitions only.

``DenseFaceNet`` holds everything trainable (core PoseBranch, one core PCAdapterLayer per
attention layer, core IdentityProjector, core DenseHead) and runs the face-mode forward on a
frozen base that is *attached*, not owned: the base stays out of the net's state dict, so
checkpoints hold only trained tensors and DDP never broadcasts or buckets frozen weights.

Where each piece enters (official-code-facts sections 2-4):
- PC-adapter: a diffusers attention processor per layer that calls the core's
  ``adapted_qkv``; only layers with ``takes_identity_bias`` get the identity feature f;
- identity token: a forward hook on CLIP's token-embedding table applies the core's
  ``inject_identity_tokens`` before position embeddings and the text transformer;
- pose branch: its 13 residuals go in through diffusers' ``down_block_additional_residuals``
  and ``mid_block_additional_residual`` (the skip connections and the middle, like ldm);
- dense head: hooks on ``up_blocks`` named by the core's ``FEATURE_TAPS``.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..dense_face_core.dense_head import DEFAULT_OUTPUT_SIZE, DEFAULT_WIDTH, FEATURE_TAPS, DenseHead
from ..dense_face_core.errors import DenseFaceInputError, WeightFileError
from ..dense_face_core.families import (AttentionLayer, BaseFamily, attention_layers,
                                        diffusers_to_ldm_attention, ldm_to_diffusers_attention)
from ..dense_face_core.identity import INIT_WORD, PLACEHOLDER_TOKEN, IdentityProjector, inject_identity_tokens
from ..dense_face_core.pc_adapter import (ADAPTER_PARTS, DEFAULT_DELTA, ID_FEATURE_DIM, PCAdapterLayer,
                                          adapted_qkv, attention, takes_identity_bias)
from ..dense_face_core.pose_branch import PoseBranch
from .unet_keys import pose_branch_from_unet, unet_state_dict_to_ldm


def module_key(diffusers_path: str) -> str:
    """ModuleDict keys may not contain dots."""
    return diffusers_path.replace(".", "__")


class _BaseRef:
    """Holds the frozen base without registering it as a submodule."""

    def __init__(self, base):
        self.base = base


class DenseFaceAttnProcessor:
    """diffusers attention processor = the authors' adapted attention (core ``adapted_qkv``)."""

    def __init__(self, net: DenseFaceNet, layer: AttentionLayer):
        self.net_ref = _BaseRef(net)
        self.layer = layer
        self.key = module_key(layer.diffusers_path)
        self.identity = takes_identity_bias(layer)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        net = self.net_ref.base
        adapter = net.pc_adapter[self.key]
        x = hidden_states
        if x.ndim != 3 or attn.group_norm is not None or attn.spatial_norm is not None or attn.norm_cross:
            raise DenseFaceInputError(f"{self.layer.diffusers_path}: not an SD transformer attention layer")
        f = net.runtime_id_feature if self.identity else None
        if self.identity and f is None:
            raise DenseFaceInputError("the identity feature was not set for this forward")
        q, k, v = adapted_qkv(x, attn.to_q, attn.to_k, attn.to_v, adapter.weights(),
                              context=encoder_hidden_states, id_feature=f, delta=net.delta)
        out = attention(q, k.to(q.dtype), v.to(q.dtype), attn.heads)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + x
        return out / attn.rescale_output_factor


class DenseFaceNet(nn.Module):
    """All trainable Dense-Face parts; state dict keys ``pose_branch.*``, ``pc_adapter.<diffusers
    path with __>.<part>.weight``, ``id_projector.*``, ``dense_head.*``, ``init_embedding``."""

    def __init__(self, family: BaseFamily, *, id_dim: int = ID_FEATURE_DIM, delta: float = DEFAULT_DELTA,
                 id_delta: float = 0.01, dense_head: bool = True, head_width: int = DEFAULT_WIDTH, head_size: int = DEFAULT_OUTPUT_SIZE,
                 placeholder_token: str = PLACEHOLDER_TOKEN, init_word: str = INIT_WORD):
        super().__init__()
        fam = family
        self.family = fam
        self.delta = float(delta)
        self.id_dim = int(id_dim)
        self.placeholder_token, self.init_word = placeholder_token, init_word
        self.head_width, self.head_size = int(head_width), int(head_size)
        self.pose_branch = PoseBranch.for_family(fam)
        self.pc_adapter = nn.ModuleDict({
            module_key(layer.diffusers_path): PCAdapterLayer.for_layer(fam, layer, id_dim)
            for layer in attention_layers(fam)})
        self.id_projector = IdentityProjector.for_family(fam, id_dim, id_delta)
        self.dense_head = DenseHead.for_family(fam, width=head_width, output_size=head_size) if dense_head else None
        # the init word's CLIP token embedding (frozen; the authors' string_to_param_dict['*'])
        self.register_buffer("init_embedding", torch.zeros(fam.context_dim))
        self._base: _BaseRef | None = None
        self._ids: tuple[int, int] | None = None
        self.runtime_id_feature: Tensor | None = None
        self.checkpoint_pose_branch = False

    # ------------------------------------------------------------ setup
    @property
    def base(self):
        if self._base is None:
            raise DenseFaceInputError("DenseFaceNet has no base model attached (call attach(base))")
        return self._base.base

    def layers(self) -> tuple[AttentionLayer, ...]:
        return attention_layers(self.family)

    def init_from_base(self, base, adapter_init: str = "copy", pose_init: str = "unet") -> None:
        """Authors' adapter init (copies of to_q/k/v; feat_to_q default) and ControlNet's pose init."""
        unet = base.unet
        for layer in self.layers():
            attn = unet.get_submodule(layer.diffusers_path)
            ad = self.pc_adapter[module_key(layer.diffusers_path)]
            with torch.no_grad():
                if adapter_init == "copy":
                    ad.per_q.weight.copy_(attn.to_q.weight)
                    ad.per_k.weight.copy_(attn.to_k.weight)
                    ad.per_v.weight.copy_(attn.to_v.weight)
                else:
                    for part in ("per_q", "per_k", "per_v"):
                        getattr(ad, part).weight.zero_()
        if pose_init == "unet":
            ldm = unet_state_dict_to_ldm(unet.state_dict(), unet.config.layers_per_block)
            src = pose_branch_from_unet(ldm)
            own = self.pose_branch.state_dict()
            bad = [k for k, v in src.items() if k not in own or tuple(own[k].shape) != tuple(v.shape)]
            if bad:
                raise DenseFaceInputError(f"cannot seed the pose branch from the UNet: {bad[:3]}")
            self.pose_branch.load_state_dict(src, strict=False)
        self.set_init_embedding(base)

    def set_init_embedding(self, base) -> None:
        pid, iid = self._token_ids(base.tokenizer)
        table = base.text_encoder.get_input_embeddings().weight
        with torch.no_grad():
            self.init_embedding.copy_(table[iid].detach().to(self.init_embedding))

    def _token_ids(self, tokenizer) -> tuple[int, int]:
        def one(word: str, what: str) -> int:
            ids = tokenizer(word, add_special_tokens=False).input_ids
            if len(ids) != 1:
                raise DenseFaceInputError(f"{what} {word!r} is not a single CLIP token")
            return int(ids[0])

        return one(self.placeholder_token, "placeholder"), one(self.init_word, "init word")

    def attach(self, base) -> DenseFaceNet:
        """Install the adapter processors on the base UNet and the identity hook on CLIP."""
        if self.family.name != base.family.name:
            raise DenseFaceInputError(f"Dense-Face net is for {self.family.name}, base is {base.family.name}")
        self._base = _BaseRef(base)
        self._ids = self._token_ids(base.tokenizer)
        unet = base.unet
        processors = {}
        for layer in self.layers():
            processors[layer.diffusers_path + ".processor"] = DenseFaceAttnProcessor(self, layer)
        current = unet.attn_processors
        if set(processors) != set(current):
            raise DenseFaceInputError("the base UNet's attention layers differ from the family's")
        unet.set_attn_processor(processors)
        self._feature_hooks = [unet.up_blocks[t.diffusers_up_block].register_forward_hook(self._capture(t))
                               for t in FEATURE_TAPS]
        table = base.text_encoder.get_input_embeddings()
        self._token_hook = table.register_forward_hook(self._inject)
        self._text_state: dict | None = None
        self._features: dict[int, Tensor] = {}
        return self

    def detach_base(self) -> None:
        """Restore the base's stock attention and remove the hooks."""
        from diffusers.models.attention_processor import AttnProcessor2_0

        if self._base is None:
            return
        self.base.unet.set_attn_processor(AttnProcessor2_0())
        for h in self._feature_hooks + [self._token_hook]:
            h.remove()
        self._base = None

    # ------------------------------------------------------------ pieces of the forward
    def tokenize(self, captions: list[str], device=None) -> tuple[Tensor, Tensor]:
        """(input_ids, placeholder_mask) padded to the tokenizer's max length (77)."""
        tok = self.base.tokenizer
        ids = tok(list(captions), padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        mask = ids == self._ids[0]
        return ids.to(device), mask.to(device)

    def _inject(self, _module, _inputs, out):
        st = self._text_state
        if st is None:
            return out
        return inject_identity_tokens(out, st["mask"], self.init_embedding.to(out.dtype), st["offset"])

    def encode_text(self, input_ids: Tensor, placeholder_mask: Tensor, offset: Tensor | None) -> Tensor:
        """CLIP last hidden state (after the final LayerNorm) with the identity token injected."""
        enc = self.base.text_encoder
        self._text_state = None if offset is None else {"mask": placeholder_mask, "offset": offset}
        try:
            return enc(input_ids=input_ids).last_hidden_state
        finally:
            self._text_state = None

    def _capture(self, tap):
        def hook(_m, _i, out):
            self._features[tap.diffusers_up_block] = out

        return hook

    def pose_residuals(self, noisy: Tensor, pose_image: Tensor, timesteps: Tensor) -> list[Tensor]:
        if self.checkpoint_pose_branch and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(self.pose_branch, noisy, pose_image, timesteps, use_reentrant=False)
        return self.pose_branch(noisy, pose_image, timesteps)

    # ------------------------------------------------------------ the forward
    def forward(self, noisy: Tensor, timesteps: Tensor, input_ids: Tensor, placeholder_mask: Tensor,
                id_feature: Tensor, id_keep: Tensor, pose_image: Tensor, with_dense: bool = True,
                pose_scale: float = 1.0) -> dict[str, Tensor]:
        """Noise prediction (+ dense head outputs) of face-generation mode.

        ``id_keep`` (B,) 1 = identity on; 0 = identity dropped (no token offset, zero adapter
        feature). A caption without the placeholder gets no token injection by itself.
        """
        base = self.base
        keep = id_keep.to(id_feature.dtype)[:, None]
        offset = self.id_projector(id_feature) * keep
        context = self.encode_text(input_ids, placeholder_mask, offset)
        residuals = self.pose_residuals(noisy, pose_image, timesteps)
        if pose_scale != 1.0:
            residuals = [r * pose_scale for r in residuals]
        # read by the attention processors; it stays set after the forward because gradient
        # checkpointing re-runs them during backward
        self.runtime_id_feature = id_feature * keep
        self._features = {}
        pred = base.unet(noisy, timesteps, encoder_hidden_states=context.to(noisy.dtype),
                         down_block_additional_residuals=tuple(residuals[:-1]),
                         mid_block_additional_residual=residuals[-1], return_dict=False)[0]
        out = {"pred": pred, "context": context}
        if with_dense and self.dense_head is not None:
            out["dense"] = self.dense_head([self._features[t.diffusers_up_block] for t in FEATURE_TAPS])
        self._features = {}
        return out

    # ------------------------------------------------------------ weight-file tensors
    def weight_file_tensors(self, include_dense_head: bool = True,
                            dtype: torch.dtype | None = None) -> dict[str, Tensor]:
        """The node pack's keys: adapter names mapped diffusers -> ldm with the core families map."""
        to_ldm = diffusers_to_ldm_attention(self.family)
        out: dict[str, Tensor] = {}
        for k, v in self.pose_branch.state_dict().items():
            out["pose_branch." + k] = v
        for layer in self.layers():
            ad = self.pc_adapter[module_key(layer.diffusers_path)]
            for part in ADAPTER_PARTS:
                out[f"pc_adapter.{to_ldm[layer.diffusers_path]}.{part}.weight"] = getattr(ad, part).weight
        for k, v in self.id_projector.state_dict().items():
            out["id_projector." + k] = v
        if include_dense_head and self.dense_head is not None:
            for k, v in self.dense_head.state_dict().items():
                out["dense_head." + k] = v
        out["id_projector.init_embedding"] = self.init_embedding
        return {k: (v.detach().to(dtype) if dtype is not None and v.is_floating_point() else v.detach()).cpu()
                for k, v in out.items()}

    def load_weight_file_parts(self, weights) -> None:
        """Load a core ``DenseFaceWeights`` (ldm names) into this net (inverse of the export)."""
        if weights.family.name != self.family.name:
            raise WeightFileError(f"weights are for {weights.family.name}, the net for {self.family.name}")
        with torch.no_grad():
            self.pose_branch.load_state_dict(weights.pose_branch, strict=True)
            to_diff = ldm_to_diffusers_attention(self.family)
            for ldm_path, diff_path in to_diff.items():
                ad = self.pc_adapter[module_key(diff_path)]
                for part in ADAPTER_PARTS:
                    getattr(ad, part).weight.copy_(weights.pc_adapter[f"{ldm_path}.{part}.weight"])
            self.id_projector.load_state_dict(weights.id_projector, strict=True)
            if self.dense_head is not None and weights.dense_head is not None:
                self.dense_head.load_state_dict(weights.dense_head, strict=True)
            if weights.init_embedding is not None:
                self.init_embedding.copy_(weights.init_embedding)

    # ------------------------------------------------------------ what trains
    def configure_trainable(self, *, input_block_adapters: bool = True, dense_head: bool = True) -> list[nn.Parameter]:
        """requires_grad exactly on what the loss reaches (DDP then needs no unused-parameter search):
        ``feat_to_q`` only where the identity feature is used (attn1 and the middle attn2 never read it)."""
        self.requires_grad_(True)
        for layer in self.layers():
            ad = self.pc_adapter[module_key(layer.diffusers_path)]
            if not takes_identity_bias(layer):
                ad.feat_to_q.weight.requires_grad_(False)
            if layer.block_name == "input" and not input_block_adapters:
                ad.requires_grad_(False)
        if self.dense_head is not None and not dense_head:
            self.dense_head.requires_grad_(False)
        return [p for p in self.parameters() if p.requires_grad]


def build_net(cfg: dict, base) -> DenseFaceNet:
    """The trainable net for a resolved config, initialised from the base (or a weight file)."""
    m = cfg["model"]
    head = m["dense_head"]
    net = DenseFaceNet(base.family, id_dim=int(m["id_dim"]), delta=float(m["delta"]), id_delta=float(m["id_delta"]),
                       dense_head=bool(head["enabled"]), head_width=int(head["width"]),
                       head_size=int(head["output_size"]), placeholder_token=m["placeholder_token"],
                       init_word=m["init_word"])
    net.init_from_base(base, m["adapter_init"], m["pose_init"])
    if m.get("init_from"):
        from ..dense_face_core.weight_file import load_weight_file

        net.load_weight_file_parts(load_weight_file(m["init_from"], expected_family=base.family))
    elif m.get("init_from_official"):  # the authors' training initialisation (or a checkpoint of theirs)
        from ..dense_face_core.official_checkpoint import read_official_weights

        weights = read_official_weights(m["init_from_official"])
        if weights.family.name != base.family.name:
            raise DenseFaceInputError(f"model.init_from_official: {m['init_from_official']} is for "
                                      f"{weights.family.name}, the base model is {base.family.name}")
        net.load_weight_file_parts(weights)
    return net


def diffusion_target(scheduler, latents: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
    pred_type = scheduler.config.prediction_type
    if pred_type == "epsilon":
        return noise
    if pred_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise DenseFaceInputError(f"unsupported prediction_type {pred_type!r}")


def mse(a: Tensor, b: Tensor) -> Tensor:
    return F.mse_loss(a.float(), b.float())


def dense_targets(batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The dataset's targets in the names the core ``dense_losses`` reads."""
    return {"landmarks": batch["heatmaps"], "parsing": batch["parsing"], "depth": batch["depth"],
            "face_mask": batch["depth_mask"]}
