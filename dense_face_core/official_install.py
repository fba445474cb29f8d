"""`dense-face install-official`: the authors' released folder -> a ComfyUI models folder.

The authors' Google Drive folder ("Pre-trained Weights") holds three files: the
text-editing-mode checkpoint (a single-file SD1.5 ``*.safetensors``), the face-generation
Lightning checkpoint ``epoch*.ckpt`` and ``*init.ckpt`` for training from scratch; their
identity network is pSp's ``model_ir_se50.pth`` (also inside ``epoch*.ckpt``). This puts
each where ComfyUI and the shipped workflows look for it, under fixed names:

- ``checkpoints/DenseFace_text_editing.safetensors``: the text-editing model, copied;
- ``checkpoints/DenseFace_face_generation_base.safetensors``: the frozen SD1.5 the
  face-generation checkpoint was trained on (its UNet, CLIP and VAE), so face mode runs on
  exactly the base its adapters expect;
- ``dense_face/DenseFace_face_generation.safetensors`` (+ ``.ir_se50.safetensors``): the
  converted Dense-Face weights and identity network.

Every written file records the SHA-256, size and mtime of its source (a copy keeps its source's
mtime), so a re-run skips what is installed and identical, hashing a source only when its size
or mtime differ from the record (a re-run over 10 GB of release is then instant), and refuses
(before writing anything) to replace a different file of the same name.
Writes are atomic; free space is checked first; pickles are read only with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import DenseFaceError, DenseFaceInputError, MissingModelError, WeightFileError
from .io_utils import atomic_path

TEXT_EDITING = "DenseFace_text_editing.safetensors"
FACE_BASE = "DenseFace_face_generation_base.safetensors"
FACE_WEIGHTS = "DenseFace_face_generation.safetensors"
RELEASE_URL = "the authors' README (github.com/CHELSEA234/Dense-Face, 'Pre-trained Weights': a Google Drive folder)"
PSP_URL = "pSp's pretrained models (github.com/eladrich/pixel2style2pixel: model_ir_se50.pth)"
PROVENANCE_KEY = "dense_face_install"
BASE_PREFIXES = ("model.diffusion_model.", "cond_stage_model.", "first_stage_model.")
ADAPTER_PARTS = (".per_q.", ".per_k.", ".per_v.", ".feat_to_q.")
_MARGIN = 64 * 1024 * 1024


@dataclass
class ReleaseFiles:
    """The authors' files found in a download folder (None: absent)."""

    folder: Path
    text_editing: Path | None = None
    face_generation: Path | None = None
    init: Path | None = None
    ir_se50: Path | None = None


def _one(candidates: list[Path], what: str, folder: Path) -> Path | None:
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise DenseFaceInputError(f"{folder}: several files could be the {what} ({names}); keep one of them there")
    return candidates[0] if candidates else None


def find_release_files(folder: str | os.PathLike) -> ReleaseFiles:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise MissingModelError(f"{folder} is not a folder: give the folder you downloaded from {RELEASE_URL}")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    ckpts = [p for p in files if p.suffix.lower() == ".ckpt"]
    init = [p for p in ckpts if p.stem.lower().endswith("init")]
    epochs = [p for p in ckpts if p not in init and p.name.lower().startswith("epoch")]
    return ReleaseFiles(
        folder=folder,
        text_editing=_one([p for p in files if p.suffix.lower() == ".safetensors"], "text-editing checkpoint", folder),
        face_generation=_one(epochs, "face-generation checkpoint (epoch*.ckpt)", folder),
        init=_one(init, "training initialisation (*init.ckpt)", folder),
        ir_se50=_one([p for p in files if p.name.lower() == "model_ir_se50.pth"], "IR-SE50 network", folder),
    )


def sha256_of(path: Path, log=None) -> str:
    if log is not None and path.stat().st_size > 256 * 1024 * 1024:
        log(f"  hashing {path.name} ({path.stat().st_size / 2**30:.1f} GiB) ...")
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(8 * 1024 * 1024), b""):
            h.update(block)
    return h.hexdigest()


class SourceFile:
    """A release file; its SHA-256 is computed once, and only when something needs it."""

    def __init__(self, path: Path, log=None):
        self.path, self._log, self._sha = path, log, None

    def sha256(self) -> str:
        if self._sha is None:
            self._sha = sha256_of(self.path, self._log)
        return self._sha

    def stamp(self) -> dict:
        st = self.path.stat()
        return {"source": self.path.name, "source_size": st.st_size, "source_mtime_ns": st.st_mtime_ns}


@dataclass
class Output:
    """One file to install: where, from what, how big, and how to write it."""

    dest: Path
    origin: SourceFile
    size: int
    write: object  # callable(dest) -> None
    what: str
    copied: bool = False  # a byte copy of its source (else a conversion that records its source's hash)
    state: str = field(default="missing")  # missing | same | different | written

    @property
    def source(self) -> Path:
        return self.origin.path

    def provenance(self) -> str:
        return json.dumps({**self.origin.stamp(), "source_sha256": self.origin.sha256(),
                           "tool": "dense-face install-official 1"})


