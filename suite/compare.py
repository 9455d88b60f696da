"""``python -m suite compare A B``: two result folders side by side, row by row, with a verdict.

Two machines, two commits, two runtimes, a quiet run and a busy one: each row of A is matched to
the row of B that measured the same configuration, and the table gives both values with their
95% intervals, the change and a verdict, as pyperf's ``compare_to`` does for its benchmarks.

**Folders.** A and B are each a *bench folder* (``reports/X``, written by ``python -m suite
bench``: its stages under ``raw/STAGE/``) or a *stage folder* (``reports/X/raw/latency``, or the
``--out`` of ``python -m suite latency``: the stage's records, :attr:`suite.stages.StageSpec.records_file`,
or its CSVs, :attr:`~suite.stages.StageSpec.files`), of any name. A stage's rows are its report
table (:attr:`~suite.stages.StageSpec.report_tables`: the columns of the report's
``latency.csv``, ``memory.csv``, ``cost.csv``, ``accuracy.csv``), built from the records as the
report builds them. ``--stage summary`` compares the report's summary (bench folders only).
Without ``--stage`` every stage both folders hold is compared. Refused before anything is read
(a :class:`~suite.errors.UsageError`, exit 2, naming what each folder holds): a folder that does
not exist or holds no stage, a stage a folder does not hold, two folders with no stage in common
(a latency stage folder and a memory one).

**Rows** are matched on the configuration columns both tables have (:data:`KEY_COLUMNS`:
design, level, backbone, shape, dtype, memory format, compile mode, pass, threads, device; the
recipe for accuracy). Each row gives one line per metric of the stage (:data:`METRICS`): latency
``median_ms`` and ``ratio`` (to the 3x3 conv, or to the backbone at model level) with their
intervals; memory ``step_peak_bytes`` and ``act_saved_bytes``; cost ``params_total`` and
``macs_fvcore`` (exact counts); accuracy ``top1_delta_pp`` with its interval; the summary the
stages' headline columns (:attr:`~suite.stages.StageSpec.headline_columns`).

**Change**: ``B / A - 1`` in percent; for the accuracy delta, already a difference in percentage
points, ``B - A`` in points (and ``--min-change`` is in points there).

**Verdict** of a line:

* ``not comparable``: the configuration is in one folder only, its status is not ``ok`` on
  either side, a side has no value, what the number is relative to differs (the ratio's
  ``reference``, CUDA ``timing_mode``, memory ``isolation``), or a measurement of the hardware
  (latency, step memory) was taken on another machine class (the CPU model, the GPU model on
  CUDA rows) and ``--across-machines`` is not given; ``reason`` says which;
* ``same``: the two 95% intervals overlap, or ``|change|`` is at most ``--min-change``; a value
  without an interval (a count, a single measurement) is its own interval, so two counts are
  the same only when equal;
* otherwise the direction: ``faster`` / ``slower`` (times and latency ratios), ``smaller`` /
  ``larger`` (bytes, parameters, MACs), ``better`` / ``worse`` (the accuracy delta).

**Output.** Per stage and metric a table on stdout of the lines that are not ``same`` (every line
with ``--all``), then a summary line: the count per verdict and the geometric mean change (the
mean difference for the accuracy delta) over the judged lines. ``--csv FILE`` writes every line.
Exit status 0; 1 with ``--fail-on-slower`` when a line is slower, larger or worse; 2 refused input.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .errors import UsageError
from .options import Option, add_options, non_negative_float, setting
from .stages import StageSpec, load_function, measuring_stages
from .stages import stage as stage_spec

if TYPE_CHECKING:
    from .report.load import StageData

__all__ = ["CompareSettings", "SETTINGS", "add_arguments", "main", "Metric", "METRICS", "KEY_COLUMNS", "SUMMARY",
           "Folder", "inspect_folder", "choose_stages", "read_stage", "compare_tables", "compare_folders",
           "summary_lines", "WORSE", "key_text"]

SUMMARY = "summary"
"""The ``--stage`` that compares the report's summary (one row per design)."""

KEY_COLUMNS: tuple[str, ...] = ("attn", "level", "arch", "mode", "device", "dtype", "memory_format", "compile",
                                "batch", "channels", "size", "height", "width", "threads", "profile", "recipe")
