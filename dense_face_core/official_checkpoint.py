"""Convert the authors' Lightning checkpoint (official-code-facts section 8) to our weight file.

The authors' names were kept in our key scheme, so conversion is a prefix mapping. Their
IR-SE50 identity network (``id_loss_func.facenet.*``) rides along in the checkpoint and is
written to its own safetensors beside the output. Pickles are read only with
``torch.load(weights_only=True)``: a checkpoint holding other Python objects is refused.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from .errors import DenseFaceInputError, MissingModelError, WeightFileError
from .families import BaseFamily, get_family, known_families
from .id_embedding import IR_SE50
from .weight_file import (
    INIT_EMBEDDING_KEY,
    INIT_EMBEDDING_PART,
    REQUIRED_PARTS,
    WeightMetadata,
    expected_shapes,
    save_safetensors_atomic,
    save_weight_file,
)

ID_NETWORK_NAME = IR_SE50
ID_NETWORK_SUFFIX = f".{ID_NETWORK_NAME}.safetensors"  # beside the converted weights
ID_NETWORK_PREFIX = "id_loss_func.facenet."
PROJECTOR_KEY = "embedding_manager.projector.weight"
INIT_EMBEDDING_PREFIX = "embedding_manager.string_to_param_dict."

# our prefix -> authors' prefix; the rest of each key is identical
_PREFIX_MAP = (
    ("pc_adapter.", "model.diffusion_model."),
    ("pose_branch.", "control_model."),
    ("id_projector.projector.", "embedding_manager.projector."),
    ("id_projector.norm.", "embedding_manager.projector_norm."),
)


def official_name(key: str) -> str:
    """Authors' state_dict name of one of our weight-file keys."""
    for ours, theirs in _PREFIX_MAP:
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    raise KeyError(key)


def id_network_path(out_path: str | os.PathLike) -> Path:
    out = Path(out_path)
    return out.with_name(out.stem + ID_NETWORK_SUFFIX)


def _refused_message(name: str, err: Exception) -> str:
    text = str(err)
    m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    first = (
        f"it contains {m.group(1)}"
        if m
        else (text.strip().splitlines() or [type(err).__name__])[0]
    )
    return (
        f"{name} holds Python objects besides tensors, so torch.load(weights_only=True) refused it "
        f"({first[:300]}). Dense-Face never unpickles arbitrary objects, because unpickling can run code. "
        "On a machine where you trust the file, re-save only its tensors as safetensors, e.g.\n"
        '  python -c "import torch; from safetensors.torch import save_file; '
        "sd = torch.load('IN.ckpt', map_location='cpu', weights_only=False)['state_dict']; "
        "save_file({k: v.clone().contiguous() for k, v in sd.items()}, 'IN.safetensors')\"\n"
        "then run:  dense-face convert-official IN.safetensors OUT.safetensors"
    )


class _SafetensorsSource(Mapping):
    """Lazy view of a safetensors state dict, so only the needed tensors are read."""

    def __init__(self, path: Path) -> None:
        try:
            self._f = safe_open(str(path), framework="pt", device="cpu")
            keys = list(self._f.keys())
        except (SafetensorError, OSError, RuntimeError) as e:
            raise WeightFileError(
                f"{path.name} could not be read as safetensors (corrupted or truncated?): {e}"
            ) from None
        strip = (
            "state_dict."
            if keys and all(k.startswith("state_dict.") for k in keys)
            else ""
        )
        self._keys = {k[len(strip) :]: k for k in keys}

    def __getitem__(self, key: str) -> Tensor:
        return self._f.get_tensor(self._keys[key])

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def read_official_state_dict(path: str | os.PathLike) -> Mapping[str, Tensor]:
    """The checkpoint's state dict: ``ckpt["state_dict"]`` of a Lightning pickle (read with
    weights_only=True), a bare state dict, or a .safetensors export of it."""
    p = Path(path)
    if not p.is_file():
        raise MissingModelError(f"checkpoint {str(p)!r} does not exist")
    if p.suffix.lower() == ".safetensors":
        return _SafetensorsSource(p)
    try:
        obj = torch.load(
            p, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(p)
        )
    except pickle.UnpicklingError as e:
        if (
            "weights_only" in str(e)
            or "Unsupported global" in str(e)
            or "Weights only" in str(e)
        ):
            raise WeightFileError(_refused_message(p.name, e)) from None
        raise WeightFileError(
            f"{p.name} is not a readable PyTorch checkpoint (corrupted or truncated?): {e}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise WeightFileError(
            f"{p.name} is not a readable PyTorch checkpoint (corrupted or truncated?): {e}"
        ) from None
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, Mapping) or not any(
        isinstance(v, Tensor) for v in sd.values()
    ):
        raise WeightFileError(
            f"{p.name} holds no state_dict of tensors; is it the authors' Dense-Face checkpoint?"
        )
    return sd


def _detect_family(sd: Mapping[str, Tensor], name: str) -> BaseFamily:
    """By text-context width and pose-branch width (the authors' release is SD1.5: 768, 320)."""
    conv_in = "control_model.input_blocks.0.0.weight"
    if PROJECTOR_KEY not in sd or conv_in not in sd:
        raise WeightFileError(
            f"{name} has no {PROJECTOR_KEY if PROJECTOR_KEY not in sd else conv_in}; "
            "it is not a Dense-Face face-generation checkpoint"
        )
    ctx, mc = int(sd[PROJECTOR_KEY].shape[0]), int(sd[conv_in].shape[0])
    for fam in map(get_family, known_families()):  # widths first, then every pose-branch shape (depth, mult)
        if (fam.context_dim, fam.model_channels) == (ctx, mc) and _pose_branch_fits(sd, fam):
            return fam
    raise WeightFileError(
        f"{name} is for an unknown base model (text context {ctx}, {mc} channels); "
        "the authors' release is SD1.5 (768, 320)"
    )