def _recorded_provenance(dest: Path) -> dict:
    from .weight_file import read_header

    try:
        _shapes, meta = read_header(dest)
        recorded = json.loads(meta.get(PROVENANCE_KEY, "{}"))
    except (WeightFileError, MissingModelError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def _state_of_existing(out: Output) -> str:
    """Same when the size and mtime match (a copy keeps its source's; a conversion records them), else by
    SHA-256; a file that cannot be the output (another size, no record) is different without hashing."""
    if out.copied:
        src, dst = out.source.stat(), out.dest.stat()
        if src.st_size != dst.st_size:
            return "different"
        if src.st_mtime_ns == dst.st_mtime_ns:
            return "same"
        return "same" if sha256_of(out.dest) == out.origin.sha256() else "different"
    recorded = _recorded_provenance(out.dest)
    if not recorded.get("source_sha256"):
        return "different"
    if all(recorded.get(k) == v for k, v in out.origin.stamp().items()):
        return "same"
    return "same" if recorded["source_sha256"] == out.origin.sha256() else "different"


def _classify(out: Output) -> None:
    out.state = _state_of_existing(out) if out.dest.exists() else "missing"


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values()) + 1024 * 1024


# ---------------------------------------------------------------- what to write
def check_text_editing(path: Path) -> None:
    """A single-file SD1.5 checkpoint (UNet, CLIP-L, VAE in the original layout), read from its header."""
    from .weight_file import read_header

    shapes, _meta = read_header(path)
    want = {"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (49408, 768)}
    wrong = [f"{k} {shapes.get(k)} (expected {v})" for k, v in want.items() if shapes.get(k) != v]
    if wrong:
        raise WeightFileError(f"{path.name} is not a single-file SD1.5 checkpoint like the authors' text-editing "
                              f"model: {'; '.join(wrong)}")


def base_state_dict(sd) -> dict:
    """The frozen SD1.5 inside the authors' checkpoint: stock UNet (no adapter layers), CLIP, VAE."""
    return {k: sd[k] for k in sd if k.startswith(BASE_PREFIXES) and not any(p in k for p in ADAPTER_PARTS)}


def _safetensors_writer(out: Output, tensors, metadata):
    """Writes ``tensors`` with ``metadata`` and the output's provenance (hashing its source now)."""
    from .weight_file import save_safetensors_atomic

    def write(dest: Path) -> None:
        save_safetensors_atomic(dest, tensors, {**metadata, PROVENANCE_KEY: out.provenance()})
    return write


def _weights_writer(out: Output, tensors, meta):
    from .weight_file import save_weight_file

    def write(dest: Path) -> None:
        save_weight_file(dest, tensors, replace(meta, extra={**meta.extra, PROVENANCE_KEY: out.provenance()}))
    return write


def _copy_writer(source: Path):
    def write(dest: Path) -> None:
        st = source.stat()
        with atomic_path(dest) as tmp:
            shutil.copyfile(source, tmp)
            with contextlib.suppress(OSError):  # where mtimes cannot be set, a re-run hashes instead
                os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))  # what a re-run compares before hashing
    return write


def id_network_from_pth(path: Path) -> dict:
    """pSp's ``model_ir_se50.pth`` (a pickled state dict, read with weights_only=True), checked against IR-SE50."""
    import torch

    from .ir_se50 import IRSE50

    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any refusal is reported with the file's name
        raise WeightFileError(f"{path.name} could not be read with torch.load(weights_only=True): {exc}") from None
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    sd = {k[len("facenet."):] if k.startswith("facenet.") else k: v for k, v in dict(sd).items()}
    IRSE50().load_facenet_state_dict(sd)
    return sd


def _face_generation_outputs(release: ReleaseFiles, models: Path, log) -> tuple[list[Output], list[str]]:
    """Weights, identity network and base model from epoch*.ckpt (and model_ir_se50.pth)."""
    from .official_checkpoint import (ID_NETWORK_PREFIX, id_network_metadata, id_network_path,
                                      map_official_state_dict, read_official_state_dict)

    src = release.face_generation
    origin = SourceFile(src, log)
    notes: list[str] = []
    sd = read_official_state_dict(src)
    tensors, meta, id_net, _ignored = map_official_state_dict(sd, src.name)
    weights_dest = models / "dense_face" / FACE_WEIGHTS
    weights = Output(weights_dest, origin, _tensor_bytes(tensors), None, "Dense-Face weights (converted)")
    weights.write = _weights_writer(weights, tensors, meta)
    out = [weights]
    id_dest = id_network_path(weights_dest)
    if id_net:
        id_out = Output(id_dest, origin, _tensor_bytes(id_net), None, "IR-SE50 identity network (from the checkpoint)")
        id_out.write = _safetensors_writer(id_out, id_net, id_network_metadata(f"{ID_NETWORK_PREFIX}* of {src.name}"))
        out.append(id_out)
    elif release.ir_se50 is not None:
        pth = release.ir_se50
        id_sd = id_network_from_pth(pth)
        id_out = Output(id_dest, SourceFile(pth, log), _tensor_bytes(id_sd), None, "IR-SE50 identity network")
        id_out.write = _safetensors_writer(id_out, id_sd, id_network_metadata(pth.name))
        out.append(id_out)
    else:
        notes.append(f"IR-SE50 (the identity network of these weights) is neither inside {src.name} nor in "
                     f"{release.folder} as model_ir_se50.pth. The ID Encoder node needs it; until then, identities "
                     f"load from the authors' feat_file_v2 files (Dense-Face Load ID Embedding). Get "
                     f"model_ir_se50.pth from {PSP_URL}, put it in {release.folder} and run this command again.")
    base = base_state_dict(sd)
    if any(k.startswith("model.diffusion_model.") for k in base):
        base_out = Output(models / "checkpoints" / FACE_BASE, origin, _tensor_bytes(base), None,
                          "face-generation base model (SD1.5 UNet, CLIP, VAE from the checkpoint)")
        base_out.write = _safetensors_writer(base_out, base, {})
        out.append(base_out)
    else:
        notes.append(f"{src.name} carries no base model (model.diffusion_model.*): the face-generation workflows' "
                     f"'Base model' loader must be set to the SD1.5 checkpoint these weights were trained on.")
    return out, notes


