"""The profile's ``README.md``: summary table, figures with how to read them, environment,
conventions and what was missing."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from .load import StageData

__all__ = ["summary_markdown", "environment_markdown", "render_readme", "across_machines_block", "FIGURE_TEXT"]

FIGURE_TEXT: dict[str, tuple[str, str]] = {
    "cost_benefit": (
        "Cost vs benefit",
        "Each point is an attention type: its top-1 delta over the baseline (same seeds, paired) "
        "with the 95% t interval as error bar, against what it costs: the forward latency over a 3x3 "
        "conv of the same shape (left) and the extra MACs over the backbone (right). Up and to the "
        "left is better; the red diamonds joined by a step line are the Pareto front (no other type "
        "is both cheaper and more accurate). An interval that crosses the dashed zero line means the "
        "gain is not distinguishable from seed noise; types without an interval ran one seed. The MACs are counted on the backbone named on the axis, "
        "which can differ from the one the accuracy recipe trains (named in the caption).",
    ),
    "latency_heatmap": (
        "Latency ratio across shapes",
        "One row per attention type, one column per input shape (batch, channels, resolution); the "
        "cell is the block's median latency divided by that of a 3x3 conv C->C on the same input, "
        "timed in alternation in each of several fresh worker processes (rounds); `latency.csv` has the "
        "95% interval of every ratio across the rounds (`ratio_ci_low`, `ratio_ci_high`) and `passes`, "
        "the time over one copy of the input. Blue is cheaper than the conv, red slower (the colour is "
        "log2 of the ratio). Rows are sorted by the median forward ratio; a row whose colour changes "
        "across columns scales differently from a convolution. A grey cell was not measured or failed; "
        "'busy' marks a configuration that never got a clean measurement because something else used "
        "the CPU (status `contended`; see `latency.csv`'s `status` and `message`).",
    ),
    "counter_agreement": (
        "Counter agreement",
        "For each type, each counter's MACs divided by the closed form (`macs_formula`), median over "
        "the shapes. Points on the black line at 1 agree. Counters as shipped skip ops (fvcore ignores "
        "or lacks handles for elementwise ops, reductions and activations; thop has no rule for many "
        "activations; torch's FlopCounterMode counts only matmul/conv), so they fall left of 1: the "
        "distance is the share of the block's work they miss. Points at the dotted floor counted zero.",
    ),
    "latency_scaling": (
        "Latency scaling",
        "Median latency (log) against each axis the latency sweep varied, the other axes held at "
        "their largest value; one coloured line per type, labelled at its right end, and the 3x3 conv "
        "reference as a black dashed line. A line parallel to the reference scales like a convolution; "
        "a flatter line is overhead-bound (fixed cost per call), a steeper one grows faster than the conv.",
    ),
    "model_latency": (
        "What a network pays",
        "Forward latency of a whole backbone (batch 1, 224 px) with the attention type inserted where "
        "`build_model` puts it, divided by the same backbone without attention, timed in the same "
        "worker processes; the bar is the 95% interval across rounds (fresh processes). 1.10 means the "
        "network runs 10% slower. A type `build_model` refuses for a backbone is listed in the panel's "
        "title, not drawn.",
    ),
    "memory": (
        "Memory",
        "Left: bytes one training step saves for backward (activations kept alive until the backward "
        "pass); right: the memory one step added (CUDA peak allocated memory on a GPU, growth of the "
        "peak RSS of a fresh process on a CPU: coarse, page-granular, and zero when the allocator "
        "reused memory). Both at the largest input measured.",
    ),
}

CONVENTIONS = """\
* **MACs vs FLOPs.** `macs_*` columns count one multiply-accumulate as 1 (fvcore's and thop's
  convention for a fused multiply-add); `flops_*` columns count 2 per MAC (torch's
  `FlopCounterMode`). The closed forms (`macs_formula`) follow `modules/_base.py`: conv / linear /
  matmul MACs without bias, batch norm 2 per element (eval), reductions 1 per element read,
  elementwise ops and activations 1 per element written, data movement free.
