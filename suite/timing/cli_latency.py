"""``python -m suite latency``: forward and training-step latency of every attention type,
each with its ratio over a reference measured in the same process and its roofline fraction.

Writes into ``--out`` (default ``reports/latency``):

* ``records.jsonl``: one raw record per configuration (and one per machine-peak measurement),
  with the environment (versions, CPU model, GPU name and driver, threads, cuDNN/TF32 settings,
  commit, date);
* ``latency.csv``: the tidy table, one row per configuration; times in milliseconds;
* ``machine.csv``: copy bandwidth and matmul rates measured at the start of each run.

See :mod:`suite.timing.timer` for how a time is measured, :mod:`suite.timing.workloads` for
what is run and :mod:`suite.timing.roofline` for the bound.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import torch

from ..records import FolderLockedError, RecordStore, folder_lock, write_csv_atomic
from .cli_common import measurement_settings, plan_sweep
from .grid import Config
from .roofline import MachinePeaks, measure_machine, min_bytes, roofline
from .sweep import add_grid_arguments, run_sweep, write_table
from .timer import (
    TimerOptions,
    clock_for,
    measure_interleaved,
)
from .workloads import build_workload, classify_error

__all__ = ["add_arguments", "main", "measure_latency", "LEADING_COLUMNS"]

LEADING_COLUMNS = (
    "name", "level", "arch", "mode", "device", "dtype", "memory_format", "compile",
    "batch", "channels", "size", "threads", "status", "message",
    "median_ms", "iqr_ms", "p90_ms", "p99_ms", "ci_low_ms", "ci_high_ms", "ci_rel", "n",
    "calls_per_sample", "converged", "reference", "ref_median_ms", "ratio",
    "formula_macs", "min_bytes", "bound", "bound_ms", "roofline_fraction", "fits_llc",
)

BUDGET_DEFAULT_S = {"cpu": 1.5, "cuda": 2.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_grid_arguments(parser, "latency")
    timing = parser.add_argument_group("timing")
    timing.add_argument("--budget-s", type=float, default=None,
                        help="time budget per configuration (module and reference together, warm-up included) "
                        f"before giving up on convergence; default {BUDGET_DEFAULT_S['cpu']} on CPU, {BUDGET_DEFAULT_S['cuda']} on CUDA")
    timing.add_argument("--rel-tol", type=float, default=0.01,
                        help="stop when the 95%% CI of each median is within +-REL_TOL of it (default: 0.01)")
    timing.add_argument("--min-samples", type=int, default=6, help="samples taken before convergence or the budget may stop sampling (default: 6, the fewest with a 95%% CI)")
    timing.add_argument("--max-samples", type=int, default=5000, help="samples after which sampling stops regardless (default: 5000)")
    timing.add_argument("--warmup-s", type=float, default=0.1, help="warm-up time per callable, at least 2 calls (default: 0.1)")
    timing.add_argument("--cudnn-benchmark", choices=("on", "off"), default="on",
                        help="torch.backends.cudnn.benchmark during CUDA runs (set explicitly, recorded, restored; default: on)")
    timing.add_argument("--tf32", choices=("on", "off"), default="off",
                        help="TF32 for fp32 matmuls and convolutions during CUDA runs (set explicitly, recorded, restored; default: off)")
    timing.add_argument("--no-roofline", action="store_true", help="skip the bandwidth / matmul-rate measurement and the roofline columns")
    timing.add_argument("--roofline-copy-mib", type=int, default=None,
                        help="size of the tensor copied to measure bandwidth (default 128 on CPU, 1024 on CUDA)")


class _LazyPeaks:
    """Machine peaks measured once, just before the first configuration of a run."""

    def __init__(self, device: str, dtypes: tuple[str, ...], copy_mib: int | None, store: RecordStore,
                 environment: dict[str, Any], enabled: bool, options: TimerOptions) -> None:
        self.device, self.dtypes, self.copy_mib, self.options = device, dtypes, copy_mib, options
        self.store, self.environment, self.enabled = store, environment, enabled
        self.peaks: MachinePeaks | None = None
        self.measured = False

    def get(self) -> MachinePeaks | None:
        if not self.enabled:
            return None
        if not self.measured:
            self.measured = True
            copy_bytes = self.copy_mib << 20 if self.copy_mib else None
            options = TimerOptions(budget_s=self.options.budget_s, rel_tol=max(self.options.rel_tol, 0.02),
                                   warmup_s=self.options.warmup_s)
            self.peaks = measure_machine(self.device, self.dtypes, copy_bytes=copy_bytes, options=options)
            for row in self.peaks.as_rows():
                self.store.append({
                    "record": "machine",
                    "key": f"machine|{self.environment['date']}|{row['quantity']}|{row['dtype']}",
                    "status": "ok",
                    **row,
                    "threads": self.environment.get("threads"),
                    **{f"env_{k}": v for k, v in self.environment.items()},
                })
        return self.peaks


def measure_latency(config: Config, *, options: TimerOptions, peaks: MachinePeaks | None = None) -> dict[str, Any]:
    """Measure one configuration: module and reference interleaved; ratio; roofline (forward)."""
    workload = build_workload(config)
    try:
        summaries = measure_interleaved(
            {"module": workload.step, "reference": workload.reference_step},
            clock=clock_for(config.device), options=options,
        )
    except Exception as exc:  # noqa: BLE001
        from .workloads import StageError

        raise StageError(classify_error(exc), f"{type(exc).__name__}: {exc}") from exc
    module, reference = summaries["module"], summaries["reference"]
    row: dict[str, Any] = {"record": "latency", "status": "ok", "message": ""}
    row.update(module.as_dict())
    row["reference"] = workload.reference_name
    ref = reference.as_dict(prefix="ref_")
    for k in ("ref_median_ms", "ref_iqr_ms", "ref_p90_ms", "ref_ci_rel", "ref_n", "ref_calls_per_sample", "ref_converged"):
        row[k] = ref[k]
    row["ratio"] = module.median / reference.median if reference.median > 0 else math.nan
    row["params"] = workload.params
    row["formula_macs"] = workload.formula_macs
    row["compile_s"] = workload.compile_s
    row["input_shape"] = "x".join(map(str, workload.input_shape))
    row["output_shape"] = "x".join(map(str, workload.output_shape))
    if not (module.converged and reference.converged):
        row["message"] = "not converged within the budget: CI of the median wider than +-rel_tol"
    if peaks is not None and config.mode == "forward" and config.level == "module":
        bytes_moved = min_bytes(workload.input_shape, workload.output_shape, workload.input_element_size, workload.param_bytes)
        rate = peaks.matmul_macs_per_s.get(config.dtype, math.nan)
        row.update(roofline(module.median, bytes_moved, workload.formula_macs, peaks.bandwidth_Bps, rate))
        row["fits_llc"] = bool(peaks.llc_bytes and bytes_moved <= peaks.llc_bytes)
        row["bandwidth_GBps"] = peaks.bandwidth_Bps / 1e9
        row["matmul_GMACps"] = rate / 1e9
    if config.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return row


def main(args: argparse.Namespace) -> int:
    plan = plan_sweep(args, "latency")
    if isinstance(plan, int):
        return plan
    device, torch_device, axes, configs = plan.device, plan.torch_device, plan.axes, plan.configs
    if args.dry_run:
        for config in configs:
            print(config.key())
        return 0
    budget = args.budget_s or BUDGET_DEFAULT_S["cuda" if torch_device.type == "cuda" else "cpu"]
    options = TimerOptions(budget_s=budget, rel_tol=args.rel_tol, min_samples=args.min_samples,
                           max_samples=args.max_samples, warmup_s=args.warmup_s)
    out: Path = args.out
    try:
        with folder_lock(out), measurement_settings(args, plan) as environment:
            environment["clock"] = clock_for(device).name if torch_device.type != "cuda" else "cuda_event"
            environment["timer"] = (f"budget_s={options.budget_s} rel_tol={options.rel_tol} "
                                    f"min_samples={options.min_samples} warmup_s={options.warmup_s}")
            store = RecordStore(out / "records.jsonl")
            peaks = _LazyPeaks(device, axes.dtype, args.roofline_copy_mib, store, environment,
                               not args.no_roofline, options)
            try:
                result = run_sweep(
                    configs, store,
                    lambda c: measure_latency(c, options=options, peaks=peaks.get()),
                    environment=environment, classify=classify_error, force=args.force,
                    retry_failed=args.retry_failed, limit=args.limit,
                    progress=not args.no_progress, desc="latency",
                )
            finally:
                frame = write_table(store, out / "latency.csv", LEADING_COLUMNS, "latency")
                machine = [r for r in store.read() if r.get("record") == "machine"]
                if machine:
                    import pandas as pd

                    write_csv_atomic(out / "machine.csv", pd.DataFrame(machine))
    except FolderLockedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"latency: {result.measured} measured, {result.failed} failed (rows with a status), "
          f"{result.skipped} already recorded; {len(frame)} rows in {out / 'latency.csv'}", file=sys.stderr)
    return 130 if result.interrupted else 0
