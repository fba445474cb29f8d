"""ComfyUI-side pieces of face-generation mode: how the core's tensors become ComfyUI patches.

- the pose branch rides ComfyUI's own ControlNet class (strength, start/end percent,
  chaining, model management) through a wrapper that evaluates it once per distinct
  (latent, hint, timestep) row: under CFG the cond and uncond rows are identical and the
  branch reads no text, so the result is exact, at half the cost;
- the identity query bias is an attn2 replace patch that wraps whatever replace patch
  another pack already registered at that block (both effects apply);
- the folded adapter deltas are ordinary weight patches on a clone (``add_patches``), so
  the unpatched model is never touched.
"""
from __future__ import annotations

import inspect

import torch

import comfy.controlnet
import comfy.model_management

from ..dense_face_core.face_mode import family_for_unet

# ComfyUI 2024 merges a flat list of residuals (last = middle); newer builds expect a dict.
_LIST_CONTROL_OUTPUT = "control_input" in inspect.signature(comfy.controlnet.ControlBase.control_merge).parameters


def model_family(model):
    """(family or None, context_dim) of a ComfyUI MODEL."""
    cfg = model.model.model_config.unet_config
    ctx = int(cfg.get("context_dim") or 0)
    return family_for_unet(ctx, cfg.get("model_channels", 0), cfg.get("channel_mult", ()),
                           cfg.get("num_res_blocks", 0)), ctx


