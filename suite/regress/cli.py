"""``python -m suite regress``: run the latency benchmarks and gate them against a baseline.

    python -m suite regress                                  # gate: exit 1 on a regression
    python -m suite regress --update-baseline --repeats 5    # re-take the baseline (5 processes)

The benchmarks (``tests/benchmarks``, pytest-benchmark) run in a pytest subprocess that writes
``--out/benchmark.json``; the gate reads each case's ratio to its same-process reference from
it and compares with ``--baseline`` (see :mod:`suite.regress.gate` for the tolerance rule).
``--out/verdict.json`` holds the verdicts with the environment.

Exit status: 0 no regression; 1 regression; 2 the benchmarks failed to run, a case could not be
measured (its row says why), or bad arguments; 3 the baseline is from another machine class and
``--on-mismatch fail``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..env import PROJECT_ROOT, collect_environment
from ..plugins import load_plugins, normalize_spec
from ..records import RecordStore, write_text_atomic
from ..timing.grid import MODES
from ..timing.sweep import choice_list, resolve_names
from ..timing.timer import cpu_settings
from .cases import DEFAULT_ATTN, RegressSettings
from .gate import (
    DEFAULT_FACTOR,
    DEFAULT_FLOOR,
    build_baseline,
    compare,
    format_table,
    load_baseline,
    machine_class,
    machine_mismatch,
    ratios_from_benchmark_json,
)

__all__ = ["add_arguments", "main", "DEFAULT_BASELINE", "EXIT_REGRESSION", "EXIT_ERROR", "EXIT_MISMATCH"]

DEFAULT_BASELINE = PROJECT_ROOT / "benchmarks" / "baseline" / "regress_cpu.json"
BENCHMARKS_DIR = PROJECT_ROOT / "tests" / "benchmarks"
EXIT_REGRESSION, EXIT_ERROR, EXIT_MISMATCH = 1, 2, 3


DEFAULTS = RegressSettings()
"""The measurement defaults, shown by ``--help`` (one source: :class:`RegressSettings`)."""

def _alias(text: str) -> tuple[str, str]:
    name, sep, base = text.partition("=")
    if not sep or not name or not base:
        raise argparse.ArgumentTypeError(f"expected NAME=BASELINE_NAME, got {text!r}")
    return name.strip(), base.strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1] if __doc__ else None
    what = parser.add_argument_group("what to measure")
    what.add_argument("--attn", default=",".join(DEFAULT_ATTN), metavar="PATTERN",
                      help=f"attention types, fnmatch patterns, comma-separated (default: {','.join(DEFAULT_ATTN)})")
    what.add_argument("--mode", type=choice_list(MODES), default=DEFAULTS.modes, metavar="M[,M]",
                      help="forward and/or train (default: both)")
    what.add_argument("--batch", type=int, default=DEFAULTS.batch, help=f"batch size (default: {DEFAULTS.batch})")
    what.add_argument("--channels", type=int, default=DEFAULTS.channels,
                      help=f"channels (default: {DEFAULTS.channels})")
    what.add_argument("--size", type=int, default=DEFAULTS.size, help=f"input is SIZE x SIZE (default: {DEFAULTS.size})")
    what.add_argument("--threads", type=int, default=DEFAULTS.threads,
                      help=f"torch intra-op threads (default: {DEFAULTS.threads}; part of the machine class)")
    what.add_argument("--visits", type=int, default=DEFAULTS.repeats,
                      help="interleaved measurements per case in one process; the ratio is their median "
                      f"(default: {DEFAULTS.repeats})")
    what.add_argument("--budget-s", type=float, default=DEFAULTS.budget_s,
                      help=f"timer budget of one measurement (default: {DEFAULTS.budget_s})")
    what.add_argument("--plugin", "--import", dest="plugins", action="append", default=[], metavar="SPEC",
                      help="bring your own module, as in `python -m suite bench --plugin`: 'pkg.mod:Class', "
                      "'name=pkg.mod:Class', or 'pkg.mod' / 'path/to/file.py' that registers its own types; "
                      "repeatable")
    gate = parser.add_argument_group("gate")
    gate.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE,
                      help=f"baseline JSON (default: {DEFAULT_BASELINE.relative_to(PROJECT_ROOT)})")
    gate.add_argument("--baseline-name", type=_alias, action="append", default=[], metavar="NAME=BASE",
                      help="hold NAME's cases to BASE's baseline (e.g. a patched copy of a module); repeatable")
    gate.add_argument("--confirm", type=int, default=1,
                      help="re-measure a regressing case this many times in fresh processes; it fails only "
                      "if every measurement regresses (default: 1)")
    gate.add_argument("--on-mismatch", choices=("fail", "warn"), default="fail",
                      help="baseline from another machine class (CPU model, threads, device, torch major.minor): "
                      "'fail' exits 3, 'warn' exits 0; cases are never compared across classes (default: fail)")
    update = parser.add_argument_group("baseline update")
    update.add_argument("--update-baseline", action="store_true",
                        help="measure in --repeats processes and rewrite --baseline (no gating)")
    update.add_argument("--repeats", type=int, default=5, help="processes for --update-baseline (default: 5)")
    update.add_argument("--floor", type=float, default=DEFAULT_FLOOR,
                        help=f"smallest tolerance, log scale (default: {DEFAULT_FLOOR})")
    update.add_argument("--factor", type=float, default=DEFAULT_FACTOR,
                        help=f"tolerance = max(floor, factor x cross-process spread) (default: {DEFAULT_FACTOR})")
    parser.add_argument("--out", type=Path, default=Path("reports") / "regress",
                        help="pytest-benchmark JSONs and verdict.json (default: reports/regress)")


def run_benchmarks(settings: RegressSettings, json_path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Run ``tests/benchmarks`` in a fresh pytest process.

    Returns ``{case: extra_info}`` of the measured cases and ``{case: "status: message"}`` of
    those that could not be measured (written next to the JSON as ``*.errors.jsonl``)."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    errors_path = json_path.with_suffix(".errors.jsonl")
    errors_path.unlink(missing_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(settings.to_json(), fh)
        settings_path = fh.name
    command = [
        sys.executable, "-m", "pytest", str(BENCHMARKS_DIR), "--run-benchmarks",
        "--regress-settings", settings_path, "--regress-errors", str(errors_path.resolve()),
        "--benchmark-json", str(json_path.resolve()),
        "-q", "-p", "no:cacheprovider", "--benchmark-columns=median,iqr,rounds,iterations",
    ]
    try:
        proc = subprocess.run(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    finally:
        Path(settings_path).unlink(missing_ok=True)
    if proc.returncode != 0 or not json_path.exists():
        sys.stderr.write(proc.stdout[-6000:])
        raise RuntimeError(f"the benchmarks failed (pytest exit {proc.returncode}): {' '.join(command)}")
    errors = {row["case"]: f"{row['status']}: {row['message']}" for row in RecordStore(errors_path).read()}
    return ratios_from_benchmark_json(json.loads(json_path.read_text())), errors


def _settings(args: argparse.Namespace) -> RegressSettings:
    plugins = tuple(normalize_spec(spec) for spec in args.plugins)  # the benchmarks run from the project root
    load_plugins(plugins)
    names = tuple(resolve_names(args.attn))
    return RegressSettings(attn=names, modes=args.mode, batch=args.batch, channels=args.channels,
                           size=args.size, threads=args.threads, repeats=args.visits,
                           budget_s=args.budget_s, plugins=plugins)


def _print_mismatch(baseline: dict[str, Any], machine: dict[str, Any], mismatch: list[str]) -> None:
    print(f"regress: INCOMPARABLE: baseline from {baseline.get('machine_class')}, this is {machine}; "
          f"differs in {'; '.join(mismatch)}. Take a baseline on this machine class with --update-baseline.")


def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        settings = _settings(args)
    except ValueError as exc:  # bad --attn, or a PluginError
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    with cpu_settings(settings.threads):  # the environment records the thread count measured with
        environment = collect_environment()
    machine = machine_class(environment, threads=settings.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    if args.update_baseline:
        runs = []
        for i in range(args.repeats):
            print(f"regress: baseline process {i + 1}/{args.repeats}", file=sys.stderr)
            try:
                measured, errors = run_benchmarks(settings, out / f"baseline-run-{i + 1}.json")
            except RuntimeError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_ERROR
            runs.append(measured)
            for case, why in errors.items():
                print(f"regress: {case} could not be measured and is left out of the baseline ({why})",
                      file=sys.stderr)
        baseline = build_baseline(runs, environment=environment, machine=machine, settings=settings.to_json(),
                                  floor=args.floor, factor=args.factor)
        write_text_atomic(args.baseline, json.dumps(baseline, indent=1, sort_keys=True) + "\n")
        print(f"{'case':32s} {'ratio':>8s} {'spread':>7s} {'tolerance':>9s}")
        for case, entry in baseline["cases"].items():
            print(f"{case:32s} {entry['ratio']:8.4f} {entry['spread']:7.1%} {entry['tolerance']:9.1%}")
        print(f"regress: baseline of {len(baseline['cases'])} cases from {args.repeats} processes written to "
              f"{args.baseline} in {time.perf_counter() - started:.0f} s")
        return 0

    try:
        baseline = load_baseline(args.baseline)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read the baseline {args.baseline}: {exc} "
              "(take one with --update-baseline)", file=sys.stderr)
        return EXIT_ERROR
    mismatch = machine_mismatch(baseline.get("machine_class", {}), machine)
    if mismatch and args.on_mismatch == "fail":
        _print_mismatch(baseline, machine, mismatch)
        print("regress: nothing measured (--on-mismatch fail); --on-mismatch warn measures and shows the "
              "numbers without judging them")
        return EXIT_MISMATCH
    try:
        current, errors = run_benchmarks(settings, out / "benchmark.json")
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    ratios = {case: [info["ratio"]] for case, info in current.items()}
    aliases = dict(args.baseline_name)
    results = compare(baseline, ratios, baseline_names=aliases, errors=errors)
    for attempt in range(0 if mismatch else args.confirm):  # nothing is judged across machine classes
        suspects = {r.case.split("|")[0] for r in results if r.verdict == "regression"}
        if not suspects:
            break
        print(f"regress: confirming {len(suspects)} regressing type(s) in a fresh process "
              f"({attempt + 1}/{args.confirm}): {', '.join(sorted(suspects))}", file=sys.stderr)
        again = RegressSettings.from_json({**settings.to_json(), "attn": sorted(suspects)})
        try:
            confirmation, _ = run_benchmarks(again, out / f"benchmark-confirm-{attempt + 1}.json")
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        for r in results:
            if r.verdict == "regression" and r.case in confirmation:
                ratios[r.case].append(confirmation[r.case]["ratio"])
        results = compare(baseline, ratios, baseline_names=aliases, errors=errors)
    if mismatch:
        for r in results:
            if r.verdict != "error":
                r.verdict = "incomparable"
    print(format_table(results))
    elapsed = time.perf_counter() - started
    verdict = {
        "baseline": str(args.baseline),
        "machine_class": machine,
        "baseline_machine_class": baseline.get("machine_class"),
        "mismatch": mismatch,
        "environment": environment,
        "settings": settings.to_json(),
        "results": [r.as_dict() for r in results],
        "wall_s": elapsed,
    }
    write_text_atomic(out / "verdict.json", json.dumps(verdict, indent=1) + "\n")
    failed = [r.case for r in results if r.verdict == "error"]
    summary = f"regress: {len(results)} cases in {elapsed:.0f} s: "
    if failed:
        print(summary + f"ERROR, {len(failed)} case(s) could not be measured: {', '.join(failed)}")
        return EXIT_ERROR
    if mismatch:
        _print_mismatch(baseline, machine, mismatch)
        return 0  # --on-mismatch warn
    regressions = [r.case for r in results if r.verdict == "regression"]
    faster = [r.case for r in results if r.verdict == "faster"]
    if regressions:
        print(summary + f"FAIL, {len(regressions)} regression(s): {', '.join(regressions)}")
        return EXIT_REGRESSION
    extra = f" ({len(faster)} faster than the baseline: consider --update-baseline)" if faster else ""
    print(summary + "PASS" + extra)
    return 0