"""The columns that name a configuration (those a stage's table has): rows of A and B with equal
values in every one that both tables have are the same configuration."""

VERDICT_WORDS: dict[str, tuple[str, str]] = {"time": ("faster", "slower"), "size": ("smaller", "larger"),
                                             "score": ("better", "worse")}
"""Per kind of metric, the verdict when B is better and when it is worse than A."""
WORSE: frozenset[str] = frozenset(worse for _, worse in VERDICT_WORDS.values())
"""The verdicts ``--fail-on-slower`` fails on."""
SAME, NOT_COMPARABLE = "same", "not comparable"
MACHINE_DIFFERS = "machine differs"
"""How the reason of a row measured on another machine class begins."""
IN_BOTH = "in both"
"""How the reason of a row whose status is the same, and not ok, in both folders ends."""


@dataclass(frozen=True)
class Metric:
    """One compared column: its interval's columns, its kind (``time`` and ``size``: lower is
    better, judged on ``B / A - 1``; ``score``: higher is better, judged on ``B - A``), the columns
    that say what it is relative to (``depends``; they must be equal), and whether it measures the
    hardware (``machine``: then A and B must come from one machine class)."""

    column: str
    low: str | None = None
    high: str | None = None
    kind: str = "time"
    depends: tuple[str, ...] = ()
    machine: bool = False

    @property
    def difference(self) -> bool:
        """Whether the change is ``B - A`` (a delta already) rather than ``B / A - 1``."""
        return self.kind == "score"


_TOP1 = Metric("top1_delta_pp", "top1_ci_low_pp", "top1_ci_high_pp", kind="score")
METRICS: dict[str, tuple[Metric, ...]] = {
    "latency": (Metric("median_ms", "ci_low_ms", "ci_high_ms", depends=("timing_mode",), machine=True),
                Metric("ratio", "ratio_ci_low", "ratio_ci_high", depends=("reference", "timing_mode"), machine=True)),
    "memory": (Metric("step_peak_bytes", kind="size", depends=("isolation",), machine=True),
               Metric("act_saved_bytes", kind="size")),
    "cost": (Metric("params_total", kind="size"), Metric("macs_fvcore", kind="size")),
    "accuracy": (_TOP1,),
    "ops": (),
}
"""The metrics compared per measuring stage (none for ``ops``: profiler shares are an
explanation, not a figure to hold against another run)."""

SUMMARY_METRICS: dict[str, Metric] = {
    "params_over_conv3x3": Metric("params_over_conv3x3", kind="size"),
    "extra_params": Metric("extra_params", kind="size"),
    "latency_ratio_fwd": Metric("latency_ratio_fwd", machine=True),
    "latency_ratio_train": Metric("latency_ratio_train", machine=True),
    "act_saved_bytes_max": Metric("act_saved_bytes_max", kind="size"),
    "top1_delta_pp": _TOP1,
}
"""How the summary's headline columns (:attr:`~suite.stages.StageSpec.headline_columns`) compare."""

MACHINE_FIELDS: tuple[str, ...] = ("cpu", "gpu")
"""The environment fields that name the hardware: the CPU model for CPU rows, the GPU model for CUDA rows."""


def stage_metrics(stage: str) -> tuple[Metric, ...]:
    """The metrics of ``stage`` (a measuring stage or :data:`SUMMARY`)."""
    if stage == SUMMARY:
        return tuple(SUMMARY_METRICS[c] for spec in measuring_stages().values() for c in spec.headline_columns)
    return METRICS[stage]


# --- settings -----------------------------------------------------------------------------------

@dataclass
class CompareSettings:
    """The comparison's settings (``python -m suite compare --help``); ``a`` and ``b`` are the
    two positional folders."""

    a: Path | None = None
    b: Path | None = None
    stage: str | None = setting(Option(
        "--stage", "compare this stage only (summary: the report's summary of two bench folders)",
        choices=(*measuring_stages(), SUMMARY), group="what to compare"), None,
        default_text="every stage both folders hold")
    min_change: float = setting(Option(
        "--min-change", "a change of at most this many percent is 'same' even where the intervals do not overlap "
        "(percentage points for the accuracy delta)", parse=non_negative_float, metavar="PCT", group="verdict"), 0.0)
    across_machines: bool = setting(Option(
        "--across-machines", "judge latency and step-memory rows measured on different machine classes (CPU model, "
        "GPU model on CUDA rows) instead of calling them not comparable", kind="switch", group="verdict"), False)
    fail_on_slower: bool = setting(Option(
        "--fail-on-slower", "exit status 1 when any row is slower (latency), larger (memory, cost) or worse "
        "(accuracy) in B", kind="switch", group="verdict"), False)
    csv: Path | None = setting(Option(
        "--csv", "write every compared row, the same ones included, to this CSV file", parse=Path, metavar="FILE",
        group="output"), None)
    all: bool = setting(Option("--all", "print every row, the same ones included", kind="switch", group="output"),
                        False)


