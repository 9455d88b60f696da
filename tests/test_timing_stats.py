"""Timer statistics on synthetic samples: CI ranks, percentiles, convergence (no timing)."""

from __future__ import annotations

import math
import random

import pytest

from suite.timing.stats import (
    ci_half_width,
    is_converged,
    median_ci,
    median_ci_ranks,
    percentile,
    summarize,
)


@pytest.mark.parametrize(
    ("n", "ranks"),
    [(6, (1, 6)), (10, (2, 9)), (20, (6, 15)), (30, (10, 21)), (100, (40, 61))],
)
def test_median_ci_ranks_match_the_binomial_table(n: int, ranks: tuple[int, int]) -> None:
    assert median_ci_ranks(n, 0.95) == ranks


@pytest.mark.parametrize("n", [1, 2, 5])
def test_too_few_samples_have_no_95_interval(n: int) -> None:
    assert median_ci_ranks(n, 0.95) is None
    lo, hi = median_ci(list(range(n)), 0.95)
    assert math.isnan(lo) and math.isnan(hi)


@pytest.mark.parametrize("n", [6, 11, 37, 200, 999])
def test_ranks_are_the_tightest_with_enough_coverage(n: int) -> None:
    """Coverage 1 - 2 P(B < j) >= 95%, and moving one rank inwards drops below 95%."""
    j, k = median_ci_ranks(n, 0.95)
    assert k == n - j + 1

    def tail(m: int) -> float:  # P(B <= m - 1)
        return sum(math.comb(n, i) for i in range(m)) / 2**n

    assert 1 - 2 * tail(j) >= 0.95
    assert 1 - 2 * tail(j + 1) < 0.95


def test_scipy_agrees_on_coverage_where_available() -> None:
    stats = pytest.importorskip("scipy.stats")
    for n in (8, 25, 60, 400):
        j, _ = median_ci_ranks(n, 0.95)
        assert stats.binom.cdf(j - 1, n, 0.5) <= 0.025 < stats.binom.cdf(j, n, 0.5)


def test_large_n_uses_the_normal_approximation_close_to_exact() -> None:
    j_large, _ = median_ci_ranks(1001, 0.95)
    j_exact, _ = median_ci_ranks(1000, 0.95)
    assert abs(j_large - j_exact) <= 2
    assert j_large == pytest.approx(1001 / 2 - 1.96 * math.sqrt(1001) / 2, abs=1)


def test_percentile_matches_numpy_linear() -> None:
    np = pytest.importorskip("numpy")
    rng = random.Random(3)
    data = sorted(rng.random() for _ in range(57))
    for q in (0, 10, 25, 50, 75, 90, 99, 100):
        assert percentile(data, q) == pytest.approx(float(np.percentile(data, q)))


def test_summarize_reports_median_iqr_tails_and_n() -> None:
    samples = [float(v) for v in range(1, 102)]  # 1..101
    s = summarize(samples, calls_per_sample=4)
    assert s.median == 51
    assert s.iqr == pytest.approx(50)
    assert s.p90 == pytest.approx(91)
    assert s.p99 == pytest.approx(100)
    assert s.n == 101 and s.calls_per_sample == 4
    assert s.min == 1 and s.mean == pytest.approx(51)
    lo, hi = median_ci_ranks(101, 0.95)
    assert (s.ci_low, s.ci_high) == (lo, hi)  # values equal their ranks here
    assert not s.converged  # a CI of +-10 around 51 is far wider than 1%


def test_tight_samples_converge_and_wide_ones_do_not() -> None:
    rng = random.Random(0)
    tight = sorted(1.0 + rng.gauss(0, 0.005) for _ in range(50))
    wide = sorted(1.0 + abs(rng.gauss(0, 0.2)) for _ in range(50))
    assert is_converged(tight, rel_tol=0.01)
    assert not is_converged(wide, rel_tol=0.01)
    assert summarize(tight).converged and not summarize(wide).converged


def test_outliers_do_not_move_the_median_or_block_convergence() -> None:
    samples = [1.0] * 40 + [50.0] * 3
    s = summarize(samples)
    assert s.median == 1.0 and s.converged
    assert s.p99 > 10  # the tail is still reported


def test_ci_half_width_is_infinite_without_an_interval() -> None:
    assert ci_half_width(1.0, math.nan, math.nan) == math.inf
    assert ci_half_width(2.0, 1.9, 2.2) == pytest.approx(0.1)


def test_as_dict_scales_times_to_ms_and_prefixes() -> None:
    d = summarize([0.001] * 10).as_dict(prefix="ref_")
    assert d["ref_median_ms"] == pytest.approx(1.0)
    assert d["ref_n"] == 10 and d["ref_converged"] is True


def test_bad_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError, match="samples"):
        summarize([])
    with pytest.raises(ValueError, match="confidence"):
        median_ci_ranks(10, 1.5)
    with pytest.raises(ValueError, match="q must"):
        percentile([1.0], 101)
