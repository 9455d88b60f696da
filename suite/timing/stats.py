"""Summary statistics of timing samples and the distribution-free confidence interval of a median.

The interval is the classical order-statistic one (Hollander & Wolfe, *Nonparametric Statistical
Methods*, ch. 3; the ``median_cihs`` of many stats packages): with ``n`` sorted samples
``x(1) <= ... <= x(n)`` of a continuous distribution, the number of samples below the true median
is ``Binomial(n, 1/2)``, so ``[x(j), x(n - j + 1)]`` covers the median with probability
``1 - 2 * P(B < j)``. We take the largest ``j`` that keeps this at or above the requested
confidence. Below 6 samples no such ``j`` exists at 95% and the interval is reported as
unavailable (``nan``). The interval assumes independent samples; timing samples drift and
correlate a little, which is why the harness interleaves the reference and the module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Any

__all__ = [
    "TimingSummary",
    "median_ci_ranks",
    "median_ci",
    "ci_half_width",
    "is_converged",
    "percentile",
    "summarize",
    "RoundInterval",
    "across_rounds",
]

_EXACT_LIMIT = 1000  # exact binomial tail up to this n, normal approximation above


@lru_cache(maxsize=4096)
def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int] | None:
    """1-based ranks ``(j, n - j + 1)`` of the order-statistic CI of the median, or ``None``.

    ``None`` when ``n`` is too small for any pair of order statistics to reach ``confidence``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha_half = (1.0 - confidence) / 2.0
    if n <= _EXACT_LIMIT:
        total = 2**n
        cumulative = 0  # P(B <= j - 1) * 2**n, grown as j increases
        j = 0
        # largest j with P(B <= j - 1) <= alpha/2
        while j < n // 2 + 1:
            next_cumulative = cumulative + math.comb(n, j)
            if next_cumulative / total > alpha_half:
                break
            cumulative = next_cumulative
            j += 1
        if j < 1:
            return None
    else:
        z = NormalDist().inv_cdf(1.0 - alpha_half)
        j = int(math.floor(n / 2.0 - z * math.sqrt(n) / 2.0))
        j = max(j, 1)
    return j, n - j + 1


def median_ci(sorted_samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """The CI of the median of already sorted samples; ``(nan, nan)`` when ``n`` is too small."""
    ranks = median_ci_ranks(len(sorted_samples), confidence) if sorted_samples else None
    if ranks is None:
        return math.nan, math.nan
    lo, hi = ranks
    return float(sorted_samples[lo - 1]), float(sorted_samples[hi - 1])


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """Percentile ``q`` (0..100) with linear interpolation (numpy's default method)."""
    n = len(sorted_samples)
    if n == 0:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return float(sorted_samples[lo] + (sorted_samples[hi] - sorted_samples[lo]) * frac)


def ci_half_width(median: float, lo: float, hi: float) -> float:
    """The larger side of the CI relative to the median (``inf`` when unavailable)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or median <= 0:
        return math.inf
    return max(median - lo, hi - median) / median


def is_converged(sorted_samples: Sequence[float], rel_tol: float = 0.01, confidence: float = 0.95) -> bool:
    """True when the median's CI lies within ``+-rel_tol`` of the median."""
    if not sorted_samples:
        return False
    lo, hi = median_ci(sorted_samples, confidence)
    return ci_half_width(percentile(sorted_samples, 50), lo, hi) <= rel_tol


@dataclass(frozen=True)
class TimingSummary:
    """Statistics of per-call times (seconds) of one measured callable.

    Each sample is the mean of ``calls_per_sample`` back-to-back calls.
    """

    median: float
    mean: float
    min: float
    iqr: float
    p10: float
    p90: float
    p99: float
    ci_low: float
    ci_high: float
    ci_rel: float
    n: int
    calls_per_sample: int
    converged: bool
    elapsed_s: float = math.nan

    def as_dict(self, prefix: str = "", unit: float = 1e3, suffix: str = "_ms") -> dict[str, Any]:
        """Flat dict with times scaled by ``unit`` (ms by default) and names prefixed."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if key in {"median", "mean", "min", "iqr", "p10", "p90", "p99", "ci_low", "ci_high"}:
                out[f"{prefix}{key}{suffix}"] = value * unit
            else:
                out[f"{prefix}{key}"] = value
        return out


def summarize(
    samples: Sequence[float],
    *,
    calls_per_sample: int = 1,
    rel_tol: float = 0.01,
    confidence: float = 0.95,
    elapsed_s: float = math.nan,
) -> TimingSummary:
    """Summarize per-call sample times (seconds): median, IQR, p10/p90/p99, CI of the median."""
    if not samples:
        raise ValueError("samples must not be empty")
    data = sorted(float(s) for s in samples)
    median = percentile(data, 50)
    lo, hi = median_ci(data, confidence)
    rel = ci_half_width(median, lo, hi)
    return TimingSummary(
        median=median,
        mean=math.fsum(data) / len(data),
        min=data[0],
        iqr=percentile(data, 75) - percentile(data, 25),
        p10=percentile(data, 10),
        p90=percentile(data, 90),
        p99=percentile(data, 99),
        ci_low=lo,
        ci_high=hi,
        ci_rel=rel,
        n=len(data),
        calls_per_sample=calls_per_sample,
        converged=rel <= rel_tol,
        elapsed_s=elapsed_s,
    )


@dataclass(frozen=True)
class RoundInterval:
    """The centre and 95% interval of a positive quantity measured once per round (process).

    ``center`` is the geometric mean of the per-round values; the interval is Student's t on
    their logarithms, ``exp(mean(log v) +- t_{n-1} * sd(log v) / sqrt(n))``, so it is
    symmetric on the log scale and ``half_width`` (relative) is ``exp(h) - 1`` for the log
    half-width ``h``. With fewer than 2 rounds, or rounds that agree exactly (a zero standard
    deviation says nothing about the next process), there is no interval (NaN).
    """

    center: float
    low: float
    high: float
    half_width: float
    log_half_width: float
    n: int


def across_rounds(values: Sequence[float], confidence: float = 0.95) -> RoundInterval:
    """:class:`RoundInterval` of the finite positive ``values`` (others are ignored)."""
    from ..accuracy.stats import t_quantile

    logs = [math.log(v) for v in values if math.isfinite(v) and v > 0]
    n = len(logs)
    if n == 0:
        return RoundInterval(math.nan, math.nan, math.nan, math.nan, math.nan, 0)
    mean = math.fsum(logs) / n
    center = math.exp(mean)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in logs) / (n - 1)) if n > 1 else 0.0
    if n < 2 or sd == 0.0:
        return RoundInterval(center, math.nan, math.nan, math.nan, math.nan, n)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return RoundInterval(center, math.exp(mean - half), math.exp(mean + half), math.expm1(half), half, n)