SETTINGS = CompareSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The two folders (positional; a missing one is refused by :func:`main`, as every other bad
    input is) and the flags of :class:`CompareSettings`, with examples."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = ("examples:\n"
                     "  python -m suite compare reports/cpu reports/quick --stage latency --across-machines\n"
                     "  python -m suite compare quiet/raw/latency busy/raw/latency --fail-on-slower --min-change 5\n"
                     "  python -m suite compare reports/cpu reports/cpu-new --csv changes.csv")
    for name in ("a", "b"):
        parser.add_argument(name, type=Path, nargs="?", metavar=name.upper(),
                            help=f"folder {name.upper()}: a bench folder (holding raw/STAGE/) or one stage's folder")
    add_options(parser, CompareSettings)


# --- folders ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Folder:
    """A folder given to compare: a bench folder (``raw/STAGE/`` inside) or one stage's folder."""

    path: Path
    label: str
    bench: bool
    stages: tuple[str, ...]

    def stage_path(self, stage: str) -> Path:
        """Where ``stage``'s records and tables are."""
        return self.path / "raw" / stage if self.bench else self.path

    def holds(self, stage: str) -> bool:
        """Whether the folder holds ``stage`` (the summary: a bench folder with any stage)."""
        return bool(self.stages) and self.bench if stage == SUMMARY else stage in self.stages

    def describe(self) -> str:
        """What the folder is, in words, for messages."""
        if self.bench:
            held = ", ".join(f"raw/{s}" for s in self.stages) or "no stage"
            return f"{self.label} {self.path}: a bench folder holding {held}"
        return f"{self.label} {self.path}: a {self.stages[0]} stage folder"


def _records_stage(path: Path) -> str | None:
    """The ``stage`` the first record of ``path`` that names one names (records of several stages
    share a file name)."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("stage"):
                return str(record["stage"])
    return None


def _holds_stage(folder: Path, spec: StageSpec) -> bool:
    """Whether ``folder`` holds ``spec``'s records (the file, and where stages share its name, records
    of this stage) or one of its CSVs."""
    if any((folder / name).is_file() for name in spec.files.values()):
        return True
    records = folder / str(spec.records_file)
    if not records.is_file():
        return False
    shared = sum(other.records_file == spec.records_file for other in measuring_stages().values()) > 1
    return not shared or _records_stage(records) == spec.name


def inspect_folder(path: Path, label: str) -> Folder:
    """What ``path`` holds; a :class:`UsageError` when it does not exist or holds no stage."""
    expected = ("a bench folder holding raw/STAGE/ (python -m suite bench) or one stage's folder holding its "
                "records or CSVs (python -m suite STAGE --out)")
    if not path.is_dir():
        raise UsageError(f"{label} {path}: no such folder; expected {expected}")
    specs = measuring_stages()
    if (path / "raw").is_dir():
        held = tuple(name for name, spec in specs.items() if (path / "raw" / name).is_dir()
                     and _holds_stage(path / "raw" / name, spec))
        if not held:
            raise UsageError(f"{label} {path}: its raw/ holds no stage's records or tables; expected {expected}")
        return Folder(path, label, True, held)
    held = tuple(name for name, spec in specs.items() if _holds_stage(path, spec))
    if not held:
        raise UsageError(f"{label} {path}: it holds no stage's records or tables; expected {expected}")
    if len(held) > 1:
        raise UsageError(f"{label} {path}: it holds the records or tables of several stages ({', '.join(held)}); "
                         f"name one stage's folder, or the bench folder above raw/")
    return Folder(path, label, False, held)


def choose_stages(a: Folder, b: Folder, asked: str | None) -> list[str]:
    """The stages to compare: ``asked`` when both folders hold it, else every stage both hold;
    a :class:`UsageError` saying what each folder holds otherwise."""
    if asked is not None:
        for folder in (a, b):
            if not folder.holds(asked):
                need = "a bench folder with at least one stage" if asked == SUMMARY else f"the {asked} stage"
                raise UsageError(f"--stage {asked} needs {need} in both folders; {folder.describe()}")
        return [asked]
    common = [s for s in a.stages if s in b.stages]
    if not common:
        raise UsageError(f"A and B hold no stage in common: {a.describe()}; {b.describe()}. "
                         f"Compare folders of the same stage")
    return common


# --- tables -------------------------------------------------------------------------------------

def read_stage(folder: Path, stage: str) -> StageData:
    """``stage``'s tables in ``folder`` (a folder of any name) as the report reads them
    (:func:`suite.report.load.load_stage_folder`: built from the records where the folder has
    them, else read from its CSVs; the empty ones left out)."""
    from .report.load import load_stage_folder

    return load_stage_folder(folder, stage)


def _same_rows(table: pd.DataFrame, rows: pd.DataFrame) -> bool:
    """Whether ``rows`` are ``table``'s rows in the same order (the same designs, row by row)."""
    designs = rows["attn"] if "attn" in rows else rows.get("name")
    return len(rows) == len(table) and designs is not None and "attn" in table \
        and list(designs.astype(str)) == list(table["attn"].astype(str))


