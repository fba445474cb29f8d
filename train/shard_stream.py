"""The order in which :class:`~train.dataset.DenseFaceStream` visits the shards, and a reader that
follows it with sequential reads only, from any position.

An epoch of one consumer (a rank's DataLoader worker) is planned from the shards' index files
alone, without reading a tar: its shards (every ``consumers``-th of the epoch's shuffled list, or
every shard with identity groups dealt out), the pairs of each identity group (every sample a
target once, a reference drawn from the group) and the shuffle buffer, simulated on sample
references (the buffer's random draws depend only on how many items pass, not on their content).
The plan is a list of ``(shard, target, reference)`` sample indices in output order.

The reader then walks the consumer's shards in order and keeps only the samples still ahead in the
plan, so the memory held is about the shuffle buffer, and resuming at position ``k`` of an epoch
opens no shard whose samples were all used before ``k``: the same items, in the same order, as an
uninterrupted stream.
"""
from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from . import shards as S

PairRef = tuple[int, int, int]  # (shard number, target sample, reference sample)


def identity_groups(samples: list[dict]) -> list[range]:
    """Runs of consecutive samples of one identity (a shard holds whole identities, in order)."""
    groups, start = [], 0
    for i in range(1, len(samples) + 1):
        if i == len(samples) or samples[i]["identity"] != samples[start]["identity"]:
            if i > start:
                groups.append(range(start, i))
            start = i
    return groups


def pick_reference(n: int, target: int, rng: np.random.Generator) -> int:
    """A reference index for ``target`` in a group of ``n``: another image whenever there is one."""
    if n <= 1:
        return target
    r = int(rng.integers(n - 1))
    return r + 1 if r >= target else r


def consumer_shards(n_shards: int, seed: int, epoch: int, slot: int, consumers: int, split: str,
                    shuffle: bool) -> tuple[list[int], str]:
    """(this consumer's shards in reading order, the split used: ``shard`` or ``group``)."""
    order = list(range(n_shards))
    if shuffle:
        np.random.default_rng([seed, epoch]).shuffle(order)
    if split == "auto":
        split = "shard" if n_shards >= consumers else "group"
    return (order[slot::consumers] if split == "shard" else order), split


def epoch_plan(samples_of: Callable[[int], list[dict]], n_shards: int, *, seed: int, epoch: int, slot: int,
               consumers: int, split: str, shuffle: bool, shuffle_buffer: int, buffer_seed) -> list[PairRef]:
    """One consumer's pairs of one epoch, in output order (see the module docstring)."""
    mine, split = consumer_shards(n_shards, seed, epoch, slot, consumers, split, shuffle)
    pairs: list[PairRef] = []
    group_no = 0
    for si in mine:
        for gi, group in enumerate(identity_groups(samples_of(si))):
            group_no += 1
            if split == "group" and (group_no - 1) % consumers != slot:
                continue
            rng = np.random.default_rng([seed, epoch, si, gi])
            targets = np.arange(len(group))
            if shuffle:
                rng.shuffle(targets)
            for t in targets:
                r = pick_reference(len(group), int(t), rng)
                pairs.append((si, group[int(t)], group[r]))
    if not shuffle or shuffle_buffer <= 1:
        return pairs
    rng = np.random.default_rng(buffer_seed)
    out, buf = [], []
    for p in pairs:
        if len(buf) < shuffle_buffer:
            buf.append(p)
            continue
        j = int(rng.integers(len(buf)))
        out.append(buf[j])
        buf[j] = p
    rng.shuffle(buf)
    out += buf
    return out


def shard_read_order(plan: list[PairRef]) -> list[int]:
    """The shards a plan reads, in the order it first needs them."""
    return list(dict.fromkeys(p[0] for p in plan))


def follow_plan(plan: list[PairRef], start: int, paths: list[Path], samples_of: Callable[[int], list[dict]],
                fields_of: Callable[[int], object], prune: Callable[[dict], dict]) -> Iterator[tuple[dict, dict, bool]]:
    """(target files, reference files, same image) of ``plan[start:]``, reading each needed shard once,
    sequentially, keeping only samples still ahead."""
    ahead = plan[start:]
    uses = collections.Counter()
    for si, t, r in ahead:
        uses[(si, t)] += 1
        uses[(si, r)] += 1
    loaded: dict[tuple[int, int], dict] = {}
    reading = _read_needed(shard_read_order(ahead), paths, samples_of, fields_of, prune, uses)
    for si, t, r in ahead:
        while (si, t) not in loaded or (si, r) not in loaded:
            try:
                k, files = next(reading)
            except StopIteration:
                raise OSError(f"shard {paths[si]} changed while it was read (sample {t} or {r} missing)") from None
            loaded[k] = files
        tf, rf = loaded[(si, t)], loaded[(si, r)]
        for k in ((si, t), (si, r)):
            uses[k] -= 1
            if uses[k] == 0:
                del loaded[k]
        yield tf, rf, t == r


def _read_needed(order: list[int], paths, samples_of, fields_of, prune, uses) -> Iterator[tuple[tuple[int, int], dict]]:
    for si in order:
        position = {s["key"]: i for i, s in enumerate(samples_of(si))}
        for key, files in S.iter_shard(paths[si], fields_of(si)):
            i = position.get(key)
            if i is not None and uses[(si, i)] > 0:
                yield (si, i), prune(files)


def worker_position(samples_seen: int, batch_size: int, worker: int, num_workers: int) -> int:
    """Items worker ``worker`` of ``num_workers`` has produced when its rank has consumed
    ``samples_seen`` samples: a DataLoader takes whole batches from its workers in turn."""
    batches = int(samples_seen) // max(1, int(batch_size))
    mine = max(0, (batches - worker + num_workers - 1) // num_workers) if num_workers > 0 else batches
    return mine * int(batch_size)
