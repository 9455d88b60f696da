"""What each figure of the report shows, derived from the tidy tables: the points, cells, lines
and bars, sorted and labelled, and the note that says what the data had.

Each ``*_data`` function takes the tables of :mod:`suite.report.tables` and returns the data of
one figure, or a string saying why there is none; the functions of :mod:`suite.report.figures`
only draw what these return. Nothing here measures anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..accuracy.identity import matched_design
from ..timing.grid import MODES
from .tables import primary_latency

__all__ = [
    "COUNTERS",
    "NEEDS_ACCURACY",
    "NEEDS_COST",
    "NEEDS_LATENCY",
    "pareto_front",
    "type_order",
    "FEW_SEEDS",
    "MatchedPoint",
    "ScatterPanel",
    "CostBenefitData",
    "cost_benefit_data",
    "BUSY",
    "HeatmapData",
    "latency_heatmap_data",
    "CounterData",
    "counter_agreement_data",
    "ScalingPanel",
    "ScalingData",
    "SingleShapeData",
    "latency_scaling_data",
    "MemoryPanel",
    "MemoryData",
    "memory_data",
    "ModelPanel",
    "model_latency_data",
]

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
"""Why a figure is not drawn."""

COUNTED_FLOOR = 1e-3
"""Counter ratios below this (a counter that counted 0 or less) are shown at it."""


def pareto_front(x: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """Mask of the points no other point beats: lower or equal ``x`` (cost) and higher or equal
    ``y`` (benefit), one of the two strictly."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.ones(len(x), bool)
    for i in range(len(x)):
        dominated = (x <= x[i]) & (y >= y[i]) & ((x < x[i]) | (y > y[i]))
        keep[i] = not dominated.any()
    return keep


def type_order(frame: pd.DataFrame, value: str) -> list[str]:
    """The attention types sorted by their median ``value``."""
    return frame.groupby("attn")[value].median().sort_values().index.tolist()


def _with_rest(order: list[str], names: set[str]) -> list[str]:
    """``order``, then the other ``names`` in alphabetical order."""
    return order + [n for n in sorted(names) if n not in order]


# --------------------------------------------------------------------------- (a) cost vs benefit
FEW_SEEDS = 3
"""Accuracy deltas from fewer paired seeds than this have no interval; a cost-benefit figure
whose points all have fewer says on its face that they are not evidence."""


@dataclass
class MatchedPoint:
    """A width-matched arm (``matched_<design>``: the backbone without attention, widened to the
    design's training-step time) beside its design: drawn at the design's cost, since the two
    cost the same training-step time, with its own top-1 delta and interval."""

    label: str
    design: str
    x: float  # the design's cost on the panel's axis
    y: float
    err: tuple[float, float]  # below and above y (0 where there is no interval)
    design_y: float


@dataclass
class ScatterPanel:
    """One panel of the cost-benefit figure: a point per type with its 95% interval, and the
    width-matched arms beside their designs."""

    column: str
    xlabel: str
    x: np.ndarray
    y: np.ndarray
    err: np.ndarray  # 2 x n: below and above y (0 where there is no interval)
    front: np.ndarray  # the Pareto front's mask (attention types only)
    labels: list[str]
    with_interval: bool
    some_without_bar: bool
    matched: list[MatchedPoint] = field(default_factory=list)


@dataclass
class CostBenefitData:
    """The panels (``None`` for a cost with no positive value), the most paired seeds any
    point has (None where the summary does not say) and, below :data:`FEW_SEEDS`, the warning
    the figure carries on its face."""

    panels: list[ScatterPanel | None]
    seeds: int | None = None
    warning: str = ""


