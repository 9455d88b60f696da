"""``python -m suite latency``: forward and training-step latency of every attention type,
each with its ratio over a reference timed in the same processes and its roofline fraction.

Every configuration is measured in rounds, each round in a fresh worker process, the rounds
visiting the configurations in turn (:mod:`suite.timing.rounds`); the worker sets its own
environment (1 thread on CPU by default, glibc's allocator thresholds, flush-denormal) and
checks that it got the CPU it asked for (:mod:`suite.timing.contention`). Intervals come from
the rounds, so the noise between processes is inside them.

Writes into ``--out`` (default ``reports/latency``):

* ``records.jsonl``: one raw ``latency_round`` record per configuration and round (every
  sample, visit by visit, the CPU accounting, the settings in force), one ``latency`` record per
  configuration (its row), one ``machine`` record per peak measurement; each names the run's
  environment, written once to ``environments.jsonl``;
* ``latency.csv``: the tidy table, one row per configuration; times in milliseconds;
* ``machine.csv``: copy bandwidth and matmul rates measured at the start of each run.

Runtimes (``--compile``: eager, compile, onnxruntime, openvino; :mod:`suite.timing.runtimes`):
module and reference run under the same one, in the same rounds, with the same contention
checks. A run measuring exported runtimes records the versions of their packages in its
environment; one measuring ``compile`` gives its workers a persistent inductor cache
(``TORCHINDUCTOR_CACHE_DIR``, unless set) so that later rounds load what the first compiled.

See :mod:`suite.timing.timer` for how a round samples, :mod:`suite.timing.workloads` for what
is run and :mod:`suite.timing.roofline` for the bound.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..env import gpu_state
from ..errors import UsageError
from ..options import (
    Option,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    setting,
)
from ..records import FolderLockedError, RecordStore, environment_columns
from ..stage import SweepResult, open_stage, rewrite_tables
from ..stages import stage
from .cli_common import SweepPlan, measurement_settings, plan_sweep
from .contention import (
    AUTO_STRICT_MAX_CPUS,
    CONTENTION_CHOICES,
    ContentionLimits,
    online_cpus,
    resolve_policy,
)
from .grid import Config
from .job import Job
from .pool import ALLOCATORS, ISOLATIONS, RoundWorkers, worker_environment
from .roofline import MachinePeaks, measure_machine, min_bytes, roofline
from .round_stats import RoundPlan
from .rounds import run_rounds
from .runtimes import runtime_environment, runtime_versions
from .sweep import GridSettings, add_grid_arguments, stage_table
from .timer import TF32_MODES, RoundOptions

__all__ = ["LatencySettings", "SETTINGS", "add_arguments", "add_roofline", "main", "round_job", "round_plan", "LEADING_COLUMNS"]

RECORDS_FILE = str(stage("latency").records_file)
"""The stage's raw records in its folder (:mod:`suite.stages`)."""

LEADING_COLUMNS = (
    "attn", "level", "arch", "mode", "device", "dtype", "memory_format", "compile",
    "batch", "channels", "size", "threads", "status", "message",
    "median_ms", "ci_low_ms", "ci_high_ms", "ci_rel", "iqr_ms", "p90_ms", "p99_ms", "n",
    "calls_per_sample", "converged", "rounds", "rounds_contended", "reference", "ref_median_ms",
    "ratio", "ratio_ci_low", "ratio_ci_high", "ratio_ci_rel",
    "copy_median_ms", "passes", "passes_ci_low", "passes_ci_high",
    "macs_formula", "min_bytes", "bound", "bound_ms", "roofline_fraction", "fits_llc",
    "threads_set", "flush_denormal", "allocator_tunables", "cpu_share_min", "other_cores_max",
    "contention_policy", "other_cores_allowed",
)

