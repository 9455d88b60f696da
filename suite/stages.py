"""The one registry of what ``python -m suite`` runs: every command, and what each measuring stage
writes and contributes to the report.

A :class:`StageSpec` says, for one command, where its code is (``module``: ``SETTINGS``,
``add_arguments(parser)``, ``main(settings) -> int``) and what ``--help`` says of it. A
*measuring* stage (``records_file`` set) also says

* what it writes into its folder: its raw records (``records_file``) and its tidy tables
  (``files``: table name -> file name), built from the records by ``tables``
  (``tables(records, folder) -> {file name: frame}``);
* what the report makes of it: its report tables (``report_tables``: file name ->
  ``function(StageData) -> frame``, the first one always written, the others where they have
  rows), the tables its environment is read from (``environment_tables``), and the summary
  columns it adds (``summary`` fills ``summary_columns`` of each type's row);
* whether it runs across the ranks of a ``torchrun`` job (``distributed``): under ``torchrun``
  the bench runs the other stages on the first rank only;
* whether a report may lack it (``optional``): a profile that does not run an optional stage
  gets a complete report without it.

The CLI (:mod:`suite.__main__`), the bench's profiles and runner (:mod:`suite.bench`), the
stage runner (:mod:`suite.stage`) and the report (:mod:`suite.report`) all read this table,
in this order. Functions are named as ``"package.module:function"`` and imported only when
used, so ``--help`` stays fast. How to add a stage: ``docs/adding-a-stage.md``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["StageSpec", "COMMANDS", "command", "measuring_stages", "stage", "load_function"]


def load_function(path: str) -> Callable[..., Any]:
    """The function named ``"package.module:function"``."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class StageSpec:
    """One command of ``python -m suite``; a measuring stage when ``records_file`` is set."""

    name: str
    module: str
    help: str
    records_file: str | None = None
    tables: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    csv_only: tuple[str, ...] = ()
    status_tables: tuple[str, ...] = ()
    ok_when_present: str | None = None
    report_tables: dict[str, str] = field(default_factory=dict)
    environment_tables: tuple[str, ...] = ()
    summary: str | None = None
    summary_columns: tuple[str, ...] = ()
    headline_columns: tuple[str, ...] = ()
    distributed: bool = False
    optional: bool = False

    @property
    def measures(self) -> bool:
        """Whether the stage measures into a folder of records (the bench runs it, the report reads it)."""
        return self.records_file is not None

    @property
    def report_file(self) -> str:
        """The report's main table of this stage (the first of ``report_tables``)."""
        return next(iter(self.report_tables))

    def command_module(self) -> Any:
        """The imported command module (``SETTINGS``, ``add_arguments``, ``main``)."""
        return importlib.import_module(self.module)

    def build_tables(self, records: list[dict[str, Any]], folder: Any) -> dict[str, Any]:
        """The stage's tables (file name -> frame) from its records (one per key) in ``folder``."""
        assert self.tables is not None, f"{self.name} is not a measuring stage"
        return load_function(self.tables)(records, folder)


_REPORT = "suite.report.tables"
_SUMMARY = "suite.report.summary"

