"""``python -m suite regress``: measure the regression cases and judge them, against a git
revision measured beside them (A/B) or against a stored baseline.

    python -m suite regress --against main                   # A/B: working tree vs main, ratio counter
    python -m suite regress --against main --counter instructions   # A/B under Callgrind (needs valgrind)
    python -m suite regress                                  # the committed baseline of this machine class,
                                                             # else A/B against HEAD (said in one line)
    python -m suite regress --update-baseline --baseline FILE --repeats 5   # take a baseline of your own

**A/B** (``--against REF`` or ``--against-path DIR``; :mod:`suite.regress.ab`): both sides are
measured here, each imported from its own tree in its own processes, so the verdict holds on any
machine (a hosted CI runner of any CPU model). The output folder gets each side's measurements
(``benchmark-head.json`` and ``benchmark-base.json`` in pytest-benchmark's layout, or
``instructions-head.json`` and ``instructions-base.json``) and ``verdict.json``, which names both
revisions.

**Stored baseline.** Two counters, one baseline format, table, verdict file and set of exit codes:

* ``ratio`` (default): every case is measured in one fresh worker process, forked from a server
  as the latency stage's rounds are, and written to ``--out/benchmark.json`` (pytest-benchmark's
  JSON layout); each case's ratio to its same-process reference is compared (see
  :mod:`suite.regress.gate` for the tolerance rule). Needs a
  baseline of the same machine class (CPU model, threads, device); another torch major.minor
  is judged with a warning.
* ``instructions``: every case runs under Callgrind in one valgrind process
  (:mod:`suite.regress.callgrind`); instructions per call are compared, simulated cache misses
  are reported beside them; ``--out/instructions.json`` holds the counts. Identical in
  processes that do the same things, and up to 0.9% apart when the case order or the loaded
  plugins differ, so a 1-2% tolerance holds and a 5% change is caught, on any runner whose
  torch, Python, ISA and BLAS dispatch match the baseline's (another CPU vendor is judged with a
  warning). Says nothing about GPU kernels or memory stalls.

Without ``--baseline``, a machine whose class no committed baseline matches is judged A/B
against ``HEAD``. With ``--baseline`` given, another class is not judged (exit 3 with
``--on-mismatch fail``).

Exit status: 0 no regression; 1 regression; 2 the benchmarks failed to run, a case could not be
measured (its row says why), valgrind is missing (instructions), an unknown revision or a folder
that is not a git checkout (A/B), or bad arguments; 3 the baseline is from another machine class
(its CPU, threads, device or timer) and ``--on-mismatch fail``, or an A/B base timed its ratios
with another timer (a revision from before the gate timed them as the latency stage does).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..env import collect_environment
from ..errors import UsageError
from ..options import (
    Option,
    add_options,
    non_negative_int,
    positive_float,
    positive_int,
    setting,
)
from ..plugins import PLUGINS_ENV, load_plugins, normalize_spec
from ..portable import shown_path
from ..records import write_text_atomic
from ..timing.sweep import MODE
from ..timing.timer import cpu_settings
from . import ab, callgrind
from .ab import AB_THRESHOLDS, AB_VISITS, DEFAULT_ROUNDS, Sides
from .cases import GATE_TIMER, WORKER_RECORD_KEYS, RegressSettings
from .gate import (
    COUNTERS,
    DEFAULT_FACTOR,
    DEFAULT_FLOOR,
    DEFAULT_INSTRUCTION_FLOOR,
    SOFT_KEYS,
    CaseResult,
    build_baseline,
    compare,
    counter_of,
    format_table,
    load_baseline,
    machine_class,
    machine_mismatch,
    machine_warnings,
    ratios_from_benchmark_json,
)

__all__ = ["GateSettings", "SETTINGS", "add_arguments", "main", "DEFAULT_BASELINES", "EXIT_REGRESSION", "EXIT_ERROR", "EXIT_MISMATCH"]

BASELINE_DIR = Path(__file__).resolve().parent / "baselines"
"""The committed baselines, shipped inside the package."""
DEFAULT_BASELINES: dict[str, Path] = {
    "ratio": BASELINE_DIR / "regress_cpu.json",
    "instructions": BASELINE_DIR / "regress_instructions.json",
}
DEFAULT_REPEATS = {"ratio": 5, "instructions": 3}
"""Processes a baseline is taken from, per counter (``--repeats``)."""
DEFAULT_FLOORS = {"ratio": DEFAULT_FLOOR, "instructions": DEFAULT_INSTRUCTION_FLOOR}
EXIT_REGRESSION, EXIT_ERROR, EXIT_MISMATCH = 1, 2, 3
WARNING_REASONS = {
    "ratio": "ratios to a same-process reference are meant to survive this, but a changed kernel moves them too",
    "instructions": "the counts depend on the ISA, BLAS, torch and Python, which match; the CPU vendor alone "
                    "moved them by under 0.5% between an AMD EPYC and an Intel Xeon VM",
}
"""Why a run whose machine class differs only in a soft key (:data:`SOFT_KEYS`) is still judged."""


DEFAULTS = RegressSettings()
"""The measurement defaults, shown by ``--help`` (one source: :class:`RegressSettings`)."""

def _alias(text: str) -> tuple[str, str]:
    name, sep, base = text.partition("=")
    if not sep or not name.strip() or not base.strip():
        raise ValueError(f"expected NAME=BASELINE_NAME, got {text!r}")
    return name.strip(), base.strip()


def _per_counter(counter_defaults: dict[str, object]) -> str:
    return ", ".join(f"{counter} {value}" for counter, value in counter_defaults.items())


WHAT, GATE, AB, UPDATE = "what to measure", "gate", "A/B against a revision", "baseline update"


@dataclass
class GateSettings:
    """The regression gate's settings (one flag per field; ``python -m suite regress --help``);
    the measurement defaults are those of :class:`RegressSettings`."""

    counter: str = setting(Option(
        "--counter", "what is compared: 'ratio' (time / same-process reference conv) or 'instructions' (per call, "
        "under Callgrind; needs valgrind)", choices=COUNTERS, group=WHAT), "ratio")
    attn: str = setting("--attn", ",".join(DEFAULTS.attn))
    mode: tuple[str, ...] = setting(MODE, DEFAULTS.mode)
    batch: tuple[int, ...] = setting("--batch", (DEFAULTS.batch,), default_text=f"{DEFAULTS.batch}; one value")
    channels: tuple[int, ...] = setting("--channels", (DEFAULTS.channels,), default_text=f"{DEFAULTS.channels}; one value")
    size: tuple[int, ...] = setting("--size", (DEFAULTS.size,), default_text=f"{DEFAULTS.size}; one value")
    threads: int = setting("--threads", DEFAULTS.threads, default_text=f"{DEFAULTS.threads}; part of the machine class")
    visits: int | None = setting(Option(
        "--visits", "measurements per case in one process (ratio: interleaved with the reference; instructions: "
        "counted repetitions); the case's value is their median", parse=positive_int, metavar="N", group=WHAT),
        None, default_text=(f"{DEFAULTS.visits}; {AB_VISITS} with --against (ratio: its rounds give the spread; "
                                     "instructions: the sides' counts are compared in one context)"))
    budget_s: float = setting("--budget-s", DEFAULTS.budget_s,
                              default_text=f"{DEFAULTS.budget_s}; ratio counter: of one measurement")
    calls: int = setting(Option("--calls", "instructions: calls of the step per counted repetition",
                                parse=positive_int, metavar="N", group=WHAT), DEFAULTS.calls)
    plugins: list[str] = setting("--plugin", [])
    against: str | None = setting(Option(
        "--against", "judge the working tree against this git revision (a commit, branch or tag), both measured "
        "side by side in this job, each from its own tree, instead of against a stored baseline; works on any "
        "machine", metavar="REF", group=AB), None,
        default_text="none; HEAD when no committed baseline matches this machine and --baseline is not given")
    against_path: Path | None = setting(Option(
        "--against-path", "as --against, with another checkout's files (its working tree) as the base",
        parse=Path, metavar="DIR", group=AB), None)
    rounds: int = setting("--rounds", DEFAULT_ROUNDS, default_text=f"{DEFAULT_ROUNDS}; ratio counter with --against")
    threshold: float | None = setting(Option(
        "--threshold", "A/B: the smallest slowdown (head / base - 1) judged a regression; ratio: also needs its "
        "95% interval above 0", parse=positive_float, metavar="F", group=AB), None,
        default_text=_per_counter(AB_THRESHOLDS))
    baseline: Path | None = setting(Option("--baseline", "baseline JSON", parse=Path, metavar="FILE", group=GATE), None,
                                    default_text=_per_counter({c: f"suite/regress/baselines/{p.name}"
                                                               for c, p in DEFAULT_BASELINES.items()}) + ", inside the package")
    baseline_name: list[tuple[str, str]] = setting(Option(
        "--baseline-name", "hold NAME's cases to BASE's baseline (e.g. a patched copy of a module); repeatable",
        parse=_alias, metavar="NAME=BASE", kind="append", group=GATE), [])
    confirm: int = setting(Option(
        "--confirm", "ratio: re-measure a regressing case this many times in fresh processes; it fails only if every "
        "measurement regresses (instruction counts are not re-measured)", parse=non_negative_int, metavar="N",
        group=GATE), 1)
    on_mismatch: str = setting(Option(
        "--on-mismatch", "baseline from another machine class (ratio: CPU model, threads, device; another torch "
        "major.minor is only a warning; instructions: torch, Python, ISA, BLAS, threads; another CPU vendor is only a "
        "warning) with --baseline given: 'fail' exits 3, "
        "'warn' exits 0; cases are never judged across classes", choices=("fail", "warn"), group=GATE), "fail")
    update_baseline: bool = setting(Option(
        "--update-baseline", "measure in --repeats processes and write --baseline FILE, which must be given (no "
        "gating)", kind="switch",
        group=UPDATE), False)
    repeats: int | None = setting(Option("--repeats", "processes for --update-baseline", parse=positive_int,
                                         metavar="N", group=UPDATE), None, default_text=_per_counter(DEFAULT_REPEATS))
    floor: float | None = setting(Option("--floor", "smallest tolerance, log scale", parse=positive_float,
                                         metavar="F", group=UPDATE), None, default_text=_per_counter(DEFAULT_FLOORS))
    factor: float = setting(Option("--factor", "tolerance = max(floor, factor x cross-process spread)",
                                   parse=positive_float, metavar="F", group=UPDATE), DEFAULT_FACTOR)
    out: Path = setting("--out", Path("reports/regress"), default_text=(
        "reports/regress; the counter's measurements (benchmark.json or instructions.json) and verdict.json"))

    def __post_init__(self) -> None:
        for name in ("batch", "channels", "size"):
            if len(getattr(self, name)) != 1:
                raise ValueError(f"--{name}: the gate measures one shape, got {','.join(map(str, getattr(self, name)))}")


SETTINGS = GateSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1] if __doc__ else None
    add_options(parser, GateSettings)


@dataclass
class Measured:
    """One process's measurements: per case its facts (the counter's value under its own name),
    the cases that could not be measured, the environment and its machine class."""

    cases: dict[str, dict[str, Any]]
    errors: dict[str, str]
    environment: dict[str, Any]
    machine: dict[str, Any]


CASE_TIMEOUT_S = 600.0
"""A case whose worker has not answered after this long is a row with status ``timeout``."""


def run_cases(settings: RegressSettings, json_path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Measure every case in one fresh worker process, forked from a server that imported torch
    and the zoo, as the latency stage's rounds are (:class:`suite.timing.pool.RoundWorkers`);
    write ``json_path`` in pytest-benchmark's JSON format (each case's facts in ``extra_info``).

    Returns ``{case: facts}`` of the measured cases and ``{case: "status: message"}`` of those
    that could not be measured. The worker inherits the allocator and sets the gate's threads."""
    from ..timing.pool import RoundWorkers, worker_environment
    from .cases import GateCase, case_id, gate_job

    cases = [GateCase(name, mode, case_id(name, mode, settings)) for name, mode in settings.cases()]
    env = worker_environment(settings.threads, "inherited")
    if settings.plugins:
        env[PLUGINS_ENV] = ";".join(settings.plugins)
    job = gate_job(settings)
    results: dict[str, dict[str, Any]] = {}
    with RoundWorkers(isolation="fork", servers=1, env=env, timeout_s=CASE_TIMEOUT_S) as workers:
        workers.run(cases, job, lambda case, fields: results.__setitem__(case.case, fields))
    measured = {case: {k: v for k, v in fields.items() if k not in WORKER_RECORD_KEYS}
                for case, fields in results.items() if fields.get("status") == "ok"}
    errors = {case: f"{fields.get('status')}: {fields.get('message', '')}"
              for case, fields in results.items() if fields.get("status") != "ok"}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json_path, json.dumps(benchmark_json(measured), indent=1) + "\n")
    return ratios_from_benchmark_json(json.loads(json_path.read_text())), errors


