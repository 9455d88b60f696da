"""Seaborn figures of the report (matplotlib's Agg backend; PNG files).

Each ``*_figure`` function draws what the matching function of :mod:`suite.report.figure_data`
derived from the tidy tables, and a caption line (profile, device, dtype, threads); it writes
one PNG and returns its path with the data's note. The functions here only draw: which rows,
which order, which medians and which intervals is decided there. Sized for ~35 attention
types: types one per row on the categorical axis, labels of scattered points placed so they
do not overlap.
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
from .figure_data import (  # noqa: E402
    BUSY,
    CostBenefitData,
    CounterData,
    HeatmapData,
    MemoryData,
    ModelPanel,
    ScalingData,
    ScalingPanel,
    ScatterPanel,
    SingleShapeData,
)

__all__ = [
    "cost_benefit_figure",
    "latency_heatmap_figure",
    "counter_agreement_figure",
    "latency_scaling_figure",
    "memory_figure",
    "model_latency_figure",
]

DPI = 110


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




# --------------------------------------------------------------------------- (a) cost vs benefit
CLEARANCE = 0.08
"""The margin above and below the deltas, a fraction of their span."""

MATCHED_LEGEND = "width-matched baseline (at its design's cost)"
"""The legend entry of the width-matched arms."""


def cost_benefit_figure(data: CostBenefitData, path: Path, caption: str) -> tuple[Path, str]:
    """Top-1 delta (95% CI) against each cost, with the Pareto front (cheaper and better than
    every other type) marked, each width-matched arm beside its design (a hollow square in the
    design's colour, joined to it: attention against the same training-step time spent on
    width), and, when the deltas come from fewer than
    :data:`~suite.report.figure_data.FEW_SEEDS` seeds, a banner on every panel saying they are
    not evidence (also the figure's note)."""
    fig, axes = plt.subplots(1, len(data.panels), figsize=(7.5 * len(data.panels), 6.5), squeeze=False)
    for ax, panel in zip(axes[0], data.panels, strict=True):
        if panel is None:
            ax.set_axis_off()
            continue
        _cost_benefit_panel(ax, panel, headroom=0.35 if data.warning else CLEARANCE)
        if data.warning:
            ax.text(0.5, 0.97, textwrap.fill(data.warning, 48), transform=ax.transAxes, ha="center", va="top",
                    fontsize=12, fontweight="bold", color="darkred", zorder=10,
                    bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "darkred", "alpha": 0.85})
    title = "Cost vs benefit: accuracy delta against latency and MACs (up and left is better)"
    if any(panel is not None and panel.matched for panel in data.panels):
        title += ("; hollow squares: the backbone without attention widened until its training step takes as long "
                  "as the design's (width-matched baseline), drawn at the design's cost and joined to it")
    _caption(fig, title + (f" -- {data.warning}" if data.warning else ""), caption)
    fig.tight_layout()
    return _save(fig, path), data.warning


