"""``render_report``: every table, figure and the README of one profile folder, from ``raw/``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import UsageError
from ..records import write_csv_atomic, write_text_atomic
from ..stages import load_function, measuring_stages
from . import figure_data
from . import figures as fig
from .axes import axes_markdown
from .load import StageData, environment_of, load_all
from .readme import accuracy_markdown, control_markdown, ops_markdown, render_readme
from .summary import summary_table
from .tables import primary_contended, primary_module_latency

__all__ = ["render_report"]


def _values(frame: pd.DataFrame, column: str) -> str:
    if frame.empty or column not in frame:
        return ""
    values = [f"{v:g}" if isinstance(v, float) else str(v) for v in frame[column].dropna().unique()]
    return "/".join(sorted(values))


def _device(frame: pd.DataFrame, env: dict[str, Any]) -> str:
    device = _values(frame, "device") or "cpu"
    hardware = env.get("gpu") if "cuda" in device and env.get("gpu") else env.get("cpu", "")
    return f"{device} ({hardware})" if hardware else device


def _caption(profile: str, frame: pd.DataFrame, env: dict[str, Any], extra: str = "") -> str:
    ok = frame[frame["status"] == "ok"] if not frame.empty and "status" in frame else frame
    parts = [f"profile {profile}", f"device {_device(ok, env)}"]
    dtype = _values(ok, "dtype")
    parts.append(f"dtype {dtype}" if dtype else "dtype fp32")
    threads = _values(ok, "threads") or str(env.get("threads", "?"))
    parts.append(f"threads {threads}")
    parts.extend(_cuda_timing_notes(ok))
    if env.get("commit"):
        parts.append(f"commit {env['commit']}")
    return " | ".join(parts) + (f" | {extra}" if extra else "")


def _cuda_timing_notes(ok: pd.DataFrame) -> list[str]:
    """On CUDA rows: which timing mode the numbers come from (CUDA events around eager launches, or
    CUDA-graph replays) and how many rows were host-bound (the host's enqueue took at least 90% of the
    event time, so the figure is Python dispatch rather than GPU work: see ``host_bound``)."""
    notes = []
    if modes := _values(ok, "timing_mode"):
        notes.append(f"timing {modes}")
    if "host_bound" in ok and (bound := int(ok["host_bound"].astype("boolean").fillna(False).sum())):
        notes.append(f"{bound} of {len(ok)} rows host-bound (dispatch, not GPU time)")
    return notes


def render_report(profile_dir: Path, profile: str | None = None) -> dict[str, Any]:
    """Re-render ``profile_dir``'s tables, figures and README from ``profile_dir/raw/<stage>/``.

    Nothing is measured. A missing, empty or failed stage is reported, never raised. A folder
    that lists other machines' folders of its profile (``other_machines.txt``) also gets the
    "Across machines" section and ``across_machines.csv`` (:mod:`suite.report.machines`).

    Args:
        profile_dir: ``reports/<profile>``, holding ``raw/``.
        profile: the profile's name for titles (default: the folder's name).

    Returns:
        ``{"profile", "dir", "tables": [paths], "figures": {name: path or None},
        "stages": {stage: state}, "notes": {stage: [...]}, "types": n, "seconds": wall time}``.

    Raises:
        UsageError: ``profile_dir`` is not a profile folder (:func:`check_profile_folder`).
    """
    start = time.perf_counter()
    profile_dir = Path(profile_dir)
    check_profile_folder(profile_dir)
    profile = profile or profile_dir.name
    stages: dict[str, StageData] = load_all(profile_dir / "raw")
    report_tables = _report_tables(stages)
    frames = {name: report_tables[spec.report_file] for name, spec in measuring_stages().items()}
    summary = summary_table(frames)
    tables = {"summary.csv": summary, **report_tables}
    machines_text = _across_machines(profile_dir, tables)
    for name, frame in tables.items():
        write_csv_atomic(profile_dir / name, frame)
    shown = _shown_stages(stages)
    envs = {name: _environment(stages[name], spec.environment_tables) for name, spec in measuring_stages().items()
            if name in shown}
    # the latency figures show one configuration (fp32, contiguous, eager when measured), as the
    # summary does, rather than a median over dtypes and compile modes
    primary, latency_config = primary_module_latency(frames["latency"])
    captions = _captions(profile, frames, envs, latency_config)
    paths, notes = _draw_figures(profile_dir / "figures", summary, frames, primary, captions)
    relative = {k: (f"figures/{p.name}" if p else None) for k, p in paths.items()}
    accuracy = frames["accuracy"]
    per_class = report_tables.get("accuracy_per_class.csv", pd.DataFrame())
    accuracy_text = accuracy_markdown(accuracy, per_class, stages["accuracy"].table("runs")) if not accuracy.empty else ""
    readme = render_readme(profile, summary, relative, notes, envs, _extra_environment(stages), shown, captions,
                           list(tables), accuracy_text, machines_text, axes_markdown(frames["latency"]),
                           control_markdown(frames["latency"]), ops_markdown(report_tables.get("ops.csv", pd.DataFrame())))
    write_text_atomic(profile_dir / "README.md", readme)
    return {
        "profile": profile,
        "dir": str(profile_dir),
        "tables": [str(profile_dir / n) for n in tables],
        "readme": str(profile_dir / "README.md"),
        "figures": {k: (str(p) if p else None) for k, p in paths.items()},
        "figure_notes": notes,
        "stages": {n: d.state for n, d in shown.items()},
        "notes": {n: d.notes for n, d in shown.items()},
        "types": int(len(summary)),
        "seconds": round(time.perf_counter() - start, 2),
    }


def _across_machines(profile_dir: Path, tables: dict[str, pd.DataFrame]) -> str:
    """The "Across machines" section (:mod:`suite.report.machines`) when the folder lists other
    machines' folders: its table joins ``tables``, and its text is returned (``""`` without the
    list, whose earlier table is then removed, so that it cannot contradict the README)."""
    from .machines import CSV_FILE, across_machines_section

    frame, text = across_machines_section(profile_dir)
    if frame is not None:
        tables[CSV_FILE] = frame
    elif (profile_dir / CSV_FILE).exists():
        (profile_dir / CSV_FILE).unlink()
    return text


def _captions(profile: str, frames: dict[str, pd.DataFrame], envs: dict[str, dict[str, Any]],
              latency_config: str) -> dict[str, str]:
    """Each figure's caption: profile, device, dtype, threads and commit of what it shows (the
    counter agreement: how the MACs were counted); the latency figures name the configuration
    they show."""
    cost, latency, memory, accuracy = (frames[name] for name in ("cost", "latency", "memory", "accuracy"))
    acc_note = ""
    if not accuracy.empty:
        acc_note = f"accuracy: {_values(accuracy, 'profile') or '?'} recipe, {_values(accuracy, 'arch') or '?'}"
    count_device = _values(cost, "count_device")
    captions = {
        "cost_benefit": _caption(profile, latency, envs["latency"] or envs["cost"], acc_note),
        "latency_heatmap": _caption(profile, latency, envs["latency"]),
        "counter_agreement": (f"profile {profile} | counted, not timed (device {count_device or '?'}, batch "
                              f"{_values(cost[cost['level'] == 'module'], 'batch') if not cost.empty else '?'}) | "
                              f"threads {envs['cost'].get('threads', '?')} | fvcore {envs['cost'].get('fvcore_version', '?')}, "
                              f"thop {envs['cost'].get('thop_version', '?')}, torch {envs['cost'].get('torch_version', '?')}"),
        "latency_scaling": _caption(profile, latency, envs["latency"]),
        "memory": _caption(profile, memory, envs["memory"] or envs["cost"]),
        "model_latency": _caption(profile, latency[latency["level"] == "model"] if "level" in latency else latency,
                                  envs["latency"]),
    }
    if latency_config:
        for key in ("latency_heatmap", "latency_scaling"):
            captions[key] += f" | shown: {latency_config}"
    return captions


def _draw_figures(figdir: Path, summary: pd.DataFrame, frames: dict[str, pd.DataFrame], primary: pd.DataFrame,
                  captions: dict[str, str]) -> tuple[dict[str, Path | None], dict[str, str]]:
    """Draw every figure into ``figdir``: its path (``None`` where it is not drawn) and its note
    (why not, or what it shows). A figure that cannot be drawn says why; an older file of it is
    removed, so that it cannot contradict the README."""
    cost, latency, memory = frames["cost"], frames["latency"], frames["memory"]
    contended_rows = primary_contended(latency)
    primary_model, _ = primary_module_latency(latency, level="model")
    figures = {  # what each figure shows (figure_data), and the function that draws it
        "cost_benefit": (lambda: figure_data.cost_benefit_data(summary), fig.cost_benefit_figure),
        "latency_heatmap": (lambda: figure_data.latency_heatmap_data(primary, contended_rows),
                            fig.latency_heatmap_figure),
        "counter_agreement": (lambda: figure_data.counter_agreement_data(cost), fig.counter_agreement_figure),
        "latency_scaling": (lambda: figure_data.latency_scaling_data(primary), fig.latency_scaling_figure),
        "memory": (lambda: figure_data.memory_data(memory, cost), fig.memory_figure),
        "model_latency": (lambda: figure_data.model_latency_data(primary_model, latency), fig.model_latency_figure),
    }
    paths: dict[str, Path | None] = {}
    notes: dict[str, str] = {}
    for key, (derive, draw) in figures.items():
        try:
            data = derive()
            if isinstance(data, str):  # no data for it, and why
                paths[key], notes[key] = None, data
            else:
                paths[key], notes[key] = draw(data, figdir / f"{key}.png", captions[key])
        except Exception as exc:  # a figure must not take the report down; say why it is absent
            paths[key], notes[key] = None, f"drawing failed ({type(exc).__name__}: {exc})"
        stale = figdir / f"{key}.png"
        if paths[key] is None and stale.exists():
            stale.unlink()  # a figure from an older render would contradict this README
    return paths, notes


def check_profile_folder(folder: Path) -> None:
    """Refuse a folder the report must not write into: one that does not exist, one without
    ``raw/`` (an empty folder, or one stage's own output folder, whose tables the report would
    otherwise overwrite), or one holding a stage's records itself."""
    expected = "a profile folder holding raw/<stage>/, as written by python -m suite bench (e.g. reports/cpu)"
    if not folder.is_dir():
        raise UsageError(f"--out {folder}: no such folder; expected {expected}")
    records = sorted({str(spec.records_file) for spec in measuring_stages().values()
                      if (folder / str(spec.records_file)).is_file()})
    if records:
        raise UsageError(f"--out {folder}: this is a stage's output folder (it holds {', '.join(records)}), "
                         f"not a profile folder; expected {expected}, or re-render this stage's tables with its "
                         f"own --tables-only")
    if not (folder / "raw").is_dir():
        raise UsageError(f"--out {folder}: it has no raw/ folder; expected {expected}")


