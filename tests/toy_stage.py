"""A toy measuring stage, the whole of what adding a stage takes besides its one
:class:`suite.stages.StageSpec` (``tests/test_stages.py`` registers it): settings, a command
``main``, what one configuration measures, its tables, its report table and its summary columns.

It "measures" the length of each attention type's name, so that the test is about the harness.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

import modules
from suite.errors import UsageError
from suite.options import add_options, setting
from suite.records import environment_columns
from suite.stage import run_stage
from suite.stages import StageSpec

SPEC = StageSpec(
    "toy", "toy_stage", "the length of each attention type's name",
    records_file="toy_records.jsonl", tables="toy_stage:tables", files={"toy": "toy.csv"},
    report_tables={"toy.csv": "toy_stage:report_table"}, environment_tables=("toy",),
    summary="toy_stage:summary", summary_columns=("toy_name_length",), headline_columns=("toy_name_length",),
)


@dataclass
class ToySettings:
    """The toy stage's settings (shared options only)."""

    attn: str = setting("--attn", "se,eca")
    out: Path = setting("--out", Path("toy"))
    force: bool = setting("--force", False)
    no_progress: bool = setting("--no-progress", False)


SETTINGS = ToySettings


@dataclass(frozen=True)
class ToyConfig:
    """One attention type."""

    attn: str

    def key(self) -> str:
        return f"toy/{self.attn}"

    def as_row(self) -> dict[str, Any]:
        return {"attn": self.attn}

    def label(self) -> str:
        return self.attn


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, ToySettings)


def tables(records: list[dict[str, Any]], folder: Path) -> dict[str, pd.DataFrame]:
    return {SPEC.files["toy"]: pd.DataFrame(records)}


def report_table(stage: Any) -> pd.DataFrame:
    return stage.table("toy")


def summary(rows: dict[str, dict[str, Any]], frames: dict[str, pd.DataFrame]) -> None:
    for record in frames["toy"].to_dict("records"):
        if record["attn"] in rows:
            rows[record["attn"]]["toy_name_length"] = record["name_length"]


def main(settings: ToySettings) -> int:
    try:
        names = modules.list_attention(settings.attn, strict=True)
    except ValueError as exc:
        raise UsageError(f"--attn: {exc}") from None
    run_stage([ToyConfig(n) for n in names], settings.out, str(SPEC.records_file),
              lambda config: {"name_length": len(config.attn)}, tables,
              environment=lambda: environment_columns({"commit": "toy"}), classify=lambda exc: "error",
              force=settings.force, progress=not settings.no_progress)
    return 0
