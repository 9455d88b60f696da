"""Seaborn figures of the joined tables (matplotlib's Agg backend; PNG files).

Each function takes the tidy tables of :mod:`suite.report.tables` and a caption line (profile,
device, dtype, threads), writes one PNG and returns its path, or returns ``None`` when the data it
needs is absent (the README then says so). Sized for ~35 attention types: types are sorted, one
per row on the categorical axis, labels of scattered points are placed so they do not overlap.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from ..records import write_bytes_atomic  # noqa: E402
from ..timing.grid import MODES  # noqa: E402

__all__ = [
    "pareto_front",
    "cost_benefit_figure",
    "latency_heatmap_figure",
    "counter_agreement_figure",
    "latency_scaling_figure",
    "memory_figure",
    "model_latency_figure",
    "COUNTERS",
]

DPI = 110

COUNTERS: dict[str, str] = {
    "macs_fvcore": "fvcore + our handles",
    "macs_fvcore_shipped": "fvcore as shipped",
    "macs_fvcore_shipped_conv_linear": "fvcore shipped, conv/linear only",
    "macs_thop": "thop + our rules",
    "macs_thop_shipped": "thop as shipped",
    "flops_torch": "torch FlopCounterMode / 2",
    "macs_dispatch": "dispatch recorder",
}
"""Cost columns compared in the counter-agreement figure, with their legend labels."""


NEEDS_ACCURACY = "needs successful rows from the accuracy and (latency or cost) stage(s)"
NEEDS_LATENCY = "needs successful rows from the latency stage(s)"
NEEDS_COST = "needs successful rows from the cost stage(s)"
"""Why a figure is not drawn (every ``*_figure`` returns ``(path or None, note)``)."""


def _save(fig: plt.Figure, path: Path) -> Path:
    """Write the PNG atomically (:func:`suite.records.write_bytes_atomic`)."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def _caption(fig: plt.Figure, title: str, caption: str) -> None:
    """The title and the run's caption above the panels, each wrapped to the figure's width."""
    chars = max(40, int(fig.get_figwidth() * 11.5))  # about 11.5 characters per inch at 11 pt
    lines = textwrap.wrap(title, chars) + textwrap.wrap(caption, chars)
    fig.suptitle("\n".join(lines), fontsize=11)