def _stats(times: list[float]) -> dict[str, Any]:
    """pytest-benchmark's ``stats`` of ``times`` (seconds): its fields, computed as it does."""
    times = sorted(times)
    mean = statistics.fmean(times)
    stddev = statistics.stdev(times) if len(times) > 1 else 0.0
    q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (times[0],) * 3
    iqr = q3 - q1
    inside = [t for t in times if q1 - 1.5 * iqr <= t <= q3 + 1.5 * iqr]
    iqr_outliers = len(times) - len(inside)
    stddev_outliers = sum(1 for t in times if abs(t - mean) > stddev)
    return {"min": times[0], "max": times[-1], "mean": mean, "stddev": stddev, "rounds": len(times),
            "median": statistics.median(times), "iqr": iqr, "q1": q1, "q3": q3, "iqr_outliers": iqr_outliers,
            "stddev_outliers": stddev_outliers, "outliers": f"{stddev_outliers};{iqr_outliers}",
            "ld15iqr": inside[0], "hd15iqr": inside[-1], "ops": 1 / mean, "total": math.fsum(times),
            "iterations": 1}


def benchmark_json(measured: dict[str, dict[str, Any]], *, commit: str | None = None) -> dict[str, Any]:
    """The cases in pytest-benchmark's JSON layout (``pytest-benchmark compare`` reads it): one
    benchmark per case, its facts in ``extra_info`` and the module's per-repeat (A/B: per-round)
    medians, in seconds, as the samples of ``stats``. ``commit``: the measured revision (this
    checkout's when None)."""
    benchmarks = []
    for case, facts in measured.items():
        times = [t / 1e3 for t in facts.get("module_ms_repeats", [facts["module_ms"]])]
        extra = {**facts, "shape": "x".join(map(str, facts.get("shape", [])))}
        benchmarks.append({"group": None, "name": f"test_latency[{case}]",
                           "fullname": f"suite.regress::test_latency[{case}]", "params": {"case": case},
                           "param": case, "extra_info": extra, "options": {"timer": "perf_counter"},
                           "stats": _stats(times)})
    environment = collect_environment()
    return {"machine_info": {k: environment.get(k) for k in ("cpu", "cpu_count", "python", "platform")},
            "commit_info": {"id": commit or environment.get("commit")}, "benchmarks": benchmarks,
            "datetime": environment.get("date"), "version": "attnbench"}