ROUNDS_DEFAULT = {"cpu": 8, "cuda": 5}
BUDGET_DEFAULT_S = {"cpu": 1.0, "cuda": 1.0}
DEFAULT_THREADS = {"cpu": 1}
"""One intra-op thread on CPU by default: on the 2-core VMs two threads put the barriers of
every parallel op at the mercy of whatever else runs (cbam at C = 256, 56 x 56 took 9.5-11.3 ms
across processes at 1 thread, 8-29 ms at 2), and one thread is what the ratio to a same-thread
reference needs. ``--threads N`` measures with N."""


TIMING = "timing (see suite.timing.rounds for the method)"


@dataclass
class LatencySettings(GridSettings):
    """The latency stage's settings (one flag per field; ``python -m suite latency --help``)."""

    threads: int | None = setting("--threads", None, default_text=(
        "1 on CPU, the honest default on a 2-core machine (see DEFAULT_THREADS); on CUDA the cores this process may use"))
    out: Path = setting("--out", Path("reports/latency"))
    rounds: int | None = setting("--rounds", None, default_text=f"{ROUNDS_DEFAULT['cpu']} on CPU, {ROUNDS_DEFAULT['cuda']} on CUDA")
    max_rounds: int | None = setting(Option(
        "--max-rounds", "extra rounds (up to this many) for configurations whose ratio interval is still wider "
        "than +-REL_TOL", parse=positive_int, metavar="N", group=TIMING), None, default_text="--rounds, no extra rounds")
    budget_s: float | None = setting("--budget-s", None, default_text=(
        f"{BUDGET_DEFAULT_S['cpu']} on CPU, {BUDGET_DEFAULT_S['cuda']} on CUDA; per configuration, all rounds together "
        "(warm-up and build excluded), each round sampling BUDGET_S / ROUNDS"))
    rel_tol: float = setting(Option(
        "--rel-tol", "a row is 'converged' when the 95% interval of its ratio is within +-REL_TOL",
        parse=positive_float, metavar="F", group=TIMING), 0.05)
    min_samples: int = setting(Option("--min-samples", "samples of each callable per round, at least",
                                      parse=positive_int, metavar="N", group=TIMING), 1)
    max_samples: int = setting(Option("--max-samples", "samples of a callable per round, at most",
                                      parse=positive_int, metavar="N", group=TIMING), 2000)
    warmup_s: float = setting(Option(
        "--warmup-s", "warm-up per callable and round, at least (and 2 calls, and until the process's memory "
        "stopped growing for 2 calls, at most 1 s)", parse=non_negative_float, metavar="S", group=TIMING), 0.02)
    isolation: str = setting("--isolation", "fork", choices=ISOLATIONS, default_text=(
        "fork; a fresh process per round, a new interpreter (spawn) costing about 6 s of imports each"))
    servers: int = setting(Option(
        "--servers", "fork isolation: servers started (in parallel, before measuring); rounds go to them in turn "
        "so they also differ in library layout", parse=positive_int, metavar="N", group=TIMING), 2)
    allocator: str = setting(Option(
        "--allocator", "'steady': glibc's mmap and trim thresholds raised in the workers (GLIBC_TUNABLES), so a "
        "step reuses its pages; 'inherited': the environment's allocator as it is", choices=ALLOCATORS,
        group=TIMING), "steady")
    flush_denormal: str = setting(Option(
        "--flush-denormal", "torch.set_flush_denormal in the workers, set and recorded (off is torch's default)",
        choices=("on", "off"), group=TIMING), "off")
    min_cpu_share: float = setting(Option(
        "--min-cpu-share", "a window is contended when the worker got less than this share of the CPU time its "
        "threads asked for (0: never)", parse=non_negative_float, metavar="F", group=TIMING), ContentionLimits.min_cpu_share)
    contention: str = setting(Option(
        "--contention", "how much other work a window tolerates: 'strict', at most --max-other-cores; 'lenient', "
        "one core more, or on a larger machine up to half its CPUs less --threads; 'auto', strict on up to "
        f"{AUTO_STRICT_MAX_CPUS} CPUs, lenient above (the policy used is recorded in every row)",
        choices=CONTENTION_CHOICES, group=TIMING), "auto")
    max_other_cores: float = setting(Option(
        "--max-other-cores", "... or other processes used more than this many cores meanwhile (strict; lenient "
        "allows one core more, at least)", parse=non_negative_float, metavar="F", group=TIMING),
        ContentionLimits.max_other_cores)
    max_steal: float = setting(Option(
        "--max-steal", "... or the hypervisor stole more than this share of the CPUs",
        parse=non_negative_float, metavar="F", group=TIMING), ContentionLimits.max_steal_share)
    retries: int = setting(Option(
        "--retries", "a contended window is sampled again up to this many times in the same round",
        parse=non_negative_int, metavar="N", group=TIMING), 2)
    max_attempts: int | None = setting(Option(
        "--max-attempts", "rounds tried per configuration before it is 'contended'", parse=positive_int,
        metavar="N", group=TIMING), None, default_text="2 x --rounds")
    no_roofline: bool = setting(Option(
        "--no-roofline", "skip the bandwidth / matmul-rate measurement and the roofline columns", kind="switch",
        group=TIMING), False)
    roofline_copy_mib: int | None = setting(Option(
        "--roofline-copy-mib", "size of the tensor copied to measure bandwidth", parse=positive_int, metavar="MIB",
        group=TIMING), None, default_text="128 on CPU, 1024 on CUDA")