def pareto_front(x: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """Mask of the points no other point beats: lower or equal ``x`` (cost) and higher or equal
    ``y`` (benefit), one of the two strictly."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.ones(len(x), bool)
    for i in range(len(x)):
        dominated = (x <= x[i]) & (y >= y[i]) & ((x < x[i]) | (y > y[i]))
        keep[i] = not dominated.any()
    return keep


def _label_points(ax: plt.Axes, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str],
                  bold: Sequence[bool] | None = None) -> None:
    """Annotate each point, trying offsets around it until the label overlaps neither an earlier
    label nor a marker (greedy, in display coordinates); a label that fits nowhere gets a leader
    line at a farther offset."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    points = ax.transData.transform(np.column_stack([xs, ys]))
    markers = [Bbox.from_extents(px - 4, py - 4, px + 4, py + 4) for px, py in points]
    placed: list[Bbox] = []
    axes_box = ax.get_window_extent(renderer)
    offsets = [(6, 4), (6, -12), (-6, 4), (-6, -12), (0, 10), (0, -16), (14, 12), (14, -20), (-14, 12),
               (-14, -20), (24, 2), (-24, 2), (0, 22), (0, -28), (30, 18), (-30, 18), (30, -26), (-30, -26)]
    order = np.argsort(points[:, 1])[::-1]
    for i in order:
        weight = "bold" if bold is not None and bold[i] else "normal"
        best = None
        for dx, dy in offsets:
            ha = "left" if dx > 0 else "right" if dx < 0 else "center"
            text = ax.annotate(labels[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points",
                               fontsize=8, ha=ha, fontweight=weight)
            box = text.get_window_extent(renderer).expanded(1.05, 1.1)
            inside = axes_box.contains(box.x0, box.y0) and axes_box.contains(box.x1, box.y1)
            clash = any(box.overlaps(b) for b in placed) or any(
                box.overlaps(m) for j, m in enumerate(markers) if j != i)
            if inside and not clash:
                best = box
                break
            text.remove()
        if best is None:
            dx, dy = (36, 24 - 14 * (len(placed) % 5))
            text = ax.annotate(labels[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points",
                               fontsize=8, fontweight=weight,
                               arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6})
            best = text.get_window_extent(renderer)
        placed.append(best)


def _plain_log(ax: plt.Axes, which: str = "x") -> None:
    """Log-axis ticks written as plain numbers (0.2, 1, 5) rather than 2 x 10^-1."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    formatter = FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(formatter)
    axis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
    axis.set_minor_formatter(formatter)


def _type_order(frame: pd.DataFrame, value: str) -> list[str]:
    return frame.groupby("attn")[value].median().sort_values().index.tolist()


# --------------------------------------------------------------------------- (a) cost vs benefit
def cost_benefit_figure(summary: pd.DataFrame, path: Path, caption: str) -> tuple[Path | None, str]:
    """Top-1 delta (95% CI) against the forward latency ratio and against the extra MACs, with
    the Pareto front (cheaper and better than every other type) marked."""
    if summary.empty or summary["top1_delta_pp"].notna().sum() == 0:
        return None, NEEDS_ACCURACY
    panels = []
    if summary["latency_ratio_fwd"].notna().any():
        panels.append(("latency_ratio_fwd", "forward latency / 3x3 conv latency (median over shapes, log)"))
    if summary["extra_macs_pct"].notna().any():
        arch = summary["model_arch"].dropna().iloc[0]
        panels.append(("extra_macs_pct", f"extra MACs over the {arch} backbone, % (log)"))
    elif summary["macs_over_conv3x3"].notna().any():
        panels.append(("macs_over_conv3x3", "block MACs / 3x3 conv MACs (median over shapes, log)"))
    if not panels:
        return None, NEEDS_ACCURACY
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 6.5), squeeze=False)
    for ax, (column, xlabel) in zip(axes[0], panels, strict=True):
        data = summary.dropna(subset=[column, "top1_delta_pp"])
        data = data[data[column] > 0]
        if data.empty:
            ax.set_axis_off()
            continue
        x = data[column].to_numpy(float)
        y = data["top1_delta_pp"].to_numpy(float)
        low = (y - data["top1_ci_low_pp"].to_numpy(float))
        high = (data["top1_ci_high_pp"].to_numpy(float) - y)
        err = np.vstack([np.nan_to_num(low, nan=0.0), np.nan_to_num(high, nan=0.0)])
        front = pareto_front(x, y)
        ax.axhline(0, color="0.3", lw=0.8, ls="--", zorder=1)
        ax.errorbar(x, y, yerr=err, fmt="none", ecolor="0.65", elinewidth=1, capsize=3, zorder=2)
        ax.scatter(x[~front], y[~front], s=36, color="tab:blue", zorder=3, label="attention type")
        ax.scatter(x[front], y[front], s=70, color="tab:red", marker="D", zorder=4, label="Pareto front")
        order = np.argsort(x[front])
        fx, fy = x[front][order], y[front][order]
        ax.step(fx, fy, where="post", color="tab:red", lw=1, alpha=0.6, zorder=2)
        ax.set_xscale("log")
        _plain_log(ax, "x")
        ax.set_xlabel(xlabel)
        with_interval = bool(np.isfinite(data["top1_ci_low_pp"].to_numpy(float)).any())
        ax.set_ylabel("top-1 delta over the baseline, percentage points" + (" (95% CI)" if with_interval else ""))
        ax.grid(True, which="both", alpha=0.3)
        span = max(np.nanmax(y + err[1]) - np.nanmin(y - err[0]), 1e-6)
        ax.set_ylim(np.nanmin(y - err[0]) - 0.08 * span, np.nanmax(y + err[1]) + 0.08 * span)
        xmin, xmax = x.min(), x.max()
        ax.set_xlim(xmin / 1.6, xmax * 1.6)
        ax.text(0.01, 0.01, "dashed: baseline (no attention)"
                + ("; points without a bar have fewer than 3 paired seeds" if (err.sum(axis=0) == 0).any() else ""),
                transform=ax.transAxes, fontsize=7, color="0.35")
        ax.legend(loc="best", fontsize=8)
        fig.canvas.draw()
        _label_points(ax, x, y, data["attn"].tolist(), bold=front)
    _caption(fig, "Cost vs benefit: accuracy delta against latency and MACs (up and left is better)", caption)
    fig.tight_layout()
    return _save(fig, path), ""


# --------------------------------------------------------------------------- (b) latency heatmap
def _shape_label(row: pd.Series) -> str:
    return f"b{int(row['batch'])} c{int(row['channels'])} {int(row['size'])}px"


def latency_heatmap_figure(latency: pd.DataFrame, path: Path, caption: str,
                           contended: pd.DataFrame | None = None) -> tuple[Path | None, str]:
    """Latency ratio over the 3x3 conv, one row per type, one column per shape; a panel per mode.
    Cells of ``contended`` rows (no clean measurement) are marked as such, never given a number."""
    data = latency[(latency["status"] == "ok") & (latency["level"] == "module")].dropna(subset=["ratio"])
    if data.empty:
        return None, NEEDS_LATENCY
    busy = set()
    if contended is not None and not contended.empty:
        marked = contended[contended["level"] == "module"]
        busy = {(r["attn"], r["mode"], _shape_label(r)) for _, r in marked.iterrows()}
    data = data.assign(shape=data.apply(_shape_label, axis=1))
    data = data.sort_values(["batch", "channels", "size"])
    modes = [m for m in MODES if m in set(data["mode"])]
    # each panel shows the shapes measured in its mode only (no empty columns)
    shapes = {mode: list(dict.fromkeys(data.loc[data["mode"] == mode, "shape"])) for mode in modes}
    order = _type_order(data[data["mode"] == modes[0]], "ratio")
    order += [n for n in sorted(set(data["attn"])) if n not in order]
    height = 3.2 + 0.28 * len(order)
    columns = sum(len(v) for v in shapes.values())
    width = 3.5 + 1.2 * len(modes) + 0.75 * columns
    fig, axes = plt.subplots(1, len(modes), figsize=(width, height), squeeze=False, sharey=True,
                             gridspec_kw={"width_ratios": [len(shapes[m]) + (1 if k == len(modes) - 1 else 0)
                                                           for k, m in enumerate(modes)]})
    values = np.log2(data["ratio"].clip(lower=1e-3))
    bound = max(abs(values.min()), abs(values.max()), 1.0)
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-bound, vmax=bound)
    annotate = columns <= 24
    for k, (ax, mode) in enumerate(zip(axes[0], modes, strict=True)):
        sub = data[data["mode"] == mode]
        agg = sub.groupby(["attn", "shape"])["ratio"].median().unstack("shape")
        agg = agg.reindex(index=order, columns=shapes[mode])
        labels = agg.apply(lambda col: col.map(lambda v: "" if pd.isna(v) else f"{v:.2g}")) if annotate else None
        if labels is not None:
            for attn, shape in ((a, sh) for a, m, sh in busy if m == mode and a in labels.index and sh in labels.columns):
                if pd.isna(agg.loc[attn, shape]):  # a measured cell keeps its number
                    labels.loc[attn, shape] = "busy"
        sns.heatmap(np.log2(agg.clip(lower=1e-3)), ax=ax, cmap="RdBu_r", norm=norm, cbar=k == len(modes) - 1,
                    annot=labels if annotate else None, fmt="", annot_kws={"fontsize": 7},
                    cbar_kws={"label": "log2(ratio to the conv); red = slower"},
                    linewidths=0.3, linecolor="white")
        ax.set_facecolor("0.88")  # cells not measured: grey, not the white of a ratio near 1
        ax.set_title(f"{mode} ({'eval, no_grad' if mode == 'forward' else 'forward + backward'})")
        ax.set_xlabel("input shape (batch, channels, H=W)")
        ax.set_ylabel("attention type" if k == 0 else "")
        ax.tick_params(axis="x", rotation=45)
        for label in ax.get_xticklabels():
            label.set_ha("right")
        ax.tick_params(axis="y", labelsize=8, rotation=0)
    _caption(fig, "Latency ratio to a 3x3 conv C->C on the same input (cell: ratio; 1 = as slow as the conv; "
             "grey: not measured; 'busy': contended, no clean measurement; rows sorted by the median forward "
             "ratio)", caption)
    fig.tight_layout()
    return _save(fig, path), ""


# --------------------------------------------------------------------------- (c) counter agreement
def counter_agreement_figure(cost: pd.DataFrame, path: Path, caption: str) -> tuple[Path | None, str]:
    """Each counter's MACs divided by the closed form, per type (median over the module shapes)."""
    module = cost[(cost["level"] == "module") & (cost["status"] == "ok")] if not cost.empty else cost
    if module.empty or "macs_formula" not in module or module["macs_formula"].notna().sum() == 0:
        return None, NEEDS_COST
    columns = [c for c in COUNTERS if c in module]
    rows = []
    for name, group in module.dropna(subset=["macs_formula"]).groupby("attn"):
        formula = pd.to_numeric(group["macs_formula"], errors="coerce")
        for column in columns:
            counted = pd.to_numeric(group[column], errors="coerce")
            if column == "flops_torch":
                counted = counted / 2
            ratio = (counted / formula).replace([np.inf, -np.inf], np.nan).median()
            if not math.isnan(ratio):
                rows.append({"attn": name, "counter": COUNTERS[column], "ratio": ratio})
    if not rows:
        return None, NEEDS_COST
    data = pd.DataFrame(rows)
    floor = 1e-3
    data["shown"] = data["ratio"].clip(lower=floor)
    order = (data[data["counter"] == COUNTERS["macs_fvcore_shipped"]].set_index("attn")["shown"]
             .sort_values(kind="stable").index.tolist()) or sorted(set(data["attn"]))
    order += [n for n in sorted(set(data["attn"])) if n not in order]
    fig, ax = plt.subplots(figsize=(11, 3.2 + 0.3 * len(order)))
    sns.stripplot(data=data, x="shown", y="attn", hue="counter", order=order, hue_order=[COUNTERS[c] for c in columns],
                  dodge=True, jitter=False, size=6, alpha=0.85, ax=ax, palette="tab10")
    ax.set_xscale("log")
    ax.axvline(1.0, color="0.2", lw=1)
    ax.axvline(floor, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel(f"counted MACs / closed-form MACs (log; 1 = agrees; at {floor:g} = counted 0 or less)")
    ax.set_ylabel("attention type")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    for y in range(len(order)):
        ax.axhline(y + 0.5, color="0.9", lw=0.5)
    ax.legend(title="counter", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _caption(fig, "Counter agreement: each counter's MACs over the closed form (module level, median over shapes; "
             "rows sorted by fvcore's ratio as shipped)", caption)
    fig.tight_layout()
    return _save(fig, path), ""


# --------------------------------------------------------------------------- (d) latency scaling
def latency_scaling_figure(latency: pd.DataFrame, path: Path, caption: str) -> tuple[Path | None, str]:
    """Median latency against every axis the sweep varied (batch, resolution, channels), the other
    axes held at their largest value; one panel per mode and axis with two or more values, one
    line per type, the 3x3-conv reference in black. Returns the path and a sentence saying which
    axes the data had."""
    data = latency[(latency["status"] == "ok") & (latency["level"] == "module")].dropna(subset=["median_ms"])
    if data.empty:
        return None, "no successful module-level latency rows"
    axes_names = {"batch": "batch size", "size": "resolution H = W (px)", "channels": "channels C"}
    varied = [a for a in axes_names if data[a].nunique() > 1]
    modes = [m for m in MODES if m in set(data["mode"])]
    if not varied:
        return _single_shape_figure(
            data, path, caption, "only one batch size, resolution and channel count was measured "
            f"(batch {int(data['batch'].iloc[0])}, {int(data['size'].iloc[0])} px, C={int(data['channels'].iloc[0])})")
    panels = {(mode, axis): _scaling_slice(data[data["mode"] == mode], axis, list(axes_names))
              for mode in modes for axis in varied}
    # a one-point "scaling" line says nothing: only (mode, axis) pairs with two values get a panel
    drawn = [key for key, (rows, _) in panels.items() if rows[key[1]].nunique() > 1]
    if not drawn:
        return _single_shape_figure(data, path, caption, "no axis has two values in any mode")
    names = sorted(set(data["attn"]))
    palette = dict(zip(names, sns.color_palette("husl", len(names)), strict=True))
    columns = min(len(drawn), 3)
    rows_n = math.ceil(len(drawn) / columns)
    row_height = max(5.2, 1.5 + 0.16 * len(names))  # room for one end label per type
    fig, axes = plt.subplots(rows_n, columns, figsize=(6.2 * columns + 1.5, row_height * rows_n), squeeze=False)
    for ax in axes.flat[len(drawn):]:
        ax.axis("off")
    for ax, (mode, axis) in zip(axes.flat, drawn, strict=False):
        sub, fixed = panels[mode, axis]
        _scaling_panel(ax, sub, axis, axes_names[axis], palette)
        ax.set_title(f"{mode}: vs {axes_names[axis].split(' (')[0]} ({fixed})", fontsize=10)
    fixed_axes = [a for a in axes_names if a not in varied]
    note = "axes varied: " + ", ".join(axes_names[a] for a in varied)
    if fixed_axes:
        note += "; fixed: " + ", ".join(f"{axes_names[a]} {int(data[a].iloc[0])}" for a in fixed_axes)
    left_out = [f"{mode} vs {axis} ({'only ' + str(int(rows[axis].iloc[0])) if len(rows) else 'no rows'})"
                for (mode, axis), (rows, _) in panels.items() if (mode, axis) not in drawn]
    title = "Latency scaling with the measured axes (other axes at their largest value)"
    if left_out:
        note += "; no panel where one value was measured: " + ", ".join(left_out)
        title += "; no panel where one value was measured: " + ", ".join(left_out)
    _caption(fig, title, caption)
    fig.tight_layout()
    return _save(fig, path), note


def _scaling_panel(ax: plt.Axes, sub: pd.DataFrame, axis: str, label: str, palette: dict) -> None:
    """One panel of the scaling figure: a line per type and the reference conv along ``axis``."""
    ticks = sorted(sub[axis].unique())
    line = sub.groupby(["attn", axis])["median_ms"].median().reset_index()
    ref = sub.groupby(axis)["ref_median_ms"].median()
    for name, group in line.groupby("attn"):
        ax.plot(group[axis], group["median_ms"], marker="o", ms=3, lw=1, color=palette[name], alpha=0.85)
    ax.plot(ref.index, ref.values, color="black", lw=2.2, ls="--", marker="s", label="3x3 conv reference")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    _plain_log(ax, "y")
    ends = line.sort_values(axis).groupby("attn").tail(1)
    _end_labels(ax, ends[axis].to_numpy(float), ends["median_ms"].to_numpy(float), ends["attn"].tolist(),
                [palette[n] for n in ends["attn"]])
    ax.set_xticks(ticks, [str(int(t)) for t in ticks])
    ax.set_xlabel(label)
    ax.set_ylabel("median latency, ms (log)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)


def _scaling_slice(rows: pd.DataFrame, axis: str, all_axes: list[str]) -> tuple[pd.DataFrame, str]:
    """The rows of one scaling panel: every axis but ``axis`` held at its largest value, and a
    phrase naming those values."""
    for other in all_axes:
        if other != axis:
            rows = rows[rows[other] == rows[other].max()]
    fixed = ", ".join(f"{o} {int(rows[o].iloc[0])}" for o in all_axes if o != axis and len(rows))
    return rows, fixed


def _single_shape_figure(data: pd.DataFrame, path: Path, caption: str, why: str) -> tuple[Path, str]:
    """Latency per type as bars, for data without an axis to scale along."""
    order = _type_order(data, "median_ms")
    fig, ax = plt.subplots(figsize=(8, 3.0 + 0.28 * len(order)))
    sns.barplot(data=data, x="median_ms", y="attn", hue="mode", order=order, ax=ax, orient="h")
    ax.set_xscale("log")
    ax.set_xlabel("median latency, ms (log)")
    ax.set_ylabel("attention type")
    _caption(fig, f"Latency per type ({why})", caption)
    fig.tight_layout()
    return _save(fig, path), f"{why}, so the figure shows the latency per type at the shapes measured"


def _end_labels(ax: plt.Axes, xs: np.ndarray, ys: np.ndarray, labels: list[str], colors: list) -> None:
    """Labels at the right end of each line, pushed apart vertically (in log space) so none overlap."""
    if not len(xs):
        return
    logy = np.log10(np.clip(ys, 1e-9, None))
    order = np.argsort(logy)
    lo, hi = ax.get_ylim()
    span = math.log10(hi) - math.log10(lo)
    height_in = ax.get_window_extent().height / ax.figure.dpi
    gap = span * (8.5 / 72) / max(height_in, 0.5)
    placed = logy[order].copy()
    for i in range(1, len(placed)):
        placed[i] = max(placed[i], placed[i - 1] + gap)
    shift = max(0.0, placed[-1] - math.log10(hi) + gap / 2) if len(placed) else 0.0
    placed -= shift
    for i in range(len(placed) - 2, -1, -1):
        placed[i] = min(placed[i], placed[i + 1] - gap)
    xmax = xs.max()
    ax.set_xlim(right=xmax * 2.2)
    for k, idx in enumerate(order):
        ax.annotate(labels[idx], (xs[idx], ys[idx]), xytext=(xmax * 1.25, 10 ** placed[k]), textcoords="data",
                    fontsize=7, color=colors[idx], va="center",
                    arrowprops={"arrowstyle": "-", "color": colors[idx], "lw": 0.4, "alpha": 0.6})
    ax.set_ylim(min(lo, 10 ** placed.min() / 1.1), max(hi, 10 ** placed.max() * 1.1))


# --------------------------------------------------------------------------- (e) memory
def memory_figure(memory: pd.DataFrame, cost: pd.DataFrame, path: Path, caption: str) -> tuple[Path | None, str]:
    """Bytes saved for backward and the step's peak memory per type, at the largest shape
    measured; falls back to the cost stage's saved-activation bytes without a memory stage."""
    ok = memory[memory["status"] == "ok"] if not memory.empty else memory
    panels: list[tuple[pd.DataFrame, str, str]] = []
    note = ""
    if not ok.empty:
        # the step's peak is drawn where the CUDA allocator measured it; on the CPU it is RSS growth,
        # page-granular and dominated by the allocator's arenas (kept in memory.csv, not drawn)
        cuda = ok[ok["device"].astype(str).str.startswith("cuda")] if "device" in ok else ok.iloc[:0]
        for rows, column, label in ((ok, "act_saved_bytes", "saved for backward (train step), MiB"),
                                    (cuda, "cuda_step_peak_bytes", "CUDA memory allocated at the step's peak, MiB")):
            if column not in rows:
                continue
            sub = rows.dropna(subset=[column])
            if sub.empty:
                continue
            sub = sub.assign(volume=sub["batch"] * sub["channels"] * sub["size"] ** 2)
            sub = sub[sub["volume"] == sub["volume"].max()]
            shape = f"batch {int(sub['batch'].iloc[0])}, C={int(sub['channels'].iloc[0])}, {int(sub['size'].iloc[0])} px"
            panels.append((sub.assign(mib=sub[column] / 2**20), label, shape))
        note = "from the memory stage, at the largest input measured" + (
            "" if len(cuda) else "; the CPU step's RSS growth is in memory.csv, not drawn (page-granular)")
    elif not cost.empty and "act_saved_bytes" in cost:
        sub = cost[(cost["level"] == "module") & (cost["status"] == "ok")].dropna(subset=["act_saved_bytes"])
        if not sub.empty:
            sub = sub.assign(volume=sub["batch"] * sub["channels"] * sub["height"] * sub["width"])
            sub = sub[sub["volume"] == sub["volume"].max()]
            shape = f"batch {int(sub['batch'].iloc[0])}, C={int(sub['channels'].iloc[0])}, {int(sub['height'].iloc[0])} px"
            panels.append((sub.assign(mib=sub["act_saved_bytes"] / 2**20, mode="train"),
                           "saved for backward (counted by the cost stage), MiB", shape))
            note = "no memory stage: bytes saved for backward as counted by the cost stage"
    if not panels:
        return None, "no memory data"
    order = _type_order(panels[0][0], "mib")
    order += [n for n in sorted(set().union(*[set(p[0]["attn"]) for p in panels])) if n not in order]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels) + 2, 3.0 + 0.28 * len(order)),
                             squeeze=False, sharey=True)
    for ax, (sub, label, shape) in zip(axes[0], panels, strict=True):
        hue = "mode" if sub["mode"].nunique() > 1 else None
        style = {"hue": hue, "palette": "Set2"} if hue else {"color": "tab:purple"}
        sns.barplot(data=sub, x="mib", y="attn", order=order, ax=ax, orient="h", errorbar=None, **style)
        ax.set_xlabel(label)
        ax.set_ylabel("attention type")
        ax.set_title(shape, fontsize=10)
        if hue:
            ax.legend(title="mode", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        for container in ax.containers:
            ax.bar_label(container, fmt=lambda v: f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}", fontsize=7, padding=2)
        ax.grid(True, axis="x", alpha=0.3)
    _caption(fig, "Memory per attention type (rows sorted by saved bytes)", caption)
    fig.tight_layout()
    return _save(fig, path), note


# --------------------------------------------------------------------------- (f) model latency
def model_latency_figure(primary: pd.DataFrame, latency: pd.DataFrame, path: Path,
                         caption: str) -> tuple[Path | None, str]:
    """Forward latency of each backbone with the attention type over the same backbone without it
    (95% interval across rounds), one panel per backbone, types sorted by their ratio. ``primary``
    holds the ok model-level rows of the one configuration shown; ``latency`` every row (the
    panels name the types that were refused or not measured)."""
    if primary.empty or latency.empty or "level" not in latency:
        return None, "needs successful model-level rows from the latency stage (level = model)"
    model = latency[(latency["level"] == "model") & (latency["mode"] == "forward")]
    ok = primary[primary["mode"] == "forward"].dropna(subset=["ratio"])
    if ok.empty:
        return None, "needs successful model-level forward rows from the latency stage"
    archs = sorted(ok["arch"].unique())
    height = 3.0 + 0.24 * max(ok.groupby("arch").size())
    fig, axes = plt.subplots(1, len(archs), figsize=(max(4.6 * len(archs), 8.0), height), squeeze=False)
    for ax, arch in zip(axes[0], archs, strict=True):
        sub = ok[ok["arch"] == arch].sort_values("ratio")
        y = np.arange(len(sub))
        ratio = sub["ratio"].to_numpy(float)
        low = ratio - sub.get("ratio_ci_low", pd.Series(np.nan, index=sub.index)).to_numpy(float)
        high = sub.get("ratio_ci_high", pd.Series(np.nan, index=sub.index)).to_numpy(float) - ratio
        err = np.vstack([np.nan_to_num(low, nan=0.0), np.nan_to_num(high, nan=0.0)])
        ax.errorbar(ratio, y, xerr=err, fmt="o", color="tab:blue", ecolor="0.5", capsize=2, ms=4)
        ax.axvline(1.0, color="0.3", lw=0.8, ls="--")
        ax.set_yticks(y, sub["attn"].tolist(), fontsize=8)
        ax.set_xlabel(f"{arch} with attention / {arch} without (forward)")
        others = model[(model["arch"] == arch) & (model["status"] != "ok")]
        if len(others):
            counts = ", ".join(f"{n} {s}" for s, n in others["status"].value_counts().items())
            ax.set_title(f"{arch} (not shown: {counts})", fontsize=9)
        else:
            ax.set_title(arch, fontsize=9)
        ax.grid(True, axis="x", alpha=0.3)
    _caption(fig, "What a network pays: latency of the backbone with each attention type over the same "
             "backbone without it (95% interval across rounds; dashed: no cost)", caption)
    fig.tight_layout()
    return _save(fig, path), ""
