"""The gate's logic: baseline file, machine class, tolerance rule, comparison, verdicts.

**Quantity.** Each case's ratio ``module time / reference time`` (reference: a 3x3 conv of the
same input, measured interleaved in the same process; times are the fastest samples, the ratio
the median over a few in-process repeats; see :mod:`suite.regress.cases` for why).

**Baseline.** ``--update-baseline --repeats k`` runs the benchmarks in ``k`` separate processes
and stores, per case, the ``k`` ratios, their median (the baseline ratio) and their noise::

    spread    = max_i |ln(r_i / median(r))|          (cross-process noise, log scale)
    tolerance = max(floor, factor * spread)          (defaults: floor 0.10, factor 3)

so a case whose ratio wandered 8% across the baseline's processes gets +-24%, a calm one the
floor. Tolerances are log-scale: a change is ``ln(current / baseline)``, printed as
``current / baseline - 1``; a case **regresses** when its change exceeds ``+tolerance``
(``exp(tolerance) - 1`` as a percentage) and is reported **faster** when below ``-tolerance``
(not a failure; update the baseline to lock the gain in).

**Confirmation.** A case that regresses is measured again in a fresh process (``confirm``
times); it fails only if every measurement regresses, i.e. on the smallest of its ratios. A
real slowdown is slow every time; a neighbour process that made one run slow rarely does it
twice.

**Machine class.** The baseline carries the environment it was taken on. A run whose CPU
model, thread count, device or torch major.minor differs is *incomparable*: the verdict says
so and the cases are not compared.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BASELINE_FORMAT",
    "CaseResult",
    "MACHINE_CLASS_KEYS",
    "build_baseline",
    "compare",
    "format_table",
    "machine_class",
    "machine_mismatch",
    "ratios_from_benchmark_json",
    "spread",
    "tolerance_for",
]

BASELINE_FORMAT = "attnbench-regress-baseline/1"
MACHINE_CLASS_KEYS: tuple[str, ...] = ("cpu", "threads", "device", "torch")
DEFAULT_FLOOR = 0.10
DEFAULT_FACTOR = 3.0


def machine_class(environment: Mapping[str, Any], *, threads: int) -> dict[str, Any]:
    """What must match for two runs' ratios to be comparable (the gate measures on the CPU;
    ``device`` is kept in the class so that a GPU gate's baselines would never compare)."""
    version = str(environment.get("torch_version", "")).split("+")[0]
    major_minor = ".".join(version.split(".")[:2])
    return {"cpu": environment.get("cpu", ""), "threads": int(threads), "device": "cpu", "torch": major_minor}


def machine_mismatch(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two machine classes (empty when comparable)."""
    return [f"{key}: baseline {baseline.get(key)!r}, this run {current.get(key)!r}"
            for key in MACHINE_CLASS_KEYS if baseline.get(key) != current.get(key)]


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
    """``{case id: extra_info}`` from a pytest-benchmark JSON written by ``tests/benchmarks``."""
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
) -> dict[str, Any]:
    """The baseline from ``k`` runs (``ratios_from_benchmark_json`` of each process)."""
    if not runs:
        raise ValueError("a baseline needs at least one run")
    cases: dict[str, Any] = {}
    for case in runs[0]:
        ratios = [run[case]["ratio"] for run in runs if case in run]
        if len(ratios) < len(runs):
            continue  # failed in some process: not a case we can gate
        cases[case] = {
            "ratio": statistics.median(ratios),
            "samples": ratios,
            "spread": spread(ratios),
            "tolerance": tolerance_for(ratios, floor=floor, factor=factor),
            "reference_ms": statistics.median(run[case]["reference_ms"] for run in runs),
            "module_ms": statistics.median(run[case]["module_ms"] for run in runs),
        }
    return {
        "format": BASELINE_FORMAT,
        "rule": f"tolerance = max(floor={floor}, factor={factor} x spread), spread = max |ln(r_i / median r)| "
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
    baseline_ratio: float | None
    ratios: list[float]  # this run's (plus confirmations); empty when the case could not be measured
    tolerance: float | None
    verdict: str  # ok, regression, faster, new, incomparable, error
    message: str = ""  # why an ``error`` case could not be measured

    @property
    def ratio(self) -> float | None:
        return min(self.ratios) if self.ratios else None

    @property
    def change(self) -> float | None:
        if self.baseline_ratio is None or self.ratio is None:
            return None
        return self.ratio / self.baseline_ratio - 1

    def as_dict(self) -> dict[str, Any]:
        return {"case": self.case, "baseline_ratio": self.baseline_ratio, "ratio": self.ratio,
                "ratios": self.ratios, "change": self.change, "tolerance": self.tolerance,
                "verdict": self.verdict, "message": self.message}


def compare(
    baseline: Mapping[str, Any],
    current: Mapping[str, Sequence[float]],
    *,
    baseline_names: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
) -> list[CaseResult]:
    """Verdict per case. ``current``: case id -> its ratios (the run, then confirmations; the
    smallest is judged). ``baseline_names`` maps an attention name to the name whose baseline
    it is held to (``se_slowed -> se``). ``errors``: case id -> why it could not be measured
    (verdict ``error``)."""
    baseline_names = dict(baseline_names or {})
    results = []
    for case, message in (errors or {}).items():
        name, rest = case.split("|", 1)
        entry = baseline.get("cases", {}).get(f"{baseline_names.get(name, name)}|{rest}")
        results.append(CaseResult(case, None if entry is None else float(entry["ratio"]), [],
                                  None if entry is None else float(entry["tolerance"]), "error", message))
    for case, ratios in current.items():
        if not ratios:
            raise ValueError(f"case {case!r} has no ratio")
        name, rest = case.split("|", 1)
        key = f"{baseline_names.get(name, name)}|{rest}"
        entry = baseline.get("cases", {}).get(key)
        if entry is None:
            results.append(CaseResult(case, None, list(ratios), None, "new"))
            continue
        tol = float(entry["tolerance"])
        change = math.log(min(ratios) / float(entry["ratio"]))
        verdict = "regression" if change > tol else "faster" if change < -tol else "ok"
        results.append(CaseResult(case, float(entry["ratio"]), list(ratios), tol, verdict))
    return results


def format_table(results: Sequence[CaseResult]) -> str:
    """The verdict table (tolerance shown as the allowed slowdown, ``exp(tol) - 1``)."""
    header = f"{'case':32s} {'baseline':>9s} {'current':>9s} {'change':>8s} {'tolerance':>9s}  verdict"
    lines = [header, "-" * len(header)]
    for r in results:
        base = f"{r.baseline_ratio:.4f}" if r.baseline_ratio is not None else "-"
        current = f"{r.ratio:.4f}" if r.ratio is not None else "-"
        change = f"{r.change:+.1%}" if r.change is not None else "-"
        tol = f"+{math.exp(r.tolerance) - 1:.1%}" if r.tolerance is not None else "-"
        runs = f" ({len(r.ratios)} runs)" if len(r.ratios) > 1 else ""
        why = f": {r.message}" if r.message else ""
        lines.append(f"{r.case:32s} {base:>9s} {current:>9s} {change:>8s} {tol:>9s}  {r.verdict}{runs}{why}")
    return "\n".join(lines)


def load_baseline(path: Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if data.get("format") != BASELINE_FORMAT:
        raise ValueError(f"{path}: not a regress baseline (format {data.get('format')!r}, expected {BASELINE_FORMAT!r})")
    return data
