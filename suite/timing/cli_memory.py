"""``python -m suite memory``: memory of a forward and of a training step per attention type.

CPU: bytes saved for backward, and peak RSS in a fresh process per configuration.
CUDA: peak allocated memory (``reset_peak_memory_stats`` / ``max_memory_allocated``), in a new
interpreter per configuration, killed after ``--timeout-s``.
See :mod:`suite.timing.memory` for the method.

Writes into ``--out`` (default ``reports/memory``) ``records.jsonl`` (raw, naming the
environment) and ``memory.csv`` (tidy, one row per configuration, bytes).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import UsageError
from ..options import setting
from ..records import FolderLockedError, environment_columns
from ..stage import rewrite_tables, run_stage
from ..stages import stage
from .cli_common import measurement_settings, plan_sweep
from .grid import Config
from .memory import ISOLATIONS, measure_memory_cpu, measure_memory_cuda_isolated
from .sweep import GridSettings, add_grid_arguments, stage_table
from .workloads import classify_error

__all__ = ["MemorySettings", "SETTINGS", "add_arguments", "main", "measure_memory", "tables", "LEADING_COLUMNS"]

RECORDS_FILE = str(stage("memory").records_file)
"""The stage's raw records in its folder (:mod:`suite.stages`)."""

LEADING_COLUMNS = (
    "attn", "level", "arch", "mode", "device", "dtype", "memory_format", "compile",
    "batch", "channels", "size", "threads", "status", "message",
    "input_bytes", "output_bytes", "param_bytes", "act_saved_bytes", "act_saved_tensors",
    "step_rss_bytes", "peak_rss_bytes", "rss_before_bytes",
    "cuda_step_peak_bytes", "cuda_peak_bytes", "isolation",
)


@dataclass
class MemorySettings(GridSettings):
    """The memory stage's settings (one flag per field; ``python -m suite memory --help``)."""

    out: Path = setting("--out", Path("reports/memory"))
    isolation: str = setting("--isolation", "forkserver", choices=ISOLATIONS,
                             default_text="forkserver; CPU: a fresh process per configuration")


SETTINGS = MemorySettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_grid_arguments(parser, "memory", MemorySettings)


def measure_memory(config: Config, *, isolation: str = "forkserver", timeout_s: float = 300.0) -> dict[str, Any]:
    """One configuration's memory record (fields only; the sweep adds config and environment),
    measured in a fresh process: ``isolation`` on the CPU, a spawned interpreter on CUDA; one that
    takes more than ``timeout_s`` is a ``timeout``."""
    if config.compile != "eager":
        # a compiled or exported graph's memory is another runtime's; this stage measures PyTorch eager
        raise NotImplementedError(f"the memory stage measures eager execution only, not {config.compile}; "
                                  "use --compile eager")
    if config.torch_device.type == "cuda":
        fields = measure_memory_cuda_isolated(config, timeout_s=timeout_s)
    else:
        fields = measure_memory_cpu(config, isolation=isolation, timeout_s=timeout_s)
    return {"record": "memory", "status": "ok", "message": "", **fields}


def tables(records: list[dict[str, Any]], folder: Path | None = None) -> dict[str, pd.DataFrame]:
    """The memory stage's table, ``memory.csv``, from its records (``folder``, where the
    records are, is not read)."""
    return {"memory.csv": stage_table(records, LEADING_COLUMNS, "memory")}


def _rows(records: list[dict[str, Any]]) -> int:
    """How many rows ``memory.csv`` has for these records."""
    return sum(r.get("record", "memory") == "memory" for r in records)


def main(settings: MemorySettings) -> int:
    """Plan the grid (refused input is a :class:`~suite.errors.UsageError`), then list it
    (``--dry-run``), rewrite the table (``--tables-only``) or measure each configuration in a
    fresh process; 0 once the table is written, 130 when interrupted."""
    plan = plan_sweep(settings, "memory")
    configs = plan.configs
    if settings.dry_run:
        for config in configs:
            print(config.key())
        return 0
    out: Path = settings.out
    if settings.tables_only:
        run = rewrite_tables(out, RECORDS_FILE, tables)
        print(f"memory: {_rows(run.records)} rows in {out / 'memory.csv'}, from the records", file=sys.stderr)
        return 0
    try:
        with measurement_settings(settings, plan) as environment:
            result, run = run_stage(
                configs, out, RECORDS_FILE,
                lambda c: measure_memory(c, isolation=settings.isolation, timeout_s=settings.timeout_s), tables,
                environment=lambda: environment_columns(environment), classify=classify_error, force=settings.force,
                retry_failed=settings.retry_failed, limit=settings.limit, progress=not settings.no_progress,
                desc="memory",
            )
    except FolderLockedError as exc:
        raise UsageError(str(exc)) from exc
    print(f"memory: {result.measured} measured, {result.failed} failed (rows with a status), "
          f"{result.skipped} already recorded; {_rows(run.records)} rows in {out / 'memory.csv'}", file=sys.stderr)
    return 130 if result.interrupted else 0
