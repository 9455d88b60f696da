"""What ``python -m suite latency`` and ``python -m suite memory`` share: the grid's settings
and flags, its axes, the environment's columns and the tidy CSV.

Both follow the stage contract of :mod:`suite.stage`: one raw record per configuration in
``records.jsonl`` as soon as it is measured (the environment written once, to
``environments.jsonl``, and named by each record); a configuration that raises becomes a
record with ``status`` and ``message`` and the sweep goes on. A re-run skips the keys already
recorded unless ``--force`` (or ``--retry-failed`` for those without a final status). The CSV
is rebuilt from the records at the end (and when interrupted), so it is always derived, never
edited.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..options import Option, add_options, choice_list, positive_int, setting
from ..shard import Shard
from ..stage import loadavg
from .grid import COMPILE_MODES, DTYPES, MEMORY_FORMATS, MODES, PROFILES, Axes, profile_axes

__all__ = [
    "GridSettings",
    "TABLE_COLUMNS",
    "add_grid_arguments",
    "axes_from_settings",
    "records_to_frame",
    "stage_table",
    "busy_warning",
]



GRID = "what to measure"
MODE = Option("--mode", "forward (eval, no_grad) and/or train (forward + backward), comma-separated",
              parse=choice_list(MODES), metavar="M[,M...]", group=GRID)
"""The ``--mode`` flag of the latency, memory and regress commands."""
CUDA_GRAPH = Option(
    "--cuda-graph", "latency on CUDA: 'on' captures each step once into a CUDA graph after warm-up and times its "
    "replay (no Python dispatch: what a graphed model pays); 'off' times eager launches. Rows say which "
    "(timing_mode); a step that cannot be captured is a row with status graph_error",
    choices=("off", "on"), group="CUDA")
FLUSH_L2 = Option(
    "--flush-l2", "latency on CUDA: before every timed call, write a buffer twice the GPU's L2 cache (untimed), so "
    "that inputs are read from device memory, not from L2; recorded per row (flush_l2)", kind="switch",
    group="CUDA")


@dataclass
class GridSettings:
    """What ``suite latency`` and ``suite memory`` both take: the grid and the output. ``None``
    on an axis means the preset's value (``--preset``)."""

    attn: str = setting("--attn", "*", default_text="'*', every registered type")
    level: str = setting("--level", "module")
    arch: tuple[str, ...] = setting("--arch", ("resnet18",))
    preset: str | None = setting("--preset", None, choices=tuple(PROFILES), default_text=(
        "gpu when --device is cuda, else cpu; the preset gives the axes not set here (gpu: dtypes, memory "
        "formats, compile)"))
    device: str | None = setting("--device", None, default_text="cpu")
    batch: tuple[int, ...] | None = setting("--batch", None, default_text="the preset's")
    size: tuple[int, ...] | None = setting("--size", None, default_text="the preset's")
    channels: tuple[int, ...] | None = setting("--channels", None, default_text="the preset's")
    dtype: tuple[str, ...] | None = setting(
        Option("--dtype", "fp32, or bf16/fp16 autocast with a low-precision input, comma-separated",
               parse=choice_list(DTYPES), metavar="D[,D...]", group=GRID), None, default_text="the preset's")
    memory_format: tuple[str, ...] | None = setting(
        Option("--memory-format", "contiguous and/or channels_last, comma-separated",
               parse=choice_list(MEMORY_FORMATS), metavar="F[,F...]", group=GRID), None, default_text="the preset's")
    compile: tuple[str, ...] | None = setting(
        Option("--compile", "the runtime(s), comma-separated: eager, compile (torch.compile with inductor; a compile "
               "failure is a row with status compile_error), onnxruntime and/or openvino (a torch.onnx export run on "
               "the CPU: forward, fp32, contiguous only, other settings 'unsupported'; an export failure is a row "
               "with status export_error naming the operator)", parse=choice_list(COMPILE_MODES),
               metavar="M[,M...]", group=GRID), None, default_text="the preset's")
    mode: tuple[str, ...] | None = setting(MODE, None, default_text="the preset's")
    threads: int | None = setting("--threads", None, default_text="the cores this process may use")
    out: Path = setting("--out", Path("reports/latency"))
    force: bool = setting("--force", False)
    retry_failed: bool = setting(Option("--retry-failed", "re-measure configurations whose recorded status is "
                                        "a failure (not ok or refused)", kind="switch", group="output"), False)
    limit: int | None = setting(Option("--limit", "measure at most this many (new) configurations, then stop",
                                       parse=positive_int, metavar="N", group="output"), None, default_text="all")
    dry_run: bool = setting("--dry-run", False)
    tables_only: bool = setting("--tables-only", False)
    no_progress: bool = setting("--no-progress", False)
    cudnn_benchmark: str = setting("--cudnn-benchmark", "on")
    tf32: str = setting("--tf32", "default", choices=("default", "on", "off"), default_text=(
        "default, PyTorch's own: IEEE fp32 matmuls, TF32 cuDNN convolutions ('on': TF32 for both, 'off': IEEE "
        "for both)"))
    timeout_s: float = setting("--timeout-s", 300.0)
    cuda_graph: str = setting(CUDA_GRAPH, "off")
    flush_l2: bool = setting(FLUSH_L2, False)
    shard: Shard | None = setting("--shard", None, default_text="the whole plan")


