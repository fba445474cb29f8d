"""Base model families and the names of their attention layers in every layout we meet.

The weight file keys adapters by the ldm (original) attention path, ComfyUI patches by its
runtime block key, and the trainer works on diffusers modules; all three are derived here
from the same geometry so they can never drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import DenseFaceInputError

ATTENTION_NAMES = ("attn1", "attn2")


@dataclass(frozen=True)
class BaseFamily:
    """Geometry of an SD1/SD2-style UNet, as far as Dense-Face depends on it."""

    name: str
    context_dim: int
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_ds: tuple[int, ...] = (1, 2, 4)
    num_heads: int | None = 8
    num_head_channels: int | None = None
    use_linear_in_transformer: bool = False

    def heads(self, channels: int) -> int:
        """Attention heads of a layer of width ``channels`` (SD1 fixes heads, SD2 fixes head width)."""
        if self.num_head_channels:
            return channels // self.num_head_channels
        assert self.num_heads is not None
        return self.num_heads

    def geometry(self) -> dict[str, str]:
        """The fields a weight file records so a loader can check it against the registry."""
        return {
            "context_dim": str(self.context_dim),
            "model_channels": str(self.model_channels),
            "channel_mult": ",".join(str(m) for m in self.channel_mult),
            "num_res_blocks": str(self.num_res_blocks),
        }


SD15 = BaseFamily(name="sd15", context_dim=768, num_heads=8)
SD21 = BaseFamily(
    name="sd21",
    context_dim=1024,
    num_heads=None,
    num_head_channels=64,
    use_linear_in_transformer=True,
)

_REGISTRY: dict[str, BaseFamily] = {SD15.name: SD15, SD21.name: SD21}
PRODUCT_FAMILIES = ("sd15", "sd21")


def register_family(family: BaseFamily) -> BaseFamily:
    """Make a family known to loaders; used for tiny test geometries (never the product ones)."""
    known = _REGISTRY.get(family.name)
    if known is not None and known != family:
        raise DenseFaceInputError(
            f"base family {family.name!r} is already registered with another geometry"
        )
    _REGISTRY[family.name] = family
    return family


def known_families() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_family(family: str | BaseFamily) -> BaseFamily:
    if isinstance(family, BaseFamily):
        return family
    try:
        return _REGISTRY[family]
    except KeyError:
        raise DenseFaceInputError(
            f"unknown base family {family!r}; known: {', '.join(_REGISTRY)}"
        ) from None


@dataclass(frozen=True)
class AttentionLayer:
    """One attention layer, named in each layout.

    ``comfy_block`` is the ComfyUI runtime key ``(block name, block number)``; together with
    ``transformer_index`` it is what ``set_model_attn2_replace`` and ``transformer_options``
    use (``("middle", 0)`` for the middle block).
    """

    ldm_path: str
    diffusers_path: str
    channels: int
    attention: str  # "attn1" (self) or "attn2" (cross)
    comfy_block: tuple[str, int]
    transformer_index: int = 0

    @property
    def is_cross(self) -> bool:
        return self.attention == "attn2"

    @property
    def block_name(self) -> str:
        return self.comfy_block[0]

    @property
    def block_number(self) -> int:
        return self.comfy_block[1]


def _transformer_sites(
    family: BaseFamily,
) -> list[tuple[str, str, int, tuple[str, int]]]:
    """(ldm block path, diffusers attention-module path, channels, comfy block) per transformer."""
    fam = family
    nrb = fam.num_res_blocks
    sites: list[tuple[str, str, int, tuple[str, int]]] = []
    ds = 1
    for level, mult in enumerate(fam.channel_mult):
        ch = fam.model_channels * mult
        if ds in fam.attention_ds:
            for j in range(nrb):
                n = 1 + level * (nrb + 1) + j
                sites.append(
                    (
                        f"input_blocks.{n}.1",
                        f"down_blocks.{level}.attentions.{j}",
                        ch,
                        ("input", n),
                    )
                )
        ds *= 2
    ds //= 2
    mid_ch = fam.model_channels * fam.channel_mult[-1]
    sites.append(("middle_block.1", "mid_block.attentions.0", mid_ch, ("middle", 0)))
    for up, mult in enumerate(reversed(fam.channel_mult)):
        ch = fam.model_channels * mult
        if ds in fam.attention_ds:
            for j in range(nrb + 1):
                n = up * (nrb + 1) + j
                sites.append(
                    (
                        f"output_blocks.{n}.1",
                        f"up_blocks.{up}.attentions.{j}",
                        ch,
                        ("output", n),
                    )
                )
        ds //= 2
    return sites


def transformer_block_paths(family: str | BaseFamily) -> tuple[str, ...]:
    """ldm paths of the spatial transformers, e.g. ``input_blocks.1.1`` (16 for SD1.5/2.1)."""
    return tuple(s[0] for s in _transformer_sites(get_family(family)))


def attention_layers(family: str | BaseFamily) -> tuple[AttentionLayer, ...]:
    """Every attention layer in UNet order (input, middle, output), attn1 before attn2."""
    out = []
    for ldm, diff, ch, block in _transformer_sites(get_family(family)):
        for att in ATTENTION_NAMES:
            out.append(
                AttentionLayer(
                    ldm_path=f"{ldm}.transformer_blocks.0.{att}",
                    diffusers_path=f"{diff}.transformer_blocks.0.{att}",
                    channels=ch,
                    attention=att,
                    comfy_block=block,
                )
            )
    return tuple(out)


def ldm_to_diffusers_attention(family: str | BaseFamily) -> dict[str, str]:
    return {a.ldm_path: a.diffusers_path for a in attention_layers(family)}


def diffusers_to_ldm_attention(family: str | BaseFamily) -> dict[str, str]:
    return {a.diffusers_path: a.ldm_path for a in attention_layers(family)}


def attention_layer(family: str | BaseFamily, path: str) -> AttentionLayer:
    """Look a layer up by its ldm or diffusers path."""
    for a in attention_layers(family):
        if path in (a.ldm_path, a.diffusers_path):
            return a
    raise DenseFaceInputError(
        f"{path!r} is not an attention layer of base family {get_family(family).name}"
    )
