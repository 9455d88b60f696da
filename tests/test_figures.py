"""The report figures draw what suite.report.figure_data derives (suite.report.figures)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from suite.report import figures
from suite.report.figure_data import BUSY, MAX_ANNOTATED_COLUMNS, latency_heatmap_data


def _latency_row(attn: str, channels: int, ratio: float, status: str = "ok") -> dict:
    return {"attn": attn, "mode": "forward", "level": "module", "status": status, "batch": 1,
            "channels": channels, "size": 14, "ratio": ratio}


def _texts(fig: plt.Figure) -> list[str]:
    return [text.get_text() for ax in fig.axes for text in ax.texts]


def test_the_heatmap_writes_busy_on_a_contended_cell(drawn: list[plt.Figure], tmp_path: Path) -> None:
    rows = [_latency_row("se", 64, 2.0), _latency_row("eca", 64, 1.0), _latency_row("se", 256, 3.0)]
    contended = pd.DataFrame([_latency_row("eca", 256, math.nan, status="contended")])
    data = latency_heatmap_data(pd.DataFrame(rows), contended)
    figures.latency_heatmap_figure(data, tmp_path / "heatmap.png", "caption")
    texts = _texts(drawn[0])
    assert texts.count(BUSY) == 1
    assert {"2", "1", "3"} <= set(texts)  # the measured cells keep their ratios


def test_a_type_and_a_shape_contended_everywhere_still_get_their_busy_cell() -> None:
    rows = [_latency_row("se", 64, 2.0)]
    contended = pd.DataFrame([_latency_row("eca", 256, math.nan, status="contended")])
    data = latency_heatmap_data(pd.DataFrame(rows), contended)
    assert data.order == ["se", "eca"] and data.shapes["forward"] == ["b1 c64 14px", "b1 c256 14px"]
    assert data.labels["forward"].loc["eca", "b1 c256 14px"] == BUSY
    assert math.isnan(data.cells["forward"].loc["eca", "b1 c256 14px"])


def test_busy_is_written_when_the_ratios_are_too_many_to_write(drawn: list[plt.Figure], tmp_path: Path) -> None:
    channels = [8 * (k + 1) for k in range(MAX_ANNOTATED_COLUMNS + 1)]
    rows = [_latency_row("se", c, 2.0) for c in channels]
    contended = pd.DataFrame([_latency_row("eca", channels[0], math.nan, status="contended")])
    data = latency_heatmap_data(pd.DataFrame(rows), contended)
    figures.latency_heatmap_figure(data, tmp_path / "heatmap.png", "caption")
    assert [t for t in _texts(drawn[0]) if t] == [BUSY]
