"""The accuracy stage's image term, Holm intervals and same-seed means, on synthetic data whose
truth is known (suite/accuracy/stats.py, suite/accuracy/tables.py and the report's accuracy table)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from suite.accuracy.stats import (
    delta_table,
    holm_levels,
    image_sampling_se,
    paired_delta,
    t_interval,
    t_quantile,
)
from suite.accuracy.tables import summary_markdown
from suite.report.load import StageData
from suite.report.readme import accuracy_markdown
from suite.report.tables import accuracy_table

IMAGES, SEEDS = 20_000, 6


def _synthetic_correct(between_sd: float, seed_shift_sd: float, rng_seed: int
                       ) -> tuple[dict[str, dict[int, list[bool]]], float]:
    """Right/wrong per image and seed for a baseline and a design ``d``. Image ``i`` is right
    with probability ``b_i`` (baseline) and ``b_i + u_i + g_s`` (design at seed ``s``), each run
    an independent draw; ``u_i`` is +-``between_sd`` (half each), ``g_s`` a seed-wide shift. The
    images' true differences are ``u_i + mean(g)``, so the true image term is ``sd(u) / sqrt(N)``."""
    rng = np.random.default_rng(rng_seed)
    base_p = rng.uniform(0.3, 0.7, IMAGES)
    effect = between_sd * rng.permutation(np.repeat([-1.0, 1.0], IMAGES // 2))
    shifts = rng.normal(0.0, seed_shift_sd, SEEDS)
    correct: dict[str, dict[int, list[bool]]] = {"none": {}, "d": {}}
    for s in range(SEEDS):
        correct["none"][s] = (rng.random(IMAGES) < base_p).tolist()
        correct["d"][s] = (rng.random(IMAGES) < np.clip(base_p + effect + shifts[s], 0, 1)).tolist()
    return correct, float(np.std(effect, ddof=1) / math.sqrt(IMAGES))


def _spread_of_seed_averages(correct: dict[str, dict[int, list[bool]]]) -> float:
    """``sd(D_i) / sqrt(N)`` with ``D_i`` the seed-averaged difference: the image term with each
    image's seed noise still in it."""
    diffs = np.array([correct["d"][s] for s in range(SEEDS)], float) - np.array(
        [correct["none"][s] for s in range(SEEDS)], float)
    return float(np.std(diffs.mean(axis=0), ddof=1) / math.sqrt(IMAGES))


@pytest.mark.parametrize("between_sd", [0.15, 0.25])
def test_the_image_term_recovers_the_known_between_image_se(between_sd: float) -> None:
    correct, truth = _synthetic_correct(between_sd, seed_shift_sd=0.03, rng_seed=1)
    estimate = image_sampling_se(correct, "none")["d"]
    assert estimate == pytest.approx(truth, rel=0.08)
    # the seed-averaged spread keeps var_within / S (about 0.45 / 6 here) and misses by far more
    assert _spread_of_seed_averages(correct) > 1.3 * truth


def test_the_image_term_is_about_zero_when_the_images_do_not_differ() -> None:
    correct, truth = _synthetic_correct(0.0, seed_shift_sd=0.03, rng_seed=2)
    assert truth == 0.0
    noisy = _spread_of_seed_averages(correct)
    assert noisy > 0.0015  # sqrt(0.45 / 6 / N): seed noise alone
    assert image_sampling_se(correct, "none")["d"] < 0.2 * noisy


def test_the_image_term_by_hand_and_without_enough_seeds() -> None:
    """Two images, two seeds: d = [[1, 0], [0, 0]]. Image means 0.5, 0; var = 0.125. Residuals
    +-0.25 in every cell: 4 * 0.0625 / (1 * 1) = 0.25 within; 0.125 - 0.25 / 2 = 0, so se = 0.
    With d = [[1, 1], [0, 0]] the images differ and no seed noise: sqrt(0.5 / 2) = 0.5."""
    base = {0: [False, False], 1: [False, False]}
    assert image_sampling_se({"none": base, "d": {0: [True, False], 1: [False, False]}}, "none") == {"d": 0.0}
    assert image_sampling_se({"none": base, "d": {0: [True, False], 1: [True, False]}}, "none") == {
        "d": pytest.approx(0.5)}
    assert image_sampling_se({"none": {0: [False, True]}, "d": {0: [True, True]}}, "none") == {}  # one seed


def test_holm_levels_by_hand() -> None:
    alpha = 0.05
    # every step rejects: each design at its own step's level
    assert holm_levels([0.04, 0.001, 0.02], alpha) == pytest.approx([0.05, 0.05 / 3, 0.025])
    # step 2 fails: it and every later design get step 2's level, though 0.04 < 0.05 alone
    assert holm_levels([0.04, 0.001, 0.03], alpha) == pytest.approx([0.025, 0.05 / 3, 0.025])
    # step 1 fails: all at Bonferroni's level
    assert holm_levels([0.03, 0.031, 0.04], alpha) == pytest.approx([0.05 / 3] * 3)
    levels = holm_levels([math.nan, 0.01], alpha)
    assert math.isnan(levels[0]) and levels[1] == pytest.approx(0.05)  # NaN does not count towards m


def _random_table(rng: random.Random) -> list[dict]:
    """A sweep of 3 to 8 designs over 3 to 8 paired seeds, effects from none to clear."""
    seeds = rng.randint(3, 8)
    base = [0.70 + rng.gauss(0, 0.01) for _ in range(seeds)]
    rows = [{"attn": "none", "seed": s, "status": "ok", "top1": b} for s, b in enumerate(base)]
    for k in range(rng.randint(3, 8)):
        effect, noise = rng.gauss(0, 0.008), rng.uniform(0.002, 0.01)
        rows += [{"attn": f"d{k}", "seed": s, "status": "ok", "top1": b + effect + rng.gauss(0, noise)}
                 for s, b in enumerate(base)]
    return delta_table(rows, baseline="none", metrics=("top1",))


def test_the_holm_interval_excludes_zero_exactly_when_the_verdict_is_significant() -> None:
    rng = random.Random(0)
    counts = {"significant": 0, "unadjusted_only": 0, "stopped_early": 0}
    for _ in range(200):
        designs = [e for e in _random_table(rng) if e["attn"] != "none"]
        levels = holm_levels([e["top1_p"] for e in designs], 0.05)
        for entry, level in zip(designs, levels, strict=True):
            low, high = entry["top1_ci_holm_low"], entry["top1_ci_holm_high"]
            assert (low > 0 or high < 0) is entry["top1_significant"]
            assert low <= entry["top1_ci_low"] and high >= entry["top1_ci_high"]  # never narrower
            assert entry["top1_ci_holm_level"] == pytest.approx(1 - level)
            unadjusted = entry["top1_ci_low"] > 0 or entry["top1_ci_high"] < 0
            assert unadjusted is (entry["top1_p"] < 0.05)
            counts["significant"] += entry["top1_significant"]
            counts["unadjusted_only"] += unadjusted and not entry["top1_significant"]
            # would pass its own step's test, but Holm stopped before it
            m = len(designs)
            rank = sorted(e["top1_p"] for e in designs).index(entry["top1_p"])
            counts["stopped_early"] += entry["top1_p"] * (m - rank) < 0.05 and not entry["top1_significant"]
    assert all(n >= 5 for n in counts.values()), counts  # every case was exercised


SWEEP = {"d0": [0.010, 0.004, 0.012, 0.001, 0.008],
         **{f"d{k}": [0.004, -0.006, 0.002, -0.001, 0.003 + k / 1000] for k in range(1, 7)}}
"""Seven designs' top-1 differences over the baseline at five seeds: d0 has p about 0.03 alone."""


def _sweep_rows() -> list[dict]:
    """:data:`SWEEP` as run records."""
    base = [0.700, 0.710, 0.705, 0.715, 0.708]
    rows = [{"attn": "none", "seed": s, "status": "ok", "top1": b, "top5": 0.9} for s, b in enumerate(base)]
    for name, deltas in SWEEP.items():
        rows += [{"attn": name, "seed": s, "status": "ok", "top1": b + d, "top5": 0.9}
                 for s, (b, d) in enumerate(zip(base, deltas, strict=True))]
    return [{**r, "profile": "cpu", "arch": "resnet_small", "data": "/x/imagenette", "wall_s": 60} for r in rows]


def _rows_with_p_values(p_values: list[float], seeds: int = 5) -> list[dict]:
    """A sweep whose designs' paired t-tests give exactly ``p_values`` (differences ``mu + z``
    with ``z`` a fixed pattern of sample sd 0.01 and ``mu`` set from the t quantile)."""
    pattern = [k - (seeds - 1) / 2 for k in range(seeds)]
    scale = 0.01 / math.sqrt(sum(z * z for z in pattern) / (seeds - 1))
    rows = [{"attn": "none", "seed": s, "status": "ok", "top1": 0.7} for s in range(seeds)]
    for k, p in enumerate(p_values):
        mu = t_quantile(1 - p / 2, seeds - 1) * 0.01 / math.sqrt(seeds)
        rows += [{"attn": f"d{k}", "seed": s, "status": "ok", "top1": 0.7 + mu + scale * pattern[s]}
                 for s in range(seeds)]
    return rows


def test_a_design_after_the_step_where_holm_stopped_has_zero_in_its_interval() -> None:
    """p = 0.001, 0.03, 0.04: step 2 fails (2 * 0.03 >= 0.05), so d2 is not significant though
    its own step alone (0.04 < 0.05) would pass; its interval is at step 2's level and holds 0,
    while at its own step's level (95%) it would not."""
    designs = delta_table(_rows_with_p_values([0.001, 0.03, 0.04]), baseline="none", metrics=("top1",))[1:]
    assert [e["top1_p"] for e in designs] == pytest.approx([0.001, 0.03, 0.04])
    assert [e["top1_significant"] for e in designs] == [True, False, False]
    assert [e["top1_ci_holm_level"] for e in designs] == pytest.approx([1 - 0.05 / 3, 0.975, 0.975])
    d2 = designs[2]
    assert d2["top1_ci_holm_low"] < 0 < d2["top1_ci_holm_high"] and d2["top1_ci_low"] > 0
    first = designs[0]
    assert first["top1_ci_holm_low"] > 0


def test_the_holm_interval_is_the_t_interval_at_its_step() -> None:
    """Seven designs: d0 with p about 0.03 alone is the smallest p, so Holm tests it at 0.05 / 7;
    its unadjusted interval excludes 0, its Holm interval (99.29%) does not."""
    d0 = {e["attn"]: e for e in delta_table(_sweep_rows(), baseline="none", metrics=("top1",))}["d0"]
    base = [0.700, 0.710, 0.705, 0.715, 0.708]
    raw = paired_delta([b + d for b, d in zip(base, SWEEP["d0"], strict=True)], base)
    assert raw["p"] < 0.05 and d0["top1_ci_low"] == pytest.approx(raw["ci_low"]) and d0["top1_ci_low"] > 0
    assert d0["top1_ci_holm_level"] == pytest.approx(1 - 0.05 / 7)
    expected = t_interval(raw["delta"], raw["sd"], 5, 1 - 0.05 / 7)
    assert (d0["top1_ci_holm_low"], d0["top1_ci_holm_high"]) == pytest.approx(expected)
    assert d0["top1_ci_holm_low"] < 0 < d0["top1_ci_holm_high"] and d0["top1_significant"] is False


def test_without_a_p_value_there_is_no_holm_interval() -> None:
    rows = [{"attn": a, "seed": s, "status": "ok", "top1": 0.7 + 0.01 * (a == "d")} for a in ("none", "d")
            for s in range(2)]
    d = delta_table(rows, baseline="none", metrics=("top1",))[1]
    assert all(math.isnan(d[k]) for k in ("top1_ci_holm_low", "top1_ci_holm_high", "top1_ci_holm_level"))


def _rows_with_an_unpaired_baseline_seed(extra: float) -> list[dict]:
    base = [0.70, 0.72, 0.71, 0.73, extra]  # seed 4: the baseline only
    rows = [{"attn": "none", "seed": s, "status": "ok", "top1": b, "top5": 0.9} for s, b in enumerate(base)]
    return rows + [{"attn": "se", "seed": s, "status": "ok", "top1": b + 0.01 * (s + 1), "top5": 0.91}
                   for s, b in enumerate(base[:4])]


def test_a_design_row_holds_the_baselines_mean_over_the_same_seeds() -> None:
    table = {e["attn"]: e for e in delta_table(_rows_with_an_unpaired_baseline_seed(0.10), baseline="none")}
    se = table["se"]
    assert se["top1_baseline_mean"] == pytest.approx((0.70 + 0.72 + 0.71 + 0.73) / 4)
    assert se["top1_mean"] - se["top1_baseline_mean"] == pytest.approx(se["top1_delta"])
    assert se["top5_baseline_mean"] == pytest.approx(0.9)
    assert table["none"]["top1_mean"] == pytest.approx((0.70 + 0.72 + 0.71 + 0.73 + 0.10) / 5)  # all its seeds
    other = {e["attn"]: e for e in delta_table(_rows_with_an_unpaired_baseline_seed(0.95), baseline="none")}
    assert other["se"]["top1_baseline_mean"] == se["top1_baseline_mean"]


def test_the_summary_says_which_interval_is_which() -> None:
    rows = _sweep_rows()
    text = summary_markdown(rows, delta_table(rows, baseline="none"))
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| attention"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells[4:8] == ["baseline top-1", "top-1 delta", "95% CI (Holm)", "95% CI (unadjusted)"]
    d0 = [c.strip() for c in next(line for line in lines if line.startswith("| d0 |")).strip("|").split("|")]
    holm_low, holm_high = (float(v) for v in d0[6].strip("[]").split(","))
    raw_low, _ = (float(v) for v in d0[7].strip("[]").split(","))
    assert holm_low < 0 < holm_high and raw_low > 0 and d0[-1] == "not significant"
    assert float(d0[2]) - float(d0[4]) == pytest.approx(float(d0[5]), abs=0.011)  # top-1 - baseline = delta


def test_the_reports_accuracy_table_and_section_carry_both_intervals() -> None:
    rows = _sweep_rows()
    deltas = pd.DataFrame(delta_table(rows, baseline="none"))
    stage = StageData("accuracy", Path("."), "ok", {"deltas": deltas, "runs": pd.DataFrame(rows)})
    table = accuracy_table(stage).set_index("attn")
    d0 = table.loc["d0"]
    assert d0["top1_ci_low_pp"] > 0 and d0["top1_ci_holm_low_pp"] < 0 < d0["top1_ci_holm_high_pp"]
    assert d0["top1_pct"] - d0["top1_baseline_pct"] == pytest.approx(d0["top1_delta_pp"])
    assert d0["top1_ci_holm_level"] == pytest.approx(1 - 0.05 / 7)
    text = accuracy_markdown(table.reset_index(), pd.DataFrame(), pd.DataFrame(rows))
    assert "top-1 delta, pp [95% CI (unadjusted)] | 95% CI (Holm), pp |" in text
    row = next(line for line in text.splitlines() if line.startswith("| `d0` |"))
    assert f"[{d0['top1_ci_holm_low_pp']:+.2f}, {d0['top1_ci_holm_high_pp']:+.2f}]" in row


def test_a_matched_arm_is_its_own_holm_family_and_the_design_is_compared_with_it() -> None:
    from suite.accuracy.stats import delta_table

    records = []
    for seed in range(6):
        noise = 0.002 * ((seed * 7) % 5)
        for attn, top1 in (("none", 0.70), ("se", 0.72), ("eca", 0.701), ("matched_se", 0.73)):
            own = {"se": 0.001, "matched_se": 0.0005 * (seed % 2)}.get(attn, 0.0)
            records.append({"attn": attn, "seed": seed, "status": "ok",
                            "top1": top1 + noise + (own * seed if attn == "se" else own), "top5": 0.9})
    table = {e["attn"]: e for e in delta_table(records, baseline="none", metrics=("top1",),
                                               matched={"se": "matched_se"})}
    # two designs in the designs' family: Holm multiplies the smaller p by 2 at most
    assert table["se"]["top1_p_holm"] <= 2 * table["se"]["top1_p"] + 1e-12
    # the arm alone in its own family: its Holm p is its own p
    assert table["matched_se"]["top1_p_holm"] == table["matched_se"]["top1_p"]
    assert "top1_vs_matched_delta" not in table["matched_se"] and "top1_vs_matched_delta" not in table["eca"]
    expected = sum(0.72 + 0.001 * s - 0.73 - 0.0005 * (s % 2) for s in range(6)) / 6
    assert table["se"]["top1_vs_matched_delta"] == pytest.approx(expected)
    assert table["se"]["top1_vs_matched_pairs"] == 6 and table["se"]["matched_arm"] == "matched_se"
    assert table["se"]["top1_vs_matched_ci_high"] < 0  # the widened backbone beats se at every seed
