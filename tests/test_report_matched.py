"""The report's accuracy table with width-matched arms beside their designs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from suite.report.load import StageData
from suite.report.tables import accuracy_table


def _deltas() -> pd.DataFrame:
    rows = [{"attn": "none", "runs": 6, "top1_mean": 0.70, "top5_mean": 0.95},
            {"attn": "eca", "runs": 6, "top1_pairs": 6, "top1_mean": 0.70, "top1_delta": 0.0, "top5_mean": 0.95},
            {"attn": "gsop", "runs": 6, "top1_pairs": 6, "top1_mean": 0.71, "top1_delta": 0.01, "top5_mean": 0.95},
            {"attn": "matched_se", "runs": 6, "top1_pairs": 6, "top1_mean": 0.73, "top1_delta": 0.03,
             "top5_mean": 0.95},
            {"attn": "se", "runs": 6, "top1_pairs": 6, "top1_mean": 0.72, "top1_delta": 0.02, "top5_mean": 0.95,
             "matched_arm": "matched_se", "top1_vs_matched_delta": -0.01, "top1_vs_matched_ci_low": -0.02,
             "top1_vs_matched_ci_high": 0.0, "top1_vs_matched_p": 0.06}]
    return pd.DataFrame(rows)


def _matched() -> pd.DataFrame:
    return pd.DataFrame([
        {"design": "se", "attn": "matched_se", "status": "ok", "reason": "", "width_mult": 1.1, "widths": "40-72-144-280",
         "design_step_ms": 120.0, "matched_step_ms": 121.0, "macs_design": 1.0e8, "params_design": 1.3e6,
         "macs_matched": 1.2e8, "params_matched": 1.5e6},
        {"design": "eca", "attn": "matched_eca", "status": "refused", "reason": "costs no more than the backbone",
         "width_mult": float("nan"), "widths": "", "design_step_ms": 110.0, "matched_step_ms": float("nan"),
         "macs_design": 1.0e8, "params_design": 1.2e6, "macs_matched": float("nan"), "params_matched": float("nan")}])


def test_each_arm_follows_its_design_with_its_width_step_time_and_cost() -> None:
    stage = StageData("accuracy", Path("."), "ok", {"deltas": _deltas(), "runs": pd.DataFrame(), "matched": _matched()})
    table = accuracy_table(stage)
    assert table["attn"].tolist() == ["none", "eca", "gsop", "se", "matched_se"]
    arm = table[table["attn"] == "matched_se"].iloc[0]
    assert arm["matches"] == "se" and arm["widths"] == "40-72-144-280" and arm["step_ms"] == 121.0
    assert arm["macs"] == 1.2e8 and arm["params"] == 1.5e6
    design = table[table["attn"] == "se"].iloc[0]
    assert design["step_ms"] == 120.0 and design["macs"] == 1.0e8
    assert round(design["top1_vs_matched_delta_pp"], 6) == -1.0 and design["matched_arm"] == "matched_se"
    refused = table[table["attn"] == "eca"].iloc[0]
    assert refused["matched_reason"] == "costs no more than the backbone"


def test_without_a_search_the_table_has_no_arm_columns_filled() -> None:
    stage = StageData("accuracy", Path("."), "ok", {"deltas": _deltas().iloc[:3], "runs": pd.DataFrame()})
    table = accuracy_table(stage)
    assert table["attn"].tolist() == ["none", "eca", "gsop"]
    assert "matches" not in table or table["matches"].isna().all()


def test_the_readme_table_names_each_arm_and_compares_each_design_with_its_arm() -> None:
    from suite.report.readme import accuracy_markdown

    stage = StageData("accuracy", Path("."), "ok", {"deltas": _deltas(), "runs": pd.DataFrame(), "matched": _matched()})
    text = accuracy_markdown(accuracy_table(stage), pd.DataFrame(), pd.DataFrame({"epochs": [6]}))
    se_line = next(line for line in text.splitlines() if line.startswith("| `se` |"))
    assert se_line.rstrip(" |").endswith("-1.00 [-2.00, +0.00]")
    assert "| `matched_se` (width x1.1, same step time as `se`) |" in text
    eca_line = next(line for line in text.splitlines() if line.startswith("| `eca` |"))
    assert "no arm: costs no more than the backbone" in eca_line