def add_grid_arguments(parser: argparse.ArgumentParser, stage: str, settings_class: type) -> None:
    """The flags of ``settings_class`` (a :class:`GridSettings`), with the stage's epilog."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _epilog(stage)
    add_options(parser, settings_class)


def _epilog(stage: str) -> str:
    common = (
        "Axes multiply: every attention type x batch x size x channels x dtype x memory format x\n"
        "compile x mode is one configuration, one row. A configuration that fails (build error,\n"
        "unsupported dtype, OOM, compile error, timeout) becomes a row with its status and\n"
        "message and the sweep goes on. Re-running with the same --out skips configurations\n"
        "already recorded (resume); --force re-measures them. The progress bar and its ETA go\n"
        "to stderr. Every record names the run's environment (versions, CPU model, GPU and driver,\n"
        "threads, settings, commit, date; written once to environments.jsonl) and carries the\n"
        "load average when it was measured.\n"
    )
    if stage == "latency":
        return common + (
            "\nEach configuration is timed in --rounds rounds, each in a fresh worker process that visits\n"
            "every configuration in turn; a round that did not get the CPU it asked for (CPU time vs\n"
            "wall time x threads, other processes' CPU, steal) is discarded and measured again, and a\n"
            "configuration without enough clean rounds gets status 'contended' and no numbers.\n"
            "\nlatency.csv: median_ms (geometric mean of the rounds' medians) with its 95% interval\n"
            "across rounds (ci_low_ms, ci_high_ms), IQR/p90/p99 of all samples, rounds; ratio = module /\n"
            "reference (a 3x3 conv C->C, or the model without attention; adjacent visits in the same\n"
            "process) with ratio_ci_low/high; passes = time / one copy of the input, with its interval;\n"
            "forward rows add min_bytes, formula_macs, bound and roofline_fraction against the\n"
            "bandwidth and matmul rate measured at the start of the run (machine.csv).\n"
        )
    return common + (
        "\nmemory.csv: input/output/parameter bytes; act_saved_bytes (saved for backward, train\n"
        "rows); CPU: step_rss_bytes (peak RSS added by one step) and peak_rss_bytes (whole\n"
        "process) measured in a fresh process per configuration; CUDA: cuda_step_peak_bytes and\n"
        "cuda_peak_bytes (max_memory_allocated after reset_peak_memory_stats).\n"
    )


def axes_from_settings(settings: GridSettings, stage: str, device: str) -> Axes:
    """The grid's axes: the preset's (``--preset``, by default the device's), with each axis the
    settings give replacing the preset's."""
    preset = settings.preset or ("gpu" if device.startswith("cuda") else "cpu")
    return profile_axes(preset, stage).override(
        batch=settings.batch, size=settings.size, channels=settings.channels, dtype=settings.dtype,
        memory_format=settings.memory_format, compile=settings.compile, mode=settings.mode,
    )


def busy_warning(threads: int) -> str | None:
    """A warning when the machine is already busy (load average above the free cores)."""
    load = loadavg()
    cores = os.cpu_count() or 1
    if math.isfinite(load) and load > max(0.5, cores - threads + 0.5):
        return (f"warning: load average {load:.2f} on {cores} cores before measuring with {threads} "
                f"thread(s): other processes compete for the CPU and timings will be disturbed "
                f"(more so with several threads, whose barriers wait for descheduled peers); "
                f"each row records loadavg_1m")
    return None


TABLE_COLUMNS = {"name": "attn", "formula_macs": "macs_formula"}
"""Record fields that the tables (the stage's and the report's) name as every other stage does:
the closed-form MACs are ``macs_formula`` (the records name them after the modules' method
``formula_macs``), and the attention type is ``attn``, as records name it too (records written
before named it ``name``, which this reads)."""


def records_to_frame(records: Iterable[dict[str, Any]], leading: Sequence[str]) -> pd.DataFrame:
    """A tidy table (one row per configuration) with ``leading`` columns first, no tracebacks,
    columns named as :data:`TABLE_COLUMNS` says."""
    frame = pd.DataFrame([{TABLE_COLUMNS.get(k, k): v for k, v in r.items() if k != "traceback"} for r in records])
    if frame.empty:
        return pd.DataFrame(columns=list(leading))
    for column in leading:
        if column not in frame.columns:
            frame[column] = math.nan
    rest = [c for c in frame.columns if c not in leading]
    return frame[list(leading) + rest]


def stage_table(records: Iterable[dict[str, Any]], leading: Sequence[str], record_type: str) -> pd.DataFrame:
    """The tidy table of the records of ``record_type`` (:func:`records_to_frame`)."""
    return records_to_frame([r for r in records if r.get("record", record_type) == record_type], leading)