SETTINGS = LatencySettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_grid_arguments(parser, "latency", LatencySettings)


class _LazyPeaks:
    """Machine peaks measured once, in this process, before the first row that needs them."""

    def __init__(self, device: str, dtypes: tuple[str, ...], copy_mib: int | None, store: RecordStore,
                 environment: dict[str, Any], enabled: bool) -> None:
        self.device, self.dtypes, self.copy_mib = device, dtypes, copy_mib
        self.store, self.environment, self.enabled = store, environment, enabled
        self.peaks: MachinePeaks | None = None
        self.measured = False

    def get(self) -> MachinePeaks | None:
        if not self.enabled:
            return None
        if not self.measured:
            self.measured = True
            copy_bytes = self.copy_mib << 20 if self.copy_mib else None
            self.peaks = measure_machine(self.device, self.dtypes, copy_bytes=copy_bytes)
            env_fields = environment_columns(self.environment)
            for row in self.peaks.as_rows():
                self.store.append({
                    "record": "machine",
                    "key": f"machine|{self.environment['date']}|{row['quantity']}|{row['dtype']}",
                    "status": "ok",
                    **row,
                    "threads": self.environment.get("threads"),
                    **env_fields,
                }, environment=env_fields)
        return self.peaks


def add_roofline(config: Config, row: dict[str, Any], peaks: MachinePeaks | None) -> dict[str, Any]:
    """The roofline columns of a forward module-level row (other rows unchanged)."""
    if peaks is None or config.mode != "forward" or config.level != "module" or not row.get("input_shape"):
        return row
    input_shape = tuple(int(v) for v in str(row["input_shape"]).split("x"))
    output_shape = tuple(int(v) for v in str(row["output_shape"]).split("x"))
    bytes_moved = min_bytes(input_shape, output_shape, int(row["input_element_size"]), int(row["param_bytes"]))
    rate = peaks.matmul_macs_per_s.get(config.dtype, math.nan)
    row.update(roofline(row["median_ms"] / 1e3, bytes_moved, row.get("formula_macs"), peaks.bandwidth_Bps, rate))
    row["fits_llc"] = bool(peaks.llc_bytes and bytes_moved <= peaks.llc_bytes)
    row["bandwidth_GBps"] = peaks.bandwidth_Bps / 1e9
    row["matmul_GMACps"] = rate / 1e9
    return row