def _cost_benefit_panel(ax: plt.Axes, panel: ScatterPanel, headroom: float) -> None:
    """One panel: the types with their intervals and Pareto front, the matched arms, the labels;
    ``headroom`` (a fraction of the deltas' span) left free above the highest point."""
    x, y, err, front = panel.x, panel.y, panel.err, panel.front
    ax.axhline(0, color="0.3", lw=0.8, ls="--", zorder=1)
    ax.errorbar(x, y, yerr=err, fmt="none", ecolor="0.65", elinewidth=1, capsize=3, zorder=2)
    ax.scatter(x[~front], y[~front], s=36, color="tab:blue", zorder=3, label="attention type")
    ax.scatter(x[front], y[front], s=70, color="tab:red", marker="D", zorder=4, label="Pareto front")
    order = np.argsort(x[front])
    ax.step(x[front][order], y[front][order], where="post", color="tab:red", lw=1, alpha=0.6, zorder=2)
    arms = panel.matched
    my = np.array([p.y for p in arms], float)
    merr = np.array([p.err for p in arms], float).reshape(-1, 2).T
    for k, point in enumerate(arms):
        color = "tab:red" if front[panel.labels.index(point.design)] else "tab:blue"
        ax.plot([point.x, point.x], [point.design_y, point.y], color=color, lw=0.8, ls=":", zorder=2)
        ax.errorbar([point.x], [point.y], yerr=merr[:, k:k + 1], fmt="none", ecolor="0.75", elinewidth=1,
                    capsize=2, zorder=2)
        ax.scatter([point.x], [point.y], s=48, marker="s", facecolors="none", edgecolors=color, linewidths=1.4,
                   zorder=4, label=MATCHED_LEGEND if k == 0 else None)
    ax.set_xscale("log")
    _plain_log(ax, "x")
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel("top-1 delta over the baseline, percentage points" + (" (95% CI)" if panel.with_interval else ""))
    ax.grid(True, which="both", alpha=0.3)
    low = np.concatenate([y - err[0], my - merr[0]]) if arms else y - err[0]
    high = np.concatenate([y + err[1], my + merr[1]]) if arms else y + err[1]
    span = max(np.nanmax(high) - np.nanmin(low), 1e-6)
    ax.set_ylim(np.nanmin(low) - CLEARANCE * span, np.nanmax(high) + headroom * span)
    ax.set_xlim(x.min() / 1.6, x.max() * 1.6)
    ax.text(0.01, 0.01, "dashed: baseline (no attention)"
            + ("; points without a bar have fewer than 3 paired seeds" if panel.some_without_bar else ""),
            transform=ax.transAxes, fontsize=7, color="0.35")
    # the top is the few-seeds banner's where there is one (headroom above the points)
    if headroom <= CLEARANCE:
        ax.legend(loc="best", fontsize=8)
    else:  # above the note on the bottom line
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 0.05), fontsize=8, framealpha=0.9)
    ax.figure.canvas.draw()
    _label_points(ax, np.concatenate([x, [p.x for p in arms]]), np.concatenate([y, my]),
                  [*panel.labels, *(p.label for p in arms)], bold=[*front, *(False for _ in arms)])


# --------------------------------------------------------------------------- (b) latency heatmap
def latency_heatmap_figure(data: HeatmapData, path: Path, caption: str) -> tuple[Path, str]:
    """Latency ratio over the 3x3 conv, one row per type, one column per shape; a panel per mode."""
    modes, shapes = data.modes, data.shapes
    height = 3.2 + 0.28 * len(data.order)
    columns = sum(len(v) for v in shapes.values())
    width = 3.5 + 1.2 * len(modes) + 0.75 * columns
    fig, axes = plt.subplots(1, len(modes), figsize=(width, height), squeeze=False, sharey=True,
                             gridspec_kw={"width_ratios": [len(shapes[m]) + (1 if k == len(modes) - 1 else 0)
                                                           for k, m in enumerate(modes)]})
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-data.bound, vmax=data.bound)
    for k, (ax, mode) in enumerate(zip(axes[0], modes, strict=True)):
        sns.heatmap(np.log2(data.cells[mode].clip(lower=1e-3)), ax=ax, cmap="RdBu_r", norm=norm,
                    cbar=k == len(modes) - 1, annot=data.labels[mode], fmt="", annot_kws={"fontsize": 7},
                    cbar_kws={"label": "log2(ratio to the conv); red = slower"},
                    linewidths=0.3, linecolor="white")
        _label_unmeasured_cells(ax, data.cells[mode], data.labels[mode])
        ax.set_facecolor("0.88")  # cells not measured: grey, not the white of a ratio near 1
        ax.set_title(f"{mode} ({'eval, no_grad' if mode == 'forward' else 'forward + backward'})")
        ax.set_xlabel("input shape (batch, channels, H=W)")
        ax.set_ylabel("attention type" if k == 0 else "")
        ax.tick_params(axis="x", rotation=45)
        for label in ax.get_xticklabels():
            label.set_ha("right")
        ax.tick_params(axis="y", labelsize=8, rotation=0)
    _caption(fig, "Latency ratio to a 3x3 conv C->C on the same input (cell: ratio; 1 = as slow as the conv; "
             f"grey: not measured; '{BUSY}': contended, no clean measurement; rows sorted by the median forward "
             "ratio)", caption)
    fig.tight_layout()
    return _save(fig, path), ""