def cost_benefit_data(summary: pd.DataFrame) -> CostBenefitData | str:
    """Top-1 delta against the forward latency ratio and against the extra MACs (or, without a
    model-level cost, the block's MACs over the conv's). A width-matched arm's row
    (``matched_<design>``) is a point beside its design, at the design's cost; the others make
    the Pareto front."""
    if summary.empty or summary["top1_delta_pp"].notna().sum() == 0:
        return NEEDS_ACCURACY
    is_arm = summary["attn"].map(lambda name: matched_design(name) is not None)
    arms, summary = summary[is_arm], summary[~is_arm]
    if summary["top1_delta_pp"].notna().sum() == 0:
        return NEEDS_ACCURACY
    columns = []
    if summary["latency_ratio_fwd"].notna().any():
        columns.append(("latency_ratio_fwd", "forward latency / 3x3 conv latency (median over shapes, log)"))
    if summary["extra_macs_pct"].notna().any():
        arch = summary["model_arch"].dropna().iloc[0]
        columns.append(("extra_macs_pct", f"extra MACs over the {arch} backbone, % (log)"))
    elif summary["macs_over_conv3x3"].notna().any():
        columns.append(("macs_over_conv3x3", "block MACs / 3x3 conv MACs (median over shapes, log)"))
    if not columns:
        return NEEDS_ACCURACY
    panels = [_scatter_panel(summary, column, xlabel) for column, xlabel in columns]
    for panel in panels:
        if panel is not None:
            panel.matched = _matched_points(arms, panel)
    seeds, warning = _seed_warning(pd.concat([summary, arms]), panels)
    return CostBenefitData(panels, seeds, warning)


def _matched_points(arms: pd.DataFrame, panel: ScatterPanel) -> list[MatchedPoint]:
    """The arms with a top-1 delta whose design is a point of ``panel``, at the design's x."""
    points = []
    for row in arms.dropna(subset=["top1_delta_pp"]).to_dict("records"):
        design = matched_design(row["attn"])
        if design not in panel.labels:
            continue
        i = panel.labels.index(design)
        y = float(row["top1_delta_pp"])
        low, high = (row.get(c) for c in ("top1_ci_low_pp", "top1_ci_high_pp"))
        err = (0.0 if pd.isna(low) else y - float(low), 0.0 if pd.isna(high) else float(high) - y)
        points.append(MatchedPoint(row["attn"], design, float(panel.x[i]), y, err, float(panel.y[i])))
    return points


def _seed_warning(rows: pd.DataFrame, panels: list[ScatterPanel | None]) -> tuple[int | None, str]:
    """The most paired seeds behind any plotted delta, and the warning the figure carries when
    that is below :data:`FEW_SEEDS` (or, without a seed count, when no point has an interval)."""
    plotted = rows.dropna(subset=["top1_delta_pp"])
    counts = pd.to_numeric(plotted["n_seeds"], errors="coerce").dropna() if "n_seeds" in plotted else pd.Series()
    if len(counts):
        seeds = int(counts.max())
        if seeds >= FEW_SEEDS:
            return seeds, ""
        return seeds, (f"{seeds} paired seed{'s' if seeds != 1 else ''}: the accuracy deltas here are not evidence "
                       f"(no interval below {FEW_SEEDS} seeds; any gap may be noise)")
    if any(p is not None and p.with_interval for p in panels):
        return None, ""
    return None, "no 95% interval on any point: the accuracy deltas here are not evidence"


def _scatter_panel(summary: pd.DataFrame, column: str, xlabel: str) -> ScatterPanel | None:
    data = summary.dropna(subset=[column, "top1_delta_pp"])
    data = data[data[column] > 0]
    if data.empty:
        return None
    x = data[column].to_numpy(float)
    y = data["top1_delta_pp"].to_numpy(float)
    low = y - data["top1_ci_low_pp"].to_numpy(float)
    high = data["top1_ci_high_pp"].to_numpy(float) - y
    err = np.vstack([np.nan_to_num(low, nan=0.0), np.nan_to_num(high, nan=0.0)])
    return ScatterPanel(column, xlabel, x, y, err, pareto_front(x, y), data["attn"].tolist(),
                        with_interval=bool(np.isfinite(data["top1_ci_low_pp"].to_numpy(float)).any()),
                        some_without_bar=bool((err.sum(axis=0) == 0).any()))


# --------------------------------------------------------------------------- (b) latency heatmap
@dataclass
class HeatmapData:
    """The ratio to the conv per type and shape, a table per mode."""

    modes: list[str]
    shapes: dict[str, list[str]]  # the shapes measured or contended in each mode, in order
    order: list[str]  # the types, top to bottom
    cells: dict[str, pd.DataFrame]  # mode -> ratio (types x shapes; NaN: not measured)
    labels: dict[str, pd.DataFrame]  # mode -> each cell's text: the ratio ("" past
    # MAX_ANNOTATED_COLUMNS), "busy" for a contended cell without a clean measurement
    bound: float  # the colour scale's half-width in log2(ratio)


