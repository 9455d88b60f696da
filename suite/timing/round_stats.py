"""The statistics of rounds: a configuration's ``latency`` row from its round records.

Per round (one worker process) the worker keeps each callable's per-sample times, visit by
visit. ``ratio`` is the median over the round's cycles of ``median(module visit) /
median(reference visit)``: visits of one cycle follow each other (module, reference, copy), so
the machine's slow drift cancels; ``passes`` is the same against the copy visit (module level
only); the times are the medians of all of the round's samples. Across rounds, every figure's
centre and 95% interval are Student's t on the log of its per-round values
(:func:`suite.timing.stats.across_rounds`), so the variation between processes is inside them.
:class:`RoundPlan` says how many rounds a configuration gets and when it is done.

A row states the load its rounds saw: ``cpu_share_min`` (the least share of the CPU time asked
for) and ``other_cores_max`` (the most other processes' work, in cores) over the clean rounds of
an ``ok`` row, over every round tried for a ``contended`` one; and, for CPU rows, the policy
they were judged by (``contention_policy``, ``other_cores_allowed``,
:mod:`suite.timing.contention`).

GPU rows also carry what the rounds recorded about how they were timed (:mod:`suite.timing.cuda`):
``timing_mode`` (``eager-launch`` or ``cuda-graph``), ``flush_l2``, ``tf32_matmul``,
``tf32_conv``, ``cudnn_benchmark``, ``cuda_device`` and ``gpu_check``; and ``host_bound``
(``ref_host_bound`` for the reference): the module's host enqueue time was at least 90% of its
GPU time in at least half of the clean rounds, so its time is Python's dispatch, not the GPU's
work; ``host_ms`` is the median over rounds of its host enqueue time per call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..records import STATUS_OK
from .stats import across_rounds, percentile

if TYPE_CHECKING:
    from .resume import RoundProgress

__all__ = ["CONTENDED", "NUMERIC_COLUMNS", "ROW_SETTINGS", "RoundPlan", "aggregate_rounds", "per_round",
           "ratio_converged"]

CONTENDED = "contended"
"""The status of a round (and of a row) whose windows did not get the CPU they asked for, or, on
CUDA, shared the GPU with another process."""


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


def per_round(rounds: Sequence[dict[str, Any]], quantity: str) -> list[float]:
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


def ratio_converged(clean: Sequence[dict[str, Any]], plan: RoundPlan) -> bool:
    """Whether the interval of the ratio over the ``clean`` rounds is within ``+-plan.rel_tol``."""
    ratio = across_rounds(per_round(clean, "ratio"), plan.confidence)
    return ratio.half_width <= plan.rel_tol


def _interval_fields(values: list[float], confidence: float, names: tuple[str, str, str, str],
                     unit: float = 1.0) -> dict[str, float]:
    """``{centre, low, high, relative half-width}`` of :func:`across_rounds`, under ``names``."""
    interval = across_rounds(values, confidence)
    centre, low, high, rel = names
    return {centre: interval.center * unit, low: interval.low * unit, high: interval.high * unit,
            rel: interval.half_width}


def _names(prefix: str, suffix: str = "") -> tuple[str, str, str, str]:
    return f"{prefix}{suffix}", f"{prefix}_ci_low{suffix}", f"{prefix}_ci_high{suffix}", f"{prefix}_ci_rel"


ROW_SETTINGS = (
    "reference", "params", "param_bytes", "formula_macs", "compile_s", "input_shape", "output_shape",
    "input_element_size", "threads_set", "flush_denormal", "allocator_tunables",
    "cuda_device", "timing_mode", "flush_l2", "tf32_matmul", "tf32_conv", "cudnn_benchmark", "gpu_check",
    "contention_policy", "other_cores_allowed", "compile_cache", "exporter", "reference_exporter", "export_cache",
    "export_s", "session_s", "runtime_version", "runtime_max_abs_err", "failed_op",
)
"""Fields a row copies from its latest round where the round has them (the CUDA settings only
GPU rounds record, the contention policy only CPU rounds)."""

NUMERIC_COLUMNS = (
    "median_ms", "ci_low_ms", "ci_high_ms", "ci_rel", "iqr_ms", "p90_ms", "p99_ms", "min_ms", "n",
    "ref_median_ms", "ref_ci_low_ms", "ref_ci_high_ms", "ref_ci_rel", "ratio", "ratio_ci_low",
    "ratio_ci_high", "ratio_ci_rel", "copy_median_ms", "passes", "passes_ci_low", "passes_ci_high",
    "passes_ci_rel",
)
"""The measured columns of a latency row (NaN in a row that is not ``ok``)."""


def aggregate_rounds(progress: RoundProgress, plan: RoundPlan) -> dict[str, Any]:
    """The ``latency`` row fields of one configuration from its rounds (see the module docstring)."""
    clean, contended = progress.clean, progress.contended
    last = (clean or contended or [progress.failed or {}])[-1]
    row: dict[str, Any] = {"record": "latency", "generation": progress.generation,
                           "rounds": len(clean), "rounds_contended": len(contended)}
    for key in ROW_SETTINGS:
        if key in last:
            row[key] = last[key]
    if progress.failed is not None:
        row.update(dict.fromkeys(NUMERIC_COLUMNS, math.nan))
        row.update(status=progress.failed["status"], message=progress.failed.get("message", ""))
        return row
    if len(clean) < plan.rounds:
        reasons = sorted({r.get("message", "") for r in contended})
        row.update(dict.fromkeys(NUMERIC_COLUMNS, math.nan))
        row.update(_load_fields([*clean, *contended]))
        row.update(status=CONTENDED, message=(
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
    row.update(_interval_fields(per_round(clean, "module"), confidence,
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
    row.update(_interval_fields(per_round(clean, "reference"), confidence,
                                ("ref_median_ms", "ref_ci_low_ms", "ref_ci_high_ms", "ref_ci_rel"), 1e3))
    row.update(_interval_fields(per_round(clean, "ratio"), confidence, _names("ratio")))
    copies = per_round(clean, "copy")
    row["copy_median_ms"] = across_rounds(copies, confidence).center * 1e3
    row.update(_interval_fields(per_round(clean, "passes"), confidence, _names("passes")))
    row["converged"] = bool(row["ratio_ci_rel"] <= plan.rel_tol)
    row.update(_load_fields(clean))
    row["warmup_steady"] = all(r.get("warmup_steady", False) for r in clean)
    row.update(_host_fields(clean))
    return row


def _load_fields(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """The load ``rounds`` saw: ``cpu_share_min`` and ``other_cores_max`` (NaN where unread)."""
    return {"cpu_share_min": min(_finite(r.get("cpu_share") for r in rounds), default=math.nan),
            "other_cores_max": max(_finite(r.get("other_cores") for r in rounds), default=math.nan)}


def _host_fields(clean: list[dict[str, Any]]) -> dict[str, Any]:
    """``host_bound``, ``ref_host_bound`` and ``host_ms`` of rounds that timed the host's enqueue
    (GPU rounds; nothing for CPU rounds): bound when at least half the rounds were."""
    timed = [r for r in clean if isinstance(r.get("host_bound"), dict)]
    if not timed:
        return {}
    fields: dict[str, Any] = {}
    for column, name in (("host_bound", "module"), ("ref_host_bound", "reference")):
        flags = [bool(r["host_bound"][name]) for r in timed if name in r["host_bound"]]
        if flags:
            fields[column] = 2 * sum(flags) >= len(flags)
    hosts = _finite(r.get("host_s", {}).get("module") for r in timed)
    fields["host_ms"] = _median(hosts) * 1e3 if hosts else math.nan
    return fields

