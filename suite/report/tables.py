"""Tidy tables joined from the stages' raw outputs: one row per attention type x configuration,
and a summary with one row per attention type.

Column conventions (stated again in the rendered README):

* ``macs_*`` count one multiply-accumulate as 1, ``flops_*`` count 2 per MAC;
* ``*_ms`` are milliseconds, ``*_bytes`` bytes, ``*_pct`` percent, ``*_pp`` percentage points;
* ``conv3x3_*`` is the module-level reference: a 3x3 convolution C -> C without bias on the same
  input (``9 C^2`` parameters, ``9 C^2 H W`` MACs per image) -- the convolution a ResNet block
  runs next to the attention block, and the reference the latency stage times in the same
  process;
* ``backbone_*`` / ``extra_*`` at model level: the architecture without attention, and what
  the attention adds to it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from modules import BASELINE

from ..timing.sweep import TABLE_COLUMNS
from .load import StageData

__all__ = [
    "ok_rows",
    "cost_table",
    "latency_table",
    "memory_table",
    "accuracy_table",
    "primary_latency",
    "primary_module_latency",
    "primary_contended",
]

_CONFIG = ["level", "attn", "arch", "mode", "device", "dtype", "memory_format", "compile",
           "batch", "channels", "size", "threads"]

_COST_MODULE = [
    "level", "attn", "family", "kind", "placement", "arch", "batch", "channels", "height", "width",
    "status", "message",
    "params_total", "params_formula", "conv3x3_params", "params_over_conv3x3",
    "macs_formula", "macs_fvcore", "macs_fvcore_shipped", "macs_fvcore_shipped_conv_linear", "macs_thop",
    "macs_thop_shipped", "flops_torch", "macs_dispatch", "conv3x3_macs", "macs_over_conv3x3",
    "act_saved_bytes", "uncounted_ops", "fvcore_shipped_gap", "thop_shipped_gap", "torch_missed",
    "count_device",
]
_COST_MODEL = [
    "level", "attn", "family", "kind", "placement", "arch", "batch", "channels", "height", "width",
    "status", "message",
    "params_total", "backbone_params", "extra_params", "extra_params_pct",
    "macs_fvcore", "backbone_macs_fvcore", "extra_macs_fvcore", "extra_macs_pct",
    "macs_fvcore_shipped", "macs_fvcore_shipped_conv_linear", "macs_thop", "macs_thop_shipped", "flops_torch",
    "macs_dispatch", "extra_macs_thop", "extra_flops_torch", "macs_formula_attn", "params_formula_attn",
    "act_saved_bytes", "extra_act_saved_bytes", "attn_modules", "uncounted_ops", "fvcore_shipped_gap",
    "thop_shipped_gap", "torch_missed", "count_device",
]


def _num(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series(np.nan, index=frame.index, dtype=float)
    return pd.to_numeric(frame[column], errors="coerce")


def _keep(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return frame[[c for c in columns if c in frame.columns]]


def ok_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` with status ``ok`` (all of them when it has no status)."""
    if frame.empty or "status" not in frame:
        return frame
    return frame[frame["status"] == "ok"]


def cost_table(stage: StageData) -> pd.DataFrame:
    """``cost.csv``: module-level rows (with the 3x3-conv reference) then model-level rows
    (with the backbone and the extra over it)."""
    parts = []
    module = stage.table("module").copy()
    if not module.empty:
        module["level"] = "module"
        c = _num(module, "channels")
        hw = _num(module, "height") * _num(module, "width")
        batch = _num(module, "batch").fillna(1)
        module["conv3x3_params"] = 9 * c * c
        module["conv3x3_macs"] = 9 * c * c * hw * batch
        module["params_over_conv3x3"] = _num(module, "params_total") / module["conv3x3_params"]
        module["macs_over_conv3x3"] = _num(module, "macs_fvcore") / module["conv3x3_macs"]
        parts.append(_keep(module, _COST_MODULE))
    model = stage.table("model").copy()
    if not model.empty:
        model["level"] = "model"
        base = model[(model["attn"] == BASELINE) & (model.get("status") == "ok")]
        base = base.drop_duplicates("arch").set_index("arch")
        for src, dst in (("params_total", "backbone_params"), ("macs_fvcore", "backbone_macs_fvcore")):
            model[dst] = model["arch"].map(_num(base, src)) if not base.empty else np.nan
        for src, dst in (("delta_params_total", "extra_params"), ("delta_macs_fvcore", "extra_macs_fvcore"),
                         ("delta_macs_thop", "extra_macs_thop"), ("delta_flops_torch", "extra_flops_torch"),
                         ("delta_act_saved_bytes", "extra_act_saved_bytes")):
            model[dst] = _num(model, src)
        model["extra_params_pct"] = 100 * model["extra_params"] / _num(model, "backbone_params")
        model["extra_macs_pct"] = 100 * model["extra_macs_fvcore"] / _num(model, "backbone_macs_fvcore")
        parts.append(_keep(model, _COST_MODEL))
    if not parts:
        return pd.DataFrame(columns=_COST_MODULE)
    return pd.concat(parts, ignore_index=True)


