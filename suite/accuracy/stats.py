"""Paired deltas over the baseline with Student-t confidence intervals.

For an attention type ``a`` and the seeds ``s`` at which both ``a`` and the baseline finished,
``d_s = top1(a, s) - top1(baseline, s)``. Pairing removes the part of the seed-to-seed noise
that both runs share (same initialisation of the shared layers, same data order). With ``n``
pairs, mean ``d``, sample standard deviation ``sd``:

    CI95 = d +- t_{0.975, n-1} * sd / sqrt(n)

with the two-sided p-value of the paired t-test, ``t = d / (sd / sqrt(n))``. Fewer than
``MIN_PAIRS`` (3) pairs, or pairs whose differences are all equal (``sd = 0``: the t statistic
is undefined and the interval would have zero width), give no interval, no p-value and no
verdict (NaN, ``significant`` False, ``reason`` saying which).

Multiplicity. A sweep asks one question per design, so :func:`delta_table` adjusts the p-values
over the designs of the table by Holm's step-down method (:func:`holm`): sorted ascending,
``p_(i)`` is multiplied by ``m - i + 1`` (``i`` from 1, ``m`` the number of designs with a
p-value), made monotone and capped at 1. A delta is called significant when its Holm-adjusted
p-value is below ``alpha = 1 - confidence``, which controls the family-wise error rate.

Two intervals per delta. ``ci_low``/``ci_high`` are unadjusted (each at ``confidence`` on its
own); they can exclude zero for a delta whose Holm verdict is "not significant".
``ci_holm_low``/``ci_holm_high`` are the t intervals of the tests Holm performs
(:func:`holm_levels`): the design at step ``i`` (``i``-th smallest p) at confidence
``1 - alpha / (m - i + 1)`` if every step before it rejected; Holm stops at the first step that
does not reject, and that design and all after it get that step's confidence. Such an interval
excludes zero exactly when the verdict is significant. They agree with the verdicts but are not
simultaneous intervals: unlike Bonferroni's (all at ``1 - alpha / m``) they do not promise that
all deltas are covered at once with probability ``confidence``. (Simultaneous bounds that match
Holm's decisions exist, but one-sided and, for a rejected hypothesis, at zero unless every
hypothesis is rejected: Strassburger & Bretz, "Compatible simultaneous lower confidence bounds
for the Holm procedure and other Bonferroni-based closed tests", Statistics in Medicine 27, 2008.)

Means are taken on the paired seeds (the seeds both the design and the baseline have): a
design's row holds its mean and the baseline's mean over the same seeds
(``<metric>_baseline_mean``), whose difference is exactly its delta; the baseline's own row is
its mean over all its seeds. A diverged
run counts against its side: it is scored at chance level (``1 / classes`` for top-1,
``min(1, 5 / classes)`` for top-5, the score of a network that learned nothing; 0 when the
record does not say how many classes there were) and paired like any other run, and the
count of diverged runs is reported beside the delta. Runs that failed for other reasons (an
exception) have no score and are left out.

The t quantile is computed here (regularised incomplete beta by continued fraction, inverted
by bisection), so the suite does not need scipy; tests check it against scipy when installed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["t_cdf", "t_quantile", "t_interval", "paired_delta", "holm", "holm_levels", "chance_score",
           "delta_table", "per_class_table", "image_sampling_se", "seeds_for_half_width", "TARGET_HALF_WIDTH",
           "MIN_PAIRS"]

TARGET_HALF_WIDTH = 0.01
"""The half-width (1.0 pp of top-1) a design's interval should reach; the seeds it needs at its
measured spread are reported beside every delta (:func:`seeds_for_half_width`)."""

MIN_PAIRS = 3
"""The fewest paired seeds an interval, a p-value or a verdict is given for."""


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
    """Mean paired difference ``values - baseline``, its t interval, the paired t-test's
    two-sided p-value and a significance flag (unadjusted: ``p < 1 - confidence``). Without an
    interval (see the module docstring) ``reason`` says why."""
    if len(values) != len(baseline):
        raise ValueError(f"paired samples must have equal lengths, got {len(values)} and {len(baseline)}")
    diffs = [float(v) - float(b) for v, b in zip(values, baseline, strict=True)]
    n = len(diffs)
    mean = sum(diffs) / n if n else math.nan
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else math.nan
    empty = {"n": n, "delta": mean, "sd": sd, "ci_low": math.nan, "ci_high": math.nan, "half_width": math.nan,
             "p": math.nan, "significant": False}
    if n < MIN_PAIRS:
        return {**empty, "reason": f"{n} paired seed(s), an interval needs {MIN_PAIRS}"}
    if not (math.isfinite(mean) and math.isfinite(sd)):
        return {**empty, "reason": "a score is missing or infinite (a diverged run of unknown class count)"}
    if sd <= 1e-12 * max(1.0, abs(mean)):
        return {**empty, "sd": 0.0, "reason": f"the {n} paired differences are all equal (sd = 0)"}
    low, high = t_interval(mean, sd, n, confidence)
    p = min(1.0, 2.0 * t_cdf(-abs(mean) / (sd / math.sqrt(n)), n - 1))
    return {"n": n, "delta": mean, "sd": sd, "ci_low": low, "ci_high": high, "half_width": high - mean,
            "p": p, "significant": bool(p < 1.0 - confidence), "reason": ""}


def t_interval(mean: float, sd: float, n: int, confidence: float) -> tuple[float, float]:
    """``mean +- t_{(1 + confidence) / 2, n - 1} sd / sqrt(n)``: the two-sided t interval of a
    mean of ``n`` values with sample standard deviation ``sd``. It excludes zero exactly when the
    t-test's two-sided p-value is below ``1 - confidence``. NaN without a finite spread or with
    fewer than 2 values."""
    if n < 2 or not (math.isfinite(mean) and math.isfinite(sd)):
        return math.nan, math.nan
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return mean - half, mean + half


def seeds_for_half_width(sd: float, target: float = TARGET_HALF_WIDTH, confidence: float = 0.95,
                         at_most: int = 200) -> float:
    """The fewest paired seeds ``n`` (at least :data:`MIN_PAIRS`) whose interval half-width
    ``t_{n-1} sd / sqrt(n)`` is at most ``target``, for a spread ``sd`` of the paired differences
    measured beforehand. Choosing ``n`` from an earlier sweep's spread and then running exactly
    ``n`` seeds keeps the t interval honest; stopping a sweep when its own interval looks narrow
    enough would not. NaN without a spread; ``inf`` beyond ``at_most``."""
    if not math.isfinite(sd) or sd < 0 or target <= 0:
        return math.nan
    for n in range(MIN_PAIRS, at_most + 1):
        if t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n) <= target:
            return float(n)
    return math.inf


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given; NaN entries stay NaN and do not
    count towards the number of hypotheses."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m = len(indexed)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def holm_levels(p_values: Sequence[float], alpha: float) -> list[float]:
    """Per hypothesis, in the order given, the error rate of the test Holm's step-down method
    decides it with: sorted ascending, ``p_(i)`` is tested at ``alpha / (m - i + 1)`` while every
    smaller p-value was rejected; from the first step that does not reject on, every remaining
    hypothesis gets that step's rate (Holm stops there). NaN entries stay NaN and do not count.

    A t interval at ``1 - level`` therefore excludes zero exactly when the Holm-adjusted p-value
    (:func:`holm`) is below ``alpha``: a rejected ``p_(i)`` is below its own step's rate, and an
    accepted one is at least the stopping step's ``p_(k)``, itself at least that step's rate."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m = len(indexed)
    levels = [math.nan] * len(p_values)
    stopped: float | None = None
    for rank, (p, i) in enumerate(indexed):
        level = alpha / (m - rank)
        if stopped is None and p * (m - rank) >= alpha:
            stopped = level
        levels[i] = level if stopped is None else stopped
    return levels