def _instruction_environment(counts: callgrind.Counts) -> dict[str, Any]:
    """The environment of an instruction count: this machine's, valgrind's version and what the
    counts depend on as seen inside valgrind (``counted_*``)."""
    return {**collect_environment(), "valgrind_version": counts.valgrind,
            **{f"counted_{key}": value for key, value in counts.dispatch.items()}}


def measure(counter: str, settings: RegressSettings, out: Path, label: str, *, rotate: int = 0) -> Measured:
    """Measure every case once with ``counter``; files go to ``out`` named after ``label``.
    ``rotate``: the instruction counter counts the cases starting at this index. Raises
    ``RuntimeError`` when the measurement as a whole failed."""
    if counter == "ratio":
        with cpu_settings(settings.threads):  # the environment records the thread count measured with
            environment = collect_environment()
        cases, errors = run_cases(settings, out / f"{label}.json")
        return Measured(cases, errors, environment, machine_class(environment, threads=settings.threads, timer=GATE_TIMER))
    counts = callgrind.collect(settings, out / "callgrind", rotate=rotate)
    environment = _instruction_environment(counts)
    write_text_atomic(out / f"{label}.json", json.dumps(
        {"environment": environment, "settings": settings.to_json(), "rotate": rotate, "wall_s": counts.wall_s,
         "cases": counts.cases, "errors": counts.errors}, indent=1) + "\n")
    print(f"regress: counted {len(counts.cases)} case(s) under Callgrind in {counts.wall_s:.0f} s", file=sys.stderr)
    return Measured(counts.cases, counts.errors, environment, callgrind.machine_class(counts.dispatch))