BUSY = "busy"
"""The text of a heatmap cell whose rows were all contended (no clean measurement)."""


def _shape_label(row: pd.Series) -> str:
    return f"b{int(row['batch'])} c{int(row['channels'])} {int(row['size'])}px"


MAX_ANNOTATED_COLUMNS = 24
"""A heatmap with more shape columns than this shows the ratios as colours only."""


def latency_heatmap_data(latency: pd.DataFrame, contended: pd.DataFrame | None = None) -> HeatmapData | str:
    """Module-level ok rows as ratio tables; ``contended`` rows (no clean measurement) mark
    their cells ``busy``, never a number, and add their type and shape to the grid when no ok
    row has them."""
    data = latency[(latency["status"] == "ok") & (latency["level"] == "module")].dropna(subset=["ratio"])
    if data.empty:
        return NEEDS_LATENCY
    data = data.assign(shape=data.apply(_shape_label, axis=1))
    modes = [m for m in MODES if m in set(data["mode"])]
    busy = _contended_cells(contended, modes)
    grid = (pd.concat([data, busy]) if not busy.empty else data).sort_values(["batch", "channels", "size"])
    shapes = {mode: list(dict.fromkeys(grid.loc[grid["mode"] == mode, "shape"])) for mode in modes}
    order = _with_rest(type_order(data[data["mode"] == modes[0]], "ratio"), set(grid["attn"]))
    values = np.log2(data["ratio"].clip(lower=1e-3))
    bound = max(abs(values.min()), abs(values.max()), 1.0)
    annotate = sum(len(v) for v in shapes.values()) <= MAX_ANNOTATED_COLUMNS
    cells, labels = {}, {}
    for mode in modes:
        agg = data[data["mode"] == mode].groupby(["attn", "shape"])["ratio"].median().unstack("shape")
        cells[mode] = agg = agg.reindex(index=order, columns=shapes[mode])
        busy_here = busy[busy["mode"] == mode]
        labels[mode] = _cell_labels(agg, set(zip(busy_here["attn"], busy_here["shape"], strict=True)), annotate)
    return HeatmapData(modes, shapes, order, cells, labels, bound)


def _contended_cells(contended: pd.DataFrame | None, modes: list[str]) -> pd.DataFrame:
    """The module-level contended rows of ``modes``: attn, mode, batch, channels, size, shape."""
    columns = ["attn", "mode", "batch", "channels", "size"]
    if contended is not None and not contended.empty:
        marked = contended.loc[(contended["level"] == "module") & contended["mode"].isin(modes), columns]
        if not marked.empty:
            return marked.assign(shape=marked.apply(_shape_label, axis=1))
    return pd.DataFrame(columns=[*columns, "shape"])


def _cell_labels(agg: pd.DataFrame, busy: set[tuple[str, str]], annotate: bool) -> pd.DataFrame:
    """Each cell's ratio in two digits (``""`` without ``annotate``); an unmeasured cell of a
    contended row says :data:`BUSY`."""
    labels = agg.apply(lambda col: col.map(lambda v: "" if pd.isna(v) or not annotate else f"{v:.2g}"))
    for attn, shape in busy:
        if pd.isna(agg.loc[attn, shape]):
            labels.loc[attn, shape] = BUSY
    return labels


# --------------------------------------------------------------------------- (c) counter agreement
@dataclass
class CounterData:
    """Each counter's MACs over the closed form per type (``shown``: floored for the log axis)."""

    ratios: pd.DataFrame  # attn, counter, ratio, shown
    order: list[str]
    counters: list[str]  # the legend's labels, in order
    floor: float


