"""Paired deltas over the baseline with Student-t confidence intervals.

For an attention type ``a`` and the seeds ``s`` at which both ``a`` and the baseline finished,
``d_s = top1(a, s) - top1(baseline, s)``. Pairing removes the part of the seed-to-seed noise
that both runs share (same initialisation of the shared layers, same data order). With ``n``
pairs, mean ``d``, sample standard deviation ``sd``:

    CI95 = d +- t_{0.975, n-1} * sd / sqrt(n)

and the delta is called significant when the interval excludes 0. With one pair there is no
interval (reported as NaN, not significant).

The t quantile is computed here (regularised incomplete beta by continued fraction, inverted
by bisection), so the suite does not need scipy; tests check it against scipy when installed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["t_cdf", "t_quantile", "paired_delta", "delta_table"]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t distribution with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (|error| < 1e-10)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def paired_delta(values: Sequence[float], baseline: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean paired difference ``values - baseline``, its t interval and a significance flag."""
    if len(values) != len(baseline):
        raise ValueError(f"paired samples must have equal lengths, got {len(values)} and {len(baseline)}")
    diffs = [float(v) - float(b) for v, b in zip(values, baseline, strict=True)]
    n = len(diffs)
    if n == 0:
        return {"n": 0, "delta": math.nan, "sd": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                "half_width": math.nan, "significant": False}
    mean = sum(diffs) / n
    if n == 1:
        return {"n": 1, "delta": mean, "sd": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                "half_width": math.nan, "significant": False}
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    return {"n": n, "delta": mean, "sd": sd, "ci_low": low, "ci_high": high, "half_width": half,
            "significant": bool(low > 0.0 or high < 0.0)}


def delta_table(
    rows: Iterable[Mapping[str, Any]],
    *,
    baseline: str,
    metrics: Sequence[str] = ("top1", "top5"),
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """Per attention type: mean of each metric and its paired delta over ``baseline``.

    ``rows`` are per-run records with ``attn``, ``seed``, ``status`` and the metrics; only
    rows with status ``ok`` count, and a delta uses only the seeds both sides finished.
    """
    ok: dict[str, dict[int, Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("status") == "ok":
            ok.setdefault(row["attn"], {})[int(row["seed"])] = row
    base = ok.get(baseline, {})
    table = []
    for attn in sorted(ok, key=lambda a: (a != baseline, a)):
        runs = ok[attn]
        entry: dict[str, Any] = {"attn": attn, "runs": len(runs)}
        for metric in metrics:
            values = [float(r[metric]) for r in runs.values()]
            entry[f"{metric}_mean"] = sum(values) / len(values)
            if attn == baseline:
                continue
            seeds = sorted(set(runs) & set(base))
            result = paired_delta([runs[s][metric] for s in seeds], [base[s][metric] for s in seeds], confidence)
            entry[f"{metric}_pairs"] = result["n"]
            entry[f"{metric}_delta"] = result["delta"]
            entry[f"{metric}_ci_low"] = result["ci_low"]
            entry[f"{metric}_ci_high"] = result["ci_high"]
            entry[f"{metric}_significant"] = result["significant"]
        table.append(entry)
    return table
