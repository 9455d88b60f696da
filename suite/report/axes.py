"""Whether a setting of the latency stage changes its conclusions: memory format, threads and
runtime.

A conclusion of the latency stage is an ordering of designs by their ratio (to the 3x3 conv at
module level, to the backbone at model level). For one axis (``memory_format``, ``threads`` or
``compile``, the runtime) and two of its values, the rows that agree on every other axis of the
configuration are paired by design; per group of paired rows (one shape, mode and level) the
Spearman rank correlation of the two ratios says how much the ordering moved (1: not at all),
and the design whose rank moved most is named. An axis changes conclusions where the
correlation falls below :data:`RANK_AGREEMENT` or the mean ratio moves by more than
:data:`RATIO_SHIFT` (relative): then both settings belong in a profile; otherwise one suffices.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

import pandas as pd

from .machines import spearman
from .tables import ok_rows

__all__ = ["AXES", "RANK_AGREEMENT", "RATIO_SHIFT", "axis_effects", "axes_markdown"]

AXES: tuple[str, ...] = ("memory_format", "threads", "compile")
"""The axes judged, as named in the latency table."""

RANK_AGREEMENT = 0.9
"""A Spearman correlation below this between two settings counts as a changed ordering."""

RATIO_SHIFT = 0.1
"""A median relative change of the designs' ratios above this counts as a changed cost."""

_CONFIG = ("level", "arch", "mode", "device", "dtype", "memory_format", "compile", "batch", "channels",
           "size", "threads")


@dataclass(frozen=True)
class AxisEffect:
    """One comparison: ``axis`` at ``first`` against ``second`` on one group of paired rows."""

    axis: str
    first: Any
    second: Any
    group: str
    designs: int
    spearman: float
    median_shift: float
    most_moved: str

    @property
    def changes_conclusions(self) -> bool:
        """Whether the ordering or the typical cost moved beyond the thresholds."""
        return (self.spearman == self.spearman and self.spearman < RANK_AGREEMENT) or abs(self.median_shift) > RATIO_SHIFT


def _group_label(keys: dict[str, Any]) -> str:
    """A few words for a group of configurations, e.g. ``module forward b8 c64 s28``."""
    parts = [str(keys.get("level", "")), str(keys.get("mode", ""))]
    if keys.get("level") == "model":
        parts.append(str(keys.get("arch", "")))
    for key, prefix in (("batch", "b"), ("channels", "c"), ("size", "s")):
        value = keys.get(key)
        if value is not None and value == value:
            parts.append(f"{prefix}{int(value)}")
    return " ".join(p for p in parts if p and p != "nan")


DEFAULTS = {"memory_format": "contiguous", "compile": "eager"}
"""The setting each comparison starts from (the first of a pair); threads go from fewest up."""


def _setting_order(axis: str, value: Any) -> tuple[int, float, str]:
    """Sort key of an axis value: the default first, then numbers by value, then by name."""
    if value == DEFAULTS.get(axis):
        return (0, 0.0, "")
    if isinstance(value, (int, float)):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def _effects_for(rows: pd.DataFrame, axis: str) -> list[AxisEffect]:
    """The comparisons of every pair of ``axis`` values over the rows that agree elsewhere."""
    others = [c for c in _CONFIG if c in rows and c != axis]
    values = sorted(rows[axis].dropna().unique().tolist(), key=lambda v: _setting_order(axis, v))
    effects = []
    for first, second in combinations(values, 2):
        a = rows[rows[axis] == first].set_index([*others, "attn"])["ratio"]
        b = rows[rows[axis] == second].set_index([*others, "attn"])["ratio"]
        paired = pd.concat({"a": a, "b": b}, axis=1, join="inner").dropna().reset_index()
        for keys, group in paired.groupby(others, dropna=False):
            if len(group) < 3:
                continue
            ranks_a, ranks_b = group["a"].rank(), group["b"].rank()
            moved = (ranks_a - ranks_b).abs()
            effects.append(AxisEffect(
                axis=axis, first=first, second=second,
                group=_group_label(dict(zip(others, keys if isinstance(keys, tuple) else (keys,), strict=True))),
                designs=len(group), spearman=spearman(group["a"], group["b"]),
                median_shift=float((group["b"] / group["a"] - 1).median()),
                most_moved=str(group.loc[moved.idxmax(), "attn"]) if moved.max() > 0 else ""))
    return effects


def axis_effects(latency: pd.DataFrame) -> list[AxisEffect]:
    """Every comparison the latency table allows, over its ``ok`` rows with a ratio."""
    ok = ok_rows(latency)
    if ok.empty or "ratio" not in ok:
        return []
    ok = ok[ok["ratio"].notna() & (ok["attn"] != "none")]  # the A/A control is not a design
    return [e for axis in AXES if axis in ok and ok[axis].nunique() > 1 for e in _effects_for(ok, axis)]


def axes_markdown(latency: pd.DataFrame) -> str:
    """The comparisons as a table with a verdict per axis; empty when no axis had two values."""
    effects = axis_effects(latency)
    if not effects:
        return ""
    lines = ["| axis | settings | configuration | designs | Spearman | median ratio change | rank moved most | "
             "changes conclusions |", "|---|---|---|---|---|---|---|---|"]
    for e in effects:
        lines.append(f"| `{e.axis}` | {e.first} -> {e.second} | {e.group} | {e.designs} | {e.spearman:.2f} | "
                     f"{e.median_shift:+.1%} | {f'`{e.most_moved}`' if e.most_moved else ''} | "
                     f"{'yes' if e.changes_conclusions else 'no'} |")
    verdicts = []
    for axis in dict.fromkeys(e.axis for e in effects):
        mine = [e for e in effects if e.axis == axis]
        changed = sum(e.changes_conclusions for e in mine)
        verdicts.append(f"`{axis}` changes the ordering or the typical cost in {changed} of {len(mine)} "
                        f"configuration(s)")
    intro = (f"Each row pairs the designs measured at two settings of one axis, all else equal: the Spearman "
             f"correlation of their ratios (1: same ordering) and the median relative change of the ratio. "
             f"'changes conclusions' is a correlation below {RANK_AGREEMENT} or a median change above "
             f"{RATIO_SHIFT:.0%}.")
    return "\n".join([intro, "", *lines, "", "; ".join(verdicts) + "."]) + "\n"
