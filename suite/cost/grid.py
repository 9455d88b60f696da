"""The two grids of the cost stage, run into raw records and turned into tidy tables.

* Module level: every selected attention type at ``C in {64, 256, 1024}``, ``H = W in
  {56, 28, 14, 7}``, batch 1 (a ``conv`` entry with ``out_channels = C``).
* Model level: every selected architecture at 224 x 224 (batch 1), without attention (the
  baseline) and with each selected attention type at its canonical place
  (``modules.build_model``); the table adds ``delta_*`` columns, the same figure minus the
  baseline's.

Each configuration is one :class:`Job` with a ``key``; each result one raw record in a
:class:`~suite.records.RecordStore` naming the run's environment; a re-run skips the keys already
measured (status ``ok``) and retries the rest. A job that fails (a module refusing a shape,
a backbone that fails to build) is recorded with ``status="error"`` and the message; an
entry that ``build_model`` refuses for an architecture (no place for it there, e.g. a
``conv`` entry in MobileNetV2) with ``status="refused"`` and the reason. The run goes on.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch

from modules import BASELINE

from ..portable import shown_path
from .counters import analyze

__all__ = [
    "Job",
    "module_jobs",
    "model_jobs",
    "run_job",
    "run_jobs",
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

    @property
    def key(self) -> str:
        where = f"arch={self.arch}" if self.level == "model" else "module"
        return f"cost|{self.level}|{where}|attn={self.attn}|shape={'x'.join(map(str, self.input_shape))}"


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


def run_job(job: Job) -> dict[str, Any]:
    """Measure one job; never raises for a failing module (status ``error`` or ``refused`` +
    message)."""
    import modules

    record: dict[str, Any] = {"key": job.key, **asdict(job), "input_shape": "x".join(map(str, job.input_shape))}
    if job.attn != BASELINE:
        info = modules.get_info(job.attn)
        record.update(family=info.family, kind=info.kind, placement=info.placement)
    start = time.perf_counter()
    try:
        try:
            model = _build(job)
        except ValueError as error:
            if job.level != "model":
                raise
            # build_model refuses an entry that has no place in this arch: not a failure
            record.update(status="refused", message=f"ValueError: {error}")
            record["wall_seconds"] = round(time.perf_counter() - start, 4)
            return record
        record.update(analyze(model, job.input_shape, input_requires_grad=job.level == "module"))
        record["status"] = "ok"
        record["message"] = ""
    except Exception as error:  # noqa: BLE001  (recorded, the run goes on)
        record["status"] = "error"
        record["message"] = f"{type(error).__name__}: {error}"
        frames = traceback.extract_tb(error.__traceback__)
        if frames:
            record["where"] = f"{shown_path(frames[-1].filename)}:{frames[-1].lineno}"
    record["wall_seconds"] = round(time.perf_counter() - start, 4)
    return record


def run_jobs(
    jobs: Sequence[Job],
    store: Any,
    environment: dict[str, Any],
    *,
    fresh: bool = False,
    progress: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[int, int, int]:
    """Run the jobs not yet measured (``ok`` or ``refused``) into ``store``; returns
    ``(measured, skipped, errors)``."""
    from tqdm.auto import tqdm

    done = set() if fresh else store.done_keys(statuses={"ok", "refused"})
    todo = [job for job in jobs if job.key not in done]
    errors = 0
    bar = tqdm(todo, desc="cost", unit="job", disable=not progress, dynamic_ncols=True, leave=True)
    for job in bar:
        label = f"{job.arch}/{job.attn}" if job.level == "model" else f"{job.attn} C={job.channels} H={job.height}"
        bar.set_postfix_str(label, refresh=False)
        record = {**run_job(job), **environment}
        errors += record["status"] == "error"
        store.append(record, environment=environment)
        if on_record is not None:
            on_record(record)
    bar.close()
    return len(todo), len(jobs) - len(todo), errors


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


def module_table(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per module x shape (the latest record of each key)."""
    rows = [r for r in records if r.get("level") == "module"]
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
    rows = [r for r in records if r.get("level") == "model"]
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
