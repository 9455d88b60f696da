"""The cost-benefit figure says on its face when its deltas come from too few seeds, and draws
each width-matched arm beside its design (suite.report.figure_data, suite.report.figures)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from suite.report import figures
from suite.report.figure_data import FEW_SEEDS, cost_benefit_data


def _summary(seeds: int, names=("se", "eca", "gsop"), deltas=(5.0, -2.5, 2.5), ratios=(2.0, 1.2, 6.0)) -> pd.DataFrame:
    """A summary as the report builds it: intervals only from 3 seeds on."""
    half = 1.0 if seeds >= FEW_SEEDS else np.nan
    return pd.DataFrame({
        "attn": list(names), "top1_delta_pp": list(deltas),
        "top1_ci_low_pp": [d - half for d in deltas], "top1_ci_high_pp": [d + half for d in deltas],
        "n_seeds": [seeds] * len(names), "latency_ratio_fwd": list(ratios),
        "extra_macs_pct": [np.nan] * len(names), "macs_over_conv3x3": [np.nan] * len(names),
        "model_arch": [np.nan] * len(names)})


def _texts(fig: plt.Figure) -> list[str]:
    """Every text drawn in the figure's axes, on one line each."""
    return [text.get_text().replace("\n", " ") for ax in fig.axes for text in ax.texts]


def test_a_one_seed_figure_says_its_deltas_are_not_evidence(drawn: list[plt.Figure], tmp_path: Path) -> None:
    data = cost_benefit_data(_summary(seeds=1))
    assert data.seeds == 1 and data.warning.startswith("1 paired seed: the accuracy deltas here are not evidence")
    _, note = figures.cost_benefit_figure(data, tmp_path / "cb.png", "profile smoke")
    banner = [t for t in _texts(drawn[0]) if "not evidence" in t]
    assert len(banner) == 1 and banner[0] == data.warning
    assert note == data.warning and "not evidence" in drawn[0]._suptitle.get_text().replace("\n", " ")


def test_two_seeds_are_still_too_few_and_three_are_enough(drawn: list[plt.Figure], tmp_path: Path) -> None:
    assert cost_benefit_data(_summary(seeds=2)).warning.startswith("2 paired seeds:")
    data = cost_benefit_data(_summary(seeds=FEW_SEEDS))
    assert data.seeds == FEW_SEEDS and data.warning == ""
    _, note = figures.cost_benefit_figure(data, tmp_path / "cb.png", "profile cpu")
    assert note == "" and not any("not evidence" in t for t in _texts(drawn[0]))


def test_a_summary_without_seed_counts_or_intervals_is_not_evidence_either() -> None:
    data = cost_benefit_data(_summary(seeds=1).drop(columns="n_seeds"))
    assert data.seeds is None and "not evidence" in data.warning


def test_a_matched_arm_is_drawn_beside_its_design(drawn: list[plt.Figure], tmp_path: Path) -> None:
    summary = _summary(seeds=3, names=("se", "gsop", "matched_gsop", "matched_eca"), deltas=(1.0, 2.0, 3.0, 0.5),
                       ratios=(2.0, 6.0, np.nan, np.nan))  # the arms have no cost of their own
    (panel,) = cost_benefit_data(summary).panels
    assert panel.labels == ["se", "gsop"]  # the arms are not attention types: not on the front
    (arm,) = panel.matched  # matched_eca's design has no point: it is not drawn
    assert (arm.label, arm.design, arm.x, arm.y, arm.design_y) == ("matched_gsop", "gsop", 6.0, 3.0, 2.0)
    assert arm.err == (1.0, 1.0)
    figures.cost_benefit_figure(cost_benefit_data(summary), tmp_path / "cb.png", "profile cpu")
    ax = drawn[0].axes[0]
    assert "matched_gsop" in _texts(drawn[0])
    assert figures.MATCHED_LEGEND in [t.get_text() for t in ax.get_legend().get_texts()]
    joins = [line for line in ax.get_lines() if list(line.get_xdata()) == [6.0, 6.0]]
    assert len(joins) == 1 and list(joins[0].get_ydata()) == [2.0, 3.0]
