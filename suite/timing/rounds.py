"""Latency measured in rounds of fresh worker processes, and the rows derived from them.

Why rounds. On the 2-core machines the noise that matters is between processes (allocator and
page state, where a process's memory lands, thread scheduling): the same module's median moved
10-70% from one process to the next while each process's own 95% interval was +-1-9%. So
every configuration is measured in ``rounds`` rounds, each round in a fresh worker process
(:mod:`suite.timing.worker`), and the rounds visit the configurations in turn: a slow period of
the machine touches many configurations a little rather than one a lot. The interval of
every figure comes from the rounds (:func:`suite.timing.stats.across_rounds`: Student's t on the
log of the per-round values), so between-process variation is inside it.

Per round and configuration the worker keeps each callable's per-sample times, visit by
visit, so any statistic can be recomputed from the raw ``latency_round`` records; how a round's
``ratio`` (to the 3x3 conv, or the backbone without attention), ``passes`` (to one copy of the
input) and times are taken is :mod:`suite.timing.round_stats`'s docstring. The row
of a configuration (record ``latency``) is written when its rounds are complete:

* ``ok``: ``rounds`` clean rounds (more, up to ``max_rounds``, where the ratio's interval is
  still wider than ``+-rel_tol``; ``converged`` says whether it got there). Adding rounds until
  an interval is narrow enough is optional stopping: with ``max_rounds > rounds`` the final
  intervals cover somewhat less than 95%, which is why the default adds none;
* ``contended``: a round whose window did not get the CPU it asked for (see
  :mod:`suite.timing.contention`) is discarded and measured again; a configuration without
  ``rounds`` clean rounds after ``max_attempts`` tries gets status ``contended`` and no
  numbers;
* a failure (``build_error``, ``error``, ``oom``, ``timeout``, ``refused``...) ends the
  configuration at once with that status.

Every CPU round record carries the load its window saw (``cpu_share``, ``other_cores``,
``steal_share``) and the contention policy it was judged by (``contention_policy``,
``other_cores_allowed``: :meth:`suite.timing.contention.ContentionLimits.describe`); the row
states them too (:mod:`suite.timing.round_stats`).

Resume (:mod:`suite.timing.resume`): a re-run continues the latest generation of every key
without a row; ``--force`` (every key) and ``--retry-failed`` (keys whose row is not ``ok``)
start a new generation. A round record's ``pass`` is the run's own pass over the configurations.

The pieces: :mod:`suite.timing.pool` runs the worker processes, :mod:`suite.timing.round_stats`
turns rounds into a row, :mod:`suite.timing.resume` reads where the rounds stand from the
records, and :func:`run_rounds` here is the loop over rounds.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from ..records import STATUS_OK, RecordStore, environment_columns
from ..stage import SweepResult, interruptible_run
from ..stage import loadavg as _loadavg
from .contention import online_cpus
from .grid import Config, reference_key
from .job import Job
from .pool import RoundWorkers
from .resume import RoundProgress, add_round, progress_from_records
from .round_stats import CONTENDED, RoundPlan, aggregate_rounds

__all__ = ["run_rounds", "visit_order"]


def run_rounds(
    configs: Sequence[Config],
    store: RecordStore,
    workers: RoundWorkers,
    job: Job,
    plan: RoundPlan,
    *,
    environment: dict[str, Any],
    finish: Callable[[Config, dict[str, Any]], dict[str, Any]] = lambda c, row: row,
    force: bool = False,
    retry_failed: bool = False,
    limit: int | None = None,
    progress: bool = True,
) -> SweepResult:
    """Measure every configuration in rounds until each is done (see the module docstring).

    Every round result is appended to ``store`` as it arrives (record ``latency_round``), and a
    configuration's row (record ``latency``, completed by ``finish`` -- the roofline, say) as
    soon as it needs no more rounds. ``KeyboardInterrupt`` stops the run; what was recorded stays.
    """
    result = SweepResult()
    state = progress_from_records(store.read(), configs, force=force, retry_failed=retry_failed)
    active = [c for c in configs if state[c.key()] is not None]
    result.skipped = len(configs) - len(active)
    if limit is not None:
        active = active[:limit]
    env_fields = environment_columns(environment)
    total = sum(max(0, plan.rounds - len(state[c.key()].clean)) for c in active)  # type: ignore[union-attr]
    round_index = 0
    with interruptible_run(result, total, "latency rounds", progress=progress, unit="cfg-round") as bar:

        def on_result(config: Config, fields: dict[str, Any]) -> None:
            entry = state[config.key()]
            assert entry is not None
            record = {"record": "latency_round", "key": f"{config.key()}|g{entry.generation}|r{entry.attempts}",
                      "config_key": config.key(), "generation": entry.generation, "round": entry.attempts,
                      "pass": round_index,
                      **config.as_row(), **fields, **_contention_fields(config, job), "loadavg_1m": _loadavg(),
                      **env_fields}
            store.append(record, environment=env_fields)
            add_round(entry, record)
            if bar is not None:
                bar.update(1)

        # a run killed after a configuration's last round but before its row: write the row now
        _write_finished_rows(active, state, store, plan, finish, env_fields, result)
        while True:
            todo = [c for c in active if (entry := state[c.key()]) is not None and entry.needs_round(plan)]
            if not todo:
                break
            if bar is not None:
                bar.total = max(bar.total or 0, bar.n + len(todo))
                bar.set_postfix_str(f"round {round_index + 1}, {len(todo)} configurations", refresh=True)
            workers.run(visit_order(todo, round_index), job, on_result)
            result.rounds_run += 1
            round_index += 1
            _write_finished_rows(todo, state, store, plan, finish, env_fields, result)
    return result


def visit_order(todo: Sequence[Config], round_index: int) -> list[Config]:
    """The order a round visits ``todo`` in: the configurations sharing a reference
    (:func:`suite.timing.grid.reference_key`) stay together, so a worker builds and warms
    that reference once, but within each group the order is shuffled afresh every round (seeded
    by the round's index, so a re-run visits alike). A design's place in the round (first after
    the reference was built, or after others) then varies from round to round, and any effect
    of it lands in the interval across rounds instead of biasing one design's ratio."""
    groups: dict[str, list[Config]] = {}
    for config in todo:
        groups.setdefault(reference_key(config), []).append(config)
    rng = random.Random(round_index)
    ordered: list[Config] = []
    for members in groups.values():
        members = list(members)
        rng.shuffle(members)
        ordered += members
    return ordered


def _contention_fields(config: Config, job: Job) -> dict[str, Any]:
    """The policy a CPU round's windows were judged by and the other work it allowed them (the
    worker checks contention on the CPU only; nothing for other devices)."""
    if config.device != "cpu" or job.limits is None:
        return {}
    return job.limits.describe(cpus=online_cpus(), threads=config.threads)


def _write_finished_rows(todo: Sequence[Config], state: dict[str, RoundProgress | None], store: RecordStore,
                         plan: RoundPlan, finish: Callable[[Config, dict[str, Any]], dict[str, Any]],
                         env_fields: dict[str, Any], result: SweepResult) -> None:
    """Append the row of every configuration of ``todo`` that needs no more rounds (completed by
    ``finish`` when ``ok``), count it in ``result`` and mark it done in ``state``."""
    for config in todo:
        entry = state[config.key()]
        if entry is None or entry.needs_round(plan):
            continue
        row = aggregate_rounds(entry, plan)
        if row["status"] == STATUS_OK:
            row = finish(config, row)
            result.measured += 1
        elif row["status"] == CONTENDED:
            result.contended += 1
        else:
            result.failed += 1
        store.append({"key": config.key(), **config.as_row(), **row, "loadavg_1m": _loadavg(), **env_fields},
                     environment=env_fields)
        state[config.key()] = None
