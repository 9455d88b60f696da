"""The contract every measuring stage follows, and the runner that owns what they share.

A stage is three parts:

* **plan**: its configurations, each a :class:`Configuration` with ``key()`` (the one name a
  record is resumed by), ``as_row()`` (the fields every record of it starts with) and
  ``label()`` (what the progress bar shows);
* **measure**: one configuration to the fields of its record; an exception is a failure,
  recorded with the status the stage's ``classify`` gives it (:data:`suite.records.STATUSES`);
* **tables**: the records to tidy frames, the stage's ``tables(records, folder)`` (file name
  -> frame; ``folder`` holds any other raw file a table reads, the accuracy stage's per-image
  results), which the stage writes after a run and the report rebuilds from the same records
  (the stage's :class:`suite.stages.StageSpec` names its records file and ``tables``).

The runner owns the rest: which configurations are still to do (:func:`pending`), the
progress bar, one record per configuration (:func:`measure_record`: the key, the row, the
fields or the failure with its traceback, the wall time and the load average), the
environment, written once per run and named by each record
(:meth:`suite.records.RecordStore.append`), and the tables, rewritten atomically from the
records at the end, also when the run is interrupted (:func:`open_stage`).

The cost and memory stages run on :func:`run_stage`. The latency stage visits every
configuration in rounds of fresh worker processes (:func:`suite.timing.rounds.run_rounds`)
inside :func:`open_stage`, with its own resume (a configuration may have some of its rounds),
and the accuracy stage trains across distributed ranks, its first rank holding the lock and
writing the records, with :func:`pending`; each uses the same store, environment, progress
bar, failure records and tables.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pandas as pd

from .portable import format_traceback
from .records import FINAL_STATUSES, STATUS_OK, RecordStore, folder_lock, write_csv_atomic

__all__ = [
    "Configuration",
    "SweepResult",
    "pending",
    "measure_record",
    "failure_fields",
    "run_configs",
    "StageRun",
    "open_stage",
    "rewrite_tables",
    "run_stage",
    "write_tables",
    "progress_bar",
    "interruptible_run",
    "loadavg",
]


class Configuration(Protocol):
    """One point a stage measures."""

    def key(self) -> str:
        """The stable name its record is stored and resumed by."""

    def as_row(self) -> dict[str, Any]:
        """The fields that describe it, first in its record."""

    def label(self) -> str:
        """A few words for the progress bar."""


C = TypeVar("C", bound=Configuration)


@dataclass
class SweepResult:
    """Counts of a run (``contended`` and ``rounds_run`` are the latency stage's rounds)."""

    measured: int = 0
    skipped: int = 0
    failed: int = 0
    contended: int = 0
    rounds_run: int = 0
    interrupted: bool = False


def pending(configs: Sequence[C], store: RecordStore, *, force: bool = False, retry_failed: bool = False,
            limit: int | None = None) -> tuple[list[C], int]:
    """The configurations still to measure, and how many were skipped as recorded.

    A configuration is done once it has a record; with ``retry_failed``, only once its record
    has a final status (:data:`~suite.records.FINAL_STATUSES`: measured, refused or diverged);
    with ``force``, never. ``limit`` keeps the first ``limit`` of those left.
    """
    if force:
        done: set[str] = set()
    else:
        done = store.done_keys(statuses=FINAL_STATUSES if retry_failed else None)
    todo = [c for c in configs if c.key() not in done]
    skipped = len(configs) - len(todo)
    return (todo if limit is None else todo[:limit]), skipped


def failure_fields(exc: BaseException, status: str) -> dict[str, Any]:
    """The ``status`` and ``message`` of a configuration that raised ``exc`` (an exception that
    says ``message_is_complete`` is quoted as it is, others with their type)."""
    if getattr(exc, "message_is_complete", False):
        message = str(exc)
    else:
        message = f"{type(exc).__name__}: {exc}".strip()
    return {"status": status, "message": message[:2000]}


def loadavg() -> float:
    """The 1-minute load average now (how busy the machine was)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return math.nan


def measure_record(config: C, measure: Callable[[C], dict[str, Any]],
                   classify: Callable[[BaseException], str]) -> dict[str, Any]:
    """One configuration's record: its key and row, then what ``measure`` returned (``status``
    ``ok`` unless it says otherwise) or, when it raised, the failure's status, message and
    traceback; then the wall time and the load average. ``KeyboardInterrupt`` is not caught."""
    started = time.time()
    try:
        fields = dict(measure(config))
        fields.setdefault("status", STATUS_OK)
        fields.setdefault("message", "")
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - a failing configuration is a record, not the end
        fields = failure_fields(exc, classify(exc))
        fields["traceback"] = format_traceback(exc)
    return {"key": config.key(), **config.as_row(), **fields,
            "wall_s": round(time.time() - started, 3), "loadavg_1m": loadavg()}


def progress_bar(total: int, desc: str, unit: str = "cfg") -> Any:
    """A tqdm bar on stderr with an ETA (imported here so that ``--help`` stays fast)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)


