"""Chunks: the fixed batches of a unit's images that both engines hand to every stage.

A model's output can depend on what else is in its batch (padding, kernel blocking), so
the batch of every model stage is a pure function of the input: consecutive
``--batch-size`` images of one unit, in the unit's order. The local engine and Ray run the
same chunks, which is what makes their shards byte-identical.
"""
from __future__ import annotations

from dataclasses import dataclass

from .plan import Item
from .units import Unit

DEFAULT_BATCH_SIZE = 16


@dataclass
class Chunk:
    """Images ``start .. start + len(items)`` of unit number ``unit`` (an index into the build's todo list)."""

    unit: int
    start: int
    items: list[Item]

    @property
    def slot(self) -> tuple[int, int]:
        return self.unit, self.start

    def split(self) -> list["Chunk"]:
        """One chunk per image (a crash retry looks for the image that kills its worker)."""
        return [Chunk(self.unit, self.start + k, [it]) for k, it in enumerate(self.items)]


def make_chunks(todo: list[Unit], batch_size: int) -> list[Chunk]:
    """Every unit of ``todo`` cut into chunks of ``batch_size`` images, in order."""
    size = max(1, int(batch_size))
    return [Chunk(ui, k, u.items[k:k + size]) for ui, u in enumerate(todo) for k in range(0, len(u.items), size)]
