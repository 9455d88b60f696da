"""``python -m suite cost``: selection, error rows, resume, the tidy CSVs."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import modules
from modules import AttentionModule
from suite.__main__ import main

torch.set_num_threads(1)


class RefusesSmallMaps(AttentionModule):
    """A gate that refuses maps smaller than 14 x 14 (as a module with a fixed kernel might)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if x.shape[-1] < 14:
            raise ValueError(f"input width must be >= 14, got {x.shape[-1]}")
        return x * torch.sigmoid(x.mean((2, 3), keepdim=True))

    def formula_params(self) -> int:
        return 0

    def formula_macs(self, input_shape) -> int:
        n, c, h, w = input_shape
        return 2 * n * c * h * w + n * c


@pytest.fixture()
def refuser():
    name = "_test_refuses_small"
    modules.register_attention(name, RefusesSmallMaps, family="test", paper="-", arxiv=None, kind="gate")
    try:
        yield name
    finally:
        modules.unregister_attention(name)


def test_unknown_pattern_fails_before_measuring_and_lists_the_names(tmp_path, capsys):
    rc = main(["cost", "--attn", "se,no_such_gate*", "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no_such_gate*" in err and "se" in err and "ese" in err
    assert not (tmp_path / "out").exists()


def test_refused_shape_is_an_error_row_and_the_run_resumes(tmp_path, capsys, refuser):
    out = tmp_path / "cost"
    args = ["cost", "--attn", f"{refuser},se", "--channels", "16", "--size", "14,7",
            "--out", str(out), "--no-progress"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "3 measured" not in err and "4 measured" in err
    table = pd.read_csv(out / "cost_module.csv")
    assert len(table) == 4
    refused = table[(table["attn"] == refuser) & (table["height"] == 7)].iloc[0]
    assert refused["status"] == "error"
    assert "must be >= 14" in refused["message"]
    ok = table[table["status"] == "ok"]
    assert len(ok) == 3
    assert (ok["macs_fvcore"] == ok["macs_formula"]).all()
    for column in ("macs_thop", "macs_thop_shipped", "macs_fvcore_shipped", "flops_torch",
                   "act_saved_bytes", "env_torch_version", "env_fvcore_version", "env_thop_version", "env_commit",
                   "env_date"):
        assert column in table.columns, column
    # a re-run measures only what is not ok yet
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "1 measured, 3 resumed" in err
    assert len(pd.read_csv(out / "cost_module.csv")) == 4


@pytest.mark.slow
def test_model_level_rows_carry_deltas(tmp_path, capsys):
    out = tmp_path / "cost"
    rc = main(["cost", "--level", "model", "--arch", "mobilenet_v2", "--attn", "ese",
               "--model-size", "64", "--out", str(out), "--no-progress"])
    assert rc == 0
    table = pd.read_csv(out / "cost_model.csv").set_index("attn")
    assert list(table.index) == ["none", "ese"]
    ese = table.loc["ese"]
    assert ese["delta_macs_fvcore"] == ese["macs_fvcore"] - table.loc["none", "macs_fvcore"]
    assert ese["delta_macs_fvcore"] == ese["macs_formula_attn"] > 0


def test_unknown_arch_is_refused(tmp_path, capsys):
    rc = main(["cost", "--level", "model", "--arch", "resnet7", "--out", str(tmp_path), "--no-progress"])
    assert rc == 2
    assert "resnet7" in capsys.readouterr().err


def test_tables_only_rewrites_the_tables_from_the_records(tmp_path, capsys):
    out = tmp_path / "cost"
    assert main(["cost", "--attn", "se", "--channels", "64", "--size", "7", "--out", str(out), "--no-progress"]) == 0
    written = (out / "cost_module.csv").read_text()
    (out / "cost_module.csv").unlink()
    assert main(["cost", "--out", str(out), "--tables-only"]) == 0
    assert (out / "cost_module.csv").read_text() == written
    assert not (out / "cost_model.csv").exists()  # no model-level records, no table