def _label_unmeasured_cells(ax: plt.Axes, cells: pd.DataFrame, labels: pd.DataFrame) -> None:
    """Write the labels of the unmeasured (NaN) cells, e.g. ``busy``: seaborn masks those cells
    and annotates none of them."""
    unmeasured = cells.isna().to_numpy() & (labels.to_numpy() != "")
    for row, column in zip(*np.nonzero(unmeasured), strict=True):
        ax.text(column + 0.5, row + 0.5, labels.iat[row, column], ha="center", va="center", fontsize=7,
                color="0.25")


# --------------------------------------------------------------------------- (c) counter agreement
def counter_agreement_figure(data: CounterData, path: Path, caption: str) -> tuple[Path, str]:
    """Each counter's MACs divided by the closed form, per type (median over the module shapes)."""
    fig, ax = plt.subplots(figsize=(11, 3.2 + 0.3 * len(data.order)))
    sns.stripplot(data=data.ratios, x="shown", y="attn", hue="counter", order=data.order, hue_order=data.counters,
                  dodge=True, jitter=False, size=6, alpha=0.85, ax=ax, palette="tab10")
    ax.set_xscale("log")
    ax.axvline(1.0, color="0.2", lw=1)
    ax.axvline(data.floor, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel(f"counted MACs / closed-form MACs (log; 1 = agrees; at {data.floor:g} = counted 0 or less)")
    ax.set_ylabel("attention type")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    for y in range(len(data.order)):
        ax.axhline(y + 0.5, color="0.9", lw=0.5)
    ax.legend(title="counter", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _caption(fig, "Counter agreement: each counter's MACs over the closed form (module level, median over shapes; "
             "rows sorted by fvcore's ratio as shipped)", caption)
    fig.tight_layout()
    return _save(fig, path), ""


# --------------------------------------------------------------------------- (d) latency scaling
def latency_scaling_figure(data: ScalingData | SingleShapeData, path: Path, caption: str) -> tuple[Path, str]:
    """Median latency against every axis the sweep varied, a panel per mode and axis, a line per
    type, the 3x3-conv reference in black; bars per type for data without such an axis."""
    if isinstance(data, SingleShapeData):
        return _single_shape_figure(data, path, caption)
    palette = dict(zip(data.names, sns.color_palette("husl", len(data.names)), strict=True))
    columns = min(len(data.panels), 3)
    rows_n = math.ceil(len(data.panels) / columns)
    row_height = max(5.2, 1.5 + 0.16 * len(data.names))  # room for one end label per type
    fig, axes = plt.subplots(rows_n, columns, figsize=(6.2 * columns + 1.5, row_height * rows_n), squeeze=False)
    for ax in axes.flat[len(data.panels):]:
        ax.axis("off")
    for ax, panel in zip(axes.flat, data.panels, strict=False):
        _scaling_panel(ax, panel, palette)
        ax.set_title(f"{panel.mode}: vs {panel.label.split(' (')[0]} ({panel.fixed})", fontsize=10)
    title = "Latency scaling with the measured axes (other axes at their largest value)"
    if data.left_out:
        title += "; no panel where one value was measured: " + ", ".join(data.left_out)
    _caption(fig, title, caption)
    fig.tight_layout()
    return _save(fig, path), data.note


def _scaling_panel(ax: plt.Axes, panel: ScalingPanel, palette: dict) -> None:
    """One panel of the scaling figure: a line per type and the reference conv along its axis."""
    axis = panel.axis
    for name, group in panel.lines.groupby("attn"):
        ax.plot(group[axis], group["median_ms"], marker="o", ms=3, lw=1, color=palette[name], alpha=0.85)
    ax.plot(panel.reference.index, panel.reference.values, color="black", lw=2.2, ls="--", marker="s",
            label="3x3 conv reference")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    _plain_log(ax, "y")
    ends = panel.ends
    _end_labels(ax, ends[axis].to_numpy(float), ends["median_ms"].to_numpy(float), ends["attn"].tolist(),
                [palette[n] for n in ends["attn"]])
    ax.set_xticks(panel.ticks, [str(int(t)) for t in panel.ticks])
    ax.set_xlabel(panel.label)
    ax.set_ylabel("median latency, ms (log)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)


def _single_shape_figure(data: SingleShapeData, path: Path, caption: str) -> tuple[Path, str]:
    """Latency per type as bars, for data without an axis to scale along."""
    fig, ax = plt.subplots(figsize=(8, 3.0 + 0.28 * len(data.order)))
    sns.barplot(data=data.rows, x="median_ms", y="attn", hue="mode", order=data.order, ax=ax, orient="h")
    ax.set_xscale("log")
    ax.set_xlabel("median latency, ms (log)")
    ax.set_ylabel("attention type")
    _caption(fig, f"Latency per type ({data.why})", caption)
    fig.tight_layout()
    return _save(fig, path), f"{data.why}, so the figure shows the latency per type at the shapes measured"


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
def memory_figure(data: MemoryData, path: Path, caption: str) -> tuple[Path, str]:
    """Bytes saved for backward and the step's peak memory per type, a panel per quantity, each
    of one configuration (named in its title and the figure's)."""
    fig, axes = plt.subplots(1, len(data.panels), figsize=(6.5 * len(data.panels) + 2, 3.0 + 0.28 * len(data.order)),
                             squeeze=False, sharey=True)
    for ax, panel in zip(axes[0], data.panels, strict=True):
        style = {"hue": "mode", "palette": "Set2"} if panel.by_mode else {"color": "tab:purple"}
        sns.barplot(data=panel.rows, x="mib", y="attn", order=data.order, ax=ax, orient="h", errorbar=None, **style)
        ax.set_xlabel(panel.label)
        ax.set_ylabel("attention type")
        ax.set_title(f"{panel.shape} | {panel.config}" if panel.config else panel.shape, fontsize=10)
        if panel.by_mode:
            ax.legend(title="mode", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        for container in ax.containers:
            ax.bar_label(container, fmt=lambda v: f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}", fontsize=7, padding=2)
        ax.grid(True, axis="x", alpha=0.3)
    shown = sorted({panel.config for panel in data.panels if panel.config})
    title = "Memory per attention type (rows sorted by saved bytes)" + (f"; shown: {' and '.join(shown)}" if shown else "")
    _caption(fig, title, caption)
    fig.tight_layout()
    return _save(fig, path), data.note


# --------------------------------------------------------------------------- (f) model latency
def model_latency_figure(panels: list[ModelPanel], path: Path, caption: str) -> tuple[Path, str]:
    """Forward latency of each backbone with the attention type over the same backbone without it
    (95% interval across rounds), one panel per backbone, types sorted by their ratio."""
    height = 3.0 + 0.24 * max(len(p.labels) for p in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(max(4.6 * len(panels), 8.0), height), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        y = np.arange(len(panel.labels))
        ax.errorbar(panel.ratio, y, xerr=panel.err, fmt="o", color="tab:blue", ecolor="0.5", capsize=2, ms=4)
        ax.axvline(1.0, color="0.3", lw=0.8, ls="--")
        ax.set_yticks(y, panel.labels, fontsize=8)
        ax.set_xlabel(f"{panel.arch} with attention / {panel.arch} without (forward)")
        ax.set_title(f"{panel.arch} (not shown: {panel.not_shown})" if panel.not_shown else panel.arch, fontsize=9)
        ax.grid(True, axis="x", alpha=0.3)
    _caption(fig, "What a network pays: latency of the backbone with each attention type over the same "
             "backbone without it (95% interval across rounds; dashed: no cost)", caption)
    fig.tight_layout()
    return _save(fig, path), ""
