"""The summary's per-runtime network ratios and the flag on add-only designs below 1."""

from __future__ import annotations

import pandas as pd
import pytest

from suite.report.readme import runtime_markdown, summary_markdown
from suite.report.summary import latency_summary


def _row(attn: str, runtime: str, ratio: float, low: float, high: float, arch: str = "resnet18") -> dict:
    return {"attn": attn, "level": "model", "arch": arch, "mode": "forward", "device": "cpu", "dtype": "fp32",
            "memory_format": "contiguous", "compile": runtime, "status": "ok", "ratio": ratio,
            "ratio_ci_low": low, "ratio_ci_high": high, "batch": 1, "size": 224}


def _summary(latency: pd.DataFrame, names: tuple[str, ...] = ("se", "eca", "gap_mean")) -> dict[str, dict]:
    rows = {a: {"attn": a, "stages": [], "problems": []} for a in names}
    latency_summary(rows, {"latency": latency})
    return rows


def test_each_runtime_gets_its_median_ratio_over_the_backbones() -> None:
    latency = pd.DataFrame([_row("se", "eager", 1.10, 1.05, 1.15), _row("se", "eager", 1.30, 1.2, 1.4, "resnet50"),
                            _row("se", "onnxruntime", 1.2, 1.1, 1.3), _row("se", "compile", 1.02, 1.0, 1.04)])
    rows = _summary(latency)
    assert rows["se"]["model_latency_ratio_fwd_eager"] == pytest.approx(1.2)
    assert rows["se"]["model_latency_ratio_fwd_onnxruntime"] == pytest.approx(1.2)
    assert rows["se"]["model_latency_ratio_fwd_compile"] == pytest.approx(1.02)
    assert rows["se"]["model_latency_fwd_by_runtime"] == "eager 1.2; inductor 1.02; ONNX Runtime 1.2"
    text = runtime_markdown(pd.DataFrame(rows.values()))
    assert "| `se` | 1.2x | 1.02x | 1.2x | -0.18 | +0.00 |" in text


def test_an_add_only_design_below_one_beyond_its_interval_is_flagged_not_shown() -> None:
    latency = pd.DataFrame([_row("eca", "eager", 0.92, 0.87, 0.97), _row("se", "eager", 0.97, 0.9, 1.04),
                            _row("gap_mean", "eager", 0.9, 0.85, 0.95)])
    rows = _summary(latency)
    assert rows["eca"]["model_latency_below_one"] == "resnet18 eager forward 0.92 [0.87, 0.97]"
    assert "model_latency_below_one" not in rows["se"]  # its interval reaches 1
    assert "model_latency_below_one" not in rows["gap_mean"]  # a pooling design may remove work
    table = summary_markdown(pd.DataFrame([{**r, "status": "ok", "model_arch": "resnet18"} for r in rows.values()]))
    eca_line = next(line for line in table.splitlines() if line.startswith("| `eca`"))
    assert "**flagged**" in eca_line and "timing artefact" in eca_line


def test_one_runtime_gives_no_runtime_section() -> None:
    rows = _summary(pd.DataFrame([_row("se", "eager", 1.1, 1.05, 1.15)]))
    assert runtime_markdown(pd.DataFrame(rows.values())) == ""


def test_the_a_a_control_is_reported_as_the_harness_floor() -> None:
    from suite.report.readme import control_markdown

    latency = pd.DataFrame([_row("none", "eager", 1.018, 0.969, 1.068), _row("se", "eager", 1.1, 1.05, 1.15),
                            _row("none", "onnxruntime", 0.995, 0.98, 1.01)])
    text = control_markdown(latency)
    assert "resnet18 eager forward 1.02 [0.969, 1.07]" in text and "resnet18 ONNX Runtime forward 0.995" in text
    assert "1.1 [1.05, 1.15]" not in text  # a design is not the control
    assert control_markdown(latency[latency["attn"] != "none"]) == ""


def test_where_the_time_goes_lists_each_configurations_top_ops_and_explains_cbam() -> None:
    from suite.report.readme import ops_markdown

    rows = [{"attn": "se", "compile": "eager", "level": "module", "mode": "forward", "batch": 8, "channels": 64,
             "size": 28, "role": "module", "rank": rank, "op": op, "share": share, "status": "ok",
             "total_self_ms_per_call": 0.35} for rank, op, share in ((1, "aten::mul", 0.33), (2, "aten::sum", 0.22),
                                                                     (3, "aten::mean", 0.1), (4, "aten::x", 0.05))]
    rows.append({**rows[0], "role": "reference", "op": "aten::conv", "share": 0.9})
    text = ops_markdown(pd.DataFrame(rows))
    assert "| `se` | eager | forward b8 c64 28 px | `aten::mul` 33%, `aten::sum` 22%, `aten::mean` 10% | 0.35 |" in text
    assert "aten::x" not in text and "aten::conv" not in text  # top 3 of the module only
    assert "2.88x" not in text  # the CBAM note only where CBAM was profiled
    cbam = pd.DataFrame([{**row, "attn": "cbam"} for row in rows])
    assert "2.88x" in ops_markdown(cbam)
    assert ops_markdown(pd.DataFrame()) == ""
