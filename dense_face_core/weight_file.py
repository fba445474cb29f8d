"""The one Dense-Face weight file: a safetensors with four prefixes and string metadata.

Keys: ``pose_branch.<ldm ControlNet key>``, ``pc_adapter.<ldm attention path>.<part>.weight``,
``id_projector.{projector.weight,norm.*}`` (+ optional ``id_projector.init_embedding``, the
authors' frozen embedding of the init word), ``dense_head.*`` (optional). Validation reads
only the header first, so a wrong or broken file is refused before gigabytes are loaded.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from .dense_head import DEFAULT_OUTPUT_SIZE, DEFAULT_WIDTH, DenseHead
from .errors import DenseFaceInputError, MissingModelError, WeightFileError
from .families import PRODUCT_FAMILIES, BaseFamily, get_family, register_family
from .identity import (
    ID_DELTA,
    ID_EMBED_DIM,
    INIT_WORD,
    PLACEHOLDER_TOKEN,
    IdentityProjector,
)
from .io_utils import atomic_path
from .pc_adapter import DEFAULT_DELTA, adapter_shapes
from .pose import POSE_IMAGE_SPEC
from .pose_branch import PoseBranch
from .safetensors_writer import write_safetensors

FORMAT_NAME = "dense-face"
FORMAT_VERSION = 1
PART_PREFIXES = {
    "pose_branch": "pose_branch.",
    "pc_adapter": "pc_adapter.",
    "id_projector": "id_projector.",
    "dense_head": "dense_head.",
}
REQUIRED_PARTS = ("pose_branch", "pc_adapter", "id_projector")
INIT_EMBEDDING_PART = "id_init_embedding"
INIT_EMBEDDING_KEY = "id_projector.init_embedding"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
CUSTOM_FAMILIES_ENV = "DENSE_FACE_ALLOW_CUSTOM_FAMILIES"
CONVERT_HINT = "convert it with:  dense-face convert-official IN.ckpt OUT.safetensors"
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class WeightMetadata:
    """Parsed metadata; :meth:`to_dict` gives the exact string keys stored in the file."""

    base_family: str
    context_dim: int
    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    id_embedding_model: str
    id_embedding_dim: int = ID_EMBED_DIM
    delta: float = DEFAULT_DELTA
    id_delta: float = ID_DELTA
    placeholder_token: str = PLACEHOLDER_TOKEN
    init_word: str = INIT_WORD
    pose_image_spec: str = POSE_IMAGE_SPEC
    parts: tuple[str, ...] = REQUIRED_PARTS
    dense_head_width: int | None = None
    dense_head_output_size: int | None = None
    format_version: int = FORMAT_VERSION
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def for_family(
        cls, family: str | BaseFamily, id_embedding_model: str, **kwargs
    ) -> WeightMetadata:
        fam = get_family(family)
        return cls(
            base_family=fam.name,
            context_dim=fam.context_dim,
            model_channels=fam.model_channels,
            channel_mult=tuple(fam.channel_mult),
            num_res_blocks=fam.num_res_blocks,
            id_embedding_model=id_embedding_model,
            **kwargs,
        )

    @property
    def has_dense_head(self) -> bool:
        return "dense_head" in self.parts

    @property
    def has_init_embedding(self) -> bool:
        return INIT_EMBEDDING_PART in self.parts

    def to_dict(self) -> dict[str, str]:
        d = dict(self.extra)
        d.update(
            format=FORMAT_NAME,
            format_version=str(self.format_version),
            base_family=self.base_family,
            context_dim=str(self.context_dim),
            model_channels=str(self.model_channels),
            channel_mult=",".join(str(m) for m in self.channel_mult),
            num_res_blocks=str(self.num_res_blocks),
            id_embedding_model=self.id_embedding_model,
            id_embedding_dim=str(self.id_embedding_dim),
            delta=repr(float(self.delta)),
            id_delta=repr(float(self.id_delta)),
            placeholder_token=self.placeholder_token,
            init_word=self.init_word,
            pose_image_spec=self.pose_image_spec,
            parts=",".join(self.parts),
        )
        if self.has_dense_head:
            d["dense_head_width"] = str(self.dense_head_width or DEFAULT_WIDTH)
            d["dense_head_output_size"] = str(
                self.dense_head_output_size or DEFAULT_OUTPUT_SIZE
            )
        return d

    @classmethod
    def from_dict(
        cls, d: Mapping[str, str] | None, source: str = "weight file"
    ) -> WeightMetadata:
        d = dict(d or {})
        if d.get("format") != FORMAT_NAME:
            raise WeightFileError(
                f"{source} is a safetensors file but not a Dense-Face weight file (its metadata has no "
                f"format={FORMAT_NAME!r}); if it is the authors' checkpoint, {CONVERT_HINT}"
            )
        try:
            version = int(d["format_version"])
        except (KeyError, ValueError):
            raise WeightFileError(
                f"{source}: metadata format_version is missing or not a number"
            ) from None
        if version != FORMAT_VERSION:
            raise WeightFileError(
                f"{source} has Dense-Face format version {version}; this version of the node pack reads "
                f"version {FORMAT_VERSION} only (update the node pack or re-export the file)"
            )
        known = set(cls.__dataclass_fields__) | {"format"}
        try:
            parts = tuple(p for p in d["parts"].split(",") if p)
            width = d.get("dense_head_width")
            size = d.get("dense_head_output_size")
            return cls(
                base_family=d["base_family"],
                context_dim=int(d["context_dim"]),
                model_channels=int(d["model_channels"]),
                channel_mult=tuple(int(m) for m in d["channel_mult"].split(",")),
                num_res_blocks=int(d["num_res_blocks"]),
                id_embedding_model=d["id_embedding_model"],
                id_embedding_dim=int(d["id_embedding_dim"]),
                delta=float(d["delta"]),
                id_delta=float(d["id_delta"]),
                placeholder_token=d["placeholder_token"],
                init_word=d["init_word"],
                pose_image_spec=d["pose_image_spec"],
                parts=parts,
                dense_head_width=int(width) if width else None,
                dense_head_output_size=int(size) if size else None,
                format_version=version,
                extra={k: v for k, v in d.items() if k not in known},
            )
        except KeyError as e:
            raise WeightFileError(
                f"{source}: metadata key {e.args[0]!r} is missing"
            ) from None
        except ValueError as e:
            raise WeightFileError(f"{source}: malformed metadata ({e})") from None


@dataclass
class DenseFaceWeights:
    """A validated weight file split by part; part dicts are keyed without their prefix."""

    metadata: WeightMetadata
    family: BaseFamily
    pose_branch: dict[str, Tensor]
    pc_adapter: dict[str, Tensor]
    id_projector: dict[str, Tensor]
    dense_head: dict[str, Tensor] | None = None
    init_embedding: Tensor | None = None
    path: str | None = None

    @property
    def has_dense_head(self) -> bool:
        return self.dense_head is not None

    def tensors(self) -> dict[str, Tensor]:
        """Flat, prefixed dict as stored in the file."""
        out: dict[str, Tensor] = {}
        for part, prefix in PART_PREFIXES.items():
            sd = getattr(self, part)
            if sd is not None:
                out.update({prefix + k: v for k, v in sd.items()})
        if self.init_embedding is not None:
            out[INIT_EMBEDDING_KEY] = self.init_embedding
        return out

    @classmethod
    def from_tensors(
        cls,
        tensors: Mapping[str, Tensor],
        metadata: WeightMetadata | Mapping[str, str],
        *,
        path: str | None = None,
        **expect,
    ) -> DenseFaceWeights:
        meta = validate(tensors, metadata, source=path or "weight file", **expect)
        split: dict[str, dict[str, Tensor]] = {p: {} for p in PART_PREFIXES}
        init = None
        for k, v in tensors.items():
            if k == INIT_EMBEDDING_KEY:
                init = v
                continue
            for part, prefix in PART_PREFIXES.items():
                if k.startswith(prefix):
                    split[part][k[len(prefix) :]] = v
                    break
        return cls(
            metadata=meta,
            family=get_family(meta.base_family),
            pose_branch=split["pose_branch"],
            pc_adapter=split["pc_adapter"],
            id_projector=split["id_projector"],
            dense_head=split["dense_head"] if meta.has_dense_head else None,
            init_embedding=init,
            path=path,
        )


# ---------------------------------------------------------------- expected layout
def _meta_state_shapes(
    module: torch.nn.Module, prefix: str
) -> dict[str, tuple[int, ...]]:
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}


@lru_cache(maxsize=16)
def _expected(
    family: BaseFamily, id_dim: int, head: tuple[int, int] | None, init_emb: bool
) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        shapes = _meta_state_shapes(
            PoseBranch.for_family(family),
            "pose_branch.",
        )
        shapes.update(
            _meta_state_shapes(
                IdentityProjector.for_family(family, id_dim), "id_projector."
            )
        )
        if head is not None:
            shapes.update(
                _meta_state_shapes(
                    DenseHead.for_family(family, width=head[0], output_size=head[1]),
                    "dense_head.",
                )
            )
    shapes.update(
        {"pc_adapter." + k: v for k, v in adapter_shapes(family, id_dim).items()}
    )
    if init_emb:
        shapes[INIT_EMBEDDING_KEY] = (family.context_dim,)
    return shapes


def expected_shapes(metadata: WeightMetadata) -> dict[str, tuple[int, ...]]:
    """Every key the file must hold, with its shape, for this metadata."""
    fam = get_family(metadata.base_family)
    head = None
    if metadata.has_dense_head:
        head = (
            metadata.dense_head_width or DEFAULT_WIDTH,
            metadata.dense_head_output_size or DEFAULT_OUTPUT_SIZE,
        )
    return dict(
        _expected(fam, metadata.id_embedding_dim, head, metadata.has_init_embedding)
    )


def _first(names: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names) - n} more)" if len(names) > n else "")


def validate(
    tensors: Mapping[str, Tensor | Sequence[int]],
    metadata: WeightMetadata | Mapping[str, str] | None,
    *,
    source: str = "weight file",
    expected_family: str | BaseFamily | None = None,
    expected_context_dim: int | None = None,
) -> WeightMetadata:
    """Check metadata, base model and every tensor name/shape; ``tensors`` may map names to
    tensors or to shapes (as read from a header). Raises WeightFileError, returns the metadata."""
    meta = (
        metadata
        if isinstance(metadata, WeightMetadata)
        else WeightMetadata.from_dict(metadata, source)
    )
    fam = _family_of(meta, source)
    _check_base_model(fam, source, expected_family, expected_context_dim)
    if meta.pose_image_spec != POSE_IMAGE_SPEC:
        raise WeightFileError(
            f"{source} was trained with pose images '{meta.pose_image_spec}', but this node pack draws "
            f"'{POSE_IMAGE_SPEC}'"
        )
    unknown_parts = set(meta.parts) - set(PART_PREFIXES) - {INIT_EMBEDDING_PART}
    missing_parts = set(REQUIRED_PARTS) - set(meta.parts)
    if unknown_parts or missing_parts:
        raise WeightFileError(
            f"{source}: metadata parts {','.join(meta.parts)!r} is invalid "
            f"(missing {sorted(missing_parts)}, unknown {sorted(unknown_parts)})"
        )
    _check_tensors(tensors, expected_shapes(meta), source)
    return meta


def _family_of(meta: WeightMetadata, source: str) -> BaseFamily:
    """The registered family the metadata names, its geometry checked; a custom geometry only on request."""
    geometry = {
        "context_dim": str(meta.context_dim),
        "model_channels": str(meta.model_channels),
        "channel_mult": ",".join(str(m) for m in meta.channel_mult),
        "num_res_blocks": str(meta.num_res_blocks),
    }
    try:
        fam = get_family(meta.base_family)
    except DenseFaceInputError:
        if os.environ.get(CUSTOM_FAMILIES_ENV) != "1" or meta.base_family in PRODUCT_FAMILIES:
            raise WeightFileError(
                f"{source} is for an unknown base model family {meta.base_family!r} (set "
                f"{CUSTOM_FAMILIES_ENV}=1 to load weights made for a custom UNet geometry)"
            ) from None
        # A research UNet of another geometry: the metadata carries everything the parts need.
        fam = register_family(
            BaseFamily(
                meta.base_family,
                context_dim=int(meta.context_dim),
                model_channels=int(meta.model_channels),
                channel_mult=tuple(int(m) for m in meta.channel_mult),
                num_res_blocks=int(meta.num_res_blocks),
            )
        )
    if geometry != fam.geometry():
        raise WeightFileError(
            f"{source}: metadata geometry {geometry} does not match base family {fam.name} {fam.geometry()}"
        )
    return fam


def _check_base_model(fam: BaseFamily, source: str, expected_family, expected_context_dim) -> None:
    if expected_family is not None:
        exp = get_family(expected_family)
        if exp.name != fam.name or exp.context_dim != fam.context_dim:
            raise WeightFileError(
                f"{source} is for base model {fam.name} (text context {fam.context_dim}) but the model "
                f"in use is {exp.name} (text context {exp.context_dim}); use a Dense-Face file trained for {exp.name}"
            )
    if expected_context_dim is not None and expected_context_dim != fam.context_dim:
        raise WeightFileError(
            f"{source} is for base model {fam.name} (text context {fam.context_dim}) but the model in use "
            f"has text context {expected_context_dim}"
        )


def _check_tensors(tensors: Mapping, expected: Mapping[str, tuple[int, ...]], source: str) -> None:
    shapes = {
        k: tuple(v.shape) if isinstance(v, Tensor) else tuple(v)
        for k, v in tensors.items()
    }
    missing = [k for k in expected if k not in shapes]
    if missing:
        raise WeightFileError(
            f"{source} lacks {len(missing)} of {len(expected)} tensors: {_first(missing)}"
        )
    unexpected = sorted(k for k in shapes if k not in expected)
    if unexpected:
        raise WeightFileError(
            f"{source} has {len(unexpected)} unexpected tensors: {_first(unexpected)}"
        )
    wrong = [
        f"{k} is {list(shapes[k])}, expected {list(v)}"
        for k, v in expected.items()
        if shapes[k] != v
    ]
    if wrong:
        raise WeightFileError(
            f"{source} has {len(wrong)} tensors of the wrong shape: {_first(wrong, 3)}"
        )


# ---------------------------------------------------------------- file I/O
def _looks_like_pickle(path: Path, head: bytes) -> bool:
    """By suffix, or by zip (torch.save) / pickle-protocol magic unless a safetensors JSON
    header follows the 8-byte length (whose low byte may be 0x80 by chance)."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    return (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80") and head[8:9] != b"{"