* **What each counter skips** (per row in `cost.csv`, as `op=MACs;...`):
  `fvcore_shipped_gap` is what fvcore as shipped misses or prices differently (elementwise ops,
  reductions and sigmoid are unsupported, relu ignored); `thop_shipped_gap` the same for thop as
  shipped (functional ops are invisible to its module hooks, several activations have no rule);
  `torch_missed` what `FlopCounterMode` does not count (anything but matmul/conv);
  `uncounted_ops` what no counter, ours included, accounts for (empty for every registered type).
  `macs_fvcore` / `macs_thop` are the two libraries with our handles and rules; they are what
  `macs_*` in the summary means. `macs_fvcore_shipped_conv_linear` reproduces torchvision's
  published GMACs.
* **References.** Module level: a 3x3 convolution C -> C without bias on the same input
  (`conv3x3_params` = 9 C^2, `conv3x3_macs` = 9 C^2 H W per image); the latency stage times exactly
  this conv interleaved with the block. Model level: the same architecture without attention
  (`backbone_*`); `extra_*` is what the attention adds, `*_pct` relative to the backbone.
* **Units.** `*_ms` milliseconds, `*_bytes` bytes, `*_pct` percent, `*_pp` percentage points;
  `top1_pct` is top-1 accuracy in % (a design's over the seeds it shares with the baseline, whose
  mean on those seeds is `top1_baseline_pct`); the accuracy delta is the mean over seeds of
  (attention - baseline) at the same seed, with a 95% interval from the t distribution (`n_seeds`
  pairs), unadjusted (`top1_ci_low_pp`, `top1_ci_high_pp`) and Holm's (`top1_ci_holm_low_pp`,
  `top1_ci_holm_high_pp`: at the level of the Holm step that decides the design, `top1_ci_holm_level`,
  so it excludes 0 exactly when the verdict is significant); `top1_p_holm` is the paired t-test's
  p-value Holm-adjusted over the designs of the sweep, and `top1_significant` means it is below
  0.05. Fewer than 3 pairs, or differences that are all equal, give no interval and no verdict; a
  diverged run is scored at chance level.
* **Latency.** Every configuration is timed in several rounds, each in a fresh worker process
  (1 intra-op thread on CPU unless stated, glibc's mmap and trim thresholds raised, warm-up until
  the process's memory stops growing); a round whose process did not get the CPU it asked for is
  discarded and measured again, and a configuration without enough clean rounds is `contended`,
  with no numbers. `ratio` is the geometric mean over rounds of each round's median of
  adjacent module / reference visits, with a 95% t interval on the log scale (`ratio_ci_low`,
  `ratio_ci_high`); `passes` is the same against one copy of the input (a read and a write
  pass): memory-bound gates are best compared in passes. `model_latency_*` is the whole
  backbone's latency with the attention over the backbone without it (`model_latency_fwd_by_arch`
  per backbone with its interval; `model_latency_ratio_fwd` the median over the backbones;
  `model_latency_ratio_fwd_<runtime>` per runtime: eager, compile = torch.compile with inductor,
  onnxruntime). A design of kind `gate` only adds work to the network, so its ratio cannot be
  below 1; a row whose whole interval is below 1 is listed in `model_latency_below_one` and shown
  **flagged** in the summary instead of as a number: it measures a difference in how the two
  networks were timed, not the design.
* **Summary aggregation.** `latency_ratio_fwd` / `latency_ratio_train`, `params_over_conv3x3`,
  `macs_over_conv3x3` and `act_saved_over_input` are medians over the shapes measured
  (`latency_ratio_fwd_min` / `_max` give the spread, `latency_config` the device, dtype, memory
  format and compile mode they come from); `params_module` / `macs_module` are at the largest
  channel count and input of the cost stage (`module_channels`); the `*_bytes_max` columns at
  the largest input of the memory stage.