def counter_agreement_data(cost: pd.DataFrame) -> CounterData | str:
    """The median over the module shapes of each counter's MACs / the closed form, per type,
    sorted by fvcore's ratio as shipped."""
    module = cost[(cost["level"] == "module") & (cost["status"] == "ok")] if not cost.empty else cost
    if module.empty or "macs_formula" not in module or module["macs_formula"].notna().sum() == 0:
        return NEEDS_COST
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
        return NEEDS_COST
    data = pd.DataFrame(rows)
    data["shown"] = data["ratio"].clip(lower=COUNTED_FLOOR)
    order = (data[data["counter"] == COUNTERS["macs_fvcore_shipped"]].set_index("attn")["shown"]
             .sort_values(kind="stable").index.tolist()) or sorted(set(data["attn"]))
    return CounterData(data, _with_rest(order, set(data["attn"])), [COUNTERS[c] for c in columns], COUNTED_FLOOR)


# --------------------------------------------------------------------------- (d) latency scaling
SCALING_AXES: dict[str, str] = {"batch": "batch size", "size": "resolution H = W (px)", "channels": "channels C"}
"""The axes a latency sweep can vary, with their labels."""


@dataclass
class ScalingPanel:
    """Latency along one axis in one mode, the other axes at their largest value."""

    mode: str
    axis: str
    label: str
    fixed: str  # the other axes' values, in words
    lines: pd.DataFrame  # attn, axis, median_ms (median over the rows at each point)
    reference: pd.Series  # the 3x3 conv's median_ms along the axis
    ends: pd.DataFrame  # each line's last point
    ticks: list[float]


@dataclass
class ScalingData:
    """The panels, every type's name (one colour each) and what was left out."""

    panels: list[ScalingPanel]
    names: list[str]
    note: str
    left_out: list[str]


@dataclass
class SingleShapeData:
    """Latency per type at the shapes measured, for data without an axis to scale along."""

    rows: pd.DataFrame
    order: list[str]
    why: str


def latency_scaling_data(latency: pd.DataFrame) -> ScalingData | SingleShapeData | str:
    """Median latency against every axis the sweep varied (batch, resolution, channels): one
    panel per mode and axis with two or more values."""
    data = latency[(latency["status"] == "ok") & (latency["level"] == "module")].dropna(subset=["median_ms"])
    if data.empty:
        return "no successful module-level latency rows"
    varied = [a for a in SCALING_AXES if data[a].nunique() > 1]
    modes = [m for m in MODES if m in set(data["mode"])]
    if not varied:
        return _single_shape(data, "only one batch size, resolution and channel count was measured "
                             f"(batch {int(data['batch'].iloc[0])}, {int(data['size'].iloc[0])} px, "
                             f"C={int(data['channels'].iloc[0])})")
    slices = {(mode, axis): _scaling_slice(data[data["mode"] == mode], axis)
              for mode in modes for axis in varied}
    # a one-point "scaling" line says nothing: only (mode, axis) pairs with two values get a panel
    drawn = [key for key, (rows, _) in slices.items() if rows[key[1]].nunique() > 1]
    if not drawn:
        return _single_shape(data, "no axis has two values in any mode")
    fixed_axes = [a for a in SCALING_AXES if a not in varied]
    note = "axes varied: " + ", ".join(SCALING_AXES[a] for a in varied)
    if fixed_axes:
        note += "; fixed: " + ", ".join(f"{SCALING_AXES[a]} {int(data[a].iloc[0])}" for a in fixed_axes)
    left_out = [f"{mode} vs {axis} ({'only ' + str(int(rows[axis].iloc[0])) if len(rows) else 'no rows'})"
                for (mode, axis), (rows, _) in slices.items() if (mode, axis) not in drawn]
    if left_out:
        note += "; no panel where one value was measured: " + ", ".join(left_out)
    panels = [_scaling_panel(mode, axis, *slices[mode, axis]) for mode, axis in drawn]
    return ScalingData(panels, sorted(set(data["attn"])), note, left_out)


def _single_shape(data: pd.DataFrame, why: str) -> SingleShapeData:
    return SingleShapeData(data, type_order(data, "median_ms"), why)


def _scaling_slice(rows: pd.DataFrame, axis: str) -> tuple[pd.DataFrame, str]:
    """The rows of one scaling panel: every axis but ``axis`` held at its largest value, and a
    phrase naming those values."""
    for other in SCALING_AXES:
        if other != axis:
            rows = rows[rows[other] == rows[other].max()]
    fixed = ", ".join(f"{o} {int(rows[o].iloc[0])}" for o in SCALING_AXES if o != axis and len(rows))
    return rows, fixed


