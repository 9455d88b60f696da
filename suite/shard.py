"""Deterministic parts of a stage's plan: ``--shard K/N`` measures every N-th configuration.

A grid larger than one machine (the ``gpu-full`` profile is days of one GPU) is split into
``N`` parts that run on separate GPUs or nodes (a Slurm array job, one process per GPU of a
node). Part ``K`` (1-based) takes the configurations at positions ``K-1, K-1+N, K-1+2N, ...``
of the stage's plan, which is the same on every machine for the same settings, so the parts
are disjoint and together cover the plan. Each part writes its own folder; ``python -m suite
merge`` joins their records into one folder and one report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Shard", "parse_shard", "select_shard"]

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (1-based) of ``count`` parts."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ValueError(f"a shard is K/N with 1 <= K <= N, got {self.index}/{self.count}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"K/N"`` (``"2/8"``: the second of eight parts) as a :class:`Shard`."""
    index, sep, count = str(text).strip().partition("/")
    if not sep or not index.strip().isdigit() or not count.strip().isdigit():
        raise ValueError(f"expected K/N with whole numbers (e.g. 2/8), got {text!r}")
    return Shard(int(index), int(count))


def select_shard(items: Sequence[T], shard: Shard | None) -> list[T]:
    """The items of part ``shard`` of the plan ``items`` (all of them when ``shard`` is None)."""
    if shard is None:
        return list(items)
    return list(items[shard.index - 1::shard.count])
