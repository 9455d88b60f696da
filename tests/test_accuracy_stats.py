"""Paired deltas and the t quantile of the accuracy stage."""

from __future__ import annotations

import math

import pytest

from suite.accuracy.stats import delta_table, paired_delta, t_cdf, t_quantile

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


def test_single_pair_has_no_interval():
    result = paired_delta([0.8], [0.7])
    assert result["delta"] == pytest.approx(0.1)
    assert math.isnan(result["ci_low"]) and result["significant"] is False


def test_delta_table_uses_only_seeds_both_sides_finished():
    rows = [
        {"attn": "none", "seed": 0, "status": "ok", "top1": 0.70, "top5": 0.95},
        {"attn": "none", "seed": 1, "status": "ok", "top1": 0.72, "top5": 0.96},
        {"attn": "none", "seed": 2, "status": "diverged", "top1": None, "top5": None},
        {"attn": "se", "seed": 0, "status": "ok", "top1": 0.71, "top5": 0.95},
        {"attn": "se", "seed": 1, "status": "ok", "top1": 0.74, "top5": 0.97},
        {"attn": "se", "seed": 2, "status": "ok", "top1": 0.10, "top5": 0.50},
    ]
    table = {row["attn"]: row for row in delta_table(rows, baseline="none")}
    assert list(table) == ["none", "se"]
    assert table["none"]["runs"] == 2
    assert table["se"]["top1_pairs"] == 2
    assert table["se"]["top1_delta"] == pytest.approx(0.015)
    assert table["se"]["top1_mean"] == pytest.approx((0.71 + 0.74 + 0.10) / 3)