def _shown_stages(stages: dict[str, StageData]) -> dict[str, StageData]:
    """The stages the report names: all but an optional stage (``StageSpec.optional``) that was
    not run, which is left out rather than reported missing."""
    specs = measuring_stages()
    return {n: d for n, d in stages.items() if not (specs[n].optional and d.state == "missing")}


def _report_tables(stages: dict[str, StageData]) -> dict[str, pd.DataFrame]:
    """Every stage's report tables (file name -> frame): the first of a stage's tables always
    (a header when it has no rows, so a reader sees the columns), the others where they have rows."""
    tables: dict[str, pd.DataFrame] = {}
    for name, spec in measuring_stages().items():
        for index, (filename, build) in enumerate(spec.report_tables.items()):
            frame = load_function(build)(stages[name])
            if index == 0 or not frame.empty:
                tables[filename] = frame
    return tables


def _environment(stage: StageData, table_names: tuple[str, ...]) -> dict[str, Any]:
    """The environment recorded with the first row of the first of ``table_names`` that has one."""
    for table_name in table_names:
        env = environment_of(stage.table(table_name))
        if env:
            return env
    return {}


def _extra_environment(stages: dict[str, StageData]) -> dict[str, dict[str, str]]:
    """Stage settings worth a row in the environment table (timer, machine peaks, recipe)."""
    extra: dict[str, dict[str, str]] = {}
    latency = stages["latency"].table("latency")
    if not latency.empty:
        row = latency.iloc[0]
        extra["latency"] = {k: str(row[f"env_{k}"]) for k in ("timer", "clock") if f"env_{k}" in latency
                            and pd.notna(row[f"env_{k}"])}
        if "loadavg_1m" in latency:
            extra["latency"]["load average (1 min), max"] = f"{pd.to_numeric(latency['loadavg_1m'], errors='coerce').max():.2f}"
    machine = stages["latency"].table("machine")
    if not machine.empty and "quantity" in machine:
        for record in machine.to_dict("records"):
            label = str(record["quantity"]) + (f" {record['dtype']}" if pd.notna(record.get("dtype")) and record.get("dtype") else "")
            extra.setdefault("latency", {})[label] = f"{float(record['value']):.1f}"
    runs = stages["accuracy"].table("runs")
    if not runs.empty:
        row = runs.iloc[0]
        extra["accuracy"] = {k: str(row[k]) for k in ("profile", "arch", "data", "recipe", "epochs", "bf16")
                             if k in runs and pd.notna(row[k])}
    return extra