COMMANDS: dict[str, StageSpec] = {spec.name: spec for spec in (
    StageSpec(
        "cost", "suite.cost.cli", "parameters, MACs and FLOPs from fvcore, thop, torch and the closed forms",
        records_file="cost_records.jsonl", tables="suite.cost.grid:tables",
        files={"module": "cost_module.csv", "model": "cost_model.csv"},
        report_tables={"cost.csv": f"{_REPORT}:cost_table"}, environment_tables=("module", "model"),
        summary=f"{_SUMMARY}:cost_summary",
        summary_columns=("params_over_conv3x3", "macs_over_conv3x3", "module_channels", "params_module",
                         "macs_module", "model_arch", "extra_params", "extra_params_pct", "extra_macs_fvcore",
                         "extra_macs_pct"),
        headline_columns=("params_over_conv3x3", "extra_params")),
    StageSpec(
        "latency", "suite.timing.cli_latency", "CPU/CUDA latency with percentiles, ratios and a roofline",
        records_file="records.jsonl", tables="suite.timing.cli_latency:tables",
        files={"latency": "latency.csv", "machine": "machine.csv"}, status_tables=("latency",),
        report_tables={"latency.csv": f"{_REPORT}:latency_table"}, environment_tables=("latency",),
        summary=f"{_SUMMARY}:latency_summary",
        summary_columns=("latency_ratio_fwd", "latency_ratio_fwd_min", "latency_ratio_fwd_max", "latency_ratio_train",
                         "latency_passes_fwd", "latency_shapes", "latency_config", "latency_contended",
                         "model_latency_ratio_fwd", "model_latency_ratio_train", "model_latency_fwd_by_arch",
                         "model_latency_fwd_by_runtime", "model_latency_ratio_fwd_eager",
                         "model_latency_ratio_fwd_compile", "model_latency_ratio_fwd_onnxruntime",
                         "model_latency_ratio_fwd_openvino", "model_latency_below_one"),
        headline_columns=("latency_ratio_fwd", "latency_ratio_train")),
    StageSpec(
        "memory", "suite.timing.cli_memory", "bytes saved for backward, peak RSS / CUDA peak memory",
        records_file="records.jsonl", tables="suite.timing.cli_memory:tables",
        files={"memory": "memory.csv"},
        report_tables={"memory.csv": f"{_REPORT}:memory_table"}, environment_tables=("memory",),
        summary=f"{_SUMMARY}:memory_summary",
        summary_columns=("act_saved_over_input", "act_saved_bytes_max", "step_peak_bytes_max"),
        headline_columns=("act_saved_bytes_max",)),
    StageSpec(
        "ops", "suite.ops.cli", "where the time goes: torch.profiler self CPU time by op of each design and its reference",
        records_file="ops_records.jsonl", tables="suite.ops.tables:tables", files={"ops": "ops.csv"},
        report_tables={"ops.csv": "suite.ops.tables:report_table"}, environment_tables=("ops",),
        summary="suite.ops.tables:ops_summary", summary_columns=("ops_top",), optional=True),
    StageSpec(
        "accuracy", "suite.accuracy.cli", "ImageNet-subset accuracy deltas with paired seeds",
        records_file="runs.jsonl", tables="suite.accuracy.tables:tables",
        files={"runs": "runs.csv", "deltas": "deltas.csv", "per_class": "per_class.csv",
               "gate_scale": "gate_scale.csv", "matched": "matched.csv"},
        csv_only=("gate_scale", "matched"), ok_when_present="deltas",
        report_tables={"accuracy.csv": f"{_REPORT}:accuracy_table",
                       "accuracy_per_class.csv": f"{_REPORT}:per_class_table"},
        environment_tables=("runs",),
        summary=f"{_SUMMARY}:accuracy_summary",
        summary_columns=("top1_delta_pp", "top1_ci_low_pp", "top1_ci_high_pp", "n_seeds", "top1_p_holm",
                         "top1_significant"),
        headline_columns=("top1_delta_pp",), distributed=True),
    StageSpec("bench", "suite.bench.cli",
              "every stage of a profile, then the report (what nox -s bench runs)"),
    StageSpec("merge", "suite.bench.merge",
              "join the folders of a bench run in parts (--shard K/N) into one folder, its tables and report"),
    StageSpec("compare", "suite.compare",
              "two result folders side by side: both values with their intervals, the change and a verdict per row"),
    StageSpec("report", "suite.report.cli",
              "tables, figures and README re-rendered from a profile's raw outputs"),
    StageSpec("regress", "suite.regress.cli",
              "regression gate: same-process latency ratios or instruction counts against a committed baseline"),
)}
"""Every command of ``python -m suite``, in the order of ``--help``; the measuring stages among
them run in this order in a bench and appear in this order in the report."""


def command(name: str) -> StageSpec:
    """The command called ``name`` (``KeyError`` when there is none)."""
    return COMMANDS[name]


def measuring_stages() -> dict[str, StageSpec]:
    """The measuring stages (name -> spec), in bench order."""
    return {name: spec for name, spec in COMMANDS.items() if spec.measures}


def stage(name: str) -> StageSpec:
    """The measuring stage called ``name``; a ``KeyError`` naming the stages otherwise."""
    stages = measuring_stages()
    if name not in stages:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(stages)}")
    return stages[name]
