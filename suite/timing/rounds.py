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
visit, so any statistic can be recomputed from the raw ``latency_round`` records. Per round:
``ratio`` is the median over the round's cycles of ``median(module visit) / median(reference
visit)`` (the 3x3 conv, or the backbone without attention): visits of one cycle follow each
other (module, reference, copy), so the machine's slow drift cancels; ``passes`` is the same
against the copy visit of the cycle, one copy of the input (a read and a write pass, module
level only); the times are the medians of all of the round's samples. The row
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

Resume: round records carry the configuration's key, a ``generation`` and the round's number
within it (``round``: 0, 1, ... across resumed runs; ``pass`` is the run's own pass over the
configurations). A
re-run continues the latest generation of every key without a row; ``--force`` (every key) and
``--retry-failed`` (keys whose row is not ``ok``) start a new generation.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..records import FINAL_STATUSES, STATUS_OK, RecordStore
from ..stage import SweepResult, progress_bar
from ..stage import loadavg as _loadavg
from .grid import Config
from .stats import across_rounds, percentile
from .sweep import env_columns
from .worker import ALLOCATOR_TUNABLES, CHILD, DONE, READY, ROUND, job_payload

__all__ = [
    "ALLOCATORS",
    "ISOLATIONS",
    "RoundPlan",
    "RoundWorkers",
    "aggregate_rounds",
    "run_rounds",
    "worker_environment",
]

ISOLATIONS = ("fork", "spawn")
ALLOCATORS = ("steady", "inherited")
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_CONTENDED = "contended"


def worker_environment(threads: int, allocator: str, base: dict[str, str] | None = None, *,
                       root: Path | None = None) -> dict[str, str]:
    """The environment a worker starts with: the project importable (this one, or the tree at
    ``root`` in its place), OpenMP/MKL at ``threads``, and (``steady``) glibc's mmap and trim
    thresholds raised (:data:`ALLOCATOR_TUNABLES`)."""
    if allocator not in ALLOCATORS:
        raise ValueError(f"allocator must be one of {', '.join(ALLOCATORS)}; got {allocator!r}")
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root or _PROJECT_ROOT), env.get("PYTHONPATH", "")]))
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if allocator == "steady":
        env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES", ""), ALLOCATOR_TUNABLES]))
    return env


class _LineReader:
    """Lines from a pipe with a timeout (``None`` when it passes; ``EOFError`` at the end)."""

    def __init__(self, stream: Any) -> None:
        self._fd = stream.fileno()
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)

    def readline(self, timeout_s: float) -> str | None:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not self._selector.select(left):
                return None
            chunk = os.read(self._fd, 65536)
            if not chunk:
                raise EOFError
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode("utf-8", errors="replace")

    def close(self) -> None:
        self._selector.close()


@dataclass
class _Process:
    proc: subprocess.Popen[bytes]
    reader: _LineReader
    stderr_path: Path

    job_stderr_from: int = 0

    def mark_stderr(self) -> None:
        """What the server wrote to stderr so far belongs to earlier jobs."""
        with contextlib.suppress(OSError):
            self.job_stderr_from = self.stderr_path.stat().st_size

    def stderr_tail(self, chars: int = 1500) -> str:
        """The end of what this job's processes wrote to stderr."""
        try:
            with open(self.stderr_path, "rb") as handle:
                handle.seek(self.job_stderr_from)
                return handle.read().decode(errors="replace")[-chars:]
        except OSError:
            return ""


