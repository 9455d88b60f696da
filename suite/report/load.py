"""Reading the raw outputs of each stage, tolerating missing, empty and partial folders.

A profile folder holds ``raw/<stage>/`` for the stages that ran; what each stage's folder
holds is its :class:`suite.stages.StageSpec` (``records_file`` and ``files``).
Every table is built from the stage's raw JSON-lines records by the stage's own table
builders, so the report follows the records and the current code, never a CSV a run left
behind. Only where a folder has no records file are the stage's tidy CSVs read (a folder
written by hand or by an older version), and ``gate_scale.csv``, the accuracy stage's one
measurement that is not in its records (the spec's ``csv_only``), is always read from its CSV.
Nothing here measures anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..records import ENVIRONMENT_FIELDS, NOT_FAILURES, RecordStore
from ..stages import StageSpec, measuring_stages
from ..stages import stage as stage_spec

__all__ = ["StageData", "load_stage", "load_stage_folder", "load_all", "environment_of"]


@dataclass
class StageData:
    """What one stage left behind.

    ``state`` is ``ok`` (tables with at least one ``status == ok`` row), ``failed`` (rows, none
    ok), ``empty`` (the folder exists without usable rows) or ``missing`` (no folder).
    """

    name: str
    folder: Path
    state: str = "missing"
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failures: int = 0

    def table(self, name: str) -> pd.DataFrame:
        """The named table, or an empty frame."""
        return self.tables.get(name, pd.DataFrame())


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        return pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        return None


def _latest_records(path: Path) -> list[dict[str, Any]]:
    """The stage's raw records, one per key (the last written), or none without the file."""
    return RecordStore(path).latest_by_key() if path.is_file() else []


def _from_records(spec: StageSpec, records: list[dict[str, Any]], folder: Path) -> dict[str, pd.DataFrame]:
    """The stage's tables (by the spec's table names) from its raw records (one per key), by
    the stage's own ``tables``, so they equal what the stage writes."""
    if not records:
        return {}
    frames = spec.build_tables(records, folder)
    return {name: frames[filename] for name, filename in spec.files.items() if filename in frames}


def load_stage(raw_dir: Path, stage: str) -> StageData:
    """Read one stage's folder ``raw_dir / stage``."""
    return load_stage_folder(Path(raw_dir) / stage, stage)


def load_stage_folder(folder: Path, stage: str) -> StageData:
    """Read ``stage``'s outputs from ``folder``, a folder of any name (``python -m suite compare``
    reads stage folders outside a bench): its tables built from the raw records by the stage's own
    ``tables`` where the records are there, else read from its CSVs; its state and notes."""
    spec = stage_spec(stage)
    folder = Path(folder)
    data = StageData(stage, folder)
    if not folder.is_dir():
        data.notes.append(f"no folder {stage}/: the stage did not run or was skipped")
        return data
    records_file = folder / str(spec.records_file)
    rebuilt = _from_records(spec, _latest_records(records_file), folder) if records_file.is_file() else None
    if rebuilt is not None:
        data.notes.append(f"tables built from {spec.records_file} (the raw records)")
    for name, filename in spec.files.items():
        if rebuilt is not None and name not in spec.csv_only:
            frame = rebuilt.get(name)
        else:
            frame = _read_csv(folder / filename)
        if frame is not None and not frame.empty:
            data.tables[name] = frame
    statuses = pd.concat(
        [t["status"] for n, t in data.tables.items() if "status" in t and n in (spec.status_tables or spec.files)] or [pd.Series(dtype=object)]
    )
    if spec.ok_when_present and not data.table(spec.ok_when_present).empty and statuses.empty:
        statuses = pd.Series(["ok"])
    if statuses.empty:
        data.state = "empty"
        data.notes.append(f"{stage}/ holds no usable rows")
    elif (statuses == "ok").any():
        data.state = "ok"
        bad = statuses[statuses != "ok"]
        if len(bad):
            counts = ", ".join(f"{n} {s}" for s, n in bad.value_counts().items())
            data.notes.append(f"{len(bad)} of {len(statuses)} rows not ok ({counts})")
            data.failures = int((~bad.isin(NOT_FAILURES)).sum())
    else:
        data.state = "failed"
        data.notes.append(f"none of its {len(statuses)} rows has status ok")
    return data


def load_all(raw_dir: Path) -> dict[str, StageData]:
    """Every measuring stage (:func:`suite.stages.measuring_stages`), read from ``raw_dir``."""
    return {stage: load_stage(raw_dir, stage) for stage in measuring_stages()}


def environment_of(frame: pd.DataFrame) -> dict[str, Any]:
    """The environment recorded with the first row of ``frame``, by its fields' plain names (the
    tables name them with :data:`~suite.records.ENV_PREFIX`; a CSV of an older version may not)."""
    if frame is None or frame.empty:
        return {}
    row = frame.iloc[0]
    env: dict[str, Any] = {}
    for key in ENVIRONMENT_FIELDS:
        for column in (f"env_{key}", key):
            if column in frame.columns and pd.notna(row[column]) and str(row[column]) != "":
                env[key] = row[column]
                break
    return env