def _gate_settings(settings: GateSettings, names: tuple[str, ...], plugins: tuple[str, ...],
                   *, ab_run: bool = False) -> RegressSettings:
    """What the cases of ``names`` measure, from the flags (``--visits`` defaults to
    :data:`AB_VISITS` in an A/B run)."""
    visits = settings.visits or (AB_VISITS if ab_run else DEFAULTS.visits)
    return RegressSettings(attn=names, mode=settings.mode, batch=settings.batch[0], channels=settings.channels[0],
                           size=settings.size[0], threads=settings.threads, visits=visits,
                           budget_s=settings.budget_s, calls=settings.calls, plugins=plugins)


def _plugins(settings: GateSettings) -> tuple[str, ...]:
    return tuple(normalize_spec(spec) for spec in settings.plugins)  # the benchmarks run from the project root


def _regress_settings(settings: GateSettings) -> RegressSettings:
    """The measurement settings of a stored-baseline run: ``--attn`` resolved in this zoo, with
    the ``--plugin`` types loaded."""
    plugins = _plugins(settings)
    load_plugins(plugins)
    import modules

    return _gate_settings(settings, tuple(modules.list_attention(settings.attn, strict=True)), plugins)


def _print_mismatch(baseline: dict[str, Any], machine: dict[str, Any], mismatch: list[str]) -> None:
    print(f"regress: INCOMPARABLE: baseline from {baseline.get('machine_class')}, this is {machine}; "
          f"differs in {'; '.join(mismatch)}. Judge against a git revision measured on this machine instead "
          "(--against HEAD, or the branch you compare with), or take a baseline of this class into a file of "
          "your own (--update-baseline --baseline my_baseline.json).")