_LATENCY = _CONFIG + [
    "status", "message", "median_ms", "ci_low_ms", "ci_high_ms", "iqr_ms", "p90_ms", "p99_ms", "mean_ms",
    "min_ms", "n", "calls_per_sample", "converged", "rounds", "rounds_contended", "reference", "ref_median_ms",
    "ratio", "ratio_ci_low", "ratio_ci_high", "ratio_ci_rel", "copy_median_ms", "passes",
    "passes_ci_low", "passes_ci_high", "params", "macs_formula", "min_bytes", "bound", "roofline_fraction",
    "compile_s", "threads_set", "flush_denormal", "allocator_tunables", "cpu_share_min", "other_cores_max",
    "contention_policy", "other_cores_allowed", "loadavg_1m", "timing_mode", "host_bound", "ref_host_bound", "host_ms", "flush_l2", "tf32_matmul", "tf32_conv",
    "cudnn_benchmark", "cuda_device", "gpu_check",
]
"""The columns of ``latency.csv``, those a table has (the CUDA ones from ``timing_mode`` on: which timer
mode, whether the host's enqueue bound the event time, the L2 flush, TF32 and the GPU check)."""


def latency_table(stage: StageData) -> pd.DataFrame:
    """``latency.csv``: one row per attention type x configuration; ``ratio`` is the
    module over its reference (timed in alternation in each round's process), with its 95%
    interval across rounds (``ratio_ci_low`` / ``ratio_ci_high``)."""
    frame = _sweep_frame(stage, "latency")
    return pd.DataFrame(columns=_LATENCY) if frame is None else _keep(frame, _LATENCY).reset_index(drop=True)


def _sweep_frame(stage: StageData, name: str) -> pd.DataFrame | None:
    """A latency or memory stage table named as the tables name columns (a stage CSV written
    before they used these names is renamed), with its level; ``None`` when empty."""
    frame = stage.table(name).copy()
    if frame.empty:
        return None
    frame = frame.rename(columns=TABLE_COLUMNS)
    if "level" not in frame:
        frame["level"] = "module"
    return frame


_MEMORY = _CONFIG + [
    "status", "message", "input_bytes", "output_bytes", "param_bytes", "act_saved_bytes", "act_saved_tensors",
    "act_saved_over_input", "step_peak_bytes", "step_rss_bytes", "peak_rss_bytes", "cuda_step_peak_bytes",
    "cuda_peak_bytes", "isolation", "loadavg_1m",
]


def memory_table(stage: StageData) -> pd.DataFrame:
    """``memory.csv``: one row per attention type x configuration. ``step_peak_bytes`` is the
    memory one step added: CUDA peak allocated where measured on CUDA, else the peak RSS growth."""
    frame = _sweep_frame(stage, "memory")
    if frame is None:
        return pd.DataFrame(columns=_MEMORY)
    frame["act_saved_over_input"] = _num(frame, "act_saved_bytes") / _num(frame, "input_bytes")
    frame["step_peak_bytes"] = _num(frame, "cuda_step_peak_bytes").fillna(_num(frame, "step_rss_bytes"))
    return _keep(frame, _MEMORY).reset_index(drop=True)


