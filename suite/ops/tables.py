"""The ops stage's tables: ``ops.csv`` (one row per configuration, role and op) from its records,
the top ops of a design (:func:`top_ops`) and the report's table of them (:func:`report_table`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..timing.sweep import records_to_frame

__all__ = ["CONFIG_COLUMNS", "LEADING_COLUMNS", "TOP_COLUMNS", "tables", "top_ops", "report_table", "ops_summary"]

CONFIG_COLUMNS: tuple[str, ...] = (
    "level", "arch", "mode", "device", "dtype", "memory_format", "compile", "batch", "channels", "size", "threads",
)
"""The axes that, with ``attn``, name one configuration in the table."""

LEADING_COLUMNS: tuple[str, ...] = (
    "attn", *CONFIG_COLUMNS, "role", "op", "self_ms_per_call", "share", "calls_per_step", "status", "message",
    "reference", "total_self_ms_per_call", "calls", "warmup", "exporter", "reference_exporter",
)

TOP_COLUMNS: tuple[str, ...] = (
    "attn", *CONFIG_COLUMNS, "role", "rank", "op", "self_ms_per_call", "share", "calls_per_step",
    "total_self_ms_per_call", "status", "message",
)
"""The columns of :func:`top_ops` and of the report's table."""


def _rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """A record's rows: one per role and op, or the record alone (a failure)."""
    base = {k: v for k, v in record.items() if k not in ("ops", "traceback", "record")}
    ops = record.get("ops") or []
    return [{**base, **op} for op in ops] if ops else [base]


def tables(records: list[dict[str, Any]], folder: Path | None = None) -> dict[str, pd.DataFrame]:
    """``ops.csv`` from the stage's records (``folder`` is not read): :data:`LEADING_COLUMNS`,
    then the rest of the record (its key, wall time, load average and environment)."""
    rows = [row for record in records if record.get("record", "ops") == "ops" for row in _rows(record)]
    return {"ops.csv": records_to_frame(rows, LEADING_COLUMNS)}


def top_ops(frame: pd.DataFrame, attn: str, n: int = 5, *, role: str = "module") -> pd.DataFrame:
    """The ``n`` ops of ``attn``'s ``role`` step (``module`` or ``reference``) with the largest
    self time, per measured configuration (rows with status ok), ranked from 1; the configurations
    in the table's order. Columns: :data:`TOP_COLUMNS`."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if frame.empty or "op" not in frame:
        return pd.DataFrame(columns=list(TOP_COLUMNS))
    rows = frame[(frame["attn"] == attn) & (frame["role"] == role) & (frame["status"] == "ok")]
    keys = [c for c in CONFIG_COLUMNS if c in rows]
    config = rows.groupby(keys, dropna=False, sort=False).ngroup() if keys else 0
    ranked = rows.assign(_config=config).sort_values(["_config", "self_ms_per_call"], ascending=[True, False],
                                                      kind="stable")
    ranked["rank"] = ranked.groupby("_config").cumcount() + 1
    top = ranked[ranked["rank"] <= n]
    return top.reindex(columns=list(TOP_COLUMNS)).reset_index(drop=True)


REPORT_TOP_N = 5
"""Ops per design and configuration in the report's table."""


def report_table(stage: Any) -> pd.DataFrame:
    """The report's ``ops.csv`` from the stage's data (:class:`suite.report.load.StageData`): each
    design's :data:`REPORT_TOP_N` ops with the largest self time per configuration (the module's
    step), and one row per configuration that failed, with its status and message."""
    frame = stage.table("ops")
    if frame.empty:
        return pd.DataFrame(columns=list(TOP_COLUMNS))
    parts = [top_ops(frame, str(attn), REPORT_TOP_N) for attn in frame["attn"].dropna().unique()]
    failed = frame[frame["status"] != "ok"].reindex(columns=list(TOP_COLUMNS))
    parts = [part for part in (*parts, failed) if not part.empty]
    if not parts:
        return pd.DataFrame(columns=list(TOP_COLUMNS))
    return pd.concat(parts, ignore_index=True)


def ops_summary(rows: dict[str, dict[str, Any]], frames: dict[str, pd.DataFrame]) -> None:
    """``ops_top``: per design, the op with the largest share of its module's step in the first
    configuration the report's ``ops.csv`` ranks (eager where measured), e.g. ``aten::mul 41%``."""
    frame = frames.get("ops", pd.DataFrame())
    if frame.empty or "rank" not in frame:
        return
    top = frame[(frame["status"] == "ok") & (frame["rank"] == 1) & (frame["role"] == "module")]
    if "compile" in top and (top["compile"] == "eager").any():
        top = top[top["compile"] == "eager"]
    for name, group in top.groupby("attn", sort=False):
        if name in rows:
            first = group.iloc[0]
            rows[name]["ops_top"] = f"{first['op']} {100 * float(first['share']):.0f}%"
