"""Paired deltas and the t quantile of the accuracy stage."""

from __future__ import annotations

import math

import pytest

from suite.accuracy.stats import (
    delta_table,
    holm,
    paired_delta,
    seeds_for_half_width,
    t_cdf,
    t_quantile,
)

# two-sided 95% critical values from a printed t table
TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 9: 2.262, 30: 2.042, 120: 1.980}


@pytest.mark.parametrize("df, value", sorted(TABLE.items()))
def test_t_quantile_matches_the_printed_table(df, value):
    assert t_quantile(0.975, df) == pytest.approx(value, abs=6e-4)
    assert t_quantile(0.025, df) == pytest.approx(-value, abs=6e-4)


def test_t_quantile_and_cdf_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 8, 17, 60, 500):
        for p in (0.55, 0.8, 0.95, 0.975, 0.999):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)
        for t in (-6.0, -1.2, 0.3, 2.5):
            assert t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), abs=1e-12)


def test_bad_arguments():
    with pytest.raises(ValueError, match="p must be"):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="df"):
        t_cdf(0.5, 0)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_delta([1.0, 2.0], [1.0])


def test_paired_delta_by_hand():
    # diffs 0.01, 0.02, 0.03: mean 0.02, sd 0.01, half width 4.303 * 0.01 / sqrt(3)
    result = paired_delta([0.71, 0.72, 0.73], [0.70, 0.70, 0.70])
    half = 4.302652729749464 * 0.01 / math.sqrt(3)
    assert result["n"] == 3
    assert result["delta"] == pytest.approx(0.02)
    assert result["sd"] == pytest.approx(0.01)
    assert result["ci_low"] == pytest.approx(0.02 - half)
    assert result["ci_high"] == pytest.approx(0.02 + half)
    assert result["significant"] is False  # half width 0.0248 > 0.02: the CI contains 0
    tighter = paired_delta([0.72, 0.72, 0.73], [0.70, 0.70, 0.70])  # diffs 2, 2, 3 points
    assert tighter["significant"] is True and tighter["ci_low"] > 0


def test_pairing_removes_shared_seed_noise():
    # big seed-to-seed swings shared by both sides: unpaired this would not be significant
    base = [0.60, 0.70, 0.80]
    attn = [b + d for b, d in zip(base, (0.010, 0.012, 0.011), strict=True)]
    assert paired_delta(attn, base)["significant"] is True
    noisy = paired_delta([0.70, 0.72, 0.69], [0.71, 0.70, 0.70])
    assert noisy["significant"] is False
    assert noisy["ci_low"] < 0 < noisy["ci_high"]


def test_delta_table_pairs_seeds_and_scores_a_diverged_run_at_chance():
    rows = [
        {"attn": "none", "seed": 0, "status": "ok", "top1": 0.70, "top5": 0.95},
        {"attn": "none", "seed": 1, "status": "ok", "top1": 0.72, "top5": 0.96},
        {"attn": "none", "seed": 3, "status": "ok", "top1": 0.71, "top5": 0.95},
        {"attn": "se", "seed": 0, "status": "ok", "top1": 0.71, "top5": 0.95},
        {"attn": "se", "seed": 1, "status": "ok", "top1": 0.74, "top5": 0.97},
        {"attn": "se", "seed": 2, "status": "ok", "top1": 0.99, "top5": 0.99},  # no baseline at seed 2
        {"attn": "se", "seed": 3, "status": "diverged", "top1": None, "top5": None, "num_classes": 10},
        {"attn": "eca", "seed": 0, "status": "error", "message": "an exception"},
    ]
    table = {row["attn"]: row for row in delta_table(rows, baseline="none")}
    assert list(table) == ["none", "se"]  # a failed run has no score
    assert table["none"]["runs"] == 3
    se = table["se"]
    assert se["top1_pairs"] == 3 and se["diverged"] == 1
    # seed 3 diverged: scored 1/10 top-1 and 5/10 top-5 against the baseline's 0.71 and 0.95
    assert se["top1_delta"] == pytest.approx((0.01 + 0.02 + (0.10 - 0.71)) / 3)
    assert se["top5_delta"] == pytest.approx((0.0 + 0.01 + (0.50 - 0.95)) / 3)
    # means over the paired seeds only (seed 2 has no baseline): mean minus baseline mean = delta
    assert se["top1_mean"] == pytest.approx((0.71 + 0.74 + 0.10) / 3)
    assert se["top1_mean"] - table["none"]["top1_mean"] == pytest.approx(se["top1_delta"])


def test_p_value_and_interval_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    values = [0.712, 0.731, 0.705, 0.744, 0.720]
    base = [0.700, 0.716, 0.709, 0.722, 0.701]
    result = paired_delta(values, base)
    diffs = [v - b for v, b in zip(values, base, strict=True)]
    reference = stats.ttest_rel(values, base)
    assert result["p"] == pytest.approx(reference.pvalue, rel=1e-9)
    low, high = stats.t.interval(0.95, len(diffs) - 1, loc=sum(diffs) / len(diffs), scale=stats.sem(diffs))
    assert (result["ci_low"], result["ci_high"]) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
    assert result["significant"] is bool(reference.pvalue < 0.05)