_ACCURACY = [
    "attn", "profile", "arch", "recipe", "runs", "n_seeds", "status",
    "top1_pct", "top1_baseline_pct", "top5_pct", "top5_baseline_pct", "top1_delta_pp", "top1_ci_low_pp",
    "top1_ci_high_pp", "top1_ci_holm_low_pp", "top1_ci_holm_high_pp", "top1_ci_holm_level", "top1_p",
    "top1_p_holm", "top1_significant", "top5_delta_pp", "top5_ci_low_pp", "top5_ci_high_pp",
    "top5_ci_holm_low_pp", "top5_ci_holm_high_pp", "top5_ci_holm_level", "top5_p", "top5_p_holm",
    "top5_significant", "top1_se_images_pp", "train_loss_delta", "train_loss_ci_low", "train_loss_ci_high",
    "val_loss_delta", "val_loss_ci_low", "val_loss_ci_high", "gate_scale_at_init", "top1_seeds_for_target",
    "top1_reason", "diverged",
    "runs_not_ok", "matches", "matched_arm", "top1_vs_matched_delta_pp", "top1_vs_matched_ci_low_pp",
    "top1_vs_matched_ci_high_pp", "top1_vs_matched_p", "width_mult", "widths", "step_ms", "macs", "params",
    "matched_reason",
]


def accuracy_table(stage: StageData) -> pd.DataFrame:
    """``accuracy.csv``: per attention type (the baseline ``none`` first), top-1/top-5 in % (a
    design's and, as ``*_baseline_pct``, the baseline's, both over the seeds they share; the
    baseline's row over all its seeds), the paired delta over the baseline in percentage points
    with its unadjusted 95% t interval (``*_ci_low_pp``/``*_ci_high_pp``) and its Holm interval
    (``*_ci_holm_low_pp``/``*_ci_holm_high_pp``, at confidence ``*_ci_holm_level``, excluding 0
    exactly when ``*_significant``), the paired t-test's p-value and its Holm adjustment over the
    designs (``*_significant`` uses the adjusted one; :mod:`suite.accuracy.stats`)."""
    deltas = stage.table("deltas").copy()
    if deltas.empty:
        return pd.DataFrame(columns=_ACCURACY)
    runs = stage.table("runs")
    out = pd.DataFrame({"attn": deltas["attn"]})
    for field in ("profile", "arch", "recipe"):
        if field in runs:
            first = runs.dropna(subset=[field]).drop_duplicates("attn").set_index("attn")[field]
            out[field] = out["attn"].map(first)
    out["runs"] = _num(deltas, "runs")
    out["n_seeds"] = _num(deltas, "top1_pairs")
    out.loc[out["attn"] == BASELINE, "n_seeds"] = out["runs"]
    if "status" in runs:
        bad = runs[runs["status"] != "ok"].groupby("attn").size()
        out["runs_not_ok"] = out["attn"].map(bad).fillna(0).astype(int)
    else:
        out["runs_not_ok"] = 0
    out["status"] = np.where(out["runs_not_ok"] > 0, "some runs not ok", "ok")
    for metric in ("top1", "top5"):
        out[f"{metric}_pct"] = 100 * _num(deltas, f"{metric}_mean")
        for src, dst in (("delta", "delta_pp"), ("ci_low", "ci_low_pp"), ("ci_high", "ci_high_pp")):
            out[f"{metric}_{dst}"] = 100 * _num(deltas, f"{metric}_{src}")
        for src, dst in (("baseline_mean", "baseline_pct"), ("ci_holm_low", "ci_holm_low_pp"),
                         ("ci_holm_high", "ci_holm_high_pp")):
            if f"{metric}_{src}" in deltas:
                out[f"{metric}_{dst}"] = 100 * _num(deltas, f"{metric}_{src}")
        for field in ("p", "p_holm", "ci_holm_level"):
            if f"{metric}_{field}" in deltas:
                out[f"{metric}_{field}"] = _num(deltas, f"{metric}_{field}")
        if f"{metric}_significant" in deltas:
            out[f"{metric}_significant"] = deltas[f"{metric}_significant"]
    if "top1_se_images" in deltas:
        out["top1_se_images_pp"] = 100 * _num(deltas, "top1_se_images")
    for metric in ("train_loss", "val_loss"):
        for field in ("delta", "ci_low", "ci_high"):
            if f"{metric}_{field}" in deltas:
                out[f"{metric}_{field}"] = _num(deltas, f"{metric}_{field}")
    for field in ("top1_reason", "diverged", "top1_seeds_for_target"):
        if field in deltas:
            out[field] = deltas[field]
    scales = stage.table("gate_scale")
    if not scales.empty:
        out["gate_scale_at_init"] = out["attn"].map(scales.set_index("attn")["gate_scale_at_init"])
    for field in ("delta", "ci_low", "ci_high"):
        if f"top1_vs_matched_{field}" in deltas:
            out[f"top1_vs_matched_{field}_pp"] = 100 * _num(deltas, f"top1_vs_matched_{field}")
    for field in ("matched_arm", "top1_vs_matched_p"):
        if field in deltas:
            out[field] = deltas[field]
    out = _with_matched_arms(out, stage.table("matched"))
    return _keep(out, _ACCURACY).reset_index(drop=True)