def chance_score(metric: str, classes: int | None) -> float:
    """What a network that learned nothing scores: ``1 / classes`` (top-1), ``min(1, 5 / classes)``
    (top-5), ``ln(classes)`` for a loss (a uniform prediction); 0 accuracy and an infinite loss
    when the number of classes is not known."""
    if metric.endswith("loss"):
        return math.log(classes) if classes else math.inf
    if not classes:
        return 0.0
    k = 5 if metric == "top5" else 1
    return min(1.0, k / classes)


def _score(row: Mapping[str, Any], metric: str) -> float:
    value = row.get(metric)
    return math.nan if value is None else float(value)


def delta_table(
    rows: Iterable[Mapping[str, Any]],
    *,
    baseline: str,
    metrics: Sequence[str] = ("top1", "top5"),
    confidence: float = 0.95,
    matched: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Per attention type: mean of each metric and its paired delta over ``baseline``, with the
    p-value, its Holm adjustment over the designs of the table, the verdict on it, and both
    intervals (unadjusted ``<metric>_ci_low``/``_ci_high``, Holm's ``<metric>_ci_holm_low``/
    ``_ci_holm_high`` at confidence ``<metric>_ci_holm_level``; see the module docstring).

    ``matched`` maps a design to its width-matched baseline arm (another entry of the table):
    the arms form their own Holm family (whether widening helps is a second question, not one
    more design), and the design's row adds ``<metric>_vs_matched_*``, its paired delta over the
    arm on the seeds both have (unadjusted: one question per design, answered beside its
    verdict against the baseline).

    ``rows`` are per-run records with ``attn``, ``seed``, ``status`` and the metrics (and
    ``num_classes`` where known). Runs with status ``ok`` count with their score, ``diverged``
    ones at :func:`chance_score`. A design's delta, its mean and the baseline's mean beside it
    (``<metric>_baseline_mean``) use the seeds both sides have; the baseline's row, all its seeds.
    """
    scored, diverged = _scores(rows, metrics)
    base = scored.get(baseline, {})
    table = []
    for attn in sorted(scored, key=lambda a: (a != baseline, a)):
        runs = scored[attn]
        entry: dict[str, Any] = {"attn": attn, "runs": len(runs), "diverged": diverged.get(attn, 0)}
        seeds = sorted(runs) if attn == baseline else sorted(set(runs) & set(base))
        for metric in metrics:
            entry[f"{metric}_mean"] = _mean([runs[s][metric] for s in seeds])
            if attn != baseline:
                entry.update(_delta_fields(metric, [runs[s][metric] for s in seeds],
                                           [base[s][metric] for s in seeds], confidence))
        table.append(entry)
    arms = set((matched or {}).values())
    designs = [e for e in table if e["attn"] != baseline and e["attn"] not in arms]
    widened = [e for e in table if e["attn"] in arms]
    for metric in metrics:
        _holm_fields(designs, metric, confidence)
        _holm_fields(widened, metric, confidence)
    for entry in designs:
        arm = (matched or {}).get(entry["attn"])
        if arm in scored:
            entry.update(_versus_matched(scored[entry["attn"]], scored[arm], arm, metrics, confidence))
    return table


def _versus_matched(design: Mapping[int, Mapping[str, float]], arm: Mapping[int, Mapping[str, float]], name: str,
                    metrics: Sequence[str], confidence: float) -> dict[str, Any]:
    """A design's paired delta over its width-matched arm ``name``, per metric, on the seeds both
    have: ``<metric>_vs_matched_delta``, ``_ci_low``, ``_ci_high``, ``_p`` and ``_pairs``."""
    seeds = sorted(set(design) & set(arm))
    fields: dict[str, Any] = {"matched_arm": name}
    for metric in metrics:
        result = paired_delta([design[s][metric] for s in seeds], [arm[s][metric] for s in seeds], confidence)
        fields.update({f"{metric}_vs_matched_{k}": result[k] for k in ("delta", "ci_low", "ci_high", "p", "reason")})
        fields[f"{metric}_vs_matched_pairs"] = result["n"]
    return fields


def _scores(rows: Iterable[Mapping[str, Any]], metrics: Sequence[str]
            ) -> tuple[dict[str, dict[int, dict[str, float]]], dict[str, int]]:
    """Per attention type and seed, the scores of its runs that count (``ok`` with their score,
    ``diverged`` at :func:`chance_score`), and per attention type its number of diverged runs."""
    scored: dict[str, dict[int, dict[str, float]]] = {}
    diverged: dict[str, int] = {}
    for row in rows:
        status = row.get("status")
        if status not in ("ok", "diverged"):
            continue
        classes = row.get("num_classes")
        score = {m: _score(row, m) if status == "ok" else chance_score(m, classes) for m in metrics}
        scored.setdefault(row["attn"], {})[int(row["seed"])] = score
        diverged[row["attn"]] = diverged.get(row["attn"], 0) + (status == "diverged")
    return scored, diverged


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _delta_fields(metric: str, values: Sequence[float], baseline: Sequence[float], confidence: float
                  ) -> dict[str, Any]:
    """A design's columns for one metric: the baseline's mean on the same seeds and the paired
    delta (:func:`paired_delta`) with its unadjusted interval."""
    result = paired_delta(values, baseline, confidence)
    fields: dict[str, Any] = {f"{metric}_baseline_mean": _mean(baseline), f"{metric}_pairs": result["n"]}
    fields.update({f"{metric}_{k}": result[k] for k in ("delta", "sd", "ci_low", "ci_high", "p", "reason")})
    if metric == "top1":
        fields["top1_seeds_for_target"] = seeds_for_half_width(result["sd"], confidence=confidence)
    return fields


def _holm_fields(designs: list[dict[str, Any]], metric: str, confidence: float) -> None:
    """Adds to each design's entry the Holm-adjusted p-value over ``designs``, the verdict on it
    and the interval at the level of the Holm step that decides it (:func:`holm_levels`)."""
    alpha = 1.0 - confidence
    p_values = [e[f"{metric}_p"] for e in designs]
    for entry, adjusted, level in zip(designs, holm(p_values), holm_levels(p_values, alpha), strict=True):
        entry[f"{metric}_p_holm"] = adjusted
        entry[f"{metric}_significant"] = bool(adjusted < alpha)
        entry[f"{metric}_ci_holm_level"] = 1.0 - level
        low, high = (math.nan, math.nan) if math.isnan(level) else t_interval(
            entry[f"{metric}_delta"], entry[f"{metric}_sd"], entry[f"{metric}_pairs"], 1.0 - level)
        entry[f"{metric}_ci_holm_low"], entry[f"{metric}_ci_holm_high"] = low, high


def _paired_seeds(correct: Mapping[str, Mapping[int, Sequence[bool]]], attn: str, baseline: str) -> list[int]:
    return sorted(set(correct.get(attn, {})) & set(correct.get(baseline, {})))


def per_class_table(
    correct: Mapping[str, Mapping[int, Sequence[bool]]],
    labels: Sequence[int],
    classes: Sequence[str],
    baseline: str,
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """Per design and class: the paired top-1 delta over ``baseline`` on that class's val images
    (each seed's class accuracy, paired over the seeds both have, as :func:`paired_delta`).

    ``correct[attn][seed]`` lists, per val image in the order of ``labels``, whether top-1 was
    right. Diverged runs have no per-image results and are not in it. Per-class intervals are
    for looking, not for verdicts: they are not adjusted for the number of classes."""
    members = {c: [i for i, label in enumerate(labels) if label == c] for c in range(len(classes))}
    rows = []
    for attn in sorted(a for a in correct if a != baseline):
        seeds = _paired_seeds(correct, attn, baseline)
        for c, name in enumerate(classes):
            images = members[c]
            if not images:
                continue
            design = [sum(correct[attn][s][i] for i in images) / len(images) for s in seeds]
            base = [sum(correct[baseline][s][i] for i in images) / len(images) for s in seeds]
            result = paired_delta(design, base, confidence)
            rows.append({"attn": attn, "class": name, "images": len(images), "pairs": result["n"],
                         "top1_delta": result["delta"], "top1_ci_low": result["ci_low"],
                         "top1_ci_high": result["ci_high"], "reason": result["reason"]})
    return rows


def image_sampling_se(correct: Mapping[str, Mapping[int, Sequence[bool]]], baseline: str) -> dict[str, float]:
    """Per design, the standard error of its top-1 delta that comes from which images the val
    set happens to hold, without the seed-to-seed noise (which the seed interval already holds).

    With ``d_is`` = design right minus baseline right on image ``i`` at paired seed ``s``
    (``N`` images, ``S`` seeds), ``D_i`` its mean over the seeds and ``d_.s`` over the images,
    the spread of ``D_i`` across images holds the images' true differences plus each image's
    seed noise over ``S``: ``E[var_i(D_i)] = var_between + var_within / S``. The within-image
    seed variance is the interaction mean square of the image x seed table (the residual once
    each image's and each seed's mean are removed, so a seed that is better on every image is
    not counted as noise of the images),

        var_within = sum_is (d_is - D_i - d_.s + d_..)^2 / ((N - 1) (S - 1)),

    unbiased for the images' mean seed variance, and

        se = sqrt(max(0, var_i(D_i) - var_within / S) / N)

    (the crossed image x seed random-effects decomposition; Searle, Casella & McCulloch,
    "Variance Components", 1992, ch. 4). For claims about the image population (not about this
    val set) it adds to the seed term: ``sqrt(se_seeds^2 + se^2)``. Designs with fewer than 2
    paired seeds (no within-image variance to remove) or 2 images have none."""
    out = {}
    for attn in (a for a in correct if a != baseline):
        seeds = _paired_seeds(correct, attn, baseline)
        if len(seeds) < 2:
            continue
        diffs = [[int(correct[attn][s][i]) - int(correct[baseline][s][i]) for s in seeds]
                 for i in range(len(correct[baseline][seeds[0]]))]
        if len(diffs) < 2:
            continue
        out[attn] = _between_image_se(diffs)
    return out


def _between_image_se(diffs: Sequence[Sequence[float]]) -> float:
    """:func:`image_sampling_se`'s estimate from the ``N x S`` table of per-image, per-seed
    differences."""
    n, s = len(diffs), len(diffs[0])
    image_means = [sum(row) / s for row in diffs]
    seed_means = [sum(row[j] for row in diffs) / n for j in range(s)]
    grand = sum(image_means) / n
    var_images = sum((d - grand) ** 2 for d in image_means) / (n - 1)
    residual = sum((row[j] - image_means[i] - seed_means[j] + grand) ** 2
                   for i, row in enumerate(diffs) for j in range(s))
    var_within = residual / ((n - 1) * (s - 1))
    return math.sqrt(max(0.0, var_images - var_within / s) / n)
