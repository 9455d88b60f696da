"""The memory figure's note names the configuration it shows only where the memory rows held
several (a single configuration is the whole data: the committed cpu report's note is unchanged)."""

from __future__ import annotations

import pandas as pd

from suite.env import PROJECT_ROOT
from suite.report.figure_data import memory_data

COMMITTED = PROJECT_ROOT / "reports" / "cpu"


def _rows(dtypes: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame([{"attn": attn, "mode": mode, "level": "module", "status": "ok", "device": "cuda:0",
                          "dtype": dtype, "memory_format": "contiguous", "compile": "eager", "batch": 8,
                          "channels": 64, "size": 56, "threads": 1, "act_saved_bytes": 2**20,
                          "cuda_step_peak_bytes": 2**21}
                         for attn in ("se", "eca") for mode in ("forward", "train") for dtype in dtypes])


def test_a_single_configuration_is_not_named_as_a_choice() -> None:
    data = memory_data(_rows(("bf16",)), pd.DataFrame())
    assert "shown:" not in data.note and not any(panel.chosen for panel in data.panels)
    assert all(panel.config == "cuda:0 bf16 contiguous eager 1 thread" for panel in data.panels)  # panel titles keep it


def test_the_configuration_chosen_among_several_is_named() -> None:
    data = memory_data(_rows(("fp32", "bf16")), pd.DataFrame())
    assert "shown: cuda:0 fp32 contiguous eager 1 thread (other configurations in memory.csv)" in data.note
    assert all(panel.chosen for panel in data.panels)


def test_the_committed_cpu_reports_memory_note_is_what_its_rows_give() -> None:
    memory = pd.read_csv(COMMITTED / "raw" / "memory" / "memory.csv")
    note = memory_data(memory, pd.DataFrame()).note
    assert f"Data: {note}." in (COMMITTED / "README.md").read_text()
