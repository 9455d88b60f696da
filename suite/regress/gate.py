"""The gate's logic: baseline file, machine class, tolerance rule, comparison, verdicts.

**Quantity** (the baseline's ``counter``). ``ratio``: each case's ``module time / reference
time`` (reference: a 3x3 conv of the same input, measured interleaved in the same process;
times are the fastest samples, the ratio the median over a few in-process repeats; see
:mod:`suite.regress.cases` for why). ``instructions``: instructions per call of the case's
step, counted under Callgrind (:mod:`suite.regress.callgrind`).

**Baseline.** ``--update-baseline --repeats k`` measures in ``k`` separate processes and
stores, per case, the ``k`` values, their median (the baseline value) and their noise::

    spread    = max_i |ln(v_i / median(v))|          (cross-process noise, log scale)
    tolerance = max(floor, factor * spread)          (defaults: ratio floor 0.10, instructions
                                                      floor 0.01; factor 3)

so a case whose ratio wandered 8% across the baseline's processes gets +-24%, a calm one the
floor. Tolerances are log-scale: a change is ``ln(current / baseline)``, printed as
``current / baseline - 1``; a case **regresses** when its change exceeds ``+tolerance``
(``exp(tolerance) - 1`` as a percentage) and is reported **faster** when below ``-tolerance``
(not a failure; update the baseline to lock the gain in).

**Confirmation** (ratio counter). A case that regresses is measured again in a fresh process
(``confirm`` times); it fails only if every measurement regresses, i.e. on the smallest of its
values. A real slowdown is slow every time; a neighbour process that made one run slow rarely
does it twice. Instruction counts do not depend on neighbours, so they are not re-measured.

**Machine class.** The baseline carries the environment it was taken on. For ratios, a run
whose CPU model, thread count or device differs is *incomparable*, and one whose torch
major.minor differs is judged with a warning (:data:`SOFT_KEYS`); for instructions, a run that
differs in anything the counts depend on (:func:`suite.regress.callgrind.machine_class`) is
incomparable, and one that differs only in the CPU vendor is judged with a warning. The verdict says so and incomparable cases are not judged.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cases import EARLIER_TIMER

__all__ = [
    "BASELINE_FORMAT",
    "CaseResult",
    "MACHINE_CLASS_KEYS",
    "build_baseline",
    "COUNTERS",
    "compare",
    "counter_of",
    "format_table",
    "machine_class",
    "machine_mismatch",
    "machine_warnings",
    "ratios_from_benchmark_json",
    "spread",
    "tolerance_for",
]

BASELINE_FORMAT = "attnbench-regress-baseline/1"
COUNTERS: tuple[str, ...] = ("ratio", "instructions")
REPORTED_BESIDE: dict[str, tuple[str, ...]] = {
    "ratio": ("reference_ms", "module_ms"),
    "instructions": ("i1_misses", "d1_misses", "ll_misses"),
}
"""Per counter, the facts a baseline keeps beside the gated value (medians over its processes)."""
MACHINE_CLASS_KEYS: tuple[str, ...] = ("cpu", "threads", "device", "torch")
SOFT_KEYS: dict[str, tuple[str, ...]] = {"ratio": ("torch",), "instructions": ("cpu_vendor",)}
"""Per counter, machine-class keys whose difference is a warning, not a mismatch. A ratio to a
reference measured in the same process is meant to survive a torch update (both sides move
with the library; what a kernel change moves is what the gate is for); an instruction count
is not, so there the torch version is part of the class. Instruction counts of the same
dispatch ISA (ATen and oneDNN as seen under valgrind), BLAS, torch and Python moved by +0.5%
(forward) and +0.4% (training step) between an AMD EPYC and an Intel Xeon VM, inside the
tolerances: the CPU vendor alone is a warning (it stays in the class record)."""
DEFAULT_FLOOR = 0.10
DEFAULT_INSTRUCTION_FLOOR = 0.01
DEFAULT_FACTOR = 3.0


def machine_class(environment: Mapping[str, Any], *, threads: int, timer: str) -> dict[str, Any]:
    """What must match for two runs' ratios to be comparable (the gate measures on the CPU;
    ``device`` is kept in the class so that a GPU gate's baselines would never compare; ``timer``:
    how the ratios were timed, :data:`suite.regress.cases.GATE_TIMER`)."""
    version = str(environment.get("torch_version", "")).split("+")[0]
    major_minor = ".".join(version.split(".")[:2])
    return {"cpu": environment.get("cpu", ""), "threads": int(threads), "device": "cpu", "torch": major_minor,
            "timer": timer}


def machine_mismatch(baseline: Mapping[str, Any], current: Mapping[str, Any], *,
                     soft: Sequence[str] = ()) -> list[str]:
    """Human-readable differences between two machine classes (empty when comparable); every
    key either class has is compared, so a ratio baseline never matches an instruction run.
    Keys in ``soft`` are left out (see :func:`machine_warnings`)."""
    keys = [*MACHINE_CLASS_KEYS, *sorted((set(baseline) | set(current)) - set(MACHINE_CLASS_KEYS))]
    return [f"{key}: baseline {baseline.get(key)!r}, this run {current.get(key)!r}"
            for key in keys if key not in soft and baseline.get(key) != current.get(key)]


def machine_warnings(baseline: Mapping[str, Any], current: Mapping[str, Any], soft: Sequence[str]) -> list[str]:
    """The differences in the ``soft`` keys: reported with a warning, the cases still judged."""
    return [f"{key}: baseline {baseline.get(key)!r}, this run {current.get(key)!r}"
            for key in soft if baseline.get(key) != current.get(key)]


def spread(ratios: Sequence[float]) -> float:
    """``max |ln(r / median)|`` over the ratios (0 for a single one)."""
    if not ratios:
        raise ValueError("spread of no ratios")
    if any(r <= 0 or not math.isfinite(r) for r in ratios):
        raise ValueError(f"ratios must be positive and finite, got {list(ratios)}")
    mid = statistics.median(ratios)
    return max(abs(math.log(r / mid)) for r in ratios)


def tolerance_for(ratios: Sequence[float], *, floor: float = DEFAULT_FLOOR, factor: float = DEFAULT_FACTOR) -> float:
    """The case's tolerance (log scale): ``max(floor, factor * spread(ratios))``."""
    if floor < 0 or factor < 0:
        raise ValueError(f"floor and factor must be >= 0, got {floor}, {factor}")
    return max(floor, factor * spread(ratios))