def _scaling_panel(mode: str, axis: str, rows: pd.DataFrame, fixed: str) -> ScalingPanel:
    lines = rows.groupby(["attn", axis])["median_ms"].median().reset_index()
    reference = rows.groupby(axis)["ref_median_ms"].median()
    ends = lines.sort_values(axis).groupby("attn").tail(1)
    return ScalingPanel(mode, axis, SCALING_AXES[axis], fixed, lines, reference, ends, sorted(rows[axis].unique()))


# --------------------------------------------------------------------------- (e) memory
@dataclass
class MemoryPanel:
    """Bytes per type (``mib``) of one configuration at one shape: a row per type and mode."""

    rows: pd.DataFrame  # attn, mode, mib
    label: str
    shape: str
    by_mode: bool  # a bar per mode (more than one mode measured)
    config: str = ""  # the configuration shown ("cuda:0 fp32 contiguous eager"; "" where the rows name none)
    chosen: bool = False  # the rows held more than one configuration: ``config`` is the one of them shown


@dataclass
class MemoryData:
    panels: list[MemoryPanel]
    order: list[str]
    note: str


def memory_data(memory: pd.DataFrame, cost: pd.DataFrame) -> MemoryData | str:
    """Bytes saved for backward and the step's CUDA peak per type, of one configuration
    (:func:`_one_configuration`: fp32 and contiguous where measured) at the largest shape
    measured, never averaged over dtypes or memory formats; the cost stage's saved-activation
    bytes without a memory stage."""
    ok = memory[memory["status"] == "ok"] if not memory.empty else memory
    if not ok.empty:
        panels, note = _memory_stage_panels(ok)
    elif not cost.empty and "act_saved_bytes" in cost:
        panels, note = _cost_stage_panels(cost)
    else:
        panels, note = [], ""
    if not panels:
        return "no memory data"
    order = _with_rest(type_order(panels[0].rows, "mib"), set().union(*[set(p.rows["attn"]) for p in panels]))
    return MemoryData(panels, order, note)


def _largest(rows: pd.DataFrame, height: str, width: str) -> pd.DataFrame:
    """The rows at the largest input (batch x channels x height x width); of inputs as large, the
    one with the most channels, then the largest image."""
    shape = ["batch", "channels", height, width]
    rows = rows.assign(volume=rows["batch"] * rows["channels"] * rows[height] * rows[width])
    largest = rows.sort_values(["volume", "channels", height, width, "batch"]).iloc[-1]
    return rows[(rows[shape] == largest[shape]).all(axis=1)]


CONFIGURATION_COLUMNS = ("level", "device", "dtype", "memory_format", "compile", "arch", "threads")
"""The columns of a memory row that tell one configuration from another (besides type, mode, shape)."""


def _one_configuration(rows: pd.DataFrame) -> tuple[pd.DataFrame, str, bool]:
    """The rows of one configuration, its words, and whether the rows held more than one (of
    :data:`CONFIGURATION_COLUMNS`): module level where measured, then the latency summary's
    choice (:func:`suite.report.tables.primary_latency`: one device, fp32 where measured,
    contiguous where measured, eager), then one backbone and one thread count (the most rows). A
    bar then stands for one measurement per type and mode."""
    columns = [c for c in CONFIGURATION_COLUMNS if c in rows]
    chosen = len(rows[columns].drop_duplicates()) > 1 if columns else False
    if "level" in rows and (rows["level"] == "module").any():
        rows = rows[rows["level"] == "module"]
    rows, words = primary_latency(rows)
    for column in ("arch", "threads"):
        if column in rows and rows[column].nunique() > 1:
            rows = rows[rows[column] == rows[column].value_counts().index[0]]
    return rows, words, chosen


def _shape_words(rows: pd.DataFrame, height: str) -> str:
    return f"batch {int(rows['batch'].iloc[0])}, C={int(rows['channels'].iloc[0])}, {int(rows[height].iloc[0])} px"


