"""``summary.csv``: one row per attention type, with the columns each stage contributes.

The rows are the types any stage's report table names (the baseline excluded). Every row says
which stages measured the type (``stages``), what went wrong where (``problems``) and its
``status``; then each measuring stage fills its own columns (:attr:`suite.stages.StageSpec.summary`
and ``summary_columns``) from the report tables of all stages (the cost stage reads which
backbone the accuracy stage trained). A type none of whose headline columns
(``headline_columns``) has a value is ``no results`` (or ``failed``).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from modules import BASELINE

from ..records import NOT_FAILURES
from ..stages import StageSpec, load_function, measuring_stages
from .tables import ok_rows, primary_latency, primary_module_latency

__all__ = ["BASE_COLUMNS", "summary_columns", "summary_table", "cost_summary", "latency_summary",
           "memory_summary", "accuracy_summary"]

BASE_COLUMNS: tuple[str, ...] = ("attn", "family", "kind", "placement", "status", "stages", "problems")
"""The columns every summary has, before the stages' own."""

Rows = dict[str, dict[str, Any]]
"""The summary's rows by attention type."""


def summary_columns(specs: dict[str, StageSpec] | None = None) -> list[str]:
    """The columns of ``summary.csv``: :data:`BASE_COLUMNS`, then each stage's in stage order."""
    specs = measuring_stages() if specs is None else specs
    return [*BASE_COLUMNS, *(c for spec in specs.values() for c in spec.summary_columns)]


def _type_names(frames: dict[str, pd.DataFrame]) -> list[str]:
    """Every attention type the stages' tables name, in the order first seen (the baseline left out)."""
    names: list[str] = []
    for frame in frames.values():
        if not frame.empty and "attn" in frame:
            names += [n for n in frame["attn"].dropna().astype(str).unique() if n != BASELINE and n not in names]
    return names


def _note_statuses(rows: Rows, frame: pd.DataFrame, stage: str) -> None:
    """Record that ``stage`` measured each type, and the statuses of its rows that are not ok."""
    if frame.empty or "attn" not in frame:
        return
    for name, group in frame.groupby("attn"):
        if name not in rows:
            continue
        row = rows[name]
        row["stages"].append(stage)
        if "status" in group:
            bad = group[group["status"].astype(str) != "ok"]
            if (~bad["status"].isin(NOT_FAILURES)).any():
                row["_failed"] = True
            if len(bad):
                counts = ", ".join(f"{n} {s}" for s, n in bad["status"].value_counts().items())
                row["problems"].append(f"{stage}: {counts}")