class RoundWorkers:
    """Runs jobs (a round's configurations) in fresh processes; see :mod:`suite.timing.worker`.

    ``fork``: ``servers`` server processes import torch once each (in parallel, before any
    measurement) and fork a child per job; jobs go to the servers in turn, so rounds also differ
    in the server's library layout. ``spawn``: a new interpreter per job. A child that dies or
    exceeds ``timeout_s`` on one configuration costs that configuration its round (status
    ``error`` / ``oom`` / ``timeout``); the rest of the job goes on in a new child.

    ``cwd``: the folder the processes start in (``python -m`` puts it first on their path: the
    regression gate's A/B runs start each side's workers in that side's tree).
    """

    def __init__(self, *, isolation: str, servers: int, env: dict[str, str], timeout_s: float,
                 python: str | None = None, cwd: Path | None = None) -> None:
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {', '.join(ISOLATIONS)}; got {isolation!r}")
        if servers < 1:
            raise ValueError(f"servers must be >= 1, got {servers}")
        self.isolation, self.env, self.timeout_s = isolation, env, timeout_s
        self.python = python or sys.executable
        self.cwd = cwd
        self.servers_wanted = servers if isolation == "fork" else 0
        self._servers: list[_Process] = []
        self._next = 0
        self._tmp = tempfile.TemporaryDirectory(prefix="attnbench-workers-")

    def __enter__(self) -> RoundWorkers:
        try:
            for _ in range(self.servers_wanted):  # started together, awaited in turn
                self._servers.append(self._start("--serve"))
            for server in self._servers:
                self._await_ready(server)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        for server in self._servers:
            self._stop(server, kill=exc_type is not None)
        self._servers = []
        self._tmp.cleanup()

    def _start(self, mode: str) -> _Process:
        stderr_path = Path(self._tmp.name) / f"worker-{time.monotonic_ns()}.err"
        with open(stderr_path, "wb") as stderr:
            proc = subprocess.Popen([self.python, "-m", "suite.timing.worker", mode], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=stderr, env=self.env, cwd=self.cwd,
                                    start_new_session=True)
        return _Process(proc, _LineReader(proc.stdout), stderr_path)

    def _await_ready(self, server: _Process) -> None:
        try:
            line = server.reader.readline(600.0)
        except EOFError:
            line = None
        if line != READY:
            self._stop(server)
            raise RuntimeError(f"the latency worker server did not start: {server.stderr_tail()}")

    @staticmethod
    def _stop(process: _Process, kill: bool = False) -> None:
        """Close the server's stdin and wait for it; on an interrupt (``kill``), or when it does not
        end, kill its whole session, so a child still measuring dies with it."""
        with contextlib.suppress(OSError):
            if process.proc.stdin:
                process.proc.stdin.close()
        try:
            if kill:
                raise subprocess.TimeoutExpired(process.proc.args, 0)
            process.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.proc.pid, signal.SIGKILL)
            process.proc.wait()
        process.reader.close()
        with contextlib.suppress(OSError):
            if process.proc.stdout:
                process.proc.stdout.close()

    def _process_for_job(self) -> tuple[_Process, bool]:
        """A server (fork) or a new interpreter (spawn); a dead server is replaced."""
        if self.isolation == "spawn":
            return self._start("--once"), True
        index = self._next % len(self._servers)
        self._next += 1
        server = self._servers[index]
        if server.proc.poll() is not None:
            self._stop(server, kill=True)
            server = self._start("--serve")
            self._await_ready(server)
            self._servers[index] = server
        return server, False

    def run(self, configs: Sequence[Config], settings: dict[str, Any],
            on_result: Callable[[Config, dict[str, Any]], None]) -> None:
        """Measure ``configs`` (one round each) and hand every result to ``on_result``."""
        remaining = list(configs)
        while remaining:
            process, single_use = self._process_for_job()
            try:
                remaining = self._run_job(process, remaining, settings, on_result)
            finally:
                if single_use:
                    self._stop(process)

    def _run_job(self, process: _Process, configs: list[Config], settings: dict[str, Any],
                 on_result: Callable[[Config, dict[str, Any]], None]) -> list[Config]:
        """Send one job; return the configurations still to measure after a crash or timeout."""
        by_key = {c.key(): c for c in configs}
        remaining = list(configs)
        process.mark_stderr()
        assert process.proc.stdin is not None
        process.proc.stdin.write((json.dumps(job_payload(configs, **settings)) + "\n").encode())
        process.proc.stdin.flush()
        child = None
        while True:
            try:
                line = process.reader.readline(self.timeout_s if child else 600.0)
            except EOFError:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.proc.wait(timeout=5)
                line = DONE + "eof"
            if line is None:  # the child is stuck on remaining[0]
                self._kill(child or process.proc.pid)
                self._drain_done(process)
                on_result(remaining[0], {"status": "timeout",
                                         "message": f"worker took more than {self.timeout_s:.0f} s on this configuration"})
                return remaining[1:]
            if line.startswith(CHILD):
                child = int(line[len(CHILD):])
            elif line.startswith(ROUND):
                try:
                    fields = json.loads(line[len(ROUND):])
                    config = by_key[fields.pop("key")]
                except (ValueError, KeyError):  # a child killed while writing: it died on remaining[0]
                    self._kill(child or process.proc.pid)
                    self._drain_done(process)
                    on_result(remaining[0], {"status": "error", "message": (
                        f"worker wrote an unreadable result and died: {process.stderr_tail()}")})
                    return remaining[1:]
                remaining.remove(config)
                on_result(config, fields)
            elif DONE in line:
                code = line.split(DONE, 1)[1]
                if code == "eof" and process.proc.poll() is not None:
                    code = str(process.proc.returncode)
                if remaining:
                    status = "oom" if code in ("-9", "137") else "error"
                    on_result(remaining[0], {"status": status, "message": (
                        f"worker died with exit code {code} on this configuration: {process.stderr_tail()}")})
                    return remaining[1:]
                return []

    @staticmethod
    def _kill(pid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)

    @staticmethod
    def _drain_done(process: _Process) -> None:
        """Read up to the server's DONE line after its child was killed."""
        with contextlib.suppress(EOFError):
            while (line := process.reader.readline(30.0)) is not None and DONE not in line:
                pass


