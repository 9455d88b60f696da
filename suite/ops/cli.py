"""``python -m suite ops``: where each design's time goes, op by op.

For every configuration of the latency stage's grid (the same flags, axes and defaults, on the
CPU; :func:`suite.timing.cli_common.plan_sweep`), the module's step and its reference's step
(:mod:`suite.timing.workloads`) are each called a few times, then ``--profile-calls`` times under
``torch.profiler``; each op's self CPU time per call, its share of the step's total self time
and its calls per step are recorded (:mod:`suite.ops.profile`). Configurations run one after
the other in this process.

Profiling costs time at every op it records: these times are inflated by the profiler's
overhead and are for the breakdown (which ops, what share), not for latency; the latency
stage's figures are the latency.

Writes into ``--out`` (default ``reports/ops``) ``ops_records.jsonl`` (one record per
configuration, naming the environment written once to ``environments.jsonl``; a re-run skips
configurations already recorded unless ``--force``) and ``ops.csv`` (one row per configuration,
role -- ``module`` or ``reference`` -- and op; a configuration that failed is one row with its
status and message), rewritten atomically from the records.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..options import Option, add_options, options_of, positive_int, setting
from ..records import FolderLockedError, environment_columns
from ..shard import Shard
from ..stage import rewrite_tables, run_stage
from ..stages import stage
from ..timing.cli_common import SweepPlan, measurement_settings, plan_sweep
from ..timing.grid import Config
from ..timing.sweep import GridSettings
from ..timing.workloads import classify_error
from .tables import tables

__all__ = ["OpsSettings", "SETTINGS", "add_arguments", "main", "plan_ops", "measure_ops"]

RECORDS_FILE = str(stage("ops").records_file)
"""The stage's raw records in its folder (:mod:`suite.stages`)."""

GRID_STAGE = "latency"
"""The stage whose grid (default axes of each preset) this stage profiles."""


def _grid_option(name: str) -> Option:
    """The latency grid's option of the field ``name`` (one spelling and help for both stages)."""
    return next(option for f, option in options_of(GridSettings) if f.name == name)


@dataclass
class OpsSettings:
    """The ops stage's settings (one flag per field; ``python -m suite ops --help``). ``None`` on
    an axis means the latency stage's (its ``--preset``, cpu by default)."""

    attn: str = setting("--attn", "*", default_text="'*', every registered type")
    level: str = setting("--level", "module")
    arch: tuple[str, ...] = setting("--arch", ("resnet18",))
    preset: str | None = setting(_grid_option("preset"), None, default_text="cpu, the latency stage's axes")
    batch: tuple[int, ...] | None = setting("--batch", None, default_text="the latency stage's")
    size: tuple[int, ...] | None = setting("--size", None, default_text="the latency stage's")
    channels: tuple[int, ...] | None = setting("--channels", None, default_text="the latency stage's")
    dtype: tuple[str, ...] | None = setting(_grid_option("dtype"), None, default_text="the latency stage's")
    memory_format: tuple[str, ...] | None = setting(_grid_option("memory_format"), None,
                                                    default_text="the latency stage's")
    compile: tuple[str, ...] | None = setting(_grid_option("compile"), None, default_text="the latency stage's")
    mode: tuple[str, ...] | None = setting(_grid_option("mode"), None, default_text="the latency stage's")
    threads: int = setting("--threads", 1, default_text="1, as the latency stage on CPU")
    calls: int = setting(Option("--profile-calls", "calls of each step profiled, after a warm-up of a few calls",
                                parse=positive_int, metavar="N", group="what to measure"), 20)
    shard: Shard | None = setting("--shard", None, default_text="the whole plan")
    out: Path = setting("--out", Path("reports/ops"))
    force: bool = setting("--force", False)
    dry_run: bool = setting("--dry-run", False)
    tables_only: bool = setting("--tables-only", False)
    no_progress: bool = setting("--no-progress", False)


SETTINGS = OpsSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ops stage's flags, from :class:`OpsSettings`."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "Axes multiply as in the latency stage; each configuration's module and reference are profiled\n"
        "in this process (--profile-calls calls each, after a warm-up). ops.csv: one row per configuration, role\n"
        "(module, reference) and op: self_ms_per_call, share of the step's self time, calls_per_step.\n"
        "Profiler times are inflated by its overhead: use them for the breakdown, the latency stage's\n"
        "figures for the latency.\n"
    )
    add_options(parser, OpsSettings)


def _grid_settings(settings: OpsSettings) -> GridSettings:
    """The latency grid's settings that plan the same configurations (on the CPU)."""
    axes = ("attn", "level", "arch", "preset", "batch", "size", "channels", "dtype", "memory_format", "compile",
            "mode", "threads", "shard")
    return GridSettings(device="cpu", **{name: getattr(settings, name) for name in axes})


def plan_ops(settings: OpsSettings) -> tuple[SweepPlan, GridSettings]:
    """The plan: the latency grid's configurations, named for this stage; refused input (an
    unknown ``--attn`` pattern or ``--arch``) is a :class:`~suite.errors.UsageError`."""
    grid = _grid_settings(settings)
    plan = plan_sweep(grid, GRID_STAGE)
    plan.configs = [dataclasses.replace(config, stage="ops") for config in plan.configs]
    return plan, grid


def measure_ops(config: Config, calls: int) -> dict[str, Any]:
    """One configuration's record fields (:func:`suite.ops.profile.profile_config`)."""
    from .profile import profile_config

    return profile_config(config, calls)


def _rows(records: list[dict[str, Any]]) -> int:
    """How many configurations the records hold."""
    return sum(r.get("record", "ops") == "ops" for r in records)


def main(settings: OpsSettings) -> int:
    """Plan the grid (refused input is a :class:`~suite.errors.UsageError`), then list it
    (``--dry-run``), rewrite the table (``--tables-only``) or profile each configuration; 0 once
    the table is written, 130 when interrupted (what was recorded stays)."""
    plan, grid = plan_ops(settings)
    if settings.dry_run:
        for config in plan.configs:
            print(config.key())
        return 0
    out: Path = settings.out
    if settings.tables_only:
        run = rewrite_tables(out, RECORDS_FILE, tables)
        print(f"ops: {_rows(run.records)} configurations in {out / 'ops.csv'}, from the records", file=sys.stderr)
        return 0
    try:
        with measurement_settings(grid, plan) as environment:
            result, run = run_stage(
                plan.configs, out, RECORDS_FILE, lambda c: measure_ops(c, settings.calls), tables,
                environment=lambda: environment_columns(environment), classify=classify_error, force=settings.force,
                progress=not settings.no_progress, desc="ops",
            )
    except FolderLockedError as exc:
        raise UsageError(str(exc)) from exc
    print(f"ops: {result.measured} profiled, {result.failed} failed (rows with a status), {result.skipped} already "
          f"recorded; {_rows(run.records)} configurations in {out / 'ops.csv'}", file=sys.stderr)
    return 130 if result.interrupted else 0
