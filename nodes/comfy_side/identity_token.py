"""The identity token: the prompt's placeholder embedding replaced before CLIP's transformer runs.

ComfyUI's CLIP takes tensors among the tokens as input embeddings, so the identity enters
exactly where the authors inject it (official-code-facts section 3).
"""
from __future__ import annotations

import torch

from ...dense_face_core.errors import DenseFaceInputError


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
        raise DenseFaceInputError(f"prompt: the placeholder '{placeholder}' does not occur as a word in {text!r}; "
                         f"write it with spaces around it, e.g. 'A close-up photo of {placeholder} .'")
    with torch.no_grad():  # ComfyUI's embedding splice writes into a new table in place
        cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    return [[cond, {"pooled_output": pooled}]]


def encode_with_identities(clip, text: str, placeholder: str, init_word: str, offsets: list):
    """One conditioning row per offset (face i of a group with identity i); a single row broadcasts."""
    conds = [encode_with_identity(clip, text, placeholder, init_word, o) for o in offsets]
    if len(conds) == 1:
        return conds[0]
    cond = torch.cat([c[0][0] for c in conds], dim=0)
    pooled = [c[0][1].get("pooled_output") for c in conds]
    extra = {"pooled_output": torch.cat(pooled, dim=0)} if all(p is not None for p in pooled) else {}
    return [[cond, extra]]


def _single_token_id(clip, word: str, name: str) -> int:
    tokens = clip.tokenize(word)
    seq = next(iter(tokens.values()))[0]
    ids = [t[0] for t in seq if isinstance(t[0], int)]
    # [start, word..., end, pad...]; SD1 pads with the end token, SD2 with 0: cut at the first end token
    end = _end_token_id(clip, ids)
    inner = ids[1:ids.index(end, 1)] if end in ids[1:] else ids[1:]
    if len(inner) != 1:
        raise DenseFaceInputError(f"{name} '{word}' is not a single CLIP token; choose a word the tokenizer keeps whole")
    return inner[0]


def _end_token_id(clip, ids: list[int]) -> int:
    """The tokenizer's end token (its own attribute where it has one, else the last id of an unpadded run)."""
    tokenizer = getattr(clip, "tokenizer", None)
    for inner in [tokenizer] + [getattr(tokenizer, a, None) for a in dir(tokenizer or object) if a.startswith("clip_")]:
        end = getattr(inner, "end_token", None)
        if isinstance(end, int):
            return end
    return ids[-1]


def _token_embedding_table(clip, key: str) -> torch.Tensor:
    encoder = getattr(clip.cond_stage_model, f"clip_{key}", None)
    if encoder is None:
        raise DenseFaceInputError(f"this CLIP has no text encoder '{key}'; Dense-Face supports SD1.5/SD2.1 CLIP models")
    return encoder.transformer.get_input_embeddings().weight