@dataclass(frozen=True)
class RoundPlan:
    """How many rounds a configuration gets, and when it is done."""

    rounds: int = 8
    max_rounds: int = 8
    max_attempts: int = 16
    rel_tol: float = 0.05
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.rounds < 2:
            raise ValueError(f"rounds must be >= 2 (an interval needs two processes), got {self.rounds}")
        if self.max_rounds < self.rounds:
            raise ValueError(f"max_rounds ({self.max_rounds}) must be >= rounds ({self.rounds})")
        if self.max_attempts < self.rounds:
            raise ValueError(f"max_attempts ({self.max_attempts}) must be >= rounds ({self.rounds})")
        if not 0 < self.rel_tol < 1:
            raise ValueError(f"rel_tol must be in (0, 1), got {self.rel_tol}")


@dataclass
class _Progress:
    """The rounds of one configuration in its current generation."""

    generation: int
    clean: list[dict[str, Any]] = field(default_factory=list)
    contended: list[dict[str, Any]] = field(default_factory=list)
    failed: dict[str, Any] | None = None

    @property
    def attempts(self) -> int:
        return len(self.clean) + len(self.contended)

    def needs_round(self, plan: RoundPlan) -> bool:
        if self.failed is not None or self.attempts >= plan.max_attempts:
            return False
        if len(self.clean) < plan.rounds:
            return True
        if len(self.clean) >= plan.max_rounds:
            return False
        ratio = across_rounds(_per_round(self.clean, "ratio"), plan.confidence)
        return not (ratio.half_width <= plan.rel_tol)


def _median(values: Sequence[float]) -> float:
    return percentile(sorted(values), 50) if values else math.nan


def _finite(values: Any) -> list[float]:
    """The finite numbers among ``values`` (records read back hold ``None`` for NaN)."""
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def _flat(visits: Sequence[Sequence[float]]) -> list[float]:
    return [v for visit in visits for v in visit]


def _paired_ratio(numerator: Sequence[Sequence[float]], denominator: Sequence[Sequence[float]]) -> float:
    """The median over cycles of median(numerator's visit) / median(denominator's visit).

    Visit ``k`` of two callables are adjacent in time, so their ratio cancels the machine's slow
    drift (on these VMs even a matmul's time wanders +-15% over a second, with a lag-1
    autocorrelation of 0.6-0.85), which a ratio of whole-round medians would keep.
    """
    ratios = [_median(a) / _median(b) for a, b in zip(numerator, denominator, strict=False) if a and b]
    return _median(ratios)


def _per_round(rounds: Sequence[dict[str, Any]], quantity: str) -> list[float]:
    """Per-round ``module`` / ``reference`` / ``copy`` medians (s), or the paired ``ratio``
    (module / reference) and ``passes`` (module / copy) of :func:`_paired_ratio`."""
    values = []
    for record in rounds:
        samples = record.get("samples_s", {})
        if quantity == "ratio":
            values.append(_paired_ratio(samples.get("module", []), samples.get("reference", [])))
        elif quantity == "passes":
            values.append(_paired_ratio(samples["module"], samples["copy"]) if samples.get("copy") else math.nan)
        else:
            values.append(_median(_flat(samples.get(quantity, []))))
    return values


def _interval_fields(values: list[float], confidence: float, names: tuple[str, str, str, str],
                     unit: float = 1.0) -> dict[str, float]:
    """``{centre, low, high, relative half-width}`` of :func:`across_rounds`, under ``names``."""
    interval = across_rounds(values, confidence)
    centre, low, high, rel = names
    return {centre: interval.center * unit, low: interval.low * unit, high: interval.high * unit,
            rel: interval.half_width}