@contextlib.contextmanager
def interruptible_run(result: SweepResult, total: int, desc: str, *, progress: bool = True,
                      unit: str = "cfg") -> Iterator[Any]:
    """The progress bar of a run (``None`` without progress or without work); a
    ``KeyboardInterrupt`` inside ends the run with ``result.interrupted`` set (what was recorded
    stays), and the bar is closed either way."""
    bar = progress_bar(total, desc, unit) if progress and total > 0 else None
    try:
        yield bar
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        if bar is not None:
            bar.close()


def run_configs(
    configs: Sequence[C],
    store: RecordStore,
    measure: Callable[[C], dict[str, Any]],
    *,
    environment: dict[str, Any],
    classify: Callable[[BaseException], str],
    force: bool = False,
    retry_failed: bool = False,
    limit: int | None = None,
    progress: bool = True,
    desc: str = "",
) -> SweepResult:
    """Measure each configuration still to do (:func:`pending`) into one record of ``store``,
    naming ``environment`` (the fields as the stage's records name them). ``KeyboardInterrupt``
    stops the run; what was recorded stays, and the result says it was interrupted."""
    todo, skipped = pending(configs, store, force=force, retry_failed=retry_failed, limit=limit)
    result = SweepResult(skipped=skipped)
    with interruptible_run(result, len(todo), desc, progress=progress) as bar:
        for config in todo:
            if bar is not None:
                bar.set_postfix_str(config.label(), refresh=False)
            record = {**measure_record(config, measure, classify), **environment}
            store.append(record, environment=environment)
            if record["status"] == STATUS_OK:
                result.measured += 1
            else:
                result.failed += 1
            if bar is not None:
                bar.update(1)
    return result


def write_tables(out: Path, tables: dict[str, pd.DataFrame]) -> list[Path]:
    """Write each table that has columns to ``out / name`` atomically (a table of no rows with its
    header is written, so that a reader sees the stage ran); return the paths written."""
    written = []
    for filename, frame in tables.items():
        if len(frame.columns):
            write_csv_atomic(out / filename, frame)
            written.append(out / filename)
    return written


@dataclass
class StageRun:
    """An open output folder: its lock is held, ``store`` takes the records; once the run ends,
    ``records`` holds the latest record of each key and ``written`` the tables' paths."""

    out: Path
    store: RecordStore
    records: list[dict[str, Any]] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)


Tables = Callable[[list[dict[str, Any]], Path], dict[str, pd.DataFrame]]
"""A stage's ``tables(records, folder)``."""


@contextlib.contextmanager
def open_stage(out: Path, records_file: str, tables: Tables) -> Iterator[StageRun]:
    """Hold ``out``'s lock while the stage measures into ``out / records_file``; when it ends,
    also by an exception or an interrupt, rewrite the tables from the latest record of each key.
    Raises :class:`~suite.records.FolderLockedError` when another run holds the folder."""
    with folder_lock(out):
        run = StageRun(out, RecordStore(out / records_file))
        try:
            yield run
        finally:
            run.records = run.store.latest_by_key()
            run.written = write_tables(out, tables(run.records, out))


def rewrite_tables(out: Path, records_file: str, tables: Tables) -> StageRun:
    """``--tables-only``: rewrite the tables in ``out`` from its records, measuring nothing (an
    :func:`open_stage` with nothing to do)."""
    with open_stage(out, records_file, tables) as run:
        pass
    return run


def run_stage(
    configs: Sequence[C],
    out: Path,
    records_file: str,
    measure: Callable[[C], dict[str, Any]],
    tables: Tables,
    *,
    environment: Callable[[], dict[str, Any]],
    classify: Callable[[BaseException], str],
    **options: Any,
) -> tuple[SweepResult, StageRun]:
    """Measure what is still to do into ``out / records_file`` in an open folder
    (:func:`open_stage`, :func:`run_configs` with ``options``). ``environment`` is called once the
    lock is held. Returns the counts and the run (its latest records and the tables written)."""
    with open_stage(out, records_file, tables) as run:
        result = run_configs(configs, run.store, measure, environment=environment(), classify=classify, **options)
    return result, run
