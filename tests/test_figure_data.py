"""What each report figure shows is derived from the tables in suite.report.figure_data; the
figure functions draw it (suite.report.figures)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from suite.report.figure_data import (
    COUNTERS,
    NEEDS_ACCURACY,
    NEEDS_COST,
    NEEDS_LATENCY,
    cost_benefit_data,
    counter_agreement_data,
    latency_heatmap_data,
    model_latency_data,
)


def _latency_row(attn: str, mode: str, channels: int, ratio: float, status: str = "ok") -> dict:
    return {"attn": attn, "mode": mode, "level": "module", "status": status, "batch": 1, "channels": channels,
            "size": 14, "ratio": ratio}


def test_the_heatmap_holds_the_median_ratio_per_cell_and_marks_contended_cells_busy() -> None:
    rows = [_latency_row("se", "forward", 64, 2.0), _latency_row("se", "forward", 64, 4.0),
            _latency_row("eca", "forward", 64, 1.0), _latency_row("se", "forward", 256, 3.0)]
    contended = pd.DataFrame([_latency_row("eca", "forward", 256, math.nan, status="contended")])
    data = latency_heatmap_data(pd.DataFrame(rows), contended)
    assert data.modes == ["forward"] and data.order == ["eca", "se"]  # by median ratio
    assert data.shapes["forward"] == ["b1 c64 14px", "b1 c256 14px"]
    cells = data.cells["forward"]
    assert cells.loc["se", "b1 c64 14px"] == 3.0 and math.isnan(cells.loc["eca", "b1 c256 14px"])
    assert data.labels["forward"].loc["eca", "b1 c256 14px"] == "busy"
    assert data.labels["forward"].loc["se", "b1 c256 14px"] == "3"
    assert data.bound == 2.0  # log2 of the largest ratio, 4
    assert latency_heatmap_data(pd.DataFrame([_latency_row("se", "forward", 64, 1.0, "error")])) == NEEDS_LATENCY


def test_counter_ratios_are_the_median_over_shapes_with_torch_flops_halved() -> None:
    rows = [{"attn": "se", "level": "module", "status": "ok", "macs_formula": f, "macs_fvcore": f,
             "macs_fvcore_shipped": 0, "flops_torch": 2 * f * k} for f, k in ((100, 1.0), (200, 1.5), (400, 2.0))]
    data = counter_agreement_data(pd.DataFrame(rows))
    ratios = data.ratios.set_index("counter")["ratio"]
    assert ratios[COUNTERS["macs_fvcore"]] == 1.0
    assert ratios[COUNTERS["flops_torch"]] == 1.5
    shown = data.ratios.set_index("counter")["shown"]
    assert ratios[COUNTERS["macs_fvcore_shipped"]] == 0 and shown[COUNTERS["macs_fvcore_shipped"]] == data.floor
    assert counter_agreement_data(pd.DataFrame()) == NEEDS_COST


def test_cost_benefit_points_carry_their_intervals_and_the_pareto_front() -> None:
    summary = pd.DataFrame({
        "attn": ["se", "eca", "cbam"], "top1_delta_pp": [1.0, 0.5, 0.2],
        "top1_ci_low_pp": [0.0, np.nan, -1.0], "top1_ci_high_pp": [2.0, np.nan, 1.4],
        "latency_ratio_fwd": [2.0, 1.0, 3.0], "extra_macs_pct": [np.nan] * 3,
        "macs_over_conv3x3": [np.nan] * 3, "model_arch": [np.nan] * 3,
    })
    data = cost_benefit_data(summary)
    (panel,) = data.panels
    assert panel.labels == ["se", "eca", "cbam"] and panel.front.tolist() == [True, True, False]
    assert panel.err[:, 0].tolist() == [1.0, 1.0] and panel.err[:, 1].tolist() == [0.0, 0.0]
    assert panel.with_interval and panel.some_without_bar
    assert cost_benefit_data(summary.assign(top1_delta_pp=np.nan)) == NEEDS_ACCURACY


def test_model_panels_are_sorted_by_ratio_and_name_what_they_leave_out() -> None:
    ok = pd.DataFrame([{"attn": a, "arch": "resnet18", "mode": "forward", "level": "model", "status": "ok",
                        "ratio": r, "ratio_ci_low": r - 0.1, "ratio_ci_high": r + 0.2}
                       for a, r in (("cbam", 1.3), ("se", 1.1))])
    every = pd.concat([ok, pd.DataFrame([{"attn": "sk", "arch": "resnet18", "mode": "forward", "level": "model",
                                          "status": "refused"}])])
    (panel,) = model_latency_data(ok, every)
    assert panel.labels == ["se", "cbam"] and panel.not_shown == "1 refused"
    assert np.allclose(panel.err, [[0.1, 0.1], [0.2, 0.2]])