def round_plan(settings: LatencySettings, device_type: str) -> RoundPlan:
    """The rounds of each configuration from the settings (a ValueError names a bad value)."""
    kind = "cuda" if device_type == "cuda" else "cpu"
    rounds = ROUNDS_DEFAULT[kind] if settings.rounds is None else settings.rounds
    max_rounds = rounds if settings.max_rounds is None else settings.max_rounds
    max_attempts = 2 * max(rounds, max_rounds) if settings.max_attempts is None else settings.max_attempts
    return RoundPlan(rounds=rounds, max_rounds=max_rounds, max_attempts=max_attempts, rel_tol=settings.rel_tol)


def round_job(settings: LatencySettings, plan: RoundPlan, device: str, threads: int, budget_s: float) -> Job:
    """The job every latency round sends its worker (the configurations are added per round):
    per-round sampling, contention limits (``--contention auto`` resolved here by the machine's
    CPUs, :func:`~suite.timing.contention.resolve_policy`), retries and the process settings. The CUDA-only
    settings (TF32 of convolutions, CUDA graphs, the L2 flush) go only into a CUDA job, so a CPU
    job's wire line is what every revision's worker reads; asking for a graph or a flush without
    CUDA raises a ValueError."""
    if settings.retries < 0:
        raise ValueError(f"--retries must be >= 0, got {settings.retries}")
    cuda = device.startswith("cuda")
    if not cuda and (settings.cuda_graph == "on" or settings.flush_l2):
        flag = "--cuda-graph on" if settings.cuda_graph == "on" else "--flush-l2"
        raise ValueError(f"{flag} times GPU work and needs --device cuda[:i]; got --device {device}")
    matmul_tf32, conv_tf32 = TF32_MODES[settings.tf32]
    cuda_fields: dict[str, Any] = {"tf32_conv": conv_tf32, "cuda_graph": settings.cuda_graph == "on",
                                   "flush_l2": settings.flush_l2} if cuda else {}
    options = RoundOptions(sample_s=budget_s / plan.rounds, warmup_s=settings.warmup_s,
                           min_samples=settings.min_samples, max_samples=settings.max_samples)
    limits = ContentionLimits(min_cpu_share=settings.min_cpu_share, max_other_cores=settings.max_other_cores,
                              max_steal_share=settings.max_steal,
                              policy=resolve_policy(settings.contention, online_cpus()))
    return Job(threads=threads, device=device, flush_denormal=settings.flush_denormal == "on",
               cudnn_benchmark=settings.cudnn_benchmark == "on", tf32=matmul_tf32,
               options=options, limits=limits, retries=settings.retries, **cuda_fields)


def tables(records: list[dict[str, Any]], folder: Path | None = None) -> dict[str, Any]:
    """The latency stage's tables from its records: ``latency.csv``, one row per configuration,
    and ``machine.csv``, the machine's peaks measured at the start of each run (when any;
    ``folder``, where the records are, is not read)."""
    import pandas as pd

    frames = {"latency.csv": stage_table(records, LEADING_COLUMNS, "latency")}
    machine = [r for r in records if r.get("record") == "machine"]
    if machine:
        frames["machine.csv"] = pd.DataFrame(machine)
    gpu_states = [r for r in records if r.get("record") == "gpu_state"]
    if gpu_states:
        frames["gpu_state.csv"] = pd.DataFrame(gpu_states)
    return frames


def _rows(records: list[dict[str, Any]]) -> int:
    """How many rows ``latency.csv`` has for these records."""
    return sum(r.get("record", "latency") == "latency" for r in records)


