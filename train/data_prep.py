"""Data for a run: build the shards when the config asks for it, and a resumable sample order.

The order is a pure function of (seed, position): resuming at step s needs no saved
iterator, only ``s * batch_size * accumulation`` samples to skip per rank, which is
arithmetic, not decoding.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..dense_face_core.errors import DenseFaceInputError
from ..dense_face_core.packaged_photos import packaged_identity_folders

PACKAGED = "packaged"
RANDOM_ARCFACE = "random"


def _landmarker(explicit: str | None) -> str:
    """The MediaPipe model for a build run by the trainer: the builder's own search, then the
    project machines' ``../shared/models`` (where the tiny config and its tests find it)."""
    from .config import REPO_DIR
    from .dataset_builder import landmarker_path

    return landmarker_path(explicit, [REPO_DIR.parent / "shared" / "models"])


def ensure_dataset(cfg: dict, log=print) -> Path:
    """The dataset folder of this run; builds it first when ``data.build`` is set (re-running the
    builder on a finished build is a no-op: it skips shards whose fingerprint matches)."""
    d = cfg["data"]
    if not d.get("build"):
        root = Path(d["root"]).expanduser()
        if not (root / "manifest.json").is_file() and not list(root.glob("shards/*.tar")):
            raise DenseFaceInputError(f"data.root {root} holds no dataset (build one with `dense-face build-dataset`)")
        return root
    from .dataset_builder import main as build_main

    b = dict(d["build"])
    out = Path(b.get("out") or d.get("root") or Path(cfg["output_dir"]) / "dataset").expanduser()
    manifest = out / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("complete"):
        return out
    inputs = b.get("inputs") or [PACKAGED]
    src = None
    for item in inputs:
        if item == PACKAGED:
            src = packaged_identity_folders(out.parent / f"{out.name}_packaged_photos")
            break
        if Path(item).expanduser().exists():
            src = Path(item).expanduser()
            break
    if src is None:
        raise DenseFaceInputError(f"data.build.inputs: none of {inputs} exists (give photo folders, a CSV layout "
                                  f"or '{PACKAGED}')")
    argv = ["--input", str(src), "--out", str(out), "--workers", str(int(b.get("workers") or 1)),
            "--landmarker", _landmarker(b.get("landmarker")), "--quiet"]
    model = b.get("insightface_model")
    if model == RANDOM_ARCFACE:
        from ..dense_face_core.random_weights import DEMO_ID_PACK, RANDOM_ARCFACE_FILE, export_random_arcface

        pack = out.parent / f"{out.name}_insightface" / "models" / DEMO_ID_PACK
        if not (pack / RANDOM_ARCFACE_FILE).is_file():
            export_random_arcface(pack / RANDOM_ARCFACE_FILE, seed=int(b.get("arcface_seed") or 0))
        argv += ["--insightface-model", str(pack)]
    elif model:
        argv += ["--insightface-model", str(model)]
    argv += [str(a) for a in b.get("args") or []]
    log(f"dense-face train: building the dataset from {src} into {out}")
    if build_main(argv) != 0:
        raise DenseFaceInputError(f"the dataset build into {out} failed (see above)")
    return out


def embedding_model_name(cfg: dict, root: Path) -> str:
    """The identity network the projector learns from, as recorded by the builder (or the config)."""
    if cfg["data"].get("id_embedding_model"):
        return str(cfg["data"]["id_embedding_model"])
    manifest = root / "manifest.json"
    if manifest.is_file():
        emb = json.loads(manifest.read_text()).get("embeddings") or {}
        if emb.get("present") and emb.get("model"):
            return str(emb["model"])
    if cfg["data"].get("require_embeddings", True):
        raise DenseFaceInputError(
            f"{root} has no identity embeddings (built without --insightface-model); the identity path cannot "
            "learn. Rebuild with the ArcFace model, or set data.require_embeddings=false and "
            "data.id_embedding_model to train pose/adapter/head only")
    return "none"


def run_dataset(cfg: dict, accelerator):
    """(dataset, its root or synthetic name, identity model name). The main process builds
    the shards when asked; the other ranks wait, then only locate the finished build."""
    d, t = cfg["data"], cfg["train"]
    if int(d["synthetic"] or 0) > 0:
        dataset = SyntheticPairs(int(d["synthetic"]), int(d["image_size"]), int(d["target_size"]), int(t["seed"]))
        return dataset, f"synthetic({int(d['synthetic'])})", d["id_embedding_model"] or "synthetic"
    from .dataset import DenseFacePairs

    main = accelerator.is_main_process
    if main:
        root = ensure_dataset(cfg)
    accelerator.wait_for_everyone()
    if not main:
        root = ensure_dataset(cfg)  # now only locates the finished build
    id_model = embedding_model_name(cfg, root)
    if use_stream(d, root):
        from .dataset import DenseFaceStream

        dataset = DenseFaceStream(root, image_size=int(d["image_size"]), target_size=int(d["target_size"]),
                                  seed=int(t["seed"]), rank=accelerator.process_index,
                                  world_size=accelerator.num_processes, shuffle_buffer=int(d["shuffle_buffer"]),
                                  repeat=True, heatmap_sigma=float(d["heatmap_sigma"]),
                                  require_embeddings=bool(d["require_embeddings"]))
        return dataset, root, id_model
    dataset = DenseFacePairs(root, image_size=int(d["image_size"]), target_size=int(d["target_size"]),
                             seed=int(t["seed"]), min_images_per_identity=int(d["min_images_per_identity"]),
                             heatmap_sigma=float(d["heatmap_sigma"]),
                             require_embeddings=bool(d["require_embeddings"]))
    return dataset, root, id_model