class MeasurementFailed(RuntimeError):
    """The measurement failed as a whole (a worker that did not start, a counter that crashed):
    not the user's input, so not a usage error; :func:`main` prints it and exits
    :data:`EXIT_ERROR`."""


def _measure_or_refuse(counter: str, regress: RegressSettings, out: Path, label: str, *, rotate: int = 0) -> Measured:
    """:func:`measure`; a measurement that failed as a whole is :class:`MeasurementFailed`."""
    try:
        return measure(counter, regress, out, label, rotate=rotate)
    except (RuntimeError, OSError) as exc:
        raise MeasurementFailed(str(exc)) from exc


def _update_baseline(settings: GateSettings, regress: RegressSettings, baseline_path: Path, started: float) -> int:
    """Measure in ``--repeats`` processes and write the baseline to ``baseline_path``."""
    counter = settings.counter
    repeats = DEFAULT_REPEATS[counter] if settings.repeats is None else settings.repeats
    runs, last = [], None
    step = max(1, len(regress.cases()) // repeats)  # instructions: each process in another order
    for i in range(repeats):
        print(f"regress: baseline process {i + 1}/{repeats}", file=sys.stderr)
        last = _measure_or_refuse(counter, regress, settings.out, f"baseline-run-{i + 1}", rotate=i * step)
        runs.append(last.cases)
        for case, why in last.errors.items():
            print(f"regress: {case} could not be measured and is left out of the baseline ({why})", file=sys.stderr)
    assert last is not None  # --repeats >= 1 (_check_arguments)
    floor = DEFAULT_FLOORS[counter] if settings.floor is None else settings.floor
    baseline = build_baseline(runs, environment=last.environment, machine=last.machine, settings=regress.to_json(),
                              floor=floor, factor=settings.factor, counter=counter)
    write_text_atomic(baseline_path, json.dumps(baseline, indent=1, sort_keys=True) + "\n")
    print(f"{'case':32s} {counter:>14s} {'spread':>7s} {'tolerance':>9s}")
    for case, entry in baseline["cases"].items():
        value = f"{entry[counter]:14,.0f}" if counter == "instructions" else f"{entry[counter]:14.4f}"
        print(f"{case:32s} {value} {entry['spread']:7.2%} {entry['tolerance']:9.2%}")
    print(f"regress: baseline of {len(baseline['cases'])} cases from {repeats} processes written to "
          f"{baseline_path} in {time.perf_counter() - started:.0f} s")
    return 0


def _confirm(settings: GateSettings, regress: RegressSettings, baseline: dict[str, Any],
             values: dict[str, list[float]], results: list[CaseResult], errors: dict[str, str]) -> list[CaseResult]:
    """Re-measure the regressing ratio cases in fresh processes (``--confirm`` times)."""
    aliases = dict(settings.baseline_name)
    for attempt in range(settings.confirm):
        suspects = {r.case.split("|")[0] for r in results if r.verdict == "regression"}
        if not suspects:
            break
        print(f"regress: confirming {len(suspects)} regressing type(s) in a fresh process "
              f"({attempt + 1}/{settings.confirm}): {', '.join(sorted(suspects))}", file=sys.stderr)
        again = replace(regress, attn=tuple(sorted(suspects)))
        confirmation = _measure_or_refuse("ratio", again, settings.out, f"benchmark-confirm-{attempt + 1}").cases
        for r in results:
            if r.verdict == "regression" and r.case in confirmation:
                values[r.case].append(confirmation[r.case]["ratio"])
        results = compare(baseline, values, baseline_names=aliases, errors=errors)
    return results


def _verdict(results: list[CaseResult], mismatch: list[str], summary: str) -> int:
    failed = [r.case for r in results if r.verdict == "error"]
    if failed:
        print(summary + f"ERROR, {len(failed)} case(s) could not be measured: {', '.join(failed)}")
        return EXIT_ERROR
    unjudged = [r.case for r in results if r.verdict == "incomparable"] if not mismatch else []
    if unjudged:  # A/B sides whose ratios were timed differently
        print(summary + f"INCOMPARABLE, {len(unjudged)} case(s) not judged (see their messages): {', '.join(unjudged)}")
        return EXIT_MISMATCH
    if mismatch:
        return 0  # --on-mismatch warn
    regressions = [r.case for r in results if r.verdict == "regression"]
    faster = [r.case for r in results if r.verdict == "faster"]
    if regressions:
        print(summary + f"FAIL, {len(regressions)} regression(s): {', '.join(regressions)}")
        return EXIT_REGRESSION
    extra = f" ({len(faster)} faster: {', '.join(faster)})" if faster else ""
    print(summary + "PASS" + extra)
    return 0


def _ab_measure(settings: GateSettings, sides: Sides, regress: RegressSettings, repo: Path,
                threshold: float, unloadable: dict[str, dict[str, str]]) -> tuple[list[ab.ABCase], dict[str, Any]]:
    """Measure both sides with the chosen counter, write each side's measurements to ``--out``
    and return the verdict per case with the environment."""
    per_side = {side.name: ab.side_settings(regress, side, repo, drop=unloadable[side.name]) for side in sides}
    revisions = {side.name: side.revision for side in sides}
    if settings.counter == "ratio":
        return _ab_measure_ratios(settings, sides, per_side, revisions, repo, threshold)
    counts = ab.measure_instruction_sides(sides, per_side, settings.out, repo)
    environment = _instruction_environment(counts["head"])
    for name, count in counts.items():
        write_text_atomic(settings.out / f"instructions-{name}.json", json.dumps(
            {"revision": revisions[name], "environment": environment, "settings": per_side[name].to_json(),
             "wall_s": count.wall_s, "cases": count.cases, "errors": count.errors}, indent=1) + "\n")
    errors: dict[str, str] = {}
    for name, count in counts.items():
        for case, why in count.errors.items():
            errors[case] = "; ".join(filter(None, [errors.get(case, ""), f"{name}: {why}"]))
    return ab.judge_instructions(counts["head"].cases, counts["base"].cases, errors, threshold), environment


def _ab_measure_ratios(settings: GateSettings, sides: Sides, per_side: dict[str, RegressSettings],
                       revisions: dict[str, str], repo: Path, threshold: float) -> tuple[list[ab.ABCase], dict[str, Any]]:
    """The ratio counter's A/B measurement: ``--rounds`` rounds of both sides' workers, each
    side's ``benchmark-<side>.json``, the verdict per case and the environment."""
    from ..stage import progress_bar

    with cpu_settings(per_side["head"].threads):
        environment = collect_environment()
    with progress_bar(2 * settings.rounds, "A/B rounds", unit="worker") as bar:
        rounds = ab.measure_ratio_sides(sides, per_side, rounds=settings.rounds, timeout_s=CASE_TIMEOUT_S,
                                        repo=repo, on_job=lambda name, index: bar.update(1))
    for name, cases in rounds.items():
        measured = {case: ab.side_benchmark_facts(fields) for case, fields in cases.items()
                    if any(f.get("status") == "ok" for f in fields)}
        write_text_atomic(settings.out / f"benchmark-{name}.json",
                          json.dumps(benchmark_json(measured, commit=revisions[name]), indent=1) + "\n")
    return ab.judge_ratios(rounds["head"], rounds["base"], threshold), environment


def run_ab(settings: GateSettings, started: float) -> int:
    """The A/B gate: the working tree against ``--against`` (or ``--against-path``), both
    measured here (:mod:`suite.regress.ab`); the table, ``verdict.json`` and each side's
    measurements in ``--out``. A revision, folder or counter that cannot be used is a
    :class:`UsageError`."""
    counter = settings.counter
    threshold = AB_THRESHOLDS[counter] if settings.threshold is None else settings.threshold
    try:
        results, environment, regress, head, base = _run_ab_sides(settings, threshold)
    except MeasurementFailed:
        raise
    except (ValueError, callgrind.CounterUnavailable) as exc:  # a revision, folder or counter it cannot use
        raise UsageError(str(exc)) from exc
    except (RuntimeError, OSError) as exc:  # git or the folders failing under it
        raise MeasurementFailed(str(exc)) from exc
    print(ab.format_ab_table(results, counter, threshold))
    elapsed = time.perf_counter() - started
    verdict = {
        "mode": "ab",
        "counter": counter,
        "head": head,
        "base": {**base, "named": shown_path(base["named"]) if settings.against_path else base["named"]},
        "threshold": threshold,
        "rounds": settings.rounds if counter == "ratio" else 1,
        "rule": ab.RULES[counter].format(threshold=threshold),
        "environment": environment,
        "settings": regress.to_json(),
        "results": [r.as_dict() for r in results],
        "wall_s": elapsed,
    }
    settings.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(settings.out / "verdict.json", json.dumps(verdict, indent=1) + "\n")
    return _verdict(results, [], f"regress: A/B against {base['named']}: {len(results)} cases in {elapsed:.0f} s: ")


def _run_ab_sides(settings: GateSettings, threshold: float) -> tuple[
        list[ab.ABCase], dict[str, Any], RegressSettings, dict[str, str], dict[str, str]]:
    """Materialise both sides, resolve their zoos and measure the cases both have; the results,
    the environment, the measurement settings and what ``verdict.json`` says of each side."""
    counter = settings.counter
    from_env = tuple(normalize_spec(spec) for spec in os.environ.get(PLUGINS_ENV, "").split(";") if spec.strip())
    plugins = tuple(dict.fromkeys(_plugins(settings) + from_env))  # both, as the stored-baseline gate loads them
    if counter == "instructions":
        callgrind.find_valgrind()
    repo = ab.checkout_root(Path.cwd())
    with ab.materialise(repo, against=settings.against, against_path=settings.against_path) as sides:
        print(f"regress: A/B, {counter}: working tree ({sides.head.short}) against "
              f"{sides.base.named} ({sides.base.short})", file=sys.stderr)
        listing = _gate_settings(settings, ("-",), plugins, ab_run=True)
        zoo = ab.resolve_zoo(sides, settings.attn, listing, repo)
        for name, failed in zoo.unloadable.items():
            for spec, why in failed.items():
                print(f"regress: the {name} side cannot load the plugin {spec} ({why}); its types count as "
                      f"{'removed' if name == 'head' else 'new'}", file=sys.stderr)
        regress = _gate_settings(settings, tuple(zoo.names) or ("-",), plugins, ab_run=True)
        results = ab.only_one_side(zoo.only, regress)
        if zoo.names:
            settings.out.mkdir(parents=True, exist_ok=True)
            try:
                judged, environment = _ab_measure(settings, sides, regress, repo, threshold, zoo.unloadable)
            except (ValueError, RuntimeError, OSError, callgrind.CounterUnavailable) as exc:
                raise MeasurementFailed(str(exc)) from exc  # the sides were usable; measuring them failed
            results = judged + results
        else:
            environment = collect_environment()
            print("regress: no attention type is in both sides' zoos: nothing to judge", file=sys.stderr)
        return results, environment, regress, sides.head.as_dict(), sides.base.as_dict()


def _against_head(settings: GateSettings, started: float, mismatch: list[str]) -> int:
    """No committed baseline of this machine class: judge the working tree against ``HEAD``."""
    print(f"regress: no committed {settings.counter} baseline for this machine class (it differs in "
          f"{'; '.join(m.split(':')[0] for m in mismatch)}): judging the working tree against HEAD, "
          "both measured here (--against HEAD)")
    return run_ab(replace(settings, against="HEAD", baseline=None), started)


def _check_arguments(settings: GateSettings) -> None:
    """:class:`UsageError` for flags that contradict each other: A/B flags combined with what
    only a stored baseline means, or ``--update-baseline`` without the file to write."""
    if settings.against is not None and settings.against_path is not None:
        raise UsageError("--against and --against-path both name the base: give one")
    if settings.against is not None or settings.against_path is not None:
        if settings.counter == "ratio" and settings.rounds < 2:
            raise UsageError("--rounds must be at least 2 with --against (an interval needs two rounds), "
                             f"got {settings.rounds}")
        clashes = [flag for flag, given in (("--baseline", settings.baseline is not None),
                                            ("--update-baseline", settings.update_baseline),
                                            ("--baseline-name", bool(settings.baseline_name))) if given]
        if clashes:
            raise UsageError(f"--against measures both sides here; {', '.join(clashes)} applies to a stored baseline")
    if settings.update_baseline and settings.baseline is None:
        raise UsageError("--update-baseline writes the file named by --baseline FILE: name it (a committed "
                         f"baseline, {shown_path(DEFAULT_BASELINES[settings.counter])}, is rewritten only when "
                         "named on purpose)")
    if settings.repeats is not None and settings.repeats < 1:
        raise UsageError(f"--repeats must be >= 1, got {settings.repeats}")


def main(settings: GateSettings) -> int:
    """Run the gate; its exit codes are :data:`EXIT_REGRESSION`, :data:`EXIT_ERROR` (a case or
    the whole measurement that failed) and :data:`EXIT_MISMATCH`; refused input raises
    :class:`UsageError` (exit 2 as well)."""
    try:
        return _gate(settings)
    except MeasurementFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _gate(settings: GateSettings) -> int:
    """The A/B gate (``--against``/``--against-path``), or the stored-baseline gate: taking a
    baseline with ``--update-baseline``, or judging against one."""
    started = time.perf_counter()
    _check_arguments(settings)
    if settings.against is not None or settings.against_path is not None:
        return run_ab(settings, started)
    try:
        regress = _regress_settings(settings)
        if settings.counter == "instructions":
            callgrind.find_valgrind()  # before any work: a clear message when it is missing
    except (ValueError, callgrind.CounterUnavailable) as exc:  # bad --attn, a PluginError, no valgrind
        raise UsageError(str(exc)) from exc
    settings.out.mkdir(parents=True, exist_ok=True)
    if settings.update_baseline:
        assert settings.baseline is not None  # _check_arguments refuses --update-baseline without it
        return _update_baseline(settings, regress, settings.baseline, started)
    return _stored_baseline_gate(settings, regress, started)


def _load_gated_baseline(settings: GateSettings, path: Path) -> dict[str, Any]:
    """The baseline at ``path`` for ``--counter``; :class:`UsageError` when it cannot be used."""
    try:
        baseline = load_baseline(path)
        if counter_of(baseline) != settings.counter:
            raise ValueError(f"it holds {counter_of(baseline)} values, not {settings.counter} (pass --counter "
                             f"{counter_of(baseline)}, or a baseline taken with --counter {settings.counter})")
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot use the baseline {path}: {exc} (judge against a revision with --against REF, "
                         "or take a baseline with --update-baseline --baseline FILE)") from exc
    return baseline


def _stored_baseline_gate(settings: GateSettings, regress: RegressSettings, started: float) -> int:
    """Judge the cases against ``--baseline`` (the committed baseline of ``--counter`` when not
    given; A/B against ``HEAD`` when that one is of another machine class)."""
    counter = settings.counter
    explicit = settings.baseline is not None
    path = settings.baseline or DEFAULT_BASELINES[counter]
    baseline = _load_gated_baseline(settings, path)
    if counter == "ratio":  # the ratio class is known before measuring: nothing is measured in vain
        expected = machine_class(collect_environment(), threads=regress.threads, timer=GATE_TIMER)
        mismatch = machine_mismatch(baseline.get("machine_class", {}), expected, soft=SOFT_KEYS[counter])
        if mismatch and not explicit:
            return _against_head(settings, started, mismatch)
        if mismatch and settings.on_mismatch == "fail":
            _print_mismatch(baseline, expected, mismatch)
            print("regress: nothing measured (--on-mismatch fail); --on-mismatch warn measures and shows the "
                  "numbers without judging them")
            return EXIT_MISMATCH
    current = _measure_or_refuse(counter, regress, settings.out, "benchmark" if counter == "ratio" else "instructions")
    mismatch = machine_mismatch(baseline.get("machine_class", {}), current.machine, soft=SOFT_KEYS[counter])
    if mismatch and not explicit:
        return _against_head(settings, started, mismatch)
    results = _judge(settings, regress, baseline, current, mismatch)
    warnings = machine_warnings(baseline.get("machine_class", {}), current.machine, SOFT_KEYS[counter])
    if warnings and not mismatch:
        print(f"regress: WARNING: judged across {'; '.join(warnings)}: {WARNING_REASONS[counter]}; to be "
              "sure, judge against a revision measured here (--against REF)")
    elapsed = time.perf_counter() - started
    verdict = {
        "counter": counter,
        "baseline": shown_path(path),
        "machine_class": current.machine,
        "baseline_machine_class": baseline.get("machine_class"),
        "mismatch": mismatch,
        "warnings": warnings,
        "environment": current.environment,
        "settings": regress.to_json(),
        "results": [r.as_dict() for r in results],
        "wall_s": elapsed,
    }
    write_text_atomic(settings.out / "verdict.json", json.dumps(verdict, indent=1) + "\n")
    if mismatch:
        _print_mismatch(baseline, current.machine, mismatch)
        if settings.on_mismatch == "fail":
            return EXIT_MISMATCH
    return _verdict(results, mismatch, f"regress: {len(results)} cases in {elapsed:.0f} s: ")


def _judge(settings: GateSettings, regress: RegressSettings, baseline: dict[str, Any], current: Measured,
           mismatch: list[str]) -> list[CaseResult]:
    """Each case's verdict against the baseline (regressing ratio cases confirmed; every case
    ``incomparable`` across machine classes), with the table printed."""
    counter = settings.counter
    values = {case: [facts[counter]] for case, facts in current.cases.items()}
    results = compare(baseline, values, baseline_names=dict(settings.baseline_name), errors=current.errors)
    if counter == "ratio" and not mismatch:  # nothing is judged across machine classes
        results = _confirm(settings, regress, baseline, values, results, current.errors)
    if mismatch:
        for r in results:
            if r.verdict != "error":
                r.verdict = "incomparable"
    beside = {case: {key: facts[key] for key in ("d1_misses", "ll_misses")}
              for case, facts in current.cases.items()} if counter == "instructions" else None
    print(format_table(results, counter, beside))
    return results