def main(settings: LatencySettings) -> int:
    """Plan the grid (refused input is a :class:`~suite.errors.UsageError`), then list it
    (``--dry-run``), rewrite the tables (``--tables-only``) or measure it in rounds; 0 once the
    tables are written, 130 when interrupted (what was measured stays)."""
    plan = plan_sweep(settings, "latency", cpu_threads=DEFAULT_THREADS["cpu"])
    if settings.dry_run:
        for config in plan.configs:
            print(config.key())
        return 0
    kind = "cuda" if plan.torch_device.type == "cuda" else "cpu"
    budget = BUDGET_DEFAULT_S[kind] if settings.budget_s is None else settings.budget_s  # > 0: its parser checks
    try:
        rounds = round_plan(settings, plan.torch_device.type)
        job = round_job(settings, rounds, plan.device, plan.threads, budget)
        env = worker_environment(plan.threads, settings.allocator)
        env.update(runtime_environment(plan.axes.compile, env))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    out: Path = settings.out
    if settings.tables_only:
        run = rewrite_tables(out, RECORDS_FILE, tables)
        print(f"latency: {_rows(run.records)} rows in {out / 'latency.csv'}, from the records", file=sys.stderr)
        return 0
    try:
        run, result = _measure(settings, plan, rounds, job, env, budget)
    except FolderLockedError as exc:
        raise UsageError(str(exc)) from exc
    print(f"latency: {result.measured} measured, {result.contended} contended, {result.failed} failed "
          f"(rows with a status), {result.skipped} already recorded, in {result.rounds_run} rounds; "
          f"{_rows(run.records)} rows in {out / 'latency.csv'}", file=sys.stderr)
    return 130 if result.interrupted else 0


def _measure(settings: LatencySettings, plan: SweepPlan, rounds: RoundPlan, job: Job, env: dict[str, str],
             budget: float) -> tuple[Any, SweepResult]:
    """Measure the plan's configurations in rounds into ``settings.out``; the stage run and the
    sweep's result (:class:`FolderLockedError` when another run holds the folder)."""
    configs = plan.configs
    with open_stage(settings.out, RECORDS_FILE, tables) as run, measurement_settings(settings, plan) as environment:
        environment["clock"] = "cuda_event" if plan.torch_device.type == "cuda" else "perf_counter"
        environment.update(runtime_versions(plan.axes.compile))
        environment["timer"] = (f"rounds={rounds.rounds} max_rounds={rounds.max_rounds} budget_s={budget} "
                                f"isolation={settings.isolation} allocator={settings.allocator} "
                                f"flush_denormal={settings.flush_denormal} rel_tol={rounds.rel_tol}")
        if plan.torch_device.type == "cpu" and job.limits is not None:
            environment["timer"] += f" contention={job.limits.policy}"
        if plan.torch_device.type == "cuda":
            environment["timer"] += f" cuda_graph={settings.cuda_graph} flush_l2={settings.flush_l2} tf32={settings.tf32}"
        peaks = _LazyPeaks(plan.device, plan.axes.dtype, settings.roofline_copy_mib, run.store, environment,
                           not settings.no_roofline)
        if not settings.no_roofline and any(c.mode == "forward" and c.level == "module" for c in configs):
            peaks.get()  # before any worker starts: nothing else runs while it measures
        _record_gpu_state(run.store, plan, "before")
        with RoundWorkers(isolation=settings.isolation, servers=settings.servers, env=env,
                          timeout_s=settings.timeout_s) as workers:
            result = run_rounds(
                configs, run.store, workers, job, rounds, environment=environment,
                finish=lambda config, row: add_roofline(config, row, peaks.get()),
                force=settings.force, retry_failed=settings.retry_failed, limit=settings.limit,
                progress=not settings.no_progress,
            )
        _record_gpu_state(run.store, plan, "after")
    return run, result


def _record_gpu_state(store: Any, plan: SweepPlan, when: str) -> None:
    """On CUDA, append the GPU's clocks, temperature, power and throttle reasons now (``when``:
    before or after the run) as a ``gpu_state`` record (``gpu_state.csv``): a run whose clocks
    fell or that throttled says so beside its rows."""
    if plan.torch_device.type != "cuda":
        return
    state = gpu_state(str(plan.torch_device))
    store.append({"record": "gpu_state", "key": f"gpu_state|{when}|{time.time():.0f}", "when": when,
                  "device": str(plan.torch_device), "measured_at": round(time.time(), 3), **state})
