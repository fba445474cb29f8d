"""Identity path (official-code-facts section 3): ArcFace feature -> projector -> an offset
added to the input token embedding of a placeholder word before the CLIP text transformer.

How the placeholder is written in a prompt is decided by the node layer; here it is only a
boolean mask over token positions, so tokenizers and prompt syntax stay out of the maths.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from .errors import DenseFaceInputError
from .families import get_family

ID_EMBED_DIM = 512
ID_DELTA = 0.01
PLACEHOLDER_TOKEN = "*"
INIT_WORD = "person"


class IdentityProjector(nn.Module):
    """``id_delta * BN(projector(f))`` (X:458-492); keys ``projector.*`` and ``norm.*``."""

    def __init__(
        self, context_dim: int, id_dim: int = ID_EMBED_DIM, id_delta: float = ID_DELTA
    ) -> None:
        super().__init__()
        self.projector = nn.Linear(id_dim, context_dim, bias=False)
        self.norm = nn.BatchNorm1d(context_dim)
        self.id_delta = id_delta

    @classmethod
    def for_family(cls, family, id_dim: int = ID_EMBED_DIM, id_delta: float = ID_DELTA) -> IdentityProjector:
        """The projector into a base family's text context."""
        return cls(get_family(family).context_dim, id_dim, id_delta)

    def forward(self, f: Tensor) -> Tensor:
        if f.ndim != 2 or f.shape[1] != self.projector.in_features:
            raise DenseFaceInputError(
                f"identity embedding must have shape (batch, {self.projector.in_features}), got {tuple(f.shape)}"
            )
        f = f.to(self.projector.weight.dtype)
        single = self.training and f.shape[0] == 1
        if single:
            # BatchNorm cannot train on one sample; the authors duplicate it (X:473-481).
            f = torch.cat([f, f], dim=0)
        e = self.id_delta * self.norm(self.projector(f))
        return e[:1] if single else e


def inject_identity_tokens(
    token_embeds: Tensor,
    placeholder_mask: Tensor,
    init_embedding: Tensor,
    identity: Tensor,
) -> Tensor:
    """Embedding at every placeholder position becomes ``init_embedding + identity[b]``.

    token_embeds (B, T, C) are the token (not position) embeddings; placeholder_mask (B, T)
    bool; init_embedding (C,) is the init word's embedding; identity (B, C) the projector output.
    """
    if token_embeds.ndim != 3:
        raise DenseFaceInputError(
            f"token embeddings must be (batch, tokens, channels), got {tuple(token_embeds.shape)}"
        )
    b, t, c = token_embeds.shape
    if tuple(placeholder_mask.shape) != (b, t):
        raise DenseFaceInputError(
            f"placeholder mask must be {(b, t)}, got {tuple(placeholder_mask.shape)}"
        )
    if tuple(init_embedding.reshape(-1).shape) != (c,):
        raise DenseFaceInputError(
            f"init word embedding must have {c} values, got {tuple(init_embedding.shape)}"
        )
    if identity.ndim != 2 or identity.shape[1] != c or identity.shape[0] not in (1, b):
        raise DenseFaceInputError(
            f"identity offset must be (batch, {c}), got {tuple(identity.shape)}"
        )
    new = init_embedding.reshape(1, 1, c).to(token_embeds) + identity[:, None, :].to(
        token_embeds
    )
    return torch.where(
        placeholder_mask.bool()[..., None], new.expand(b, t, c), token_embeds
    )


def l2_normalize_embedding(
    f: Tensor | np.ndarray, name: str = "identity embedding", dim: int = ID_EMBED_DIM
) -> Tensor:
    """(dim,) or (B, dim) -> unit-norm float32 (B, dim); the authors' features are unit-norm."""
    t = (
        torch.as_tensor(np.asarray(f) if not isinstance(f, Tensor) else f)
        .detach()
        .float()
    )
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[1] != dim:
        raise DenseFaceInputError(
            f"{name} must have shape ({dim},) or (batch, {dim}), got {tuple(t.shape)}"
        )
    if not torch.isfinite(t).all():
        raise DenseFaceInputError(f"{name} contains NaN or infinite values")
    norm = t.norm(dim=1, keepdim=True)
    if (norm <= 1e-12).any():
        raise DenseFaceInputError(
            f"{name} is a zero vector; no face identity can be taken from it"
        )
    return t / norm