def ratios_from_benchmark_json(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{case id: extra_info}`` from a benchmark JSON in pytest-benchmark's layout (the gate's
    ``benchmark.json``)."""
    out: dict[str, dict[str, Any]] = {}
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if "case" in info and "ratio" in info:
            out[info["case"]] = dict(info)
    return out


def build_baseline(
    runs: Sequence[Mapping[str, Mapping[str, Any]]],
    *,
    environment: Mapping[str, Any],
    machine: Mapping[str, Any],
    settings: Mapping[str, Any],
    floor: float = DEFAULT_FLOOR,
    factor: float = DEFAULT_FACTOR,
    counter: str = "ratio",
) -> dict[str, Any]:
    """The baseline from ``k`` runs, each ``{case: facts}`` of one process (the facts hold the
    counter's value under its own name, ``ratio`` or ``instructions``, and what is kept beside
    it, :data:`REPORTED_BESIDE`)."""
    if not runs:
        raise ValueError("a baseline needs at least one run")
    if counter not in COUNTERS:
        raise ValueError(f"counter must be one of {', '.join(COUNTERS)}, got {counter!r}")
    cases: dict[str, Any] = {}
    for case in runs[0]:
        values = [run[case][counter] for run in runs if case in run]
        if len(values) < len(runs):
            continue  # failed in some process: not a case we can gate
        cases[case] = {
            counter: statistics.median(values),
            "samples": values,
            "spread": spread(values),
            "tolerance": tolerance_for(values, floor=floor, factor=factor),
            **{key: statistics.median(run[case][key] for run in runs) for key in REPORTED_BESIDE[counter]},
        }
    return {
        "format": BASELINE_FORMAT,
        "counter": counter,
        "rule": f"tolerance = max(floor={floor}, factor={factor} x spread), spread = max |ln(v_i / median v)| "
                f"over {len(runs)} processes; change = ln(current / baseline)",
        "floor": floor,
        "factor": factor,
        "repeats": len(runs),
        "machine_class": dict(machine),
        "environment": dict(environment),
        "settings": dict(settings),
        "cases": cases,
    }


@dataclass
class CaseResult:
    case: str
    baseline_value: float | None  # the baseline's ratio or instruction count
    values: list[float]  # this run's (plus confirmations); empty when the case could not be measured
    tolerance: float | None
    verdict: str  # ok, regression, faster, new, incomparable, error
    message: str = ""  # why an ``error`` case could not be measured

    @property
    def current(self) -> float | None:
        """The judged value: the smallest of the run and its confirmations."""
        return min(self.values) if self.values else None

    @property
    def change(self) -> float | None:
        if self.baseline_value is None or self.current is None:
            return None
        return self.current / self.baseline_value - 1

    def as_dict(self) -> dict[str, Any]:
        return {"case": self.case, "baseline": self.baseline_value, "current": self.current,
                "values": self.values, "change": self.change, "tolerance": self.tolerance,
                "verdict": self.verdict, "message": self.message}


def counter_of(baseline: Mapping[str, Any]) -> str:
    """The quantity a baseline holds per case: ``ratio`` (the default) or ``instructions``."""
    counter = baseline.get("counter", "ratio")
    if counter not in COUNTERS:
        raise ValueError(f"unknown counter {counter!r} in the baseline; expected one of {', '.join(COUNTERS)}")
    return counter


def compare(
    baseline: Mapping[str, Any],
    current: Mapping[str, Sequence[float]],
    *,
    baseline_names: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
) -> list[CaseResult]:
    """Verdict per case. ``current``: case id -> its values of the baseline's counter (the run,
    then confirmations; the smallest is judged). ``baseline_names`` maps an attention name to
    the name whose baseline it is held to (``se_slowed -> se``). ``errors``: case id -> why it
    could not be measured (verdict ``error``)."""
    baseline_names = dict(baseline_names or {})
    key_of = counter_of(baseline)
    results = []
    for case, message in (errors or {}).items():
        name, rest = case.split("|", 1)
        entry = baseline.get("cases", {}).get(f"{baseline_names.get(name, name)}|{rest}")
        results.append(CaseResult(case, None if entry is None else float(entry[key_of]), [],
                                  None if entry is None else float(entry["tolerance"]), "error", message))
    for case, values in current.items():
        if not values:
            raise ValueError(f"case {case!r} has no value")
        name, rest = case.split("|", 1)
        entry = baseline.get("cases", {}).get(f"{baseline_names.get(name, name)}|{rest}")
        if entry is None:
            results.append(CaseResult(case, None, list(values), None, "new"))
            continue
        tol = float(entry["tolerance"])
        change = math.log(min(values) / float(entry[key_of]))
        verdict = "regression" if change > tol else "faster" if change < -tol else "ok"
        results.append(CaseResult(case, float(entry[key_of]), list(values), tol, verdict))
    return results


def _format_value(value: float | None, counter: str) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if counter == "instructions" else f"{value:.4f}"


def format_table(results: Sequence[CaseResult], counter: str = "ratio",
                 extra: Mapping[str, Mapping[str, float]] | None = None) -> str:
    """The verdict table (tolerance shown as the allowed slowdown, ``exp(tol) - 1``).

    ``extra``: per case, columns reported beside the verdict and not judged (the instruction
    counter's simulated cache misses per call)."""
    extra = dict(extra or {})
    extra_names = sorted({name for columns in extra.values() for name in columns})
    width = 12 if counter == "instructions" else 9
    header = (f"{'case':32s} {'baseline':>{width}s} {'current':>{width}s} {'change':>8s} {'tolerance':>9s}"
              + "".join(f" {name:>10s}" for name in extra_names) + "  verdict")
    lines = [header, "-" * len(header)]
    for r in results:
        change = f"{r.change:+.1%}" if r.change is not None else "-"
        tol = f"+{math.exp(r.tolerance) - 1:.1%}" if r.tolerance is not None else "-"
        columns = "".join(f" {extra.get(r.case, {}).get(name, float('nan')):>10,.0f}" for name in extra_names)
        runs = f" ({len(r.values)} runs)" if len(r.values) > 1 else ""
        why = f": {r.message}" if r.message else ""
        lines.append(f"{r.case:32s} {_format_value(r.baseline_value, counter):>{width}s} "
                     f"{_format_value(r.current, counter):>{width}s} {change:>8s} {tol:>9s}{columns}  "
                     f"{r.verdict}{runs}{why}")
    return "\n".join(lines)


def load_baseline(path: Path) -> dict[str, Any]:
    """The baseline at ``path``; a ratio baseline that names no timer in its machine class was
    timed by the earlier timer, and says so (:data:`suite.regress.cases.EARLIER_TIMER`)."""
    data = json.loads(Path(path).read_text())
    if data.get("format") != BASELINE_FORMAT:
        raise ValueError(f"{path}: not a regress baseline (format {data.get('format')!r}, expected {BASELINE_FORMAT!r})")
    if counter_of(data) == "ratio" and isinstance(data.get("machine_class"), dict):
        data["machine_class"].setdefault("timer", EARLIER_TIMER)
    return data