def _environment_sources(data: StageData, spec: StageSpec) -> list[pd.DataFrame]:
    """The stage's tables that carry its environment, those with rows (:attr:`StageSpec.environment_tables`)."""
    return [data.table(name) for name in spec.environment_tables if not data.table(name).empty]


def _with_machine(table: pd.DataFrame, data: StageData, spec: StageSpec) -> pd.DataFrame:
    """``table`` with ``env_cpu`` and ``env_gpu`` per row: from the stage's environment tables where
    their rows are the table's (the latency, memory and cost report tables keep the stage's rows in
    order), else the environment of the stage's first row for every row."""
    from .report.load import environment_of

    sources = _environment_sources(data, spec)
    per_row = pd.concat(sources, ignore_index=True) if sources else pd.DataFrame()
    out = table.copy()
    first = environment_of(sources[0]) if sources else {}
    for key in MACHINE_FIELDS:
        column = f"env_{key}"
        if column in per_row and _same_rows(table, per_row):
            out[column] = per_row[column].to_numpy()
        else:
            out[column] = first.get(key, "")
    return out


def _stage_table(folder: Folder, stage: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The report table of ``stage`` in ``folder`` (empty where the folder does not hold it) with
    each row's machine, and the environment of the stage's first row."""
    from .report.load import environment_of

    spec = stage_spec(stage)
    data = read_stage(folder.stage_path(stage), stage)
    table = load_function(spec.report_tables[spec.report_file])(data)
    sources = _environment_sources(data, spec)
    return _with_machine(table, data, spec), (environment_of(sources[0]) if sources else {})


def _summary_table(folder: Folder) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The report's summary of a bench folder (:func:`suite.report.summary.summary_table`), with the
    device and machine its latency columns were measured on, and that environment."""
    from .report.summary import summary_table

    frames, envs = {}, {}
    for name in measuring_stages():
        frames[name], envs[name] = _stage_table(folder, name)
    summary = summary_table(frames)
    latency = frames["latency"]
    devices = latency["device"].mode() if "device" in latency else pd.Series(dtype=object)
    summary["device"] = devices.iloc[0] if len(devices) else "cpu"
    for key in MACHINE_FIELDS:
        summary[f"env_{key}"] = envs["latency"].get(key, "")
    return summary, envs["latency"] or next((env for env in envs.values() if env), {})


# --- judging ------------------------------------------------------------------------------------

def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value is not pd.NA \
        and str(value) != ""


def key_text(value: Any) -> str:
    """A key column's value as text, so that ``8``, ``8.0`` and ``"8"`` match and a missing value is ``""``."""
    if not _present(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _number(row: dict[str, Any] | None, column: str | None) -> float | None:
    if row is None or column is None or not _present(row.get(column)):
        return None
    try:
        value = float(row[column])
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _machine(row: dict[str, Any]) -> str:
    """The hardware a row was measured on: the GPU model on a CUDA device, else the CPU model."""
    field_name = "gpu" if str(row.get("device", "")).startswith("cuda") else "cpu"
    return key_text(row.get(f"env_{field_name}"))


def _change(a: float, b: float, metric: Metric) -> float:
    """``B / A - 1`` in percent (``B - A`` for a difference metric); infinite from a zero A."""
    if metric.difference:
        return b - a
    if a == b:
        return 0.0
    if a == 0:
        return math.copysign(math.inf, b)
    return 100.0 * (b / a - 1.0)


def _why_not(ra: dict[str, Any] | None, rb: dict[str, Any] | None, metric: Metric,
             across_machines: bool) -> tuple[str, str]:
    """Why the metric of these rows cannot be judged (``""`` when it can), and a note that does not stop it."""
    if ra is None or rb is None:
        return ("only in B" if ra is None else "only in A"), ""
    statuses = [_status(ra), _status(rb)]
    if statuses[0] == statuses[1] != "ok":
        return f"status {statuses[0]} {IN_BOTH}", ""
    if statuses != ["ok", "ok"]:
        return f"status: A {statuses[0]}, B {statuses[1]}", ""
    for side, row in (("A", ra), ("B", rb)):
        if _number(row, metric.column) is None:
            return f"no {metric.column} in {side}", ""
    for column in metric.depends:
        va, vb = key_text(ra.get(column)), key_text(rb.get(column))
        if va != vb:
            return f"{column} differs: A {va or '-'}, B {vb or '-'}", ""
    if metric.machine:
        ma, mb = _machine(ra), _machine(rb)
        if ma and mb and ma != mb:
            text = f"{MACHINE_DIFFERS}: A {ma}, B {mb}"
            return ("", text) if across_machines else (text + " (--across-machines judges it)", "")
    return "", ""


def _status(row: dict[str, Any]) -> str:
    return key_text(row.get("status")) or "ok"


def _interval(row: dict[str, Any], metric: Metric, value: float) -> tuple[float, float]:
    """The row's 95% interval of the metric; the ``value`` itself where the row has none."""
    low, high = _number(row, metric.low), _number(row, metric.high)
    return (value if low is None else low, value if high is None else high)


def _verdict(a: float, b: float, change: float, overlap: bool, metric: Metric, threshold: float) -> str:
    """``same`` when the intervals overlap or the change is within the threshold, else the direction."""
    if overlap or abs(change) <= threshold:
        return SAME
    better, worse = VERDICT_WORDS[metric.kind]
    improved = b > a if metric.kind == "score" else b < a
    return better if improved else worse


def judge(ra: dict[str, Any] | None, rb: dict[str, Any] | None, metric: Metric, *, threshold: float = 0.0,
          across_machines: bool = False) -> dict[str, Any] | None:
    """One line of the comparison: both values and intervals, the change and the verdict (module
    docstring); ``None`` when neither row has the metric though both are ok (nothing to compare,
    the saved bytes of a forward pass, for instance)."""
    if ra is not None and rb is not None and _status(ra) == _status(rb) == "ok" \
            and _number(ra, metric.column) is None and _number(rb, metric.column) is None:
        return None
    line: dict[str, Any] = {"metric": metric.column}
    for side, row in (("a", ra), ("b", rb)):
        line |= {side: _number(row, metric.column), f"{side}_ci_low": _number(row, metric.low),
                 f"{side}_ci_high": _number(row, metric.high)}
    line["unit"] = "pp" if metric.difference else "%"
    reason, note = _why_not(ra, rb, metric, across_machines)
    if reason or ra is None or rb is None:
        return {**line, "change": None, "verdict": NOT_COMPARABLE, "reason": reason}
    (a_low, a_high), (b_low, b_high) = _interval(ra, metric, line["a"]), _interval(rb, metric, line["b"])
    change = _change(line["a"], line["b"], metric)
    overlap = max(a_low, b_low) <= min(a_high, b_high)
    return {**line, "change": change, "verdict": _verdict(line["a"], line["b"], change, overlap, metric, threshold),
            "reason": note}


def _index(table: pd.DataFrame, keys: list[str]) -> dict[tuple[str, ...], dict[str, Any]]:
    """The rows of ``table`` by their configuration (the last row of a configuration named twice)."""
    return {tuple(key_text(row.get(k)) for k in keys): row for row in table.to_dict("records")}


def compare_tables(a: pd.DataFrame, b: pd.DataFrame, metrics: tuple[Metric, ...], *, threshold: float = 0.0,
                   across_machines: bool = False) -> pd.DataFrame:
    """Every line of the comparison of two tables of one stage: the configuration's key columns
    (:data:`KEY_COLUMNS` both tables have), then per metric the values, intervals, change, verdict
    and reason. A's configurations come first, in A's order, then those only B has."""
    keys = [c for c in KEY_COLUMNS if c in a.columns and c in b.columns]
    rows_a, rows_b = _index(a, keys), _index(b, keys)
    lines = []
    for key in [*rows_a, *(k for k in rows_b if k not in rows_a)]:
        for metric in metrics:
            line = judge(rows_a.get(key), rows_b.get(key), metric, threshold=threshold, across_machines=across_machines)
            if line is not None:
                lines.append({**dict(zip(keys, key, strict=True)), **line})
    columns = [*keys, "metric", "a", "a_ci_low", "a_ci_high", "b", "b_ci_low", "b_ci_high", "change", "unit",
               "verdict", "reason"]
    return pd.DataFrame(lines, columns=columns)


@dataclass
class Comparison:
    """The comparison of two folders: every line (``table``, a ``stage`` column first) and, per
    stage, each side's environment."""

    a: Folder
    b: Folder
    table: pd.DataFrame
    environments: dict[str, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)


def compare_folders(a: Folder, b: Folder, stages: list[str], *, threshold: float = 0.0,
                    across_machines: bool = False) -> Comparison:
    """Compare ``stages`` of the two folders (checked by :func:`choose_stages`)."""
    parts, environments = [], {}
    for stage in stages:
        (table_a, env_a), (table_b, env_b) = ((_summary_table(f) if stage == SUMMARY else _stage_table(f, stage))
                                              for f in (a, b))
        lines = compare_tables(table_a, table_b, stage_metrics(stage), threshold=threshold,
                               across_machines=across_machines)
        parts.append(lines.assign(stage=stage)[["stage", *lines.columns]])
        environments[stage] = (env_a, env_b)
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["stage"])
    return Comparison(a, b, table, environments)


# --- text ---------------------------------------------------------------------------------------

def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1000:
        return f"{int(value):,}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _with_interval(value: Any, low: Any, high: Any) -> str:
    text = _fmt(value)
    return f"{text} [{_fmt(low)}, {_fmt(high)}]" if text and _fmt(low) and _fmt(high) else text


def _change_text(change: Any, unit: str) -> str:
    if change is None or (isinstance(change, float) and math.isnan(change)):
        return ""
    if math.isinf(change):
        return f"{'+' if change > 0 else '-'}inf{unit}"
    return f"{change:+.1f}{unit}" if unit == "%" else f"{change:+.2f} {unit}"


def _rows(count: int) -> str:
    return f"{count} row" + ("" if count == 1 else "s")


def summary_lines(table: pd.DataFrame) -> list[str]:
    """Per stage and metric: the lines, the count per verdict and the mean change of the judged ones
    (geometric for ratios of positive values, arithmetic for differences)."""
    out = []
    for (stage, metric), group in table.groupby(["stage", "metric"], sort=False):
        counts = group["verdict"].value_counts()
        order = [SAME, *(w for pair in VERDICT_WORDS.values() for w in pair), NOT_COMPARABLE]
        text = ", ".join(f"{int(counts[v])} {v}" for v in order if v in counts)
        judged = group[group["verdict"] != NOT_COMPARABLE]
        mean = ""
        if len(judged) and (judged["unit"] == "pp").all():
            mean = f"; mean change {judged['change'].astype(float).mean():+.2f} pp over {len(judged)}"
        else:
            positive = judged[(judged["a"].astype(float) > 0) & (judged["b"].astype(float) > 0)]
            if len(positive):
                logs = (positive["b"].astype(float) / positive["a"].astype(float)).map(math.log)
                mean = f"; geometric mean change {100 * (math.exp(logs.mean()) - 1):+.1f}% over {len(positive)}"
        out.append(f"{stage} {metric}: {_rows(len(group))}: {text}{mean}")
    return out


def _quiet(group: pd.DataFrame) -> list[tuple[pd.Series, str]]:
    """The rows the text leaves out unless ``--all`` (each kind as a mask), and how it counts them:
    the same ones, those of another machine class, those not ok in both folders alike."""
    reason = group["reason"].fillna("").astype(str)
    not_comparable = group["verdict"] == NOT_COMPARABLE
    return [(group["verdict"] == SAME, "the same"),
            (not_comparable & reason.str.startswith(MACHINE_DIFFERS),
             "measured on another machine class (--across-machines judges them)"),
            (not_comparable & reason.str.endswith(IN_BOTH), "not ok in both folders")]


def _block(group: pd.DataFrame, keys: list[str], show_all: bool) -> list[str]:
    """The text table of one stage and metric: the key columns that vary, A and B with their
    intervals, the change, the verdict and the reason; then what it left out."""
    quiet = [] if show_all else [(mask, what) for mask, what in _quiet(group) if mask.any()]
    shown = group
    for mask, _ in quiet:
        shown = shown[~mask.loc[shown.index]]
    varying = [k for k in keys if group[k].nunique(dropna=False) > 1] or keys[:1]
    fixed = [f"{k} {group[k].iloc[0]}" for k in keys if k not in varying and key_text(group[k].iloc[0])]
    lines = [("fixed: " + ", ".join(fixed)) if fixed else ""]
    header = [*varying, "A [95% CI]", "B [95% CI]", "change", "verdict", "reason"]
    rows = [[key_text(r[k]) for k in varying] + [
        _with_interval(r["a"], r["a_ci_low"], r["a_ci_high"]), _with_interval(r["b"], r["b_ci_low"], r["b_ci_high"]),
        _change_text(r["change"], r["unit"]), r["verdict"], r["reason"] or ""] for r in shown.to_dict("records")]
    if rows:
        widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
        lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                  for row in [header, *rows]]
    if quiet:
        lines.append("not shown (--all shows them): " + "; ".join(f"{_rows(int(mask.sum()))} {what}"
                                                                   for mask, what in quiet))
    return [line for line in lines if line]