def _pose_branch_fits(sd: Mapping[str, Tensor], family: BaseFamily) -> bool:
    meta = WeightMetadata.for_family(family, ID_NETWORK_NAME)
    wanted = {official_name(k): v for k, v in expected_shapes(meta).items() if k.startswith("pose_branch.")}
    return all(k in sd and tuple(sd[k].shape) == shape for k, shape in wanted.items())


def map_official_state_dict(
    sd: Mapping[str, Tensor], name: str = "checkpoint"
) -> tuple[dict[str, Tensor], WeightMetadata, dict[str, Tensor], int]:
    """(weight-file tensors, metadata, IR-SE50 tensors, number of ignored tensors) from the
    authors' state dict; the base SD, CLIP, VAE and schedule buffers are ignored."""
    fam = _detect_family(sd, name)
    init_keys = sorted(k for k in sd if k.startswith(INIT_EMBEDDING_PREFIX))
    init_key = (
        INIT_EMBEDDING_PREFIX + "*"
        if INIT_EMBEDDING_PREFIX + "*" in sd
        else (init_keys[0] if init_keys else None)
    )
    parts = REQUIRED_PARTS + ((INIT_EMBEDDING_PART,) if init_key else ())
    meta = WeightMetadata.for_family(
        fam,
        ID_NETWORK_NAME,
        parts=parts,
        extra={"source": f"converted from the authors' checkpoint {name}"},
    )
    tensors: dict[str, Tensor] = {}
    used = {init_key} if init_key else set()
    missing: list[str] = []
    for key in expected_shapes(meta):
        if key == INIT_EMBEDDING_KEY:
            tensors[key] = sd[init_key].reshape(-1)
            continue
        theirs = official_name(key)
        if theirs in sd:
            tensors[key] = sd[theirs]
            used.add(theirs)
        elif key == "id_projector.norm.num_batches_tracked":
            tensors[key] = torch.tensor(
                0, dtype=torch.long
            )  # only counts training steps
        else:
            missing.append(theirs)
    if missing:
        shown = ", ".join(missing[:5]) + (
            f", ... ({len(missing) - 5} more)" if len(missing) > 5 else ""
        )
        raise WeightFileError(
            f"{name} lacks {len(missing)} Dense-Face tensors: {shown}"
        )
    id_net = {
        k[len(ID_NETWORK_PREFIX) :]: sd[k]
        for k in sd
        if k.startswith(ID_NETWORK_PREFIX)
    }
    ignored = len(sd) - len(used) - len(id_net)
    return tensors, meta, id_net, ignored


def read_official_weights(path: str | os.PathLike):
    """The Dense-Face parts of an authors' checkpoint (``epoch*.ckpt`` or ``*init.ckpt``) as weights in memory."""
    from .weight_file import DenseFaceWeights

    sd = read_official_state_dict(path)
    tensors, meta, _id_net, _ignored = map_official_state_dict(sd, Path(path).name)
    return DenseFaceWeights.from_tensors(tensors, meta, path=str(path))


def id_network_metadata(source: str) -> dict[str, str]:
    """Metadata of an extracted identity-network file (the ID Encoder lists ``*.ir_se50.safetensors``)."""
    return {
        "format": "dense-face-id-network",
        "model": ID_NETWORK_NAME,
        "architecture": "IR-SE50 Backbone(input 112, 50 layers, drop 0.6, mode ir_se) as in pSp/TreB1eN",
        "embedding_dim": "512",
        "source": source,
    }


def convert_official_checkpoint(
    in_path: str | os.PathLike, out_path: str | os.PathLike
) -> dict:
    """``dense-face convert-official IN.ckpt OUT.safetensors``: writes the weight file and, when
    the checkpoint carries it, ``<OUT stem>.ir_se50.safetensors``; returns a summary."""
    src, out = Path(in_path), Path(out_path)
    if out.suffix.lower() != ".safetensors":
        raise DenseFaceInputError(f"output {out.name!r} must end in .safetensors")
    if src.resolve() == out.resolve():
        raise DenseFaceInputError("input and output are the same file")
    sd = read_official_state_dict(src)
    tensors, meta, id_net, ignored = map_official_state_dict(sd, src.name)
    id_path = None
    if id_net:
        id_path = id_network_path(out)
        save_safetensors_atomic(id_path, id_net, id_network_metadata(f"{ID_NETWORK_PREFIX}* of {src.name}"))
    save_weight_file(out, tensors, meta)
    return {
        "output": str(out),
        "id_network": str(id_path) if id_path else None,
        "base_family": meta.base_family,
        "pc_adapter_tensors": sum(k.startswith("pc_adapter.") for k in tensors),
        "pose_branch_tensors": sum(k.startswith("pose_branch.") for k in tensors),
        "id_projector_tensors": sum(k.startswith("id_projector.") for k in tensors),
        "init_embedding": meta.has_init_embedding,
        "id_network_tensors": len(id_net),
        "ignored_tensors": ignored,
    }


def to_official_state_dict(weights, id_network: Mapping[str, Tensor] | None = None,
                           base: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """A Dense-Face weight set in the authors' Lightning names (the inverse of the conversion; the dense
    head has no place there), with their IR-SE50 and the frozen SD base when given."""
    sd: dict[str, Tensor] = dict(base or {})
    for key, value in weights.tensors().items():
        if key == INIT_EMBEDDING_KEY:
            sd[INIT_EMBEDDING_PREFIX + "*"] = value.reshape(1, -1)
        elif not key.startswith("dense_head."):
            sd[official_name(key)] = value
    sd.update({ID_NETWORK_PREFIX + k: v for k, v in (id_network or {}).items()})
    return sd