"""


def _fmt(value: Any, kind: str = "g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "x":
        return f"{value:.3g}x"
    if kind == "pct":
        return f"{value:.3g}%"
    if kind == "pp":
        return f"{value:+.2f}"
    if kind == "mib":
        return f"{value / 2**20:.3g}"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def summary_markdown(summary: pd.DataFrame) -> str:
    """The summary as a markdown table (a readable subset of ``summary.csv``'s columns)."""
    if summary.empty:
        return "_No attention type has any result._\n"
    arch = summary["model_arch"].dropna()
    arch = arch.iloc[0] if len(arch) else "backbone"
    header = ["attention", "kind", "params / conv3x3", "MACs / conv3x3", f"extra params ({arch})",
              f"extra MACs ({arch})", "latency fwd / conv3x3", "fwd passes", "train / conv3x3",
              "network fwd / backbone", "saved for bwd / input",
              "top-1 delta, pp [95% CI, unadjusted]", "seeds", "p (Holm)", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary.to_dict("records"):
        ci = ""
        if _fmt(row.get("top1_delta_pp")):
            ci = _fmt(row["top1_delta_pp"], "pp")
            if _fmt(row.get("top1_ci_low_pp")):
                ci += f" [{_fmt(row['top1_ci_low_pp'], 'pp')}, {_fmt(row['top1_ci_high_pp'], 'pp')}]"
        extra_p = _fmt(row.get("extra_params"), "int")
        if extra_p and _fmt(row.get("extra_params_pct")):
            extra_p += f" ({_fmt(row['extra_params_pct'], 'pct')})"
        extra_m = _fmt(row.get("extra_macs_pct"), "pct")
        status = row.get("status") or ""
        if row.get("problems"):
            status += f": {row['problems']}"
        cells = [f"`{row['attn']}`", _fmt(row.get("kind")), _fmt(row.get("params_over_conv3x3"), "x"),
                 _fmt(row.get("macs_over_conv3x3"), "x"), extra_p, extra_m,
                 _fmt(row.get("latency_ratio_fwd"), "x"), _fmt(row.get("latency_passes_fwd")),
                 _fmt(row.get("latency_ratio_train"), "x"), _network_cell(row),
                 _fmt(row.get("act_saved_over_input"), "x"), ci, _fmt(row.get("n_seeds"), "int"),
                 _fmt(row.get("top1_p_holm")), status]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


IMPOSSIBLE_NOTE = ("below 1 beyond its interval although the design only adds work: a timing artefact, "
                   "not a speed-up (see Conventions)")


def _network_cell(row: dict[str, Any]) -> str:
    """The summary's "network fwd / backbone" cell: the ratio per backbone, or, where an
    add-only design reads below 1 beyond its interval, the flag instead of the plain number."""
    if _fmt(row.get("model_latency_below_one")):
        return f"**flagged**: {row['model_latency_below_one']}, {IMPOSSIBLE_NOTE}"
    return _fmt(row.get("model_latency_fwd_by_arch"))


def control_markdown(latency: pd.DataFrame) -> str:
    """The model-level A/A control (``attn`` none: the backbone against a second copy of itself,
    built and timed as a design is): its ratios say how far from 1 the harness alone reads, the
    floor under every model-level ratio. Empty when the latency stage ran no control."""
    if latency.empty or "level" not in latency:
        return ""
    control = latency[(latency["attn"] == "none") & (latency["level"] == "model")
                      & (latency["status"].astype(str) == "ok")]
    if control.empty:
        return ""
    parts = []
    for row in control.sort_values(["arch", "compile"]).to_dict("records"):
        runtime = _runtime_label(row.get("compile"))
        parts.append(f"{row['arch']} {runtime} {row['mode']} {row['ratio']:.3g} "
                     f"[{row['ratio_ci_low']:.3g}, {row['ratio_ci_high']:.3g}]")
    return ("A/A control: the backbone against a second copy of itself, built and timed as a design is "
            "(ratio 1 if the harness adds no bias; its interval is the noise every model-level ratio carries): "
            + "; ".join(parts) + ".\n")


CBAM_NOTE = (
    "Why CBAM costs more than its channel and spatial halves together (`reports/cbam_halves`, "
    "`python -m benchmarks.cbam_halves`): each half alone touches two input-sized tensors, its input and "
    "its output; CBAM touches three (input, channel-refined map, output). At batch 8, 256 channels and "
    "56 px (24.5 MiB a tensor) two fit the last-level cache and three do not, so CBAM's reductions and "
    "multiplies run from memory: 1.40x the halves' sum with the harness's steady allocator, and 2.88x with "
    "glibc's default one, which maps and faults in every new output afresh. Without autograd our module "
    "scales the channel-refined map in place (1.14x); in training that map is kept for the backward pass.")


def ops_markdown(ops: pd.DataFrame, top: int = 3) -> str:
    """Where the time goes: per design, runtime and configuration of the ops stage, its ``top``
    ops by share of the step's self time (torch.profiler's, or ONNX Runtime's node profile), and,
    where CBAM was profiled, why it costs more than its halves. Empty without ops rows."""
    if ops.empty or "rank" not in ops:
        return ""
    ok = ops[(ops["status"].astype(str) == "ok") & (ops["role"] == "module") & (ops["rank"] <= top)]
    if ok.empty:
        return ""
    lines = ["Self time by op of each design's step (profiler times carry the profiler's overhead: read the "
             "shares, and the latency stage for the time); `ops.csv` has the top 5 per configuration.", "",
             "| attention | runtime | configuration | top ops (share of the step) | step self time, ms |",
             "|---|---|---|---|---|"]
    keys = [c for c in ("attn", "compile", "level", "arch", "mode", "batch", "channels", "size") if c in ok]
    for values, group in ok.groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, values, strict=True))
        shape = (f"{row.get('arch')} b{row.get('batch')} {row.get('size')} px" if row.get("level") == "model"
                 else f"b{row.get('batch')} c{row.get('channels')} {row.get('size')} px")
        tops = ", ".join(f"`{r['op']}` {100 * float(r['share']):.0f}%" for r in group.sort_values("rank").to_dict("records"))
        total = group["total_self_ms_per_call"].iloc[0] if "total_self_ms_per_call" in group else None
        lines.append(f"| `{row['attn']}` | {_runtime_label(row.get('compile'))} | {row.get('mode')} {shape} | "
                     f"{tops} | {_fmt(total)} |")
    notes = ["", CBAM_NOTE] if (ok["attn"] == "cbam").any() else []
    return "\n".join([*lines, *notes]) + "\n"