@pytest.mark.parametrize("n", [0, 1, 2])
def test_fewer_than_three_pairs_give_no_interval_and_no_verdict(n):
    values, base = [0.80, 0.90][:n], [0.70, 0.70][:n]
    result = paired_delta(values, base)
    assert result["n"] == n and result["significant"] is False
    assert all(math.isnan(result[k]) for k in ("ci_low", "ci_high", "p"))
    assert f"{n} paired seed(s)" in result["reason"]


def test_zero_spread_gives_no_interval_and_no_verdict():
    """Equal differences at every seed: scipy's t statistic is infinite or undefined; no
    zero-width interval is reported as significant."""
    result = paired_delta([0.72, 0.73, 0.74, 0.75], [0.70, 0.71, 0.72, 0.73])
    assert result["delta"] == pytest.approx(0.02) and result["sd"] == 0.0
    assert math.isnan(result["ci_low"]) and math.isnan(result["p"]) and result["significant"] is False
    assert "all equal" in result["reason"]


def test_holm_by_hand_and_against_its_definition():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, math.nan, 0.01]) == [pytest.approx(0.5), pytest.approx(math.nan, nan_ok=True), 0.02]
    assert holm([0.9, 0.3]) == pytest.approx([0.9, 0.6])  # monotone: the larger p keeps its own value
    assert holm([0.9, 0.8]) == [1.0, 1.0]  # capped at 1 where m * p exceeds it
    assert holm([]) == []
    rng = __import__("random").Random(0)
    for _ in range(50):
        p = [rng.random() ** 3 for _ in range(rng.randint(1, 8))]
        order = sorted(range(len(p)), key=p.__getitem__)
        m = len(p)
        for rank, i in enumerate(order):  # max over the smaller ones of min(1, (m - j) p_(j))
            expected = max(min(1.0, (m - j) * p[order[j]]) for j in range(rank + 1))
            assert holm(p)[i] == pytest.approx(expected)


def test_verdicts_use_the_holm_adjusted_p_value():
    """Seven designs, one with p about 0.03 unadjusted: significant alone, not after Holm."""
    base = [0.700, 0.710, 0.705, 0.715, 0.708]
    rows = [{"attn": "none", "seed": s, "status": "ok", "top1": b, "top5": 0.9} for s, b in enumerate(base)]
    shifts = {"d0": [0.010, 0.004, 0.012, 0.001, 0.008]}
    shifts.update({f"d{k}": [0.004, -0.006, 0.002, -0.001, 0.003] for k in range(1, 7)})
    for name, deltas in shifts.items():
        rows += [{"attn": name, "seed": s, "status": "ok", "top1": b + d, "top5": 0.9 + d / 2}
                 for s, (b, d) in enumerate(zip(base, deltas, strict=True))]
    d0 = {row["attn"]: row for row in delta_table(rows, baseline="none")}["d0"]
    assert 0.001 < d0["top1_p"] < 0.05 and d0["top1_p_holm"] > 0.05
    assert d0["top1_significant"] is False
    alone = {row["attn"]: row for row in delta_table([r for r in rows if r["attn"] in ("none", "d0")],
                                                     baseline="none")}["d0"]
    assert alone["top1_p_holm"] == pytest.approx(alone["top1_p"]) and alone["top1_significant"] is True


def test_seeds_for_half_width_is_the_smallest_n_that_reaches_it():
    for sd, target in ((0.0072, 0.01), (0.0093, 0.01), (0.005, 0.01), (0.02, 0.005)):
        n = int(seeds_for_half_width(sd, target))
        assert n >= 3
        assert t_quantile(0.975, n - 1) * sd / math.sqrt(n) <= target
        if n > 3:
            assert t_quantile(0.975, n - 2) * sd / math.sqrt(n - 1) > target
    assert seeds_for_half_width(0.0072) == 5 and seeds_for_half_width(0.0093) == 6
    assert math.isnan(seeds_for_half_width(math.nan)) and seeds_for_half_width(1.0, at_most=10) == math.inf


def test_a_missing_or_infinite_score_gives_no_p_value_and_does_not_count_for_holm():
    result = paired_delta([0.7, 0.8, math.nan], [0.6, 0.7, 0.7])
    assert math.isnan(result["p"]) and result["significant"] is False and "missing or infinite" in result["reason"]
    rows = [{"attn": "none", "seed": s, "status": "ok", "top1": 0.7 + 0.01 * s, "top5": 0.9} for s in range(3)]
    rows += [{"attn": "se", "seed": s, "status": "ok", "top1": 0.72 + 0.01 * s + 0.001 * (s == 1), "top5": 0.9}
             for s in range(3)]
    rows += [{"attn": "bad", "seed": s, "status": "ok", "top1": None if s == 0 else 0.7, "top5": 0.9} for s in range(3)]
    table = {row["attn"]: row for row in delta_table(rows, baseline="none")}
    assert math.isnan(table["bad"]["top1_p_holm"])
    assert table["se"]["top1_p_holm"] == pytest.approx(table["se"]["top1_p"])  # one hypothesis, not two
