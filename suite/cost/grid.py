"""The two grids of the cost stage, run into raw records and turned into tidy tables.

* Module level: every selected attention type at ``C in {64, 256, 1024}``, ``H = W in
  {56, 28, 14, 7}``, batch 1 (a ``conv`` entry with ``out_channels = C``).
* Model level: every selected architecture at 224 x 224 (batch 1), without attention (the
  baseline) and with each selected attention type at its canonical place
  (``modules.build_model``); the table adds ``delta_*`` columns, the same figure minus the
  baseline's.

The stage follows the contract of :mod:`suite.stage`: each configuration is one :class:`Job`
(plan), :func:`measure_cost` counts it (measure), :func:`tables` turns the records into the
two tables; the runner writes one raw record per job, naming the run's environment. A re-run
skips the jobs with a final status (``ok``, ``refused``) and retries the rest. A job that
fails (a module refusing a shape, a backbone that fails to build) is recorded with
``status="error"``, the message and the traceback; an entry that ``build_model`` refuses for
an architecture (no place for it there, e.g. a ``conv`` entry in MobileNetV2) with
``status="refused"`` and the reason. The run goes on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from modules import BASELINE

from ..stage import measure_record
from .counters import analyze

__all__ = [
    "Job",
    "module_jobs",
    "model_jobs",
    "measure_cost",
    "classify_cost_error",
    "run_job",
    "tables",
    "module_table",
    "model_table",
    "DELTA_COLUMNS",
]


DELTA_COLUMNS = (
    "params_total", "params_trainable", "buffers_total",
    "macs_fvcore", "macs_fvcore_shipped", "macs_fvcore_shipped_conv_linear",
    "macs_thop", "macs_thop_shipped", "flops_torch", "macs_dispatch",
    "act_saved_bytes", "act_saved_tensors", "act_produced_elems", "act_produced_tensors",
)
"""Model-level columns that get a ``delta_<column>`` (attention model minus baseline)."""


@dataclass(frozen=True)
class Job:
    """One configuration to measure."""

    level: str  # "module" or "model"
    attn: str  # a registered name, or "none" (model-level baseline)
    arch: str  # "" at module level
    channels: int  # input channels (module level) or 3
    height: int
    width: int
    batch: int = 1

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.channels, self.height, self.width)

    def key(self) -> str:
        """The stable name of its record (the resume key)."""
        where = f"arch={self.arch}" if self.level == "model" else "module"
        return f"cost|{self.level}|{where}|attn={self.attn}|shape={'x'.join(map(str, self.input_shape))}"

    def as_row(self) -> dict[str, Any]:
        """Its fields and the input shape, first in its record."""
        return {**asdict(self), "input_shape": "x".join(map(str, self.input_shape))}

    def label(self) -> str:
        """A few words for the progress bar."""
        return f"{self.arch}/{self.attn}" if self.level == "model" else f"{self.attn} C={self.channels} H={self.height}"


def module_jobs(
    names: Iterable[str],
    channels: Sequence[int],
    sizes: Sequence[int],
    batch: int,
) -> list[Job]:
    """The module-level grid: names x channels x sizes."""
    return [
        Job("module", name, "", c, s, s, batch)
        for name in names for c in channels for s in sizes
    ]


def model_jobs(
    names: Iterable[str], archs: Iterable[str], resolution: int, batch: int
) -> list[Job]:
    """The model-level grid: for each arch, the baseline then each attention type."""
    names = list(names)
    return [
        Job("model", name, arch, 3, resolution, resolution, batch)
        for arch in archs for name in [BASELINE, *names]
    ]


def _build(job: Job) -> torch.nn.Module:
    import modules

    if job.level == "model":
        return modules.build_model(job.arch, None if job.attn == BASELINE else job.attn)
    info = modules.get_info(job.attn)
    if info.kind == "conv":
        return modules.create(job.attn, job.channels, out_channels=job.channels)
    return modules.create(job.attn, job.channels)


def measure_cost(job: Job) -> dict[str, Any]:
    """The counters' figures for one job (:func:`~suite.cost.counters.analyze`), after the
    entry's family, kind and placement; status ``refused`` with build_model's reason when the
    entry has no place in the backbone. A module that fails raises (the runner records it)."""
    import modules

    fields: dict[str, Any] = {}
    if job.attn != BASELINE:
        info = modules.get_info(job.attn)
        fields.update(family=info.family, kind=info.kind, placement=info.placement)
    try:
        model = _build(job)
    except ValueError as error:
        if job.level != "model":
            raise
        # build_model refuses an entry that has no place in this arch: not a failure
        return {**fields, "status": "refused", "message": f"ValueError: {error}"}
    return {**fields, **analyze(model, job.input_shape, input_requires_grad=job.level == "module"),
            "status": "ok", "message": ""}


def classify_cost_error(error: BaseException) -> str:
    """The status of a job that raised: counting has no other failure than ``error``."""
    return "error"


def run_job(job: Job) -> dict[str, Any]:
    """One job's whole record, as the stage writes it (without the environment); a failing
    module is a record with status ``error``, message and traceback."""
    return measure_record(job, measure_cost, classify_cost_error)


def tables(records: list[dict[str, Any]], folder: Path | None = None) -> dict[str, pd.DataFrame]:
    """The cost stage's tables from its records: ``cost_module.csv`` and ``cost_model.csv``
    (``folder``, where the records are, is not read)."""
    return {"cost_module.csv": module_table(records), "cost_model.csv": model_table(records)}


_FIRST = [
    "level", "attn", "family", "kind", "placement", "arch", "batch", "channels", "height",
    "width", "input_shape", "status", "message",
    "params_total", "params_trainable", "buffers_total", "params_formula",
    "macs_formula", "macs_fvcore", "rel_fvcore_vs_formula", "macs_fvcore_shipped", "macs_fvcore_shipped_conv_linear",
    "macs_thop", "macs_thop_shipped", "flops_torch", "macs_dispatch",
    "act_saved_bytes", "act_saved_tensors", "act_produced_elems", "act_produced_tensors",
    "uncounted_ops", "fvcore_shipped_gap", "thop_shipped_gap", "torch_missed",
]


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    for column in frame.columns:  # counts stay integers even where an error row left a hole
        if column.startswith(("macs_", "flops_", "params_", "act_", "delta_", "buffers_")):
            values = pd.to_numeric(frame[column], errors="coerce")
            numeric = values.notna().sum() == frame[column].notna().sum()  # not act_error
            if numeric and (values.dropna() % 1 == 0).all():
                frame[column] = values.astype("Int64")
    first = [c for c in _FIRST if c in frame.columns]
    rest = [c for c in frame.columns if c not in first and c != "key"]
    return frame[first + rest + (["key"] if "key" in frame.columns else [])]


def _rows(records: Iterable[dict[str, Any]], level: str) -> list[dict[str, Any]]:
    """The records of ``level``, without their tracebacks (kept in the records only)."""
    return [{k: v for k, v in r.items() if k != "traceback"} for r in records if r.get("level") == level]


def module_table(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per module x shape (the latest record of each key)."""
    rows = _rows(records, "module")
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = frame.sort_values(["attn", "channels", "height"], ascending=[True, True, False], kind="stable")
    if {"macs_fvcore", "macs_formula"} <= set(frame.columns):
        # relative disagreement of fvcore-with-our-handles with the closed form (tests: <= 1%)
        formula = pd.to_numeric(frame["macs_formula"], errors="coerce")
        frame["rel_fvcore_vs_formula"] = (pd.to_numeric(frame["macs_fvcore"], errors="coerce") - formula) / formula
    return _ordered(frame.reset_index(drop=True))


def model_table(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per arch x attention, with ``delta_*`` over the same arch without attention."""
    rows = _rows(records, "model")
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    base = frame[(frame["attn"] == BASELINE) & (frame["status"] == "ok")]
    base = base.set_index(["arch", "input_shape"])
    for column in DELTA_COLUMNS:
        if column not in frame.columns:
            continue
        reference = [
            base[column].get((arch, shape)) if (arch, shape) in base.index else None
            for arch, shape in zip(frame["arch"], frame["input_shape"], strict=False)
        ]
        frame[f"delta_{column}"] = pd.to_numeric(frame[column], errors="coerce") - pd.to_numeric(
            pd.Series(reference, index=frame.index), errors="coerce"
        )
    frame["_base_first"] = frame["attn"] != BASELINE
    frame = frame.sort_values(["arch", "_base_first", "attn"], kind="stable").drop(columns="_base_first")
    return _ordered(frame.reset_index(drop=True))
