"""benchmarks/compare_bench_tables: tables that differ only in what is measured compare the same."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks.compare_bench_tables import compare


def _write(folder: Path, frame: pd.DataFrame) -> None:
    (folder / "raw" / "cost").mkdir(parents=True)
    frame.to_csv(folder / "raw" / "cost" / "cost_module.csv", index=False)


BEFORE = pd.DataFrame({"attn": ["se", "eca"], "macs_fvcore": [10, 20], "wall_seconds": [0.5, 0.7],
                       "note": ["", ""]})
AS_NAMED_NOW = BEFORE.rename(columns={"wall_seconds": "wall_s", "note": "message"})


def test_renamed_and_added_measured_columns_compare_the_same(tmp_path: Path) -> None:
    _write(tmp_path / "before", BEFORE)
    after = AS_NAMED_NOW.assign(wall_s=[0.4, 0.9], loadavg_1m=[0.3, 0.2])
    _write(tmp_path / "after", after)
    (line,) = compare(tmp_path / "before", tmp_path / "after")
    assert line.startswith("same raw/cost/cost_module.csv") and "only in AFTER: ['loadavg_1m']" in line


def test_a_counted_value_that_changed_differs(tmp_path: Path) -> None:
    _write(tmp_path / "before", BEFORE)
    _write(tmp_path / "after", AS_NAMED_NOW.assign(macs_fvcore=[10, 21]))
    (line,) = compare(tmp_path / "before", tmp_path / "after")
    assert line.startswith("DIFFERS") and "['macs_fvcore']" in line


def test_a_new_column_that_is_not_measured_differs(tmp_path: Path) -> None:
    _write(tmp_path / "before", BEFORE)
    _write(tmp_path / "after", AS_NAMED_NOW.assign(family=["se", "eca"]))
    (line,) = compare(tmp_path / "before", tmp_path / "after")
    assert line.startswith("DIFFERS") and "family" in line