def _names(prefix: str, suffix: str = "") -> tuple[str, str, str, str]:
    return f"{prefix}{suffix}", f"{prefix}_ci_low{suffix}", f"{prefix}_ci_high{suffix}", f"{prefix}_ci_rel"


NUMERIC_COLUMNS = (
    "median_ms", "ci_low_ms", "ci_high_ms", "ci_rel", "iqr_ms", "p90_ms", "p99_ms", "min_ms", "n",
    "ref_median_ms", "ref_ci_low_ms", "ref_ci_high_ms", "ref_ci_rel", "ratio", "ratio_ci_low",
    "ratio_ci_high", "ratio_ci_rel", "copy_median_ms", "passes", "passes_ci_low", "passes_ci_high",
    "passes_ci_rel",
)
"""The measured columns of a latency row (NaN in a row that is not ``ok``)."""


def aggregate_rounds(progress: _Progress, plan: RoundPlan) -> dict[str, Any]:
    """The ``latency`` row fields of one configuration from its rounds (see the module docstring)."""
    clean, contended = progress.clean, progress.contended
    last = (clean or contended or [progress.failed or {}])[-1]
    row: dict[str, Any] = {"record": "latency", "generation": progress.generation,
                           "rounds": len(clean), "rounds_contended": len(contended)}
    for key in ("reference", "params", "param_bytes", "formula_macs", "compile_s", "input_shape",
                "output_shape", "input_element_size", "threads_set", "flush_denormal", "allocator_tunables"):
        if key in last:
            row[key] = last[key]
    if progress.failed is not None:
        row.update(dict.fromkeys(NUMERIC_COLUMNS, math.nan))
        row.update(status=progress.failed["status"], message=progress.failed.get("message", ""))
        return row
    if len(clean) < plan.rounds:
        reasons = sorted({r.get("message", "") for r in contended})
        row.update(dict.fromkeys(NUMERIC_COLUMNS, math.nan))
        row.update(status=_CONTENDED, message=(
            f"{len(clean)} of {plan.rounds} rounds clean after {progress.attempts} tries; " + " | ".join(reasons))[:2000])
        return row
    row.update(_measured_fields(clean, plan))
    row["status"] = STATUS_OK
    row["message"] = "" if row["converged"] else (
        f"ratio interval +-{row['ratio_ci_rel']:.1%} after {len(clean)} rounds, wider than +-{plan.rel_tol:.0%}")
    return row


def _measured_fields(clean: list[dict[str, Any]], plan: RoundPlan) -> dict[str, Any]:
    confidence = plan.confidence
    row: dict[str, Any] = {}
    row.update(_interval_fields(_per_round(clean, "module"), confidence,
                                ("median_ms", "ci_low_ms", "ci_high_ms", "ci_rel"), 1e3))
    pooled = sorted(v for r in clean for v in _flat(r["samples_s"]["module"]))
    row.update({
        "iqr_ms": (percentile(pooled, 75) - percentile(pooled, 25)) * 1e3,
        "p90_ms": percentile(pooled, 90) * 1e3,
        "p99_ms": percentile(pooled, 99) * 1e3,
        "min_ms": pooled[0] * 1e3,
        "n": len(pooled),
        "calls_per_sample": int(_median([r["calls_per_sample"]["module"] for r in clean])),
    })
    row.update(_interval_fields(_per_round(clean, "reference"), confidence,
                                ("ref_median_ms", "ref_ci_low_ms", "ref_ci_high_ms", "ref_ci_rel"), 1e3))
    row.update(_interval_fields(_per_round(clean, "ratio"), confidence, _names("ratio")))
    copies = _per_round(clean, "copy")
    row["copy_median_ms"] = across_rounds(copies, confidence).center * 1e3
    row.update(_interval_fields(_per_round(clean, "passes"), confidence, _names("passes")))
    row["converged"] = bool(row["ratio_ci_rel"] <= plan.rel_tol)
    row["cpu_share_min"] = min(_finite(r.get("cpu_share") for r in clean), default=math.nan)
    row["other_cores_max"] = max(_finite(r.get("other_cores") for r in clean), default=math.nan)
    row["warmup_steady"] = all(r.get("warmup_steady", False) for r in clean)
    return row