def _missing(value: Any) -> bool:
    """Whether a summary cell holds no value (``None`` or NaN)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _finish(row: dict[str, Any], headline: list[str]) -> dict[str, Any]:
    """The row with its stages and problems as text and its status: ``partial`` where a stage
    failed for it, ``no results`` (``failed``) where none of the ``headline`` columns has a value."""
    failed = row.pop("_failed", False)
    row["stages"] = ",".join(row["stages"])
    row["problems"] = "; ".join(row["problems"])
    row["status"] = "partial" if failed else "ok"
    if all(_missing(row.get(k)) for k in headline):
        row["status"] = "failed" if failed else "no results"
    return row


def summary_table(frames: dict[str, pd.DataFrame], specs: dict[str, StageSpec] | None = None) -> pd.DataFrame:
    """The summary from each stage's main report table (``frames``: stage -> frame), sorted by
    the forward latency ratio (types without one last, then by name)."""
    specs = measuring_stages() if specs is None else specs
    rows: Rows = {n: {"attn": n, "stages": [], "problems": []} for n in _type_names(frames)}
    for name, frame in frames.items():
        _note_statuses(rows, frame, name)
    for name, spec in specs.items():
        if spec.summary and not frames.get(name, pd.DataFrame()).empty:
            load_function(spec.summary)(rows, frames)
    headline = [c for spec in specs.values() for c in spec.headline_columns]
    summary = pd.DataFrame([_finish(row, headline) for row in rows.values()], columns=summary_columns(specs))
    order = summary["latency_ratio_fwd"].fillna(math.inf) if "latency_ratio_fwd" in summary and len(summary) \
        else summary["attn"]
    return summary.assign(_order=order).sort_values(["_order", "attn"]).drop(columns="_order").reset_index(drop=True)


def cost_summary(rows: Rows, frames: dict[str, pd.DataFrame]) -> None:
    """Module level: parameters and MACs over the 3x3 conv (medians over shapes), and the widest
    input's totals; model level, on the backbone the accuracy stage trained when the cost stage
    counted it (else the most counted one): what the attention adds."""
    cost = frames["cost"]
    module = ok_rows(cost[cost["level"] == "module"])
    for name, group in module.groupby("attn"):
        if name not in rows:
            continue
        row = rows[name]
        for field in ("family", "kind", "placement"):
            row[field] = group[field].iloc[0] if field in group else None
        row["params_over_conv3x3"] = group["params_over_conv3x3"].median()
        row["macs_over_conv3x3"] = group["macs_over_conv3x3"].median()
        widest = group[group["channels"] == group["channels"].max()]
        row["module_channels"] = int(widest["channels"].iloc[0])
        row["params_module"] = widest["params_total"].iloc[0]
        row["macs_module"] = widest.sort_values(["height", "width"])["macs_fvcore"].iloc[-1]
    model = ok_rows(cost[cost["level"] == "model"])
    if model.empty:
        return
    accuracy = frames.get("accuracy", pd.DataFrame())
    trained = accuracy["arch"].dropna().unique().tolist() if "arch" in accuracy else []
    counted = model["arch"].value_counts()
    arch = next((a for a in trained if a in counted.index), counted.index[0])
    for name, group in model[model["arch"] == arch].groupby("attn"):
        if name not in rows:
            continue
        row = rows[name]
        for field in ("family", "kind", "placement"):
            if pd.isna(row.get(field)) and field in group:
                row[field] = group[field].iloc[0]
        row["model_arch"] = arch
        for field in ("extra_params", "extra_params_pct", "extra_macs_fvcore", "extra_macs_pct"):
            row[field] = group[field].iloc[0]


def latency_summary(rows: Rows, frames: dict[str, pd.DataFrame]) -> None:
    """The shown configuration's module ratios (median, min and max over shapes), the number of
    contended rows, and the model-level ratios per backbone."""
    latency = frames["latency"]
    module, config = primary_module_latency(latency)
    for name, group in module.groupby("attn"):
        if name not in rows:
            continue
        forward = group[group["mode"] == "forward"]["ratio"]
        train = group[group["mode"] == "train"]["ratio"]
        row = rows[name]
        row["latency_config"] = config
        row["latency_shapes"] = int(len(forward) or len(train))
        if len(forward):
            row["latency_ratio_fwd"] = forward.median()
            row["latency_ratio_fwd_min"] = forward.min()
            row["latency_ratio_fwd_max"] = forward.max()
            if "passes" in group:
                row["latency_passes_fwd"] = group[group["mode"] == "forward"]["passes"].median()
        if len(train):
            row["latency_ratio_train"] = train.median()
    if "status" in latency:
        contended = latency[latency["status"] == "contended"].groupby("attn").size()
        for name, count in contended.items():
            if name in rows:
                rows[name]["latency_contended"] = int(count)
    ok = ok_rows(latency)
    model, _ = primary_latency(ok[ok["level"] == "model"])
    for name, group in model.groupby("attn"):
        if name in rows:
            for mode, field in (("forward", "model_latency_ratio_fwd"), ("train", "model_latency_ratio_train")):
                values = group[group["mode"] == mode]["ratio"]
                if len(values):
                    rows[name][field] = values.median()
            rows[name]["model_latency_fwd_by_arch"] = _by_arch(group[group["mode"] == "forward"])
    _model_runtimes(rows, ok[ok["level"] == "model"])
    _impossible_ratios(rows, ok[ok["level"] == "model"])


RUNTIME_LABELS = {"eager": "eager", "compile": "inductor", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
"""How the report names each value of the latency stage's runtime axis (its ``compile`` column)."""


def _kind(name: str, row: dict[str, Any]) -> str | None:
    """The design's kind: the cost stage's column, else the registry's (None for an unknown type)."""
    if not _missing(row.get("kind")):
        return str(row["kind"])
    import modules

    try:
        return modules.get_info(name).kind
    except ValueError:
        return None


