"""Whether memory format, threads or runtime change the latency stage's conclusions."""

from __future__ import annotations

import pandas as pd

from suite.report.axes import axes_markdown, axis_effects


def _rows(memory_format: str, ratios: dict[str, float], threads: int = 1) -> list[dict]:
    return [{"attn": a, "level": "module", "mode": "forward", "device": "cpu", "dtype": "fp32",
             "memory_format": memory_format, "compile": "eager", "batch": 8, "channels": 64, "size": 28,
             "threads": threads, "status": "ok", "ratio": r} for a, r in ratios.items()]


def test_a_setting_that_keeps_the_ordering_does_not_change_conclusions() -> None:
    base = {"se": 1.0, "eca": 0.8, "ca": 1.5, "cbam": 2.0}
    same = {k: v * 1.05 for k, v in base.items()}
    effects = axis_effects(pd.DataFrame(_rows("contiguous", base) + _rows("channels_last", same)))
    assert len(effects) == 1
    effect = effects[0]
    assert effect.axis == "memory_format" and effect.designs == 4
    assert (effect.first, effect.second) == ("contiguous", "channels_last")  # from the default
    assert effect.spearman == 1.0 and abs(effect.median_shift - 0.05) < 1e-9
    assert not effect.changes_conclusions and effect.most_moved == ""


def test_a_reordering_or_a_large_shift_changes_conclusions() -> None:
    base = {"se": 1.0, "eca": 0.8, "ca": 1.5, "cbam": 2.0}
    swapped = {"se": 1.0, "eca": 0.8, "ca": 2.5, "cbam": 1.2}
    frame = pd.DataFrame(_rows("contiguous", base) + _rows("contiguous", swapped, threads=2))
    (effect,) = axis_effects(frame)
    assert effect.axis == "threads" and effect.spearman < 0.9 and effect.changes_conclusions
    assert effect.most_moved in {"ca", "cbam"}
    shifted = {k: v * 1.5 for k, v in base.items()}
    (effect,) = axis_effects(pd.DataFrame(_rows("contiguous", base) + _rows("channels_last", shifted)))
    assert effect.spearman == 1.0 and effect.changes_conclusions
    assert "| `memory_format` | contiguous -> channels_last" in axes_markdown(
        pd.DataFrame(_rows("contiguous", base) + _rows("channels_last", shifted)))


def test_one_setting_per_axis_gives_no_table() -> None:
    assert axes_markdown(pd.DataFrame(_rows("contiguous", {"se": 1.0, "eca": 0.8, "ca": 1.5}))) == ""
