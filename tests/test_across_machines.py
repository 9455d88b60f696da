"""The report's "Across machines" section: ratios per machine with their intervals, the designs'
rank agreement (Spearman) per shape and pass, the largest moves, and the hook that puts it into a
profile folder's report when the folder lists other machines' folders.

The data are synthetic latency tables whose Spearman correlations are known."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from suite.report.machines import (
    CSV_FILE,
    LIST_FILE,
    Machine,
    across_machines,
    across_machines_section,
    listed_folders,
    spearman,
)

DESIGNS = ["se", "eca", "ca", "cbam", "gsop"]
AMD, INTEL = "AMD EPYC 7763", "Intel Xeon 8480"


def _rows(ratios: dict[int, list[float]], cpu: str, half: float = 0.05) -> pd.DataFrame:
    """Latency rows: per channel count (a shape), the designs' ratios with a 95% interval of
    ``exp(+-half)`` on the log scale."""
    rows = []
    for channels, values in ratios.items():
        for attn, ratio in zip(DESIGNS, values, strict=True):
            rows.append({"attn": attn, "level": "module", "mode": "forward", "device": "cpu", "dtype": "fp32",
                         "memory_format": "contiguous", "compile": "eager", "batch": 8, "channels": channels,
                         "size": 28, "threads": 1, "status": "ok", "ratio": ratio,
                         "ratio_ci_low": ratio * math.exp(-half), "ratio_ci_high": ratio * math.exp(half),
                         "median_ms": ratio, "env_cpu": cpu})
    return pd.DataFrame(rows)


A = {64: [0.1, 0.2, 0.3, 0.4, 0.5], 256: [0.1, 0.2, 0.3, 0.4, 0.5]}
B = {64: [0.2, 0.4, 0.6, 0.8, 1.0],      # every ratio doubled: the ranking holds (Spearman 1)
     256: [0.1, 0.3, 0.2, 0.4, 0.5]}     # two neighbours swapped: Spearman 1 - 6 * 2 / (5 * 24) = 0.9


def _machines() -> list[Machine]:
    return [Machine("cpu", Path("cpu"), AMD, _rows(A, AMD)), Machine("cpu-xeon", Path("cpu-xeon"), INTEL, _rows(B, INTEL))]


def test_spearman_of_known_rankings() -> None:
    up = pd.Series([1.0, 2, 3, 4, 5])
    assert spearman(up, up * 2) == pytest.approx(1.0)
    assert spearman(up, -up) == pytest.approx(-1.0)
    assert spearman(up, pd.Series([1.0, 3, 2, 4, 5])) == pytest.approx(0.9)
    assert math.isnan(spearman(up[:2], up[:2]))  # too few designs
    assert math.isnan(spearman(up, pd.Series([1.0] * 5)))  # one side constant


def test_spearman_is_what_scipy_computes_ties_included() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = pd.Series(rng.integers(0, 6, 20).astype(float))
    b = pd.Series(a + rng.normal(0, 2, 20)).round()
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)


def test_rank_agreement_per_shape_and_the_moves() -> None:
    result = across_machines(_machines())
    ranks = result.ranks.set_index("channels")
    assert ranks.loc["64", "spearman"] == pytest.approx(1.0) and ranks.loc["256", "spearman"] == pytest.approx(0.9)
    assert (ranks["designs"] == 5).all() and (ranks["machine"] == "cpu-xeon").all()
    ratios = result.ratios
    assert len(ratios) == 10 and list(ratios.columns[:3]) == ["machine", "cpu", "attn"]
    doubled = ratios[ratios["channels"] == "64"]
    assert doubled["move"].to_numpy() == pytest.approx([1.0] * 5)
    assert not doubled["overlaps"].any()
    swapped = ratios[(ratios["channels"] == "256")].set_index("attn")
    assert swapped.loc["eca", "move"] == pytest.approx(0.5) and swapped.loc["ca", "move"] == pytest.approx(-1 / 3)
    assert swapped.loc["se", "overlaps"] and swapped.loc["se", "reference_ratio"] == pytest.approx(0.1)
    # the largest |log move| first: the five doublings (log 2), then eca's +50% (log 1.5) over ca's -33% (log 1.5)
    assert result.moves["move"].head(5).to_numpy() == pytest.approx([1.0] * 5)
    assert result.moves["move"].iloc[5] == pytest.approx(0.5) or result.moves["move"].iloc[5] == pytest.approx(-1 / 3)


def test_per_design_geometric_mean_and_its_interval() -> None:
    result = across_machines(_machines(), largest=3)
    assert len(result.moves) == 3
    row = result.designs.set_index("attn").loc["eca"]
    assert row["configurations"] == 2
    assert row["cpu_ratio"] == pytest.approx(0.2)
    assert row["cpu-xeon_ratio"] == pytest.approx(math.sqrt(0.4 * 0.3))
    # two configurations with half-width 0.05 each: sqrt(2 * 0.05^2) / 2 on the log scale
    half = math.sqrt(2 * 0.05**2) / 2
    assert row["cpu_ci_low"] == pytest.approx(0.2 * math.exp(-half))
    assert row["cpu-xeon_ci_high"] == pytest.approx(math.sqrt(0.12) * math.exp(half))
    assert row["cpu-xeon_move"] == pytest.approx(math.sqrt(0.12) / 0.2 - 1)


def _profile(folder: Path, ratios: dict[int, list[float]], cpu: str) -> Path:
    latency = folder / "raw" / "latency"
    latency.mkdir(parents=True)
    _rows(ratios, cpu).rename(columns={"attn": "name"}).to_csv(latency / "latency.csv", index=False)
    return folder


def test_the_section_of_a_folder_that_lists_another_machine(tmp_path: Path) -> None:
    reference = _profile(tmp_path / "cpu", A, AMD)
    _profile(tmp_path / "cpu-xeon", B, INTEL)
    assert across_machines_section(reference) == (None, "")  # no list: no section
    (reference / LIST_FILE).write_text("# other CPU classes of this profile\n../cpu-xeon\n\n", encoding="utf-8")
    assert listed_folders(reference) == [reference / "../cpu-xeon"]
    table, text = across_machines_section(reference)
    assert table is not None and len(table) == 10
    assert f"`cpu` ({AMD})" in text and f"`cpu-xeon` ({INTEL})" in text
    assert "Spearman 0.90 to 1.00 (median 0.95) over 2 shapes and passes" in text
    # |moves|: 0, 0, 0, 1/3, 1/2, 1, 1, 1, 1, 1: median 0.75, 90th percentile 1
    assert "moved by 75% (median |move|) and 100% at the 90th percentile; 7 of 10 intervals do not overlap" in text
    assert "**Rank agreement**" in text and "**Largest moves** (10)" in text and "**Per design**" in text
    assert f"[`{CSV_FILE}`]({CSV_FILE})" in text


def test_listed_folders_that_cannot_be_compared_are_named_not_raised(tmp_path: Path) -> None:
    reference = _profile(tmp_path / "cpu", A, AMD)
    _profile(tmp_path / "cpu-again", B, AMD)
    (reference / LIST_FILE).write_text("../cpu-again\n../nowhere\n", encoding="utf-8")
    table, text = across_machines_section(reference)
    assert table is None and text.startswith("_Not computed:")
    assert "was measured on a CPU class already shown (AMD EPYC 7763)" in text
    assert "nowhere has no latency stage" in text


def test_a_report_carries_the_section_while_the_folder_lists_other_machines(tmp_path: Path) -> None:
    from suite.report import render_report

    reference = _profile(tmp_path / "cpu", A, AMD)
    _profile(tmp_path / "cpu-xeon", B, INTEL)
    (reference / LIST_FILE).write_text("../cpu-xeon\n", encoding="utf-8")
    render_report(reference)
    readme = (reference / "README.md").read_text(encoding="utf-8")
    assert "## Across machines" in readme and (reference / CSV_FILE).is_file()
    assert f"* [`{CSV_FILE}`]({CSV_FILE})" in readme  # listed with the other tables
    assert readme.index("## Across machines") < readme.index("## Figures")
    (reference / LIST_FILE).unlink()
    render_report(reference)
    assert "## Across machines" not in (reference / "README.md").read_text(encoding="utf-8")
    assert not (reference / CSV_FILE).exists()
