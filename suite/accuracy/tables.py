"""The accuracy stage's tables, rebuilt from its records: ``runs.csv``, ``deltas.csv``,
``per_class.csv`` and the markdown ``summary.md``.

Only the records of one comparison are tabled (:func:`suite.accuracy.identity.same_comparison`:
the same recipe, data, precision, threads, processes and training code); by default the last
record's. ``deltas.csv`` holds, per attention type, the mean top-1/top-5 (a design's, and the
baseline's beside it, over the seeds both have) and the paired delta over the baseline with its
95% t interval, unadjusted and Holm's (:func:`suite.accuracy.stats.delta_table`); with the
per-image results kept beside the records (``per_image.jsonl`` and the val manifest), each delta
also gets its image-sampling standard error and ``per_class.csv`` the paired delta per class.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from modules import BASELINE
from suite.records import RecordStore, write_text_atomic
from suite.stage import write_tables as write_stage_tables

from .identity import IDENTITY_FIELDS, matched_design, same_comparison, val_manifest_name
from .stats import delta_table, image_sampling_se, per_class_table

__all__ = ["METRICS", "RUN_COLUMNS", "LEGACY_FIELDS", "build_tables", "comparison", "tables", "write_tables",
           "per_image_results", "summary_markdown"]

METRICS = ("top1", "top5", "train_loss", "val_loss")
"""What is compared between a design and the baseline, each paired over seeds."""

RUN_COLUMNS = ["attn", "seed", "status", "top1", "top5", "val_loss", "train_loss", "epochs", "wall_s",
               "epoch_s", "params", "shared_entries", "resumed_from", "bf16", "world_size", "profile", "arch",
               "recipe", "message"]
"""The first columns of ``runs.csv``, in this order (any other record field follows)."""

LEGACY_FIELDS = {"note": "message"}
"""Record fields of older runs, by the name the tables give them now (the text of a run that is
not ``ok`` is its ``message``, as in every stage)."""


def current_record(record: dict[str, Any]) -> dict[str, Any]:
    """A run's record under the names the tables use now, without its traceback. Older runs
    named fields as :data:`LEGACY_FIELDS` says, and stored the run's thread count (a field of its
    identity) only with their environment, where it now reads as ``env_threads``."""
    current = {LEGACY_FIELDS.get(k, k): v for k, v in record.items() if k != "traceback"}
    if "threads" not in current and "env_threads" in current:
        current["threads"] = current["env_threads"]
    return current

PerImage = dict[str, dict[int, list[bool]]]
"""Top-1 right or wrong per val image, ``{attn: {seed: [bool, ...]}}``."""


def build_tables(
    records: list[dict[str, Any]], identity: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], pd.DataFrame, list[dict[str, Any]]]:
    """From per-run records (one per key): the records of one comparison (``identity``'s, by
    default the last record's; :func:`suite.accuracy.identity.same_comparison`), the runs
    table (baseline first, then by attention type and seed) and the paired delta table. Runs
    of different recipes, data, precision, thread or process counts or code are never compared."""
    records = [current_record(r) for r in records]
    if records:
        identity = identity or {k: records[-1].get(k) for k in IDENTITY_FIELDS}
        records = same_comparison(records, identity)
    runs = pd.DataFrame(records)
    if runs.empty:
        return records, runs, []
    ordered = [c for c in RUN_COLUMNS if c in runs.columns]
    ordered += [c for c in runs.columns if c not in RUN_COLUMNS and c != "recipe_config"]
    runs = runs.assign(_baseline_last=runs["attn"] != BASELINE).sort_values(["_baseline_last", "attn", "seed"])
    arms = {matched_design(a): a for a in runs["attn"].unique() if matched_design(a)}
    return records, runs[ordered].reset_index(drop=True), delta_table(records, baseline=BASELINE, metrics=METRICS,
                                                                      matched=arms)


def comparison(records: list[dict[str, Any]], folder: Path, identity: dict[str, Any] | None = None
               ) -> tuple[list[dict[str, Any]], dict[str, pd.DataFrame], list[dict[str, Any]]]:
    """The records of one comparison (``identity``'s, by default the last record's), its tables
    (``runs.csv``, ``deltas.csv`` and, with per-image results in ``folder``, ``per_class.csv``)
    and the delta entries; no tables without a finished run."""
    records, runs, deltas = build_tables(records, identity)
    if runs.empty:
        return records, {}, deltas
    frames = {"runs.csv": runs}
    correct, manifest = per_image_results(folder, records)
    if manifest is not None:
        sampling = image_sampling_se(correct, BASELINE)
        for entry in deltas:
            entry["top1_se_images"] = sampling.get(entry["attn"], math.nan)
        per_class = per_class_table(correct, manifest["labels"], manifest["classes"], BASELINE)
        frames["per_class.csv"] = pd.DataFrame(per_class)
    frames["deltas.csv"] = pd.DataFrame(deltas)
    return records, frames, deltas


def tables(records: list[dict[str, Any]], folder: Path) -> dict[str, pd.DataFrame]:
    """The accuracy stage's tables from its records (one per key) and the per-image results in
    ``folder``: those of the last record's comparison (:func:`comparison`)."""
    return comparison(records, folder)[1]


def write_tables(store: RecordStore, out: Path, identity: dict[str, Any] | None = None) -> str:
    """Rewrite ``runs.csv``, ``deltas.csv``, ``per_class.csv`` and ``summary.md`` from the
    records of one comparison (``identity``'s, by default the last record's); returns the
    summary's text."""
    records, frames, deltas = comparison(store.latest_by_key(), out, identity)
    if not frames:
        return "no finished runs"
    write_stage_tables(out, frames)
    text = summary_markdown(records, deltas)
    write_text_atomic(out / "summary.md", text)
    return text


def per_image_results(out: Path, records: list[dict[str, Any]]) -> tuple[PerImage, dict[str, Any] | None]:
    """Top-1 right or wrong per val image (:data:`PerImage`) for the finished runs among
    ``records``, and the manifest of their val images (None without per-image records)."""
    path = out / "per_image.jsonl"
    finished = {r["key"] for r in records if r.get("status") == "ok"}
    if not path.exists() or not finished:
        return {}, None
    lines = [line for line in RecordStore(path).latest_by_key() if line.get("key") in finished]
    val_ids = {line["val_id"] for line in lines}
    if len(val_ids) != 1 or not (out / val_manifest_name(next(iter(val_ids)))).exists():
        return {}, None
    manifest = json.loads((out / val_manifest_name(val_ids.pop())).read_text())
    correct: PerImage = {}
    for line in lines:
        correct.setdefault(line["attn"], {})[int(line["seed"])] = [c == "1" for c in line["correct"]]
    return correct, manifest


def _missing(value: Any) -> bool:
    """Whether a table cell holds no number (None or NaN)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _pct(value: Any, signed: bool = False) -> str:
    """A fraction as a percentage with two decimals (``n/a`` when missing)."""
    if _missing(value):
        return "n/a"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def _p(value: Any) -> str:
    """A p-value with three decimals, or in scientific notation below 0.001 (``n/a`` when missing)."""
    if _missing(value):
        return "n/a"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def _verdict(row: dict[str, Any]) -> str:
    """What a design's paired top-1 delta says: a significant gain or loss, not significant, or
    why there is no verdict; with the runs that diverged."""
    if row.get("top1_reason"):
        verdict = f"no verdict: {row['top1_reason']}"
    elif row["top1_significant"]:
        verdict = "significant " + ("gain" if row["top1_delta"] > 0 else "loss")
    else:
        verdict = "not significant"
    if row.get("diverged"):
        verdict += f" ({row['diverged']} diverged, scored at chance)"
    return verdict


def _interval(row: dict[str, Any], low: str, high: str) -> str:
    """``[low, high]`` in signed percentage points (``n/a`` inside when missing)."""
    return f"[{_pct(row.get(low), True)}, {_pct(row.get(high), True)}]"


def _summary_row(row: dict[str, Any]) -> str:
    """One design's line of the summary table (the baseline's holds only its means)."""
    if row["attn"] == BASELINE:
        return (f"| {BASELINE} (baseline) | {row['runs']} | {_pct(row['top1_mean'])} | {_pct(row['top5_mean'])} "
                "| | | | | | | |")
    return (f"| {row['attn']} | {row['runs']} | {_pct(row['top1_mean'])} | {_pct(row['top5_mean'])} | "
            f"{_pct(row.get('top1_baseline_mean'))} | {_pct(row['top1_delta'], True)} | "
            f"{_interval(row, 'top1_ci_holm_low', 'top1_ci_holm_high')} | "
            f"{_interval(row, 'top1_ci_low', 'top1_ci_high')} | {_p(row.get('top1_p'))} | "
            f"{_p(row.get('top1_p_holm'))} | {_verdict(row)} |")


def summary_markdown(records: list[dict[str, Any]], table: list[dict[str, Any]]) -> str:
    """A markdown table: mean top-1/top-5, the baseline's top-1 on the same seeds, the paired
    top-1 delta with its Holm and unadjusted 95% CIs, the p-values and a verdict."""
    first = records[0]
    wall = sum(float(r.get("wall_s") or 0) for r in records)
    lines = [
        f"# Accuracy: {first.get('profile')} profile, {first.get('arch')} on {Path(str(first.get('data'))).name}",
        "",
        f"{len(records)} runs, {wall / 60:.1f} min of training and evaluation in all; top-1/top-5 in %; "
        "delta = mean over seeds of (attention - baseline) at the same seed; "
        "a design's means and the baseline top-1 beside it are over the paired seeds (so top-1 minus "
        "baseline top-1 is the delta), the baseline's own row over all its seeds; "
        "p: paired t-test, Holm-adjusted over the designs (the verdict uses it); "
        "95% CI (Holm): t interval at the level of the Holm step that decides the design, which excludes 0 "
        "exactly when the verdict is significant; 95% CI (unadjusted): t interval of the design alone; "
        "a diverged run is scored at chance level.",
        "",
        "| attention | runs | top-1 | top-5 | baseline top-1 | top-1 delta | 95% CI (Holm) | 95% CI (unadjusted) "
        "| p | p (Holm) | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *(_summary_row(row) for row in table),
    ]
    bad = [r for r in records if r.get("status") != "ok"]
    if bad:
        lines += ["", "Runs that did not finish: " + ", ".join(f"{r['attn']} seed {r['seed']} ({r['status']})" for r in bad)]
    return "\n".join(lines) + "\n"