def _runtime_label(value: Any) -> str:
    """How the report names a runtime (the latency table's ``compile`` column)."""
    from .summary import RUNTIME_LABELS

    return RUNTIME_LABELS.get(str(value), str(value)) if _fmt(value) else "eager"


def _signed(value: float) -> str:
    """``value`` with its sign and two decimals, a rounded zero as ``+0.00``."""
    return f"{round(float(value), 2) + 0.0:+.2f}"


def runtime_markdown(summary: pd.DataFrame) -> str:
    """What a network pays under each runtime the latency stage measured (forward, network over
    the same backbone under the same runtime, median over the backbones), and which designs
    gain or lose most when compiled or exported; empty when only one runtime was measured."""
    from .summary import RUNTIME_LABELS

    runtimes = [r for r in RUNTIME_LABELS if f"model_latency_ratio_fwd_{r}" in summary
                and summary[f"model_latency_ratio_fwd_{r}"].notna().any()]
    if len(runtimes) < 2 or "eager" not in runtimes:
        return ""
    header = ["attention", *(RUNTIME_LABELS[r] for r in runtimes),
              *(f"{RUNTIME_LABELS[r]} - eager" for r in runtimes if r != "eager")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = summary[summary["model_latency_ratio_fwd_eager"].notna()].to_dict("records")
    for row in rows:
        eager = row["model_latency_ratio_fwd_eager"]
        values = [row.get(f"model_latency_ratio_fwd_{r}") for r in runtimes]
        changes = [pd.to_numeric(row.get(f"model_latency_ratio_fwd_{r}"), errors="coerce") - eager
                   for r in runtimes if r != "eager"]
        cells = [f"`{row['attn']}`", *(_fmt(v, "x") for v in values),
                 *("" if pd.isna(c) else _signed(c) for c in changes)]
        lines.append("| " + " | ".join(cells) + " |")
    text = ["Network forward latency over the same backbone without attention under the same runtime "
            "(median over the backbones measured); the last columns are the change against eager: "
            "negative means the design costs relatively less once compiled or exported.", "",
            "\n".join(lines), ""]
    for runtime in (r for r in runtimes if r != "eager"):
        change = {row["attn"]: row.get(f"model_latency_ratio_fwd_{runtime}") - row["model_latency_ratio_fwd_eager"]
                  for row in rows if not pd.isna(row.get(f"model_latency_ratio_fwd_{runtime}"))}
        if change:
            gains, losses = min(change, key=change.get), max(change, key=change.get)
            text.append(f"Under {RUNTIME_LABELS[runtime]} against eager, the smallest change of the ratio is "
                        f"`{gains}`'s ({_signed(change[gains])}), the largest `{losses}`'s ({_signed(change[losses])}).")
    return "\n".join(text) + "\n"


_ENV_ROWS = [
    ("date", "date"), ("commit", "commit"), ("cpu", "CPU"), ("cpu_count", "CPU cores"),
    ("threads", "torch threads"), ("gpu", "GPU"), ("gpu_driver", "GPU driver"), ("cuda", "CUDA"),
    ("python", "Python"), ("torch_version", "torch"), ("torchvision_version", "torchvision"),
    ("fvcore_version", "fvcore"), ("thop_version", "thop"), ("timm_version", "timm"),
    ("numpy_version", "numpy"), ("pandas_version", "pandas"), ("platform", "platform"),
]


def environment_markdown(envs: dict[str, dict[str, Any]], extra: dict[str, dict[str, str]]) -> str:
    """One column per stage that ran: the environment its first record carried."""
    stages = [s for s in envs if envs[s]]
    if not stages:
        return "_No stage recorded an environment._\n"
    lines = ["| | " + " | ".join(stages) + " |", "|---|" + "---|" * len(stages)]
    keys = [(k, label) for k, label in _ENV_ROWS if any(k in envs[s] for s in stages)]
    extra_keys = sorted({k for s in stages for k in extra.get(s, {})})
    for key, label in keys:
        lines.append(f"| {label} | " + " | ".join(str(envs[s].get(key, "")) or "" for s in stages) + " |")
    for key in extra_keys:
        lines.append(f"| {key} | " + " | ".join(str(extra.get(s, {}).get(key, "")) for s in stages) + " |")
    return "\n".join(lines) + "\n"


def stages_markdown(stages: dict[str, StageData]) -> str:
    lines = ["| stage | state | notes |", "|---|---|---|"]
    for name, data in stages.items():
        lines.append(f"| {name} | {data.state} | {'; '.join(data.notes) or ''} |")
    return "\n".join(lines) + "\n"


def _pp_interval(row: dict[str, Any], delta: str, low: str, high: str, scale: float = 1.0) -> str:
    if not _fmt(row.get(delta)):
        return ""
    text = f"{scale * float(row[delta]):+.2f}"
    if _fmt(row.get(low)):
        text += " " + _pp_bounds(row, low, high, scale)
    return text


def _pp_bounds(row: dict[str, Any], low: str, high: str, scale: float = 1.0) -> str:
    """``[low, high]`` signed with two decimals, empty without an interval."""
    if not _fmt(row.get(low)):
        return ""
    return f"[{scale * float(row[low]):+.2f}, {scale * float(row[high]):+.2f}]"


def _accuracy_name(row: dict[str, Any]) -> str:
    """The accuracy table's first cell: the type, and for a width-matched arm what it matches."""
    if _fmt(row.get("matches")):
        width = f"width x{float(row['width_mult']):.3g}, " if _fmt(row.get("width_mult")) else ""
        return f"`{row['attn']}` ({width}same step time as `{row['matches']}`)"
    return f"`{row['attn']}`"


def _versus_matched_cell(row: dict[str, Any]) -> str:
    """A design's paired delta over its width-matched arm, or why it has none."""
    if _fmt(row.get("top1_vs_matched_delta_pp")):
        return _pp_interval(row, "top1_vs_matched_delta_pp", "top1_vs_matched_ci_low_pp",
                            "top1_vs_matched_ci_high_pp")
    if _fmt(row.get("matched_reason")) and not _fmt(row.get("matches")):
        return f"no arm: {row['matched_reason']}"
    return ""


def accuracy_markdown(accuracy: pd.DataFrame, per_class: pd.DataFrame, runs: pd.DataFrame) -> str:
    """The accuracy section: what the recipe measures, the paired deltas with their intervals and
    p-values (unadjusted and Holm's) and loss deltas, and the per-class top-1 deltas."""
    if accuracy.empty:
        return "_No accuracy results._\n"
    epochs = sorted(set(pd.to_numeric(runs.get("epochs", pd.Series(dtype=float)), errors="coerce").dropna()))
    schedule = f"{int(max(epochs))} epochs" if epochs else "its epochs"
    lines = [
        f"The recipe trains each network for {schedule}: on a schedule this short the deltas measure how "
        "fast a design trains (short-schedule trainability), not the accuracy it would converge to, "
        "which is why the training-loss delta stands beside the top-1 delta.",
        "",
        "| attention | seeds | top-1 delta, pp [95% CI (unadjusted)] | 95% CI (Holm), pp | p | p (Holm) | verdict | "
        "image term, pp | train loss delta [95% CI (unadjusted)] | val loss delta [95% CI (unadjusted)] | "
        "gate scale at init | seeds for +-1 pp | vs width-matched, pp [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in accuracy.to_dict("records"):
        if row["attn"] == "none":
            continue
        reason = row.get("top1_reason")
        if isinstance(reason, str) and reason:
            verdict = f"none: {reason}"
        else:
            significant = str(row.get("top1_significant")).lower() == "true"
            verdict = ("significant " + ("gain" if float(row["top1_delta_pp"]) > 0 else "loss")) if significant \
                else "not significant"
        if _fmt(row.get("diverged")) and float(row["diverged"]) > 0:
            verdict += f" ({int(row['diverged'])} diverged, scored at chance)"
        lines.append("| " + " | ".join([
            _accuracy_name(row), _fmt(row.get("n_seeds"), "int"),
            _pp_interval(row, "top1_delta_pp", "top1_ci_low_pp", "top1_ci_high_pp"),
            _pp_bounds(row, "top1_ci_holm_low_pp", "top1_ci_holm_high_pp"),
            _fmt(row.get("top1_p")), _fmt(row.get("top1_p_holm")), verdict,
            _fmt(row.get("top1_se_images_pp")),
            _pp_interval(row, "train_loss_delta", "train_loss_ci_low", "train_loss_ci_high"),
            _pp_interval(row, "val_loss_delta", "val_loss_ci_low", "val_loss_ci_high"),
            _fmt(row.get("gate_scale_at_init")), _fmt(row.get("top1_seeds_for_target"), "int"),
            _versus_matched_cell(row),
        ]) + " |")
    lines += ["", "95% CI (unadjusted): the t interval of each design on its own. 95% CI (Holm): the t interval "
              "at the level of the Holm step that decides the design (1 - 0.05 / (m - i + 1) for the i-th "
              "smallest p of m; from the first step that does not reject on, that step's level), so it "
              "excludes 0 exactly when the verdict is significant; it matches the verdicts but does not promise "
              "that all intervals hold at once with 95% probability.",
              "", "Seeds for +-1 pp: the paired seeds a 95% interval of at most 1.0 pp needs at the spread "
              "measured here (to be chosen before a new sweep, which keeps its interval honest).",
              "", "Gate scale at init: RMS(out) / RMS(in) of the inserted modules as the network holds them, "
              "freshly initialised, on the activations standard-normal images give them (a design that replaces "
              "a conv against the baseline's conv there); a sigmoid gate near 0.5 halves its branch.",
              "", "Width-matched arms (`matched_<design>`): the backbone without attention, widened until its "
              "training step takes as long as the design's on this machine (`width_mult`, `widths`, `step_ms`, "
              "`macs` and `params` in `accuracy.csv`), trained on the same seeds: attention against the same "
              "cost spent on width. Their deltas over the baseline form their own Holm family; the last column "
              "is the design's paired delta over its arm (unadjusted): below 0, the width bought more than the "
              "attention did.",
              "", "The image term is the standard error (pp) the choice of val images adds to the delta: the "
              "spread across images of each image's seed-averaged difference, less the part each image's "
              "seed-to-seed noise adds to it (which the seed interval already holds); for a claim about the "
              "image population rather than this val set, combine it with the seed interval "
              "(sqrt(se_seeds^2 + se_images^2)).", ""]
    if not per_class.empty:
        matrix = per_class.pivot_table(index="attn", columns="class", values="top1_delta_pp", aggfunc="first")
        lines += ["Per-class top-1 deltas, pp (paired over seeds; unadjusted, for looking rather than for verdicts; "
                  "`accuracy_per_class.csv` has their intervals):", "",
                  "| attention | " + " | ".join(f"`{c}`" for c in matrix.columns) + " |",
                  "|---|" + "---|" * len(matrix.columns)]
        for attn, values in matrix.iterrows():
            lines.append(f"| `{attn}` | " + " | ".join(f"{v:+.1f}" if pd.notna(v) else "" for v in values) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def across_machines_block(text: str) -> list[str]:
    """The README lines of the "Across machines" section (none without its text)."""
    return ["## Across machines", "", text] if text else []


def render_readme(profile: str, summary: pd.DataFrame, figures: dict[str, str | None],
                  figure_notes: dict[str, str], envs: dict[str, dict[str, Any]],
                  extra_env: dict[str, dict[str, str]], stages: dict[str, StageData],
                  captions: dict[str, str], outputs: list[str], accuracy_text: str = "",
                  machines_text: str = "", settings_text: str = "", control_text: str = "",
                  ops_text: str = "") -> str:
    """The whole README text; ``machines_text``, where given, is the "Across machines" section
    (:mod:`suite.report.machines`), ``settings_text`` the "Do the settings change the
    conclusions?" one (:mod:`suite.report.axes`), ``control_text`` the model-level A/A control
    (:func:`control_markdown`), ``ops_text`` "Where the time goes" (:func:`ops_markdown`)."""
    missing = [n for n, d in stages.items() if d.state == "missing"]
    empty = [n for n, d in stages.items() if d.state == "empty"]
    failed = [n for n, d in stages.items() if d.state == "failed"]
    partial = [n for n, d in stages.items() if d.state == "ok" and d.failures]
    out = [
        f"# attnbench report: `{profile}` profile",
        "",
        "Generated by `python -m suite report` from the raw stage outputs under `raw/` (nothing is "
        "measured while rendering; re-run it to regenerate every table, figure and this file). "
        "Do not edit by hand.",
        "",
    ]
    if missing or empty or failed or partial:
        out.append("**Incomplete:** "
                   + "; ".join(filter(None, [
                       f"missing stages: {', '.join(missing)}" if missing else "",
                       f"stages without rows: {', '.join(empty)}" if empty else "",
                       f"stages with no successful row: {', '.join(failed)}" if failed else "",
                       f"stages with some failed rows: {', '.join(partial)}" if partial else "",
                   ])) + " (details under [Stages](#stages)).")
        out.append("")
    out += [
        "## Summary",
        "",
        "One row per attention type, sorted by forward latency ratio. Ratios to `conv3x3` are over a "
        "3x3 conv C->C on the same input (median over shapes); extra params/MACs are over the backbone "
        "without attention; the top-1 delta is over that backbone in percentage points, paired by seed. "
        "Every column, and more, is in [`summary.csv`](summary.csv).",
        "",
        summary_markdown(summary),
    ]
    if accuracy_text:
        out += ["## Accuracy", "", accuracy_text]
    runtimes = runtime_markdown(summary)
    if runtimes or control_text:
        out += ["## What a network pays, per runtime", "", *([runtimes] if runtimes else []),
                *([control_text] if control_text else [])]
    if settings_text:
        out += ["## Do the settings change the conclusions?", "", settings_text]
    if ops_text:
        out += ["## Where the time goes", "", ops_text]
    out += across_machines_block(machines_text)
    out += [
        "## Figures",
        "",
    ]
    for key, (title, text) in FIGURE_TEXT.items():
        out += [f"### {title}", ""]
        path = figures.get(key)
        if path:
            out += [f"![{title}]({path})", "", f"*{captions.get(key, '')}*", "", text]
            if figure_notes.get(key):
                out += ["", f"Data: {figure_notes[key]}."]
        else:
            out.append(f"_Not drawn: {figure_notes.get(key) or 'the data it needs is missing'}._")
        out.append("")
    out += [
        "## Tables",
        "",
        "Tidy CSVs, one row per attention type x configuration, rebuilt from `raw/`:",
        "",
        *[f"* [`{name}`]({name})" for name in outputs],
        "",
        "## Conventions",
        "",
        CONVENTIONS,
        "## Environment",
        "",
        "As recorded by each stage with its first row (the figures' captions use the same values).",
        "",
        environment_markdown(envs, extra_env),
        "## Stages",
        "",
        stages_markdown(stages),
    ]
    return "\n".join(out)
