"""``python -m suite cost``: parameters, MACs, FLOPs and activation bytes, every counter side by side.

Writes, under ``--out``:

* ``cost_records.jsonl``: raw records (one per configuration, naming the run's environment,
  which is written once to ``environments.jsonl``); a re-run skips what is already there with
  status ``ok`` (``--force`` re-measures);
* ``cost_module.csv``: one row per attention type x input shape, one column per counter;
* ``cost_model.csv``: one row per architecture x attention type, absolute and ``delta_*``
  over the same architecture without attention; an entry with no place in an architecture
  gets a row with status ``refused`` and build_model's reason.

Both tables are rebuilt from all the records in the folder after each run. Column
conventions: ``macs_*`` count one multiply-accumulate as 1, ``flops_*`` count 2 per MAC;
see ``suite/cost/counters.py`` for each column and ``suite/cost/op_rules.py`` for the rules.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import UsageError
from ..options import Option, add_options, positive_int, setting
from ..shard import Shard, select_shard
from ..stages import stage

if TYPE_CHECKING:
    from .grid import Job

__all__ = ["CostSettings", "SETTINGS", "add_arguments", "main", "plan_jobs"]


@dataclass
class CostSettings:
    """The cost stage's settings (one flag per field; ``python -m suite cost --help``)."""

    attn: str = setting("--attn", "*", default_text="'*', every registered type")
    level: str = setting("--level", "module", choices=("module", "model", "both"))
    arch: tuple[str, ...] | None = setting("--arch", None, default_text="every one of modules.list_archs()")
    channels: tuple[int, ...] = setting("--channels", (64, 256, 1024))
    size: tuple[int, ...] = setting("--size", (56, 28, 14, 7))
    model_size: int = setting(Option(
        "--model-size", "model level: the network's input image is S x S (the module level takes --size)",
        parse=positive_int, metavar="S", group="what to measure"), 224)
    batch: tuple[int, ...] = setting("--batch", (1,))
    threads: int = setting("--threads", 1, default_text="1 (counting times nothing; one thread is kind to a shared machine)")
    shard: Shard | None = setting("--shard", None, default_text="the whole plan")
    out: Path = setting("--out", Path("reports/cost"))
    force: bool = setting("--force", False)
    no_progress: bool = setting("--no-progress", False)
    tables_only: bool = setting("--tables-only", False)


SETTINGS = CostSettings

RECORDS_FILE = str(stage("cost").records_file)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The cost stage's flags, from :class:`CostSettings`. Module level: the grid of shapes, one
    module at a time (a few minutes for the whole registry on 2 cores); model level: whole
    backbones (1-4 s per model), each without attention (the baseline of the ``delta_*`` columns)
    and with each attention type at its canonical place; ``both``: the two."""
    parser.epilog = ("--level module: the grid of shapes, one module at a time; model: whole backbones, each "
                     "without attention (the baseline of the delta_* columns) and with each attention type at its "
                     "canonical place; both: the two.")
    add_options(parser, CostSettings)


def _quiet_counter_imports() -> None:
    """Silence the warnings the counters' imports raise (fvcore, thop): noise about their own
    code, not about anything this stage does."""
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*distutils Version.*", category=DeprecationWarning)


def plan_jobs(settings: CostSettings) -> list[Job]:
    """The jobs the settings ask for (part ``--shard`` of them), in the order they run; an
    unknown ``--attn`` pattern or ``--arch`` is a :class:`~suite.errors.UsageError`."""
    import modules

    _quiet_counter_imports()
    from .grid import model_jobs, module_jobs

    try:
        names = modules.list_attention(settings.attn, strict=True)
    except ValueError as error:
        raise UsageError(f"--attn: {error}") from None
    archs = settings.arch if settings.arch is not None else modules.list_archs()
    unknown = [a for a in archs if a not in modules.list_archs()]
    if unknown:
        raise UsageError(f"unknown --arch {', '.join(unknown)}; available: {', '.join(modules.list_archs())}")
    jobs = []
    for batch in settings.batch:
        if settings.level in ("module", "both"):
            jobs += module_jobs(names, settings.channels, settings.size, batch)
        if settings.level in ("model", "both"):
            jobs += model_jobs(names, archs, settings.model_size, batch)
    return select_shard(jobs, settings.shard)


def main(settings: CostSettings) -> int:
    """Run the selected grids. Returns 0 once the tables are written (rows with status
    ``error`` are listed on stderr, they do not fail the run); bad options raise
    :class:`~suite.errors.UsageError`."""
    _quiet_counter_imports()
    from ..env import collect_environment
    from ..records import FolderLockedError, environment_columns
    from ..stage import rewrite_tables, run_stage
    from .grid import classify_cost_error, measure_cost, tables

    if settings.tables_only:
        written = rewrite_tables(settings.out, RECORDS_FILE, tables).written
        print(f"cost: wrote {', '.join(map(str, written)) or 'nothing (no records)'} from the records", file=sys.stderr)
        return 0

    jobs = plan_jobs(settings)

    torch.set_num_threads(settings.threads)
    try:
        # counting is deterministic: a job that failed is counted again on the next run
        result, run = run_stage(
            jobs, settings.out, RECORDS_FILE, measure_cost, tables, environment=lambda: environment_columns(collect_environment()),
            classify=classify_cost_error, force=settings.force, retry_failed=True,
            progress=not settings.no_progress, desc="cost",
        )
    except FolderLockedError as error:
        raise UsageError(str(error)) from None
    records, written = run.records, run.written
    wanted = {job.key() for job in jobs}
    failed = [r for r in records if r.get("key") in wanted and r.get("status") == "error"]
    refused = [r for r in records if r.get("key") in wanted and r.get("status") == "refused"]
    print(
        f"cost: {result.measured + result.failed} measured, {result.skipped} resumed from "
        f"{settings.out / RECORDS_FILE}, {len(failed)} with status error, {len(refused)} refused by build_model; "
        f"wrote {', '.join(map(str, written)) or 'nothing'}",
        file=sys.stderr,
    )
    for record in failed[:20]:
        print(f"  error {record['key']}: {record.get('message', '')}", file=sys.stderr)
    return 0