def _environment_text(env: dict[str, Any]) -> str:
    parts = [str(env[k]) for k in ("cpu", "gpu") if env.get(k)]
    parts += [f"{label} {env[k]}" for k, label in (("torch_version", "torch"), ("commit", "commit"),
                                                  ("date", "date")) if env.get(k)]
    return ", ".join(parts) or "no environment recorded"


def render_text(comparison: Comparison, show_all: bool = False) -> str:
    """The comparison as text: the folders, per stage each side's environment and per metric its
    table, then the summary lines."""
    table = comparison.table
    lines = [comparison.a.describe(), comparison.b.describe()]
    for stage, group in table.groupby("stage", sort=False):
        env_a, env_b = comparison.environments.get(str(stage), ({}, {}))
        lines += ["", f"== {stage} ==", f"A: {_environment_text(env_a)}", f"B: {_environment_text(env_b)}"]
        keys = [c for c in KEY_COLUMNS if c in group.columns and group[c].notna().any()]
        for metric, rows in group.groupby("metric", sort=False):
            lines += ["", f"-- {stage} {metric} --", *_block(rows, keys, show_all)]
    lines += ["", *summary_lines(table)] if len(table) else ["", "no rows to compare"]
    return "\n".join(lines)


def main(settings: CompareSettings) -> int:
    """Check both folders and the stage, compare, print the table and the summary, write ``--csv``;
    the exit status (module docstring)."""
    from .records import write_csv_atomic

    if settings.a is None or settings.b is None:
        raise UsageError("name two folders: python -m suite compare A B")
    if settings.csv is not None and not settings.csv.parent.is_dir():
        raise UsageError(f"--csv {settings.csv}: its folder {settings.csv.parent} does not exist")
    a, b = inspect_folder(settings.a, "A"), inspect_folder(settings.b, "B")
    stages = choose_stages(a, b, settings.stage)
    comparison = compare_folders(a, b, stages, threshold=settings.min_change,
                                 across_machines=settings.across_machines)
    print(render_text(comparison, show_all=settings.all))
    if settings.csv is not None:
        write_csv_atomic(settings.csv, comparison.table)
    worse = bool(comparison.table["verdict"].isin(WORSE).any()) if len(comparison.table) else False
    return 1 if settings.fail_on_slower and worse else 0