def _text_editing_output(release: ReleaseFiles, models: Path, log) -> Output:
    src = release.text_editing
    check_text_editing(src)
    return Output(models / "checkpoints" / TEXT_EDITING, SourceFile(src, log), src.stat().st_size,
                  _copy_writer(src), "text-editing model (copied)", copied=True)


def _check_init(path: Path) -> str:
    """The training initialisation must read and map like a face-generation checkpoint; how to use it."""
    from .official_checkpoint import map_official_state_dict, read_official_state_dict

    map_official_state_dict(read_official_state_dict(path), path.name)
    return (f"training initialisation: {path} is usable as is; start a run from it with\n"
            f"  dense-face train --config CONFIG.yaml --init-from-official {path}")


def _check_free_space(pending: list[Output]) -> None:
    need: dict[int, tuple[Path, int]] = {}
    for out in pending:
        folder = out.dest.parent
        probe = folder
        while not probe.exists():
            probe = probe.parent
        dev = os.stat(probe).st_dev
        where, total = need.get(dev, (probe, 0))
        need[dev] = (where, total + out.size)
    for where, total in need.values():
        free = shutil.disk_usage(where).free
        if free < total + _MARGIN:
            raise DenseFaceInputError(f"not enough free space in {where}: the install writes {total / 2**30:.1f} GiB "
                                      f"there, {free / 2**30:.1f} GiB are free (nothing was written)")


def plan_install(folder, models_dir, log=print) -> tuple[list[Output], list[str]]:
    """Every output with its state (missing/same/different) and the notes for the user; writes nothing."""
    release = find_release_files(folder)
    models = Path(models_dir).expanduser()
    if release.face_generation is None and release.text_editing is None:
        raise MissingModelError(f"{release.folder} holds neither the face-generation checkpoint (epoch*.ckpt) nor the "
                                f"text-editing checkpoint (*.safetensors); download them from {RELEASE_URL}")
    outputs, notes = [], []
    if release.text_editing is not None:
        outputs.append(_text_editing_output(release, models, log))
    else:
        notes.append(f"no text-editing checkpoint (*.safetensors) in {release.folder}: the personalisation workflow "
                     f"needs it as checkpoints/{TEXT_EDITING}; face swap and pose control do not")
    if release.face_generation is not None:
        more, more_notes = _face_generation_outputs(release, models, log)
        outputs += more
        notes += more_notes
    else:
        notes.append(f"no face-generation checkpoint (epoch*.ckpt) in {release.folder}: without it there is no "
                     f"face-generation mode; download it from {RELEASE_URL}")
    if release.init is not None:
        notes.append(_check_init(release.init))
    for out in outputs:
        _classify(out)
    return outputs, notes


def install_official(folder, models_dir, log=print) -> list[Output]:
    """Plan, refuse conflicts and missing space before writing, then write what is missing."""
    outputs, notes = plan_install(folder, models_dir, log)
    conflicts = [o for o in outputs if o.state == "different"]
    if conflicts:
        lines = "\n".join(f"  {o.dest} (would be the {o.what} from {o.source.name})" for o in conflicts)
        raise DenseFaceInputError("these files exist and are not what this install writes; nothing was written. "
                                  f"Move them away (or rename them) and run again:\n{lines}")
    pending = [o for o in outputs if o.state == "missing"]
    _check_free_space(pending)
    for out in outputs:
        if out.state == "same":
            log(f"  already installed: {out.dest}  ({out.what})")
            continue
        log(f"  writing {out.dest}  ({out.what}, {out.size / 2**30:.2f} GiB) ...")
        try:
            out.dest.parent.mkdir(parents=True, exist_ok=True)
            out.write(out.dest)
        except OSError as exc:
            raise DenseFaceError(f"cannot write {out.dest}: {exc.strerror or exc}") from None
        out.state = "written"
    for note in notes:
        log("note: " + note)
    return outputs