def read_header(
    path: str | os.PathLike,
) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Tensor shapes and metadata from a safetensors header, with clear errors for files that
    are pickles, truncated or corrupted."""
    p = Path(path)
    if not p.is_file():
        raise MissingModelError(f"Dense-Face weight file {str(p)!r} does not exist")
    size = p.stat().st_size
    with open(p, "rb") as fh:
        head = fh.read(9)
        if _looks_like_pickle(p, head):
            raise WeightFileError(
                f"{p.name} is a PyTorch pickle checkpoint, which is never loaded here (unpickling can run "
                f"code); {CONVERT_HINT}"
            )
        if len(head) < 9:
            raise WeightFileError(
                f"{p.name} is not a safetensors file ({size} bytes; truncated or empty)"
            )
        (n,) = struct.unpack("<Q", head[:8])
        if n > min(size - 8, _MAX_HEADER):
            raise WeightFileError(
                f"{p.name} is not a valid safetensors file: its header claims {n} bytes but the file has "
                f"{size} (truncated download or another format)"
            )
        fh.seek(8)
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
        metadata = header.pop("__metadata__", None) or {}
        shapes = {k: tuple(int(s) for s in v["shape"]) for k, v in header.items()}
        end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        raise WeightFileError(
            f"{p.name} is not a valid safetensors file (unreadable header; corrupted?)"
        ) from None
    if 8 + n + end > size:
        raise WeightFileError(
            f"{p.name} is truncated: its header needs {8 + n + end} bytes but the file has {size}; download it again"
        )
    if 8 + n + end < size:
        raise WeightFileError(
            f"{p.name} is corrupted: {size - 8 - n - end} bytes beyond the last tensor"
        )
    return shapes, metadata


def load_weight_file(
    path: str | os.PathLike,
    expected_family: str | BaseFamily | None = None,
    expected_context_dim: int | None = None,
    *,
    device: str | torch.device = "cpu",
) -> DenseFaceWeights:
    """Validate from the header, then load the tensors and split them by part."""
    p = Path(path)
    shapes, metadata = read_header(p)
    validate(
        shapes,
        metadata,
        source=p.name,
        expected_family=expected_family,
        expected_context_dim=expected_context_dim,
    )
    try:
        tensors = load_file(str(p), device=str(device))
    except (SafetensorError, RuntimeError, OSError) as e:
        raise WeightFileError(
            f"{p.name} could not be read as safetensors (corrupted?): {e}"
        ) from None
    return DenseFaceWeights.from_tensors(tensors, metadata, path=str(p))


def save_safetensors_atomic(
    path: str | os.PathLike, tensors: Mapping[str, Tensor], metadata: Mapping[str, str]
) -> None:
    """Write to a temp file in the target folder and ``os.replace`` it, so a crash never leaves
    a half-written file under the real name."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(p, ".tmp") as tmp:
        write_safetensors(tmp, tensors, metadata)


def save_weight_file(
    path: str | os.PathLike,
    tensors: Mapping[str, Tensor],
    metadata: WeightMetadata | Mapping[str, str],
) -> WeightMetadata:
    """Validate, then write atomically; an invalid set is never written."""
    meta = validate(tensors, metadata, source=Path(path).name)
    save_safetensors_atomic(path, tensors, meta.to_dict())
    return meta
