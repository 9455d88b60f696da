"""The memory figure shows one dtype and memory format (fp32 contiguous where measured, named in
its title), never a mean over configurations whose memory differs."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from suite.report import figures
from suite.report.figure_data import memory_data

TYPES = ["se", "eca", "cbam"]
FACTOR = {("fp32", "contiguous"): 4.0, ("fp32", "channels_last"): 5.0, ("bf16", "contiguous"): 2.0,
          ("bf16", "channels_last"): 1.0, ("fp16", "contiguous"): 3.0, ("fp16", "channels_last"): 7.0}
"""MiB per type index of each dtype x memory format: every configuration differs."""


def _frame(dtypes: tuple[str, ...], formats: tuple[str, ...]) -> pd.DataFrame:
    rows = [{"attn": name, "mode": mode, "level": "module", "status": "ok", "device": "cuda:0", "dtype": dtype,
             "memory_format": fmt, "compile": "eager", "batch": 8, "channels": 64, "size": 56, "threads": 1,
             "act_saved_bytes": 2**20 * FACTOR[dtype, fmt] * (i + 1),
             "cuda_step_peak_bytes": 2**20 * FACTOR[dtype, fmt] * (i + 1) * (3 if mode == "train" else 1)}
            for (i, name), mode, dtype, fmt in itertools.product(enumerate(TYPES), ("forward", "train"), dtypes, formats)]
    return pd.DataFrame(rows)


def _expected(dtype: str, fmt: str, mode: str, column: str) -> dict[str, float]:
    scale = 3 if column == "cuda_step_peak_bytes" and mode == "train" else 1
    return {name: FACTOR[dtype, fmt] * (i + 1) * scale for i, name in enumerate(TYPES)}


def _drawn(data: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[dict[str, dict[str, float]]], str]:
    """Each panel's bar lengths by mode and type as :func:`suite.report.figures.memory_figure` draws
    them, and the figure's title."""
    kept: list[plt.Figure] = []
    real_save = figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, path: (kept.append(fig), real_save(fig, path))[1])
    figures.memory_figure(data, tmp_path / "memory.png", "caption")
    fig = kept[0]
    panels = []
    for ax, panel in zip(fig.axes, data.panels, strict=False):  # the axes on the left share the types
        legend = ax.get_legend()
        modes = [t.get_text() for t in legend.get_texts()] if legend else list(panel.rows["mode"].unique())
        panels.append({mode: {name: bar.get_width() for name, bar in zip(data.order, container, strict=True)
                              if bar.get_width() == bar.get_width()}  # NaN: no bar for this type and mode
                       for mode, container in zip(modes, ax.containers, strict=True)})
    return panels, fig._suptitle.get_text()


def test_the_figure_shows_fp32_contiguous_not_the_mean_of_the_configurations(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = memory_data(_frame(("fp32", "bf16"), ("contiguous", "channels_last")), pd.DataFrame())
    columns = ("act_saved_bytes", "cuda_step_peak_bytes")
    assert [panel.label.startswith(("saved", "CUDA")) for panel in data.panels] == [True, True]
    for panel in data.panels:
        assert not panel.rows.duplicated(["attn", "mode"]).any()  # one measurement per bar
        assert set(panel.rows["dtype"]) == {"fp32"} and set(panel.rows["memory_format"]) == {"contiguous"}
        assert "fp32 contiguous" in panel.config
    drawn, title = _drawn(data, tmp_path, monkeypatch)
    for bars, column in zip(drawn, columns, strict=True):
        for mode, lengths in bars.items():
            assert lengths == pytest.approx(_expected("fp32", "contiguous", mode, column)), (column, mode)
    assert "fp32 contiguous" in title and "fp32 contiguous" in data.note


def test_without_fp32_or_contiguous_the_figure_shows_one_present_configuration_and_names_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = memory_data(_frame(("bf16",), ("channels_last",)), pd.DataFrame())
    assert all("bf16 channels_last" in panel.config for panel in data.panels)
    drawn, title = _drawn(data, tmp_path, monkeypatch)
    assert drawn[0]["forward"] == pytest.approx(_expected("bf16", "channels_last", "forward", "act_saved_bytes"))
    assert "bf16 channels_last" in title
    two = memory_data(_frame(("bf16", "fp16"), ("channels_last",)), pd.DataFrame())
    shown = two.panels[1].rows
    assert shown["dtype"].nunique() == 1 and not shown.duplicated(["attn", "mode"]).any()
    dtype = shown["dtype"].iloc[0]
    assert dtype in two.panels[1].config
    assert dict(zip(shown[shown["mode"] == "forward"]["attn"], shown[shown["mode"] == "forward"]["mib"],
                    strict=True)) == pytest.approx(_expected(dtype, "channels_last", "forward", "cuda_step_peak_bytes"))


def test_shapes_as_large_are_not_averaged_either() -> None:
    frame = _frame(("fp32",), ("contiguous",))
    other = frame.assign(batch=32, channels=16, act_saved_bytes=frame["act_saved_bytes"] * 10)  # same volume
    data = memory_data(pd.concat([frame, other], ignore_index=True), pd.DataFrame())
    rows = data.panels[0].rows
    assert not rows.duplicated(["attn", "mode"]).any() and set(rows["channels"]) == {64}