def _model_runtimes(rows: Rows, model: pd.DataFrame) -> None:
    """Per runtime (the ``compile`` axis), the forward network-over-backbone ratio, median over
    the backbones: ``model_latency_ratio_fwd_<runtime>`` and one text column
    ``model_latency_fwd_by_runtime`` (e.g. ``eager 1.08; inductor 1.03; ONNX Runtime 1.12``).
    Other axes are held at the summary's configuration (fp32, contiguous where measured)."""
    if model.empty or "compile" not in model:
        return
    for column, preferred in (("dtype", "fp32"), ("memory_format", "contiguous")):
        if column in model and preferred in set(model[column].dropna()):
            model = model[model[column] == preferred]
    forward = model[model["mode"] == "forward"]
    for name, group in forward.groupby("attn"):
        if name not in rows:
            continue
        parts = []
        for runtime, label in RUNTIME_LABELS.items():
            values = group[group["compile"] == runtime]["ratio"]
            if len(values):
                rows[name][f"model_latency_ratio_fwd_{runtime}"] = values.median()
                parts.append(f"{label} {values.median():.3g}")
        rows[name]["model_latency_fwd_by_runtime"] = "; ".join(parts)


def _impossible_ratios(rows: Rows, model: pd.DataFrame) -> None:
    """``model_latency_below_one``: the model-level rows of an add-only design (kind ``gate``: it
    inserts modules and removes nothing, so its network does strictly more work than the
    backbone) whose whole interval lies below 1. Such a row measures the harness, not the
    design (a systematic difference between how the two networks were timed); the report shows
    it flagged, never as a plain number."""
    if model.empty or "ratio_ci_high" not in model:
        return
    below = model[pd.to_numeric(model["ratio_ci_high"], errors="coerce") < 1]
    for name, group in below.groupby("attn"):
        if name not in rows or _kind(name, rows[name]) != "gate":
            continue
        rows[name]["model_latency_below_one"] = "; ".join(
            f"{r['arch']} {r.get('compile', 'eager')} {r['mode']} {r['ratio']:.3g} "
            f"[{r['ratio_ci_low']:.3g}, {r['ratio_ci_high']:.3g}]" for r in group.to_dict("records"))


def _by_arch(forward: pd.DataFrame) -> str:
    """``arch ratio [low, high]`` per backbone, e.g. ``resnet50 1.08 [1.06, 1.10]; ...``."""
    parts = []
    for record in forward.sort_values("arch").to_dict("records"):
        text = f"{record['arch']} {record['ratio']:.3g}"
        if not _missing(record.get("ratio_ci_low")) and not _missing(record.get("ratio_ci_high")):
            text += f" [{record['ratio_ci_low']:.3g}, {record['ratio_ci_high']:.3g}]"
        parts.append(text)
    return "; ".join(parts)


def memory_summary(rows: Rows, frames: dict[str, pd.DataFrame]) -> None:
    """Bytes saved for backward over the input (median) and at most, and the largest step peak."""
    for name, group in ok_rows(frames["memory"]).groupby("attn"):
        if name not in rows:
            continue
        row = rows[name]
        saved = group["act_saved_bytes"].dropna() if "act_saved_bytes" in group else pd.Series(dtype=float)
        if len(saved):
            row["act_saved_over_input"] = group["act_saved_over_input"].median()
            row["act_saved_bytes_max"] = saved.max()
        peak = group["step_peak_bytes"].dropna() if "step_peak_bytes" in group else pd.Series(dtype=float)
        if len(peak):
            row["step_peak_bytes_max"] = peak.max()


def accuracy_summary(rows: Rows, frames: dict[str, pd.DataFrame]) -> None:
    """The top-1 delta over the baseline with its interval, seeds and Holm-adjusted p-value."""
    for record in frames["accuracy"].to_dict("records"):
        name = record["attn"]
        if name in rows and not _missing(record.get("matches")):
            rows[name]["kind"] = f"backbone widened to {record['matches']}'s training step"
        if name in rows:
            for field in ("top1_delta_pp", "top1_ci_low_pp", "top1_ci_high_pp", "n_seeds", "top1_p_holm",
                          "top1_significant"):
                rows[name][field] = record.get(field)
