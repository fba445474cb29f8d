"""The streaming reader of the builder's shards (train.dataset.DenseFaceStream, train.shard_stream):
every sample exactly once per epoch across ranks and DataLoader workers, and a resumed stream giving
exactly the items an uninterrupted one gives, without opening the shards it has finished."""
from __future__ import annotations

import collections
from pathlib import Path

import pytest

from conftest import CELEBS, LANDMARKER as TASK, SHARED

pytestmark = [pytest.mark.filterwarnings("ignore:.*without --insightface-model:UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """36 photos of 3 identities in 9 shards of 4 (an identity of 12 is cut into shards of 4)."""
    if not (CELEBS.is_dir() and TASK.is_file()):
        pytest.skip(f"shared test data or the MediaPipe model not found under {SHARED}")
    from dense_face.train.dataset_builder import main

    out = tmp_path_factory.mktemp("stream_shards")
    assert main(["--input", str(CELEBS), "--out", str(out), "--workers", "2", "--max-images", "36",
                 "--keep-grayscale", "--min-crop", "48", "--shard-size", "4", "--crop-sizes", "256",
                 "--landmarker", str(TASK), "--quiet"]) == 0
    return out


def _all_keys(root: Path) -> list[str]:
    from dense_face.train.dataset import shard_samples

    return [s["key"] for p in sorted((root / "shards").glob("*.tar")) for s in shard_samples(p)]


def _stream(root, **kw):
    from dense_face.train.dataset import DenseFaceStream

    kw.setdefault("seed", 3)
    kw.setdefault("shuffle_buffer", 6)
    return DenseFaceStream(root, **kw)


def _loader_keys(ds, batches: int | None, batch_size: int, workers: int) -> list[list[str]]:
    import torch

    out = []
    for b in torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers):
        out.append(list(b["key"]))
        if batches is not None and len(out) == batches:
            break
    return out


def test_every_sample_once_per_epoch_across_ranks_and_workers(shards):
    everything = _all_keys(shards)
    assert len(everything) >= 30 and len(list((shards / "shards").glob("*.tar"))) >= 8
    # 2 ranks x 2 DataLoader workers, decoded batches: each sample is a target exactly once
    seen = []
    for rank in (0, 1):
        got = _loader_keys(_stream(shards, rank=rank, world_size=2), None, 3, 2)
        seen += [k for b in got for k in b]
    assert sorted(seen) == sorted(everything)
    # both ranks busy, each identity's references from the identity, an epoch order per epoch
    per_rank = [[k for k, *_ in _stream(shards, rank=r, world_size=2).iter_keys()] for r in (0, 1)]
    assert all(per_rank) and not set(per_rank[0]) & set(per_rank[1])
    for key, ref, ident, same in _stream(shards, rank=0, world_size=1).iter_keys():
        assert key.split("/")[0] == ref.split("/")[0] and (key == ref) == same
    # repeat=True: consecutive epochs, each a full pass in another order
    n = len(everything)
    ds = _stream(shards, rank=0, world_size=1, repeat=True)
    it = ds.iter_keys()
    e0 = [next(it)[0] for _ in range(n)]
    e1 = [next(it)[0] for _ in range(n)]
    assert sorted(e0) == sorted(e1) == sorted(everything) and e0 != e1
    # fewer shards than consumers (2 ranks x 8): identity groups are dealt out, still each once
    parts = [[k for k, *_ in _stream(shards, rank=r, world_size=16).iter_keys()] for r in range(16)]
    assert sorted(k for p in parts for k in p) == sorted(everything)


def test_resume_mid_epoch_gives_the_same_items(shards, monkeypatch):
    """A rank that consumed 7 batches (of 3, 2 workers) resumes: batches 7.. are those of an
    uninterrupted stream, across the epoch boundary, and finished shards are not opened again."""
    from dense_face.train import shards as S
    from dense_face.train.shard_stream import shard_read_order, worker_position

    n = len(_all_keys(shards))
    total = (2 * n) // 3 + 2  # past the end of the first epoch
    whole = _loader_keys(_stream(shards, rank=1, world_size=2, repeat=True), total, 3, 2)
    resumed = _stream(shards, rank=1, world_size=2, repeat=True)
    resumed.resume(7 * 3, batch_size=3)
    assert _loader_keys(resumed, total - 7, 3, 2) == whole[7:]
    # the same in the main process (no workers), with a spy on the tar reads
    plain = [k for k, *_ in _stream(shards, rank=0, world_size=2).iter_keys()]
    opened = []
    real = S.iter_shard

    def spy(path, fields=None):
        opened.append(Path(path).name)
        return real(path, fields)

    monkeypatch.setattr(S, "iter_shard", spy)
    ds = _stream(shards, rank=0, world_size=2)
    ds.resume(10, batch_size=1)
    assert [k for k, *_ in ds.iter_keys()] == plain[10:]
    plan = ds.plan(0)
    still = {ds.shards[si].name for si in shard_read_order(plan[10:])}
    finished = {ds.shards[si].name for si in shard_read_order(plan)} - still
    assert set(opened) == still and finished, "a resumed stream opens only shards it still needs"
    assert collections.Counter(opened).most_common(1)[0][1] == 1  # each read once, sequentially
    # how far each DataLoader worker has got when its rank consumed some samples
    assert [worker_position(21, 3, w, 2) for w in (0, 1)] == [12, 9]
    assert [worker_position(5, 2, w, 1) for w in (0,)] == [4]
    with pytest.raises(ValueError):
        ds.resume(-1)


def test_trainer_loader_streams_and_resumes(shards, tmp_path):
    """The trainer's data path with data.stream=true: DenseFaceStream in a DataLoader, resumed at
    the samples a checkpoint counted, gives the batches an uninterrupted run gets."""
    import torch
    from accelerate import Accelerator

    from dense_face.train.config import load_config
    from dense_face.train.data_prep import make_loader, run_dataset, use_stream
    from dense_face.train.dataset import DenseFaceStream

    cfg = load_config(None, [f"data.root={shards}", "data.stream=true", "data.shuffle_buffer=5",
                             "data.num_workers=2", "data.require_embeddings=false", "train.batch_size=2",
                             f"output_dir={tmp_path}", "base.kind=tiny_random", "data.id_embedding_model=none"])
    acc = Accelerator(cpu=True)
    dataset, root, _ = run_dataset(cfg, acc)
    assert isinstance(dataset, DenseFaceStream) and dataset.repeat and Path(root) == shards
    assert not use_stream({"stream": "auto"}, shards)  # a small build stays map-style by default
    device = torch.device("cpu")

    def keys(start, n):
        it = iter(make_loader(cfg, dataset, 0, 1, start, device))
        return [list(next(it)["key"]) for _ in range(n)]

    whole = keys(0, 12)
    assert keys(5 * 2, 7) == whole[5:]
