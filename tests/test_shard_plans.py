"""``--shard K/N`` splits each stage's plan into disjoint parts that together cover it, the same
on every machine: checked on the latency and memory grid plans."""

from __future__ import annotations

import pytest

from suite.shard import Shard, parse_shard, select_shard
from suite.timing.cli_common import plan_sweep
from suite.timing.cli_latency import LatencySettings
from suite.timing.cli_memory import MemorySettings


def _keys(settings: object, stage: str) -> list[str]:
    return [c.key() for c in plan_sweep(settings, stage, cpu_threads=1).configs]  # type: ignore[arg-type]


@pytest.mark.parametrize(("settings_class", "stage"), [(LatencySettings, "latency"), (MemorySettings, "memory")])
def test_the_parts_of_a_grid_are_disjoint_and_cover_it(settings_class: type, stage: str) -> None:
    grid = dict(attn="se,eca,ca", batch=(1, 2), size=(14,), channels=(64,), mode=("forward", "train"))
    whole = _keys(settings_class(**grid), stage)
    parts = [_keys(settings_class(**grid, shard=Shard(k, 3)), stage) for k in (1, 2, 3)]
    assert sorted(key for part in parts for key in part) == sorted(whole)
    assert len(set(whole)) == len(whole) == sum(map(len, parts))
    assert all(parts) and parts[0] == _keys(settings_class(**grid, shard=Shard(1, 3)), stage)  # deterministic


def test_shard_text_is_checked() -> None:
    assert parse_shard("2/8") == Shard(2, 8)
    for bad in ("0/3", "4/3", "2", "a/b", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    assert select_shard([1, 2, 3, 4, 5], Shard(2, 2)) == [2, 4]
    assert select_shard([1, 2], None) == [1, 2]