def _with_matched_arms(out: pd.DataFrame, matched: pd.DataFrame) -> pd.DataFrame:
    """The accuracy rows with the width-matched arms' search (``matched.csv``) joined: each
    ``matched_<design>`` row names the design it ``matches``, its ``width_mult`` and ``widths``,
    measured training ``step_ms``, ``macs`` per image and ``params``, and follows its design's
    row; the design's row gets its own step time, MACs and parameters; a design the search
    refused keeps its row with the reason in ``matched_reason`` (and no arm)."""
    if matched.empty or "design" not in matched:
        return out
    out = out.copy()
    search = matched.set_index("design")
    for design, row in search.iterrows():
        arm = row.get("attn", f"matched_{design}")
        mine, theirs = out["attn"] == design, out["attn"] == arm
        out.loc[mine, ["step_ms", "macs", "params"]] = [row.get("design_step_ms"), row.get("macs_design"),
                                                        row.get("params_design")]
        reason = "" if pd.isna(row.get("reason")) else str(row.get("reason"))
        if str(row.get("status")) == "refused" or not theirs.any():
            out.loc[mine, "matched_reason"] = reason or f"search status {row.get('status')}, no runs of {arm}"
            continue
        out.loc[theirs, ["matches", "width_mult", "widths", "step_ms", "macs", "params", "matched_reason"]] = [
            design, row.get("width_mult"), row.get("widths"), row.get("matched_step_ms"), row.get("macs_matched"),
            row.get("params_matched"), reason]
    return _beside_designs(out)


def _beside_designs(out: pd.DataFrame) -> pd.DataFrame:
    """``out`` with each row that ``matches`` a design moved right after that design's row."""
    arms = out[out.get("matches", pd.Series(index=out.index, dtype=object)).notna()] if "matches" in out else out.iloc[:0]
    rest = out.drop(arms.index)
    order = []
    for index, row in rest.iterrows():
        order.append(index)
        order += arms.index[arms["matches"] == row["attn"]].tolist()
    order += [i for i in arms.index if i not in order]
    return out.loc[order]


def per_class_table(stage: StageData) -> pd.DataFrame:
    """``accuracy_per_class.csv``: per design and class, the paired top-1 delta in percentage
    points with its 95% interval over seeds (from the per-image records)."""
    frame = stage.table("per_class").copy()
    if frame.empty:
        return frame
    for field in ("top1_delta", "top1_ci_low", "top1_ci_high"):
        frame[f"{field}_pp"] = 100 * _num(frame, field)
    return frame.drop(columns=["top1_delta", "top1_ci_low", "top1_ci_high"])


def primary_latency(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Rows of the configuration the summary reports: fp32 if measured, contiguous, eager."""
    chosen = frame
    parts = []
    for column, preferred in (("device", None), ("dtype", "fp32"), ("memory_format", "contiguous"),
                              ("compile", "eager"), ("threads", 1)):
        if column not in chosen or chosen.empty:
            continue
        values = chosen[column].dropna().unique().tolist()
        if not values:
            continue
        value = preferred if preferred in values else chosen[column].value_counts().index[0]
        chosen = chosen[chosen[column] == value]
        parts.append(f"{int(value)} thread{'s' if int(value) != 1 else ''}" if column == "threads" else str(value))
    return chosen, " ".join(parts)


def primary_module_latency(latency: pd.DataFrame, level: str = "module") -> tuple[pd.DataFrame, str]:
    """The successful latency rows at ``level`` of the one configuration that the summary and
    the latency figures show (:func:`primary_latency`), and its label."""
    if latency.empty:
        return latency, ""
    ok = ok_rows(latency)
    return primary_latency(ok[ok["level"] == level])


def primary_contended(latency: pd.DataFrame) -> pd.DataFrame:
    """The ``contended`` module-level rows of the configuration :func:`primary_module_latency` shows."""
    if latency.empty or "status" not in latency:
        return latency.iloc[0:0]
    _, label = primary_module_latency(latency)
    busy = latency[(latency["status"] == "contended") & (latency["level"] == "module")]
    for column, value in zip(("device", "dtype", "memory_format", "compile"), label.split(), strict=False):
        if column in busy:
            busy = busy[busy[column].astype(str) == value]
    return busy