STREAM_AUTO_SAMPLES = 50_000  # data.stream=auto streams sets larger than this


def use_stream(d: dict, root) -> bool:
    """data.stream: true / false, or auto: stream when the build holds more than STREAM_AUTO_SAMPLES samples."""
    choice = d.get("stream", "auto")
    if choice != "auto":
        return bool(choice)
    from .dataset import read_manifest

    manifest = read_manifest(root) or {}
    return int(manifest.get("samples") or 0) > STREAM_AUTO_SAMPLES


def make_loader(cfg: dict, dataset, rank: int, world: int, start: int, device) -> torch.utils.data.DataLoader:
    """Batches of this rank from its sample ``start`` on (see :class:`ResumableSampler`; a stream
    resumes itself, see ``DenseFaceStream.resume``)."""
    workers = int(cfg["data"]["num_workers"])
    if isinstance(dataset, torch.utils.data.IterableDataset):
        batch = int(cfg["train"]["batch_size"])
        dataset.resume(start, batch)
        return torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers,
                                           persistent_workers=workers > 0, pin_memory=device.type == "cuda",
                                           drop_last=True)
    sampler = ResumableSampler(len(dataset), rank, world, int(cfg["train"]["seed"]), start=start)
    return torch.utils.data.DataLoader(EpochItems(dataset), batch_size=int(cfg["train"]["batch_size"]),
                                       sampler=sampler, num_workers=workers, persistent_workers=workers > 0,
                                       pin_memory=device.type == "cuda", drop_last=True)


class EpochItems(torch.utils.data.Dataset):
    """Items addressed as (epoch, index), so DataLoader workers see the epoch (reference redraw)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, i = key
        if getattr(self.dataset, "epoch", epoch) != epoch:
            self.dataset.set_epoch(epoch)
        return self.dataset[i]


class ResumableSampler(torch.utils.data.Sampler):
    """Endless (epoch, index) stream for one rank, starting at sample ``start`` of that rank.

    Epoch e visits ``permutation(seed, e)`` padded by wrap-around to a multiple of the world
    size, rank r taking every world-th item: every rank gets the same count, so DDP stays in step.
    """

    def __init__(self, n: int, rank: int, world_size: int, seed: int, start: int = 0):
        if n < 1:
            raise DenseFaceInputError("the dataset is empty")
        self.n, self.rank, self.world, self.seed, self.start = n, rank, world_size, seed, int(start)
        self.per_rank = math.ceil(n / world_size)

    def order(self, epoch: int) -> np.ndarray:
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return np.resize(perm, self.per_rank * self.world)[self.rank::self.world]

    def __iter__(self):
        epoch, offset = divmod(self.start, self.per_rank)
        while True:
            mine = self.order(epoch)
            for j in range(offset, self.per_rank):
                yield epoch, int(mine[j])
            epoch, offset = epoch + 1, 0


class SyntheticPairs(torch.utils.data.Dataset):
    """Random samples with the real dataset's keys and shapes (benchmarks and smoke runs without
    photos or MediaPipe); deterministic per (seed, index). Nothing here is a face."""

    def __init__(self, n: int, image_size: int = 256, target_size: int = 64, seed: int = 0):
        self.n, self.image_size, self.target_size, self.seed = int(n), int(image_size), int(target_size), int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, i: int) -> dict:
        from ..dense_face_core.dense_targets import landmark_heatmaps
        from ..dense_face_core.pose import draw_pose_image

        rng = np.random.default_rng([self.seed, int(i)])
        s, t = self.image_size, self.target_size
        pose = rng.uniform(-30, 30, 3).astype(np.float32)  # pitch, yaw, roll
        lms = np.concatenate([rng.uniform(0.25, 0.75, (478, 2)), rng.normal(0, 0.02, (478, 1))], 1).astype(np.float32)
        emb = rng.normal(size=512).astype(np.float32)
        pose_img = draw_pose_image(float(pose[1]), float(pose[0]), float(pose[2]), size=s)
        return {
            "image": torch.from_numpy(rng.uniform(-1, 1, (3, s, s)).astype(np.float32)),
            "pose_image": torch.from_numpy(pose_img.transpose(2, 0, 1).astype(np.float32) / 255.0),
            "caption": "a close-up photo of * .",
            "embedding": torch.from_numpy(emb / np.linalg.norm(emb)),
            "has_embedding": torch.tensor(True),
            "heatmaps": torch.from_numpy(landmark_heatmaps(lms, t, 1.0)),
            "parsing": torch.from_numpy(rng.integers(0, 10, (t, t)).astype(np.int64)),
            "depth": torch.from_numpy(rng.normal(0, 0.05, (1, t, t)).astype(np.float32)),
            "depth_mask": torch.from_numpy((rng.uniform(size=(1, t, t)) < 0.5).astype(np.float32)),
            "landmarks": torch.from_numpy(lms),
            "pose": torch.from_numpy(pose),
            "identity": f"synthetic{i}", "key": f"synthetic{i}/0", "reference_key": f"synthetic{i}/0",
            "same_image": torch.tensor(True),
        }