def _progress_from_records(records: list[dict[str, Any]], configs: Sequence[Config], *, force: bool,
                           retry_failed: bool) -> dict[str, _Progress | None]:
    """Each key's rounds so far in the generation to continue, or None when its row is done."""
    rows: dict[str, dict[str, Any]] = {}
    rounds: dict[str, list[dict[str, Any]]] = {}
    newest: dict[str, int] = {}
    for record in records:
        key = record.get("config_key") or record.get("key")
        kind = record.get("record", "latency")
        generation = int(record.get("generation", 0) or 0)
        if kind == "latency":
            rows[key] = record
            newest[key] = max(newest.get(key, -1), generation)
        elif kind == "latency_round":
            rounds.setdefault(key, []).append(record)
            newest[key] = max(newest.get(key, -1), generation)
    state: dict[str, _Progress | None] = {}
    for config in configs:
        key = config.key()
        row = rows.get(key)
        latest = newest.get(key, -1)
        row_current = row is not None and int(row.get("generation", 0) or 0) >= latest
        restart = force or (retry_failed and row is not None and row.get("status") not in FINAL_STATUSES)
        if row_current and not restart:
            state[key] = None
            continue
        generation = latest + 1 if (force or row_current or latest < 0) else latest
        progress = _Progress(generation)
        for record in rounds.get(key, []):
            if int(record.get("generation", 0)) == generation:
                _add_round(progress, record)
        state[key] = progress
    return state


def _add_round(progress: _Progress, record: dict[str, Any]) -> None:
    status = record.get("status")
    if status == STATUS_OK:
        progress.clean.append(record)
    elif status == _CONTENDED:
        progress.contended.append(record)
    else:
        progress.failed = record


def run_rounds(
    configs: Sequence[Config],
    store: RecordStore,
    workers: RoundWorkers,
    settings: dict[str, Any],
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
    state = _progress_from_records(store.read(), configs, force=force, retry_failed=retry_failed)
    active = [c for c in configs if state[c.key()] is not None]
    result.skipped = len(configs) - len(active)
    if limit is not None:
        active = active[:limit]
    env_fields = env_columns(environment)
    total = sum(max(0, plan.rounds - len(state[c.key()].clean)) for c in active)  # type: ignore[union-attr]
    bar = progress_bar(total, "latency rounds", unit="cfg-round") if progress and total > 0 else None
    round_index = 0

    def on_result(config: Config, fields: dict[str, Any]) -> None:
        entry = state[config.key()]
        assert entry is not None
        record = {"record": "latency_round", "key": f"{config.key()}|g{entry.generation}|r{entry.attempts}",
                  "config_key": config.key(), "generation": entry.generation, "round": entry.attempts,
                  "pass": round_index,
                  **config.as_row(), **fields, "loadavg_1m": _loadavg(), **env_fields}
        store.append(record, environment=env_fields)
        _add_round(entry, record)
        if bar is not None:
            bar.update(1)

    try:
        # a run killed after a configuration's last round but before its row: write the row now
        _write_finished_rows(active, state, store, plan, finish, env_fields, result)
        while True:
            todo = [c for c in active if (entry := state[c.key()]) is not None and entry.needs_round(plan)]
            if not todo:
                break
            if bar is not None:
                bar.total = max(bar.total or 0, bar.n + len(todo))
                bar.set_postfix_str(f"round {round_index + 1}, {len(todo)} configurations", refresh=True)
            workers.run(todo, settings, on_result)
            result.rounds_run += 1
            round_index += 1
            _write_finished_rows(todo, state, store, plan, finish, env_fields, result)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        if bar is not None:
            bar.close()
    return result


def _write_finished_rows(todo: Sequence[Config], state: dict[str, _Progress | None], store: RecordStore,
                         plan: RoundPlan, finish: Callable[[Config, dict[str, Any]], dict[str, Any]],
                         env_fields: dict[str, Any], result: SweepResult) -> None:
    for config in todo:
        entry = state[config.key()]
        if entry is None or entry.needs_round(plan):
            continue
        row = aggregate_rounds(entry, plan)
        if row["status"] == STATUS_OK:
            row = finish(config, row)
            result.measured += 1
        elif row["status"] == _CONTENDED:
            result.contended += 1
        else:
            result.failed += 1
        store.append({"key": config.key(), **config.as_row(), **row, "loadavg_1m": _loadavg(), **env_fields},
                     environment=env_fields)
        state[config.key()] = None