def distinct_rows(*tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the first occurrence of each distinct batch row, and each row's group.

    A tensor with batch 1 is shared by every row (ComfyUI does not repeat a single hint).
    """
    batch = tensors[0].shape[0]
    firsts: list[int] = []
    group = []
    varying = [t for t in tensors if t.shape[0] != 1]
    for i in range(batch):
        for g, j in enumerate(firsts):
            if all(torch.equal(t[i], t[j]) for t in varying):
                group.append(g)
                break
        else:
            group.append(len(firsts))
            firsts.append(i)
    device = tensors[0].device
    return torch.tensor(firsts, device=device), torch.tensor(group, device=device)


class PoseControlModel(torch.nn.Module):
    """The core pose branch behind ComfyUI's cldm ControlNet interface, computed once per distinct row.

    The hint encoder's output depends on the pose image alone; ComfyUI hands the same hint
    tensor to every step, so it is encoded once and reused (exact).
    """

    def __init__(self, branch: torch.nn.Module):
        super().__init__()
        self.branch = branch
        self.last_unique_rows = None  # for tests and benchmarks: rows evaluated in the last call
        self._hint_cache = None  # (copy of the hint, rows, dtype, encoded hint)

    @property
    def dtype(self) -> torch.dtype:
        return self.branch.dtype

    def _guided_hint(self, hint, rows, dtype):
        cache = self._hint_cache
        if (cache is None or cache[1:3] != (rows, dtype) or cache[0].shape != hint.shape
                or cache[0].device != hint.device or not torch.equal(cache[0], hint)):
            picked = hint if rows is None or hint.shape[0] == 1 else hint[list(rows)]
            self._hint_cache = (hint.clone(), rows, dtype, self.branch.encode_hint(picked, dtype))
        return self._hint_cache[3]

    def forward(self, x, hint, timesteps, context=None, y=None, **kwargs):
        firsts, group = distinct_rows(x, hint, timesteps.reshape(timesteps.shape[0], -1))
        self.last_unique_rows = int(firsts.numel())
        if firsts.numel() == x.shape[0]:
            outs = self.branch(x, hint, timesteps, guided_hint=self._guided_hint(hint, None, x.dtype))
        else:
            pick = lambda t: t if t.shape[0] == 1 else t[firsts]  # noqa: E731
            guided = self._guided_hint(hint, tuple(firsts.tolist()), x.dtype)
            outs = self.branch(x[firsts], pick(hint), pick(timesteps), guided_hint=guided)
            outs = [o.index_select(0, group) for o in outs]  # fresh tensors: ComfyUI scales them in place
        if _LIST_CONTROL_OUTPUT:
            return outs
        return {"middle": outs[-1:], "output": outs[:-1]}


def pose_controlnet(branch: torch.nn.Module):
    """A ComfyUI CONTROL_NET for the pose branch."""
    return comfy.controlnet.ControlNet(PoseControlModel(branch),
                                       load_device=comfy.model_management.get_torch_device())


def attach_pose(positive, negative, control_net, pose_image, strength, start_percent, end_percent):
    """Attach like the stock Apply ControlNet (Advanced) node, to both positive and negative."""
    import nodes

    return nodes.ControlNetApplyAdvanced().apply_controlnet(positive, negative, control_net, pose_image,
                                                            strength, start_percent, end_percent)


class QueryBiasPatch:
    """attn2 replace patch: q += strength * bias within a sigma range, then the previous patch or plain attention."""

    def __init__(self, bias: torch.Tensor, strength: float, sigma_range: tuple[float, float], previous=None):
        self.bias = bias
        self.strength = float(strength)
        self.sigma_start, self.sigma_end = sigma_range
        self.previous = previous
        self.calls = 0

    def active(self, extra_options) -> bool:
        sigmas = extra_options.get("sigmas")
        if sigmas is None:
            return True
        s = float(sigmas.reshape(-1)[0])
        return self.sigma_end <= s <= self.sigma_start

    def __call__(self, q, k, v, extra_options):
        self.calls += 1
        if self.strength != 0.0 and self.active(extra_options):
            q = q + (self.strength * self.bias).to(device=q.device, dtype=q.dtype).reshape(1, 1, -1)
        if self.previous is not None:
            return self.previous(q, k, v, extra_options)
        from comfy.ldm.modules.attention import optimized_attention

        return optimized_attention(q, k, v, extra_options["n_heads"])


def install_query_biases(model, biases: dict, strength: float, sigma_range) -> list[QueryBiasPatch]:
    """Register one QueryBiasPatch per block on ``model`` (a clone), wrapping existing replace patches."""
    to = model.model_options.setdefault("transformer_options", {})
    replace = to.setdefault("patches_replace", {}).setdefault("attn2", {})
    installed = []
    for (name, number, index), bias in biases.items():
        key3, key2 = (name, number, index), (name, number)
        previous = replace.get(key3, replace.get(key2))
        patch = QueryBiasPatch(bias, strength, sigma_range, previous)
        model.set_model_attn2_replace(patch, name, number, index)
        installed.append(patch)
    return installed


def encode_with_identity(clip, text: str, placeholder: str, init_word: str, offset: torch.Tensor | None):
    """CONDITIONING for ``text`` whose placeholder tokens carry ``init word embedding + offset``.

    ComfyUI's CLIP takes tensors among the tokens as input embeddings, so the identity
    enters before the text transformer, exactly where the authors inject it.
    """
    placeholder_id = _single_token_id(clip, placeholder, "placeholder")
    init_id = _single_token_id(clip, init_word, "init word")
    tokens = clip.tokenize(text)
    found = 0
    for key, batches in tokens.items():
        table = _token_embedding_table(clip, key)
        embedding = table[init_id].detach().float().cpu()
        if offset is not None:
            embedding = embedding + offset.to(embedding)
        for seq in batches:
            for i, tok in enumerate(seq):
                if isinstance(tok[0], int) and tok[0] == placeholder_id:
                    seq[i] = (embedding.clone(),) + tuple(tok[1:])
                    found += 1
    if found == 0:
        raise ValueError(f"prompt: the placeholder '{placeholder}' does not occur as a word in {text!r}; "
                         f"write it with spaces around it, e.g. 'A close-up photo of {placeholder} .'")
    with torch.no_grad():  # ComfyUI's embedding splice writes into a new table in place
        cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    return [[cond, {"pooled_output": pooled}]]


def _single_token_id(clip, word: str, name: str) -> int:
    tokens = clip.tokenize(word)
    seq = next(iter(tokens.values()))[0]
    ids = [t[0] for t in seq if isinstance(t[0], int)]
    # [start, word..., end, pad...]: the word must be exactly one token
    start, end = ids[0], ids[-1]
    inner = [i for i in ids[1:] if i != end]
    if len(inner) != 1:
        raise ValueError(f"{name} '{word}' is not a single CLIP token; choose a word the tokenizer keeps whole")
    return inner[0]


def _token_embedding_table(clip, key: str) -> torch.Tensor:
    encoder = getattr(clip.cond_stage_model, f"clip_{key}", None)
    if encoder is None:
        raise ValueError(f"this CLIP has no text encoder '{key}'; Dense-Face supports SD1.5/SD2.1 CLIP models")
    return encoder.transformer.get_input_embeddings().weight