def _panel(rows: pd.DataFrame, column: str, label: str, shape: str, config: str = "",
           chosen: bool = False) -> MemoryPanel:
    rows = rows.assign(mib=rows[column] / 2**20)
    return MemoryPanel(rows, label, shape, by_mode=rows["mode"].nunique() > 1, config=config, chosen=chosen)


def _memory_stage_panels(ok: pd.DataFrame) -> tuple[list[MemoryPanel], str]:
    # the step's peak is drawn where the CUDA allocator measured it; on the CPU it is RSS growth,
    # page-granular and dominated by the allocator's arenas (kept in memory.csv, not drawn)
    cuda = ok[ok["device"].astype(str).str.startswith("cuda")] if "device" in ok else ok.iloc[:0]
    panels = []
    for rows, column, label in ((ok, "act_saved_bytes", "saved for backward (train step), MiB"),
                                (cuda, "cuda_step_peak_bytes", "CUDA memory allocated at the step's peak, MiB")):
        if column not in rows:
            continue
        sub = rows.dropna(subset=[column])
        if sub.empty:
            continue
        sub, config, chosen = _one_configuration(sub)
        sub = _largest(sub, "size", "size")
        panels.append(_panel(sub, column, label, _shape_words(sub, "size"), config, chosen))
    shown = sorted({p.config for p in panels if p.config and p.chosen})  # named where one was chosen
    note = "from the memory stage, at the largest input measured" + (
        f"; shown: {' and '.join(shown)} (other configurations in memory.csv)" if shown else "") + (
        "" if len(cuda) else "; the CPU step's RSS growth is in memory.csv, not drawn (page-granular)")
    return panels, note


def _cost_stage_panels(cost: pd.DataFrame) -> tuple[list[MemoryPanel], str]:
    sub = cost[(cost["level"] == "module") & (cost["status"] == "ok")].dropna(subset=["act_saved_bytes"])
    if sub.empty:
        return [], ""
    sub = _largest(sub, "height", "width").assign(mode="train")
    panel = _panel(sub, "act_saved_bytes", "saved for backward (counted by the cost stage), MiB",
                   _shape_words(sub, "height"))
    return [panel], "no memory stage: bytes saved for backward as counted by the cost stage"


# --------------------------------------------------------------------------- (f) model latency
@dataclass
class ModelPanel:
    """One backbone: each type's forward latency over the backbone's, sorted."""

    arch: str
    labels: list[str]
    ratio: np.ndarray
    err: np.ndarray  # 2 x n: below and above the ratio (0 without an interval)
    not_shown: str  # the statuses of the rows left out, counted ("" when none)


def model_latency_data(primary: pd.DataFrame, latency: pd.DataFrame) -> list[ModelPanel] | str:
    """A panel per backbone from ``primary`` (the ok model-level rows of the configuration
    shown); ``latency`` (every row) names the types refused or not measured."""
    if primary.empty or latency.empty or "level" not in latency:
        return "needs successful model-level rows from the latency stage (level = model)"
    model = latency[(latency["level"] == "model") & (latency["mode"] == "forward")]
    ok = primary[primary["mode"] == "forward"].dropna(subset=["ratio"])
    if ok.empty:
        return "needs successful model-level forward rows from the latency stage"
    panels = []
    for arch in sorted(ok["arch"].unique()):
        sub = ok[ok["arch"] == arch].sort_values("ratio")
        ratio = sub["ratio"].to_numpy(float)
        low = ratio - sub.get("ratio_ci_low", pd.Series(np.nan, index=sub.index)).to_numpy(float)
        high = sub.get("ratio_ci_high", pd.Series(np.nan, index=sub.index)).to_numpy(float) - ratio
        err = np.vstack([np.nan_to_num(low, nan=0.0), np.nan_to_num(high, nan=0.0)])
        others = model[(model["arch"] == arch) & (model["status"] != "ok")]
        counts = ", ".join(f"{n} {s}" for s, n in others["status"].value_counts().items()) if len(others) else ""
        names = ["none (A/A control)" if name == "none" else name for name in sub["attn"].tolist()]
        panels.append(ModelPanel(arch, names, ratio, err, counts))
    return panels
