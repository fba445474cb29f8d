"""Training datasets over the builder's shards: reference/target pairs of one identity.

As in the authors' ``tutorial_dataset.py``, the *reference* contributes only its identity
embedding and the *target* everything else (image, caption, pose image, dense targets).
Unlike theirs, the reference is a different image whenever the identity has several, so
the model cannot learn to copy the target's own embedding.

Two flavours, same sample dicts (:class:`SampleDecoder` documents the keys):

* :class:`DenseFacePairs` - map-style, random access through the shards' index files;
  for small and medium sets, any sampler, ``set_epoch`` to redraw references.
* :class:`DenseFaceStream` - iterable, reads tars sequentially (local disk, NFS, object
  store mounts), split by shard across ``rank``/``world_size`` and DataLoader workers,
  with a shuffle buffer. Shards hold whole identities, so pairs are formed inside a shard.

Caption and identity dropout are the trainer's business: the raw fields come back as is.
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from . import shards as S

IMAGE_SIZE = 256
TARGET_SIZE = 64


# ============================================================== shard discovery

def find_shards(root) -> list[Path]:
    """Shard tars of a build: the manifest's list when there is one, else ``shards/*.tar``.

    ``root`` may also be one ``.tar`` or a list of them.
    """
    if isinstance(root, (list, tuple)):
        return [Path(p) for p in root]
    root = Path(root)
    if root.is_file():
        return [root]
    manifest = root / "manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        paths = [root / s["file"] for s in m.get("shards", [])]
        return [p for p in paths if p.is_file()]
    found = sorted((root / "shards").glob("*.tar")) or sorted(root.glob("*.tar"))
    return found


def _shards_or_raise(root) -> list[Path]:
    shards = find_shards(root)
    if not shards:
        from ..dense_face_core.errors import DenseFaceInputError

        raise DenseFaceInputError(f"no dataset shards found under {root}; build them with "
                                  "`dense-face build-dataset`")
    return shards


def read_manifest(root) -> dict | None:
    if isinstance(root, (list, tuple)):
        return None
    p = Path(root) / "manifest.json"
    return json.loads(p.read_text()) if p.is_file() else None


def shard_samples(path: Path) -> list[dict]:
    """``[{key, identity, offsets}]`` of one shard from its index (or by scanning the tar)."""
    index = S.load_index(path)
    if index is not None and index.get("tar_bytes") == path.stat().st_size:
        return index["samples"]
    offsets = S.scan_offsets(path)
    out = []
    with open(path, "rb") as fh:
        for key, offs in offsets.items():
            meta = json.loads(S.read_members(fh, offs, ["meta.json"])["meta.json"])
            out.append({"key": key, "identity": meta["identity"], "offsets": offs})
    return out


def _dist_rank_world(rank, world_size) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return int(rank), int(world_size)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


from .shard_stream import pick_reference  # noqa: E402 (one definition for both datasets)


# ============================================================== decoding

def pool_parsing(parsing: np.ndarray, size: int) -> np.ndarray:
    """Class map -> (size, size) by block majority (ties to the lower class id)."""
    h, w = parsing.shape
    if h == size and w == size:
        return parsing
    if h % size or w % size:
        import cv2

        return cv2.resize(parsing, (size, size), interpolation=cv2.INTER_NEAREST)
    by, bx = h // size, w // size
    n = 256
    blocks = parsing.reshape(size, by, size, bx).transpose(0, 2, 1, 3).reshape(size * size, by * bx)
    codes = np.arange(size * size)[:, None] * n + blocks
    counts = np.bincount(codes.ravel(), minlength=size * size * n).reshape(size * size, n)
    return counts.argmax(axis=1).reshape(size, size).astype(parsing.dtype)


def pool_depth(depth: np.ndarray, mask: np.ndarray, size: int,
               background: float) -> tuple[np.ndarray, np.ndarray]:
    """Depth + mask -> (size, size): mean over face pixels; mask where >= half the block is face."""
    h, w = depth.shape
    if h == size and w == size:
        return np.where(mask, depth, background).astype(np.float32), mask
    if h % size or w % size:
        import cv2

        m = cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA) >= 0.5
        d = cv2.resize(np.where(mask, depth, 0).astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
        cov = cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
        d = d / np.maximum(cov, 1e-6)
        return np.where(m, d, background).astype(np.float32), m
    by, bx = h // size, w // size
    mf = mask.reshape(size, by, size, bx).astype(np.float32)
    cov = mf.mean(axis=(1, 3))
    s = (np.where(mask, depth, 0).reshape(size, by, size, bx) * mf).sum(axis=(1, 3))
    d = s / np.maximum(mf.sum(axis=(1, 3)), 1.0)
    m = cov >= 0.5
    return np.where(m, d, background).astype(np.float32), m


class SampleDecoder:
    """Shard members of a (target, reference) pair -> the trainer's tensors.

    Keys of the returned dict (B = nothing here; the DataLoader adds the batch dim):

    ``image``         float32 (3, S, S) RGB in [-1, 1], S = ``image_size`` (default 256)
    ``pose_image``    float32 (3, S, S) in [0, 1], ``draw_pose_image(yaw, pitch, roll)`` (the authors' hint)
    ``caption``       str with the placeholder ``*``
    ``embedding``     float32 (512,) the reference's unit ArcFace embedding (zeros if absent)
    ``has_embedding`` bool tensor; False when the build had no ``--insightface-model``
    ``heatmaps``      float32 (478, T, T) landmark Gaussians, T = ``target_size`` (default 64)
    ``parsing``       int64 (T, T) class ids 0..9 (dense_targets.PARSING_CLASSES)
    ``depth``         float32 (1, T, T) MediaPipe z in crop widths, 1.0 off the face
    ``depth_mask``    float32 (1, T, T) 1 on the face mesh
    ``landmarks``     float32 (478, 3) crop-normalised landmarks of the target
    ``pose``          float32 (3,) pitch, yaw, roll in degrees (the pose image's angles)
    ``identity``, ``key``, ``reference_key`` str; ``same_image`` bool tensor
    ``reference_image`` float32 (3, S, S) in [-1, 1], only with ``return_reference_image``
    """

    def __init__(self, image_size: int = IMAGE_SIZE, target_size: int = TARGET_SIZE,
                 heatmap_sigma: float = 1.0, return_reference_image: bool = False):
        self.image_size = int(image_size)
        self.target_size = int(target_size)
        self.heatmap_sigma = float(heatmap_sigma)
        self.return_reference_image = bool(return_reference_image)

    def crop_field(self, available) -> str:
        """The crop member to read: ``crop_<image_size>.jpg``, else the next larger, else the largest."""
        crops = sorted(int(k[5:-4]) for k in available if k.startswith("crop_") and k.endswith(".jpg"))
        if not crops:
            raise KeyError("sample has no crop_<size>.jpg member")
        bigger = [c for c in crops if c >= self.image_size]
        return f"crop_{bigger[0] if bigger else crops[-1]}.jpg"

    def target_fields(self, available) -> list[str]:
        return [self.crop_field(available), "landmarks.npy", "parsing.png", "depth.png", "meta.json",
                "embedding.npy"]

    def reference_fields(self, available) -> list[str]:
        return ["embedding.npy", "meta.json"] + ([self.crop_field(available)] if self.return_reference_image else [])

    def prune(self, files: dict[str, bytes]) -> dict[str, bytes]:
        """Drop the members neither role needs (e.g. the unused crop size) before buffering."""
        keep = set(self.target_fields(files))
        return {k: v for k, v in files.items() if k in keep}

    def _image(self, files: dict[str, bytes]) -> torch.Tensor:
        import cv2

        name = self.crop_field(files)
        size = int(name[5:-4])
        rgb = S.decode_image(files[name])
        if size != self.image_size:
            interp = cv2.INTER_AREA if size > self.image_size else cv2.INTER_CUBIC
            rgb = cv2.resize(rgb, (self.image_size, self.image_size), interpolation=interp)
        chw = rgb.transpose(2, 0, 1).astype(np.float32)  # numpy: no torch thread-pool overhead per op
        chw *= 1.0 / 127.5
        chw -= 1.0
        return torch.from_numpy(chw)

    def decode(self, target: dict[str, bytes], reference: dict[str, bytes],
               same_image: bool = False) -> dict:
        from ..dense_face_core.dense_targets import DEPTH_BACKGROUND, landmark_heatmaps
        from ..dense_face_core.pose import draw_pose_image

        meta = json.loads(target["meta.json"])
        ref_meta = json.loads(reference["meta.json"])
        lms = S.decode_npy(target["landmarks.npy"]).astype(np.float32)
        pose = meta["pose"]
        pose_img = draw_pose_image(pose["yaw"], pose["pitch"], pose["roll"], size=self.image_size)
        parsing = pool_parsing(S.decode_image(target["parsing.png"]), self.target_size)
        depth, dmask = S.decode_depth(target["depth.png"])
        depth, dmask = pool_depth(depth, dmask, self.target_size, DEPTH_BACKGROUND)
        if "embedding.npy" in reference:
            emb = torch.from_numpy(S.decode_npy(reference["embedding.npy"]).astype(np.float32).reshape(-1))
            has_emb = True
        else:
            emb, has_emb = torch.zeros(512), False
        out = {
            "image": self._image(target),
            "pose_image": torch.from_numpy(pose_img.transpose(2, 0, 1).astype(np.float32) * np.float32(1 / 255)),
            "caption": meta["caption"],
            "embedding": emb,
            "has_embedding": torch.tensor(has_emb),
            "heatmaps": torch.from_numpy(landmark_heatmaps(lms, self.target_size, self.heatmap_sigma)),
            "parsing": torch.from_numpy(parsing.astype(np.int64)),
            "depth": torch.from_numpy(depth)[None],
            "depth_mask": torch.from_numpy(dmask.astype(np.float32))[None],
            "landmarks": torch.from_numpy(lms),
            "pose": torch.tensor([pose["pitch"], pose["yaw"], pose["roll"]], dtype=torch.float32),
            "identity": meta["identity"],
            "key": meta["key"],
            "reference_key": ref_meta["key"],
            "same_image": torch.tensor(bool(same_image)),
        }
        if self.return_reference_image:
            out["reference_image"] = self._image(reference)
        return out


def _check_embeddings(has: bool, require: bool, where: str) -> None:
    if has:
        return
    msg = (f"{where} was built without --insightface-model: samples have no identity embedding "
           "('has_embedding' is False, 'embedding' is zeros). Rebuild with the ArcFace model to train "
           "the identity path.")
    if require:
        from ..dense_face_core.errors import DenseFaceInputError

        raise DenseFaceInputError(msg)
    warnings.warn(msg, stacklevel=3)


# ============================================================== map-style

class DenseFacePairs(torch.utils.data.Dataset):
    """Map-style pairs: item ``i`` is target sample ``i`` with a reference drawn from its identity.

    The reference is ``pick_reference`` under ``np.random.default_rng([seed, epoch, i])``:
    deterministic for a (seed, epoch), redrawn by :meth:`set_epoch`. Targets come from
    identities with at least ``min_images_per_identity`` samples.
    """

    def __init__(self, root, image_size: int = IMAGE_SIZE, target_size: int = TARGET_SIZE,
                 seed: int = 0, min_images_per_identity: int = 1, heatmap_sigma: float = 1.0,
                 return_reference_image: bool = False, require_embeddings: bool = False):
        self.shards = _shards_or_raise(root)
        self.decoder = SampleDecoder(image_size, target_size, heatmap_sigma, return_reference_image)
        self.seed, self.epoch = int(seed), 0
        self.samples: list[tuple[int, dict]] = []
        for si, path in enumerate(self.shards):
            self.samples += [(si, s) for s in shard_samples(path)]
        groups: dict[str, list[int]] = {}
        for i, (_, s) in enumerate(self.samples):
            groups.setdefault(s["identity"], []).append(i)
        self.identity_samples = groups
        self._group_of = {i: (ident, pos) for ident, g in groups.items() for pos, i in enumerate(g)}
        self.targets = [i for g in groups.values() if len(g) >= min_images_per_identity for i in g]
        self.targets.sort()
        self.has_embeddings = bool(self.samples) and all("embedding.npy" in s["offsets"] for _, s in self.samples)
        _check_embeddings(self.has_embeddings, require_embeddings, str(root))
        self._handles: dict[int, object] = {}
        self._pid = None

    def __len__(self) -> int:
        return len(self.targets)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _fh(self, si: int):
        if self._pid != os.getpid():  # after a DataLoader fork: own handles
            self._handles, self._pid = {}, os.getpid()
        fh = self._handles.get(si)
        if fh is None:
            fh = self._handles[si] = open(self.shards[si], "rb")  # noqa: SIM115 (kept open: random access)
        return fh

    def _read(self, idx: int, fields) -> dict[str, bytes]:
        si, s = self.samples[idx]
        return S.read_members(self._fh(si), s["offsets"], fields)

    def reference_index(self, i: int) -> int:
        t = self.targets[i]
        ident, pos = self._group_of[t]
        g = self.identity_samples[ident]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        return g[pick_reference(len(g), pos, rng)]

    def __getitem__(self, i: int) -> dict:
        t = self.targets[i]
        r = self.reference_index(i)
        target = self._read(t, self.decoder.target_fields(self.samples[t][1]["offsets"]))
        reference = target if r == t else self._read(r, self.decoder.reference_fields(self.samples[r][1]["offsets"]))
        return self.decoder.decode(target, reference, same_image=(r == t))

    def __getstate__(self):
        """Picklable for spawn/forkserver DataLoader workers: open files stay behind."""
        state = self.__dict__.copy()
        state["_handles"], state["_pid"] = {}, None
        return state

    def __del__(self):
        for fh in getattr(self, "_handles", {}).values():
            with contextlib.suppress(OSError):
                fh.close()


# ============================================================== streaming

class DenseFaceStream(torch.utils.data.IterableDataset):
    """Streaming pairs over tar shards, for multi-GPU training at any scale.

    Each epoch the shard list is shuffled with ``seed + epoch`` (the same on every rank),
    then consumer ``rank * num_workers + worker`` takes every ``world_size * num_workers``-th
    shard (``split="shard"``). With fewer shards than consumers, ``split="auto"`` falls
    back to dealing out identity groups instead, so no consumer idles (each then reads
    every shard). Inside a shard, each run of one identity's samples is a group: every
    sample becomes a target once, with a reference drawn from the group, and pairs pass
    through a ``shuffle_buffer`` so a batch mixes identities. ``repeat=True`` streams
    epochs forever (the trainer counts steps), which keeps DDP ranks in step.

    Resumable: :meth:`resume` (or ``start=``) takes the number of samples this rank has
    consumed and the DataLoader's batch size; each worker then starts where it stood, and
    the stream goes on with exactly the items an uninterrupted one would have given. Tars
    are only ever read sequentially, and a resumed stream does not open the shards it has
    finished (the order is planned from the index files, see :mod:`train.shard_stream`).
    """

    def __init__(self, root, image_size: int = IMAGE_SIZE, target_size: int = TARGET_SIZE,
                 seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 shuffle: bool = True, shuffle_buffer: int = 256, repeat: bool = False,
                 split: str = "auto", heatmap_sigma: float = 1.0,
                 return_reference_image: bool = False, require_embeddings: bool = False,
                 start: int = 0, batch_size: int = 1):
        super().__init__()
        self.shards = _shards_or_raise(root)
        if split not in ("auto", "shard", "group"):
            raise ValueError(f"split must be 'auto', 'shard' or 'group', got {split!r}")
        self.decoder = SampleDecoder(image_size, target_size, heatmap_sigma, return_reference_image)
        self.seed, self.epoch = int(seed), 0
        self.rank, self.world_size = _dist_rank_world(rank, world_size)
        self.shuffle, self.shuffle_buffer, self.repeat, self.split = shuffle, int(shuffle_buffer), repeat, split
        self.resume(start, batch_size)
        self._samples: dict[int, list[dict]] = {}
        indexes = [S.load_index(p) for p in self.shards]
        self.num_samples = sum(len(i["samples"]) for i in indexes) if all(indexes) else None
        manifest = read_manifest(root)
        if manifest is not None:
            self.has_embeddings = bool(manifest.get("embeddings", {}).get("present"))
        elif all(indexes):
            self.has_embeddings = all(i.get("embedding_model") for i in indexes)
        else:
            self.has_embeddings = True  # unknown; the per-sample flag tells
        _check_embeddings(self.has_embeddings, require_embeddings, str(root))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume(self, samples_seen: int, batch_size: int = 1) -> None:
        """Start after the first ``samples_seen`` samples this rank consumed (from epoch ``set_epoch``),
        in a DataLoader of ``batch_size`` (its workers take whole batches in turn). Exact with
        ``repeat=True``; without it, exact as long as no worker of the rank has run dry."""
        if int(samples_seen) < 0 or int(batch_size) < 1:
            raise ValueError("resume: samples_seen must be >= 0 and batch_size >= 1")
        self.start, self.batch_size = int(samples_seen), int(batch_size)

    def __len__(self) -> int:
        if self.num_samples is None:
            raise TypeError("length unknown: shards have no index files")
        return self.num_samples // max(1, self.world_size)

    # ---------------------------------------------------------- the plan
    def _samples_of(self, si: int) -> list[dict]:
        if si not in self._samples:
            self._samples[si] = shard_samples(self.shards[si])
        return self._samples[si]

    def _fields_of(self, si: int):
        samples = self._samples_of(si)
        return set(self.decoder.target_fields(samples[0]["offsets"])) if samples else set()

    def _consumer(self) -> tuple[int, int, int]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        return wid, nw, self.rank * nw + wid

    def plan(self, epoch: int, worker: int = 0, num_workers: int = 1) -> list:
        """``(shard, target, reference)`` sample indices this consumer gives in ``epoch``, in order."""
        from .shard_stream import epoch_plan

        return epoch_plan(self._samples_of, len(self.shards), seed=self.seed, epoch=epoch,
                          slot=self.rank * num_workers + worker, consumers=self.world_size * num_workers,
                          split=self.split, shuffle=self.shuffle, shuffle_buffer=self.shuffle_buffer,
                          buffer_seed=[self.seed, epoch, self.rank, worker, 1])

    # ---------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[dict]:
        return self._iterate(self.decoder.decode)

    def iter_keys(self) -> Iterator[tuple[str, str, str, bool]]:
        """The same stream without decoding: (key, reference_key, identity, same_image)."""
        return self._iterate(_pair_keys)

    def _iterate(self, decode) -> Iterator:
        from .shard_stream import follow_plan, worker_position

        wid, nw, _ = self._consumer()
        # a DataLoader asks its workers for batches in turn, starting with worker 0 at every start: after
        # b batches, worker w plays the part worker (w + b) % nw had, so the batches come in the same order
        role = (wid + self.start // self.batch_size) % nw
        epoch, skip = self.epoch, worker_position(self.start, self.batch_size, role, nw)
        while True:
            plan = self.plan(epoch, role, nw)
            if skip >= len(plan) and plan and self.repeat:
                skip -= len(plan)
            elif skip < len(plan):
                for target, reference, same in follow_plan(plan, skip, self.shards, self._samples_of,
                                                           self._fields_of, self.decoder.prune):
                    yield decode(target, reference, same)
                skip = 0
            if not self.repeat or not plan:
                return
            epoch += 1


def _pair_keys(target: dict, reference: dict, same_image: bool) -> tuple[str, str, str, bool]:
    t, r = json.loads(target["meta.json"]), json.loads(reference["meta.json"])
    return t["key"], r["key"], t["identity"], same_image
