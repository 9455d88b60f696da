"""The report's "Across machines" section: one profile's latency ratios measured on several CPU
classes, side by side, with what travels between them (the designs' ranking) and what does not
(the ratios themselves).

**How a report gets it.** A profile folder that holds a file ``other_machines.txt``
(:data:`LIST_FILE`) lists, one per line, the folders of the same profile measured on other
machines, relative to the profile folder (``../cpu-xeon``) or absolute; blank lines and ``#``
comments are skipped. Every render of the folder (``python -m suite report``, and the report a
bench or a merge renders at its end) then
writes ``across_machines.csv`` and a README section "Across machines"; removing the file removes
both at the next render. A listed folder that is missing, has no latency stage, or was measured on
a CPU class already shown is named in the section instead, never an error.

The committed layout: each machine class is a profile folder of its own (``reports/cpu``: the
reference, every stage of one ``nox -s bench`` run on a 2-core Intel Xeon; ``reports/cpu-amd``: an
earlier run of the cost, latency, memory and accuracy stages on a 2-core AMD EPYC, at the commit
its ``bench.json`` names), and the reference folder lists the others
(``reports/cpu/other_machines.txt`` holding ``../cpu-amd``), so ``reports/cpu/README.md`` carries
the section (``python -m suite report --out reports/cpu`` adds it).

**What it computes** (:func:`across_machines`), from each folder's latency report table
(:func:`suite.report.tables.latency_table`), the rows with status ``ok``; a configuration is the
values of :data:`suite.compare.KEY_COLUMNS`; the first folder is the reference machine:

* ``ratios`` (``across_machines.csv``): per configuration and machine, the ratio (to the 3x3 conv;
  at model level to the backbone) with its 95% interval, the reference's, and the **move**
  ``ratio / reference ratio - 1``, with whether the two intervals overlap;
* ``ranks``: per shape and pass (a configuration without the design) and machine, the **Spearman**
  rank correlation of the designs' ratios with the reference's (the Pearson correlation of their
  ranks, ties at their mean rank: what ``scipy.stats.spearmanr`` computes), over the designs both
  measured; fewer than 3 designs give none;
* ``moves``: the configurations with the largest ``|log(move)|``;
* ``designs``: per design, level and pass, the geometric mean ratio over the configurations every
  machine measured, with its 95% interval (the rounds' intervals are symmetric on the log scale;
  half-widths ``h_i`` of ``n`` configurations combine to ``sqrt(sum h_i^2) / n``), and the move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..compare import KEY_COLUMNS, key_text
from .load import environment_of, load_stage
from .tables import latency_table, ok_rows

__all__ = ["LIST_FILE", "CSV_FILE", "Machine", "AcrossMachines", "listed_folders", "load_machine", "across_machines",
           "spearman", "section_markdown", "across_machines_section"]

LIST_FILE = "other_machines.txt"
"""The file of a profile folder that lists the folders of the same profile on other machines."""
CSV_FILE = "across_machines.csv"
"""The table the section writes into the profile folder (:attr:`AcrossMachines.ratios`)."""
METRIC = "ratio"
"""The latency column compared across machines (its interval: ``ratio_ci_low`` / ``ratio_ci_high``)."""
LARGEST = 10
"""How many of the largest moves the section lists."""
SHAPE_COLUMNS: tuple[str, ...] = ("level", "arch", "mode", "device", "dtype", "memory_format", "compile", "batch",
                                  "channels", "size", "threads")
"""The configuration without the design: the groups within which the designs are ranked."""


@dataclass
class Machine:
    """One profile folder measured on one machine: its name (the folder's), CPU model and ok latency rows."""

    name: str
    folder: Path
    cpu: str
    latency: pd.DataFrame


@dataclass
class AcrossMachines:
    """The tables of the section (module docstring); ``machines`` in order, the reference first."""

    machines: list[Machine]
    ratios: pd.DataFrame
    ranks: pd.DataFrame
    moves: pd.DataFrame
    designs: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def listed_folders(profile_dir: Path) -> list[Path] | None:
    """The folders ``profile_dir/other_machines.txt`` lists (relative to ``profile_dir``), or
    ``None`` when there is no such file."""
    path = profile_dir / LIST_FILE
    if not path.is_file():
        return None
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [profile_dir / line for line in lines if line]


def load_machine(folder: Path) -> Machine | str:
    """The ok latency rows of the profile folder ``folder`` and the CPU they were measured on; a
    sentence saying why not when it has none."""
    if not (folder / "raw" / "latency").is_dir():
        return f"{folder} has no latency stage (raw/latency/)"
    stage = load_stage(folder / "raw", "latency")
    table = ok_rows(latency_table(stage))
    table = table[pd.to_numeric(table.get(METRIC), errors="coerce") > 0] if METRIC in table else table.iloc[0:0]
    if table.empty:
        return f"{folder} has no latency row with status ok and a ratio"
    cpu = str(environment_of(stage.table("latency")).get("cpu", "")) or "unknown CPU"
    return Machine(folder.name, folder, cpu, table.reset_index(drop=True))


def spearman(a: pd.Series, b: pd.Series) -> float:
    """The Spearman rank correlation of two paired series: the Pearson correlation of their ranks
    (ties at their mean rank); NaN for fewer than 3 pairs or a constant side."""
    if len(a) < 3:
        return math.nan
    ranks_a, ranks_b = a.rank().to_numpy(dtype=float), b.rank().to_numpy(dtype=float)
    if np.ptp(ranks_a) == 0 or np.ptp(ranks_b) == 0:
        return math.nan
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def _keys(frames: list[pd.DataFrame]) -> list[str]:
    return [c for c in KEY_COLUMNS if all(c in f.columns for f in frames)]


def _keyed(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``frame``'s configuration columns as text (8 and 8.0 alike, a missing value empty), one row each."""
    out = frame.copy()
    for key in keys:
        out[key] = out[key].map(key_text)
    return out.drop_duplicates(keys, keep="last")


def _half_width(low: pd.Series, high: pd.Series) -> pd.Series:
    """The half-width of a 95% interval on the log scale (NaN without one)."""
    return (np.log(pd.to_numeric(high, errors="coerce")) - np.log(pd.to_numeric(low, errors="coerce"))) / 2


def _pairs(reference: pd.DataFrame, other: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The configurations both machines measured: each one's ratio and interval on both, the move
    and whether the intervals overlap."""
    columns = [*keys, METRIC, "ratio_ci_low", "ratio_ci_high"]
    ref = reference.reindex(columns=columns)
    pairs = other.reindex(columns=columns).merge(ref, on=keys, suffixes=("", "_ref"))
    for column in (METRIC, "ratio_ci_low", "ratio_ci_high", "ratio_ref", "ratio_ci_low_ref", "ratio_ci_high_ref"):
        pairs[column] = pd.to_numeric(pairs[column], errors="coerce")
    pairs["move"] = pairs[METRIC] / pairs["ratio_ref"] - 1
    pairs["overlaps"] = (np.maximum(pairs["ratio_ci_low"], pairs["ratio_ci_low_ref"])
                         <= np.minimum(pairs["ratio_ci_high"], pairs["ratio_ci_high_ref"]))
    return pairs.rename(columns={"ratio_ref": "reference_ratio", "ratio_ci_low_ref": "reference_ci_low",
                                 "ratio_ci_high_ref": "reference_ci_high"})


def _ranks(pairs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per machine and shape: the designs ranked alike on both machines (Spearman) and how many."""
    shape = [k for k in SHAPE_COLUMNS if k in keys]
    rows = []
    for values, group in pairs.groupby(["machine", *shape], sort=False):
        rows.append({**dict(zip(["machine", *shape], values, strict=True)), "designs": len(group),
                     "spearman": spearman(group["reference_ratio"], group[METRIC])})
    return pd.DataFrame(rows, columns=["machine", *shape, "designs", "spearman"])


def _designs(pairs: pd.DataFrame, machines: list[Machine], keys: list[str]) -> pd.DataFrame:
    """Per design, level and pass: each machine's geometric mean ratio over the configurations
    every machine measured, with its interval, and each other machine's move."""
    group_keys = [k for k in ("attn", "level", "mode") if k in keys]
    count = pairs.groupby(keys)["machine"].transform("nunique")
    common = pairs[count == len(machines) - 1]
    rows = []
    for values, group in common.groupby(group_keys, sort=False):
        reference = group.drop_duplicates(keys)
        row: dict[str, Any] = {**dict(zip(group_keys, values, strict=True)), "configurations": len(reference)}
        sides = [(machines[0].name, reference["reference_ratio"], reference["reference_ci_low"],
                  reference["reference_ci_high"])]
        sides += [(name, g[METRIC], g["ratio_ci_low"], g["ratio_ci_high"])
                  for name, g in group.groupby("machine", sort=False)]
        for name, ratio, low, high in sides:
            center, half = np.log(ratio).mean(), math.sqrt((_half_width(low, high) ** 2).sum()) / len(ratio)
            row[f"{name}_ratio"] = math.exp(center)
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = math.exp(center - half), math.exp(center + half)
            if name != machines[0].name:
                row[f"{name}_move"] = row[f"{name}_ratio"] / row[f"{machines[0].name}_ratio"] - 1
        rows.append(row)
    return pd.DataFrame(rows)


def across_machines(machines: list[Machine], largest: int = LARGEST) -> AcrossMachines:
    """The section's tables for ``machines`` (the first is the reference; module docstring)."""
    keys = _keys([m.latency for m in machines])
    reference = _keyed(machines[0].latency, keys)
    parts = []
    for machine in machines[1:]:
        pairs = _pairs(reference, _keyed(machine.latency, keys), keys)
        parts.append(pairs.assign(machine=machine.name, cpu=machine.cpu, reference_machine=machines[0].name,
                                  reference_cpu=machines[0].cpu))
    ratios = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    lead = ["machine", "cpu", *keys, METRIC, "ratio_ci_low", "ratio_ci_high", "reference_machine", "reference_cpu",
            "reference_ratio", "reference_ci_low", "reference_ci_high", "move", "overlaps"]
    ratios = ratios.reindex(columns=lead)
    size = np.abs(np.log1p(ratios["move"].astype(float)))
    moves = ratios.assign(_size=size).sort_values("_size", ascending=False).head(largest).drop(columns="_size")
    return AcrossMachines(machines, ratios, _ranks(ratios, keys), moves.reset_index(drop=True),
                          _designs(ratios, machines, keys))


# --- the README section ---------------------------------------------------------------------------

def _fmt(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"


def _interval(value: Any, low: Any, high: Any) -> str:
    text = _fmt(value)
    return f"{text} [{_fmt(low)}, {_fmt(high)}]" if text and _fmt(low) and _fmt(high) else text


def _pct(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:+.0f}%"


def _shape(row: dict[str, Any], varying: list[str]) -> str:
    return ", ".join(f"{k} {row[k]}" for k in varying if str(row.get(k, "")) != "") or "-"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows)]


def _headline(result: AcrossMachines) -> list[str]:
    """What travels and what does not, in two sentences, per other machine."""
    lines = []
    for machine in result.machines[1:]:
        pairs = result.ratios[result.ratios["machine"] == machine.name]
        ranks = result.ranks[(result.ranks["machine"] == machine.name)]["spearman"].dropna()
        if pairs.empty:
            lines.append(f"* **`{machine.name}` ({machine.cpu})**: no configuration measured ok on both it and "
                         f"`{result.machines[0].name}`.")
            continue
        moves = pairs["move"].abs()
        agree = (f"Spearman {ranks.min():.2f} to {ranks.max():.2f} (median {ranks.median():.2f}) over "
                 f"{len(ranks)} shapes and passes" if len(ranks) else "no shape with 3 designs on both")
        lines.append(
            f"* **`{machine.name}` ({machine.cpu}) against `{result.machines[0].name}`**, {len(pairs)} configurations "
            f"measured ok on both. *What travels:* the designs' ranking, {agree}. *What does not:* the ratios "
            f"themselves: they moved by {100 * moves.median():.0f}% (median |move|) and "
            f"{100 * moves.quantile(0.9):.0f}% at the 90th percentile; {int((~pairs['overlaps'].astype(bool)).sum())} "
            f"of {len(pairs)} intervals do not overlap.")
    return lines


def section_markdown(result: AcrossMachines) -> str:
    """The section's text (under the README's heading "Across machines")."""
    names = [m.name for m in result.machines]
    machines = ", ".join(f"`{m.name}` ({m.cpu})" for m in result.machines)
    keys = [k for k in SHAPE_COLUMNS if k in result.ratios.columns]
    varying = [k for k in keys if result.ratios[k].nunique() > 1]
    out = [f"The latency ratios of this profile on {len(result.machines)} CPU classes: {machines}; the other "
           f"folders are listed in `{LIST_FILE}`. The ratio is the design's time over a 3x3 conv on the same input "
           f"(at model level over the backbone), timed in the same processes on each machine.", "", *_headline(result),
           *(f"* {note}" for note in result.notes), ""]
    ranks = result.ranks
    if not ranks.empty:
        out += ["**Rank agreement** of the designs' ratios with the reference's, per shape and pass:", "",
                *_table(["machine", "shape", "designs", "Spearman"],
                        [[f"`{r['machine']}`", _shape(r, varying), str(r["designs"]), _fmt(r["spearman"])]
                         for r in ranks.to_dict("records")]), ""]
    if not result.moves.empty:
        out += [f"**Largest moves** ({len(result.moves)}):", "",
                *_table(["design", "shape", "machine", f"`{names[0]}` ratio [95% CI]", "ratio [95% CI]", "move"],
                        [[f"`{r['attn']}`", _shape(r, varying), f"`{r['machine']}`",
                          _interval(r["reference_ratio"], r["reference_ci_low"], r["reference_ci_high"]),
                          _interval(r[METRIC], r["ratio_ci_low"], r["ratio_ci_high"]), _pct(r["move"])]
                         for r in result.moves.to_dict("records")]), ""]
    if not result.designs.empty:
        header = ["design", "level", "pass", "configurations", *(f"`{n}` [95% CI]" for n in names),
                  *(f"`{n}` move" for n in names[1:])]
        rows = [[f"`{r['attn']}`", str(r.get("level", "")), str(r.get("mode", "")), str(r["configurations"]),
                 *(_interval(r[f"{n}_ratio"], r[f"{n}_ci_low"], r[f"{n}_ci_high"]) for n in names),
                 *(_pct(r[f"{n}_move"]) for n in names[1:])] for r in result.designs.to_dict("records")]
        out += ["**Per design**: the geometric mean ratio over the configurations every machine measured, with "
                "its 95% interval:", "", *_table(header, rows), ""]
    out += [f"Every configuration, with both intervals and its move: [`{CSV_FILE}`]({CSV_FILE}).", ""]
    return "\n".join(out)


def across_machines_section(profile_dir: Path) -> tuple[pd.DataFrame | None, str]:
    """The section of ``profile_dir``'s report: ``across_machines.csv``'s table (``None`` when
    nothing was computed) and the section's text (``""`` without :data:`LIST_FILE`). Problems
    with the listed folders are stated in the text, never raised."""
    folders = listed_folders(profile_dir)
    if folders is None:
        return None, ""
    reference = load_machine(profile_dir)
    if isinstance(reference, str):
        return None, f"_Not computed: {reference}._\n"
    machines, notes = [reference], []
    for folder in folders:
        machine = load_machine(folder)
        if isinstance(machine, str):
            notes.append(f"left out: {machine}")
        elif machine.cpu in {m.cpu for m in machines}:
            notes.append(f"left out: {folder} was measured on a CPU class already shown ({machine.cpu})")
        else:
            if machine.name in {m.name for m in machines}:  # the folders' names label the columns
                machine.name = f"{machine.name}-{len(machines) + 1}"
            machines.append(machine)
    if len(machines) < 2:
        listed = ", ".join(str(f) for f in folders) or f"no folder ({LIST_FILE} is empty)"
        return None, f"_Not computed: {LIST_FILE} lists {listed}; " + "; ".join(notes or ["none was usable"]) + "._\n"
    result = across_machines(machines)
    result.notes += notes
    return result.ratios, section_markdown(result)
