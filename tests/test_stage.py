"""The stage contract's runner: resume, one record per configuration, failures, tables, lock."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from suite.records import ENVIRONMENTS_FILE, FolderLockedError, RecordStore, folder_lock
from suite.stage import measure_record, open_stage, pending, run_stage
from suite.stages import measuring_stages


@dataclass(frozen=True)
class Point:
    name: str

    def key(self) -> str:
        return f"point|{self.name}"

    def as_row(self) -> dict[str, Any]:
        return {"name": self.name}

    def label(self) -> str:
        return self.name


class PlainMessage(Exception):
    message_is_complete = True


POINTS = [Point(n) for n in ("a", "b", "c")]
ENVIRONMENT = {"env_commit": "abc123", "env_threads": 1}


def _measure(point: Point) -> dict[str, Any]:
    if point.name == "b":
        raise RuntimeError("b cannot be built")
    if point.name == "c":
        return {"status": "refused", "message": "no place for c"}
    return {"value": 1.5}


def _tables(records: list[dict[str, Any]], folder: Path) -> dict[str, pd.DataFrame]:
    return {"points.csv": pd.DataFrame([{k: v for k, v in r.items() if k != "traceback"} for r in records])}


def _run(out: Path, measure: Any = _measure, **options: Any) -> Any:
    return run_stage(POINTS, out, "records.jsonl", measure, _tables, environment=lambda: ENVIRONMENT,
                     classify=lambda exc: "build_error", progress=False, **options)


def test_a_run_writes_one_record_per_configuration_and_the_tables(tmp_path: Path) -> None:
    result, run = _run(tmp_path)
    records, written = run.records, run.written
    assert (result.measured, result.failed, result.skipped) == (1, 2, 0)
    by_name = {r["name"]: r for r in records}
    assert by_name["a"]["status"] == "ok" and by_name["a"]["value"] == 1.5 and by_name["a"]["message"] == ""
    assert by_name["b"]["status"] == "build_error"
    assert by_name["b"]["message"] == "RuntimeError: b cannot be built"
    assert "b cannot be built" in by_name["b"]["traceback"]
    assert by_name["c"]["status"] == "refused"
    assert all(r["env_commit"] == "abc123" and "wall_s" in r and "loadavg_1m" in r for r in records)
    assert written == [tmp_path / "points.csv"]
    assert list(pd.read_csv(tmp_path / "points.csv")["name"]) == ["a", "b", "c"]
    assert len((tmp_path / ENVIRONMENTS_FILE).read_text().splitlines()) == 1
    assert not (tmp_path / ".lock").exists()


def test_a_rerun_resumes_and_retries_only_what_has_no_final_status(tmp_path: Path) -> None:
    _run(tmp_path)
    assert _run(tmp_path)[0].skipped == 3
    again = _run(tmp_path, retry_failed=True)[0]
    assert (again.skipped, again.failed) == (2, 1)  # b again; a (ok) and c (refused) are final
    assert _run(tmp_path, force=True)[0].skipped == 0


def test_pending_keeps_the_order_and_the_limit(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "records.jsonl")
    store.append({"key": "point|b", "status": "error"})
    assert pending(POINTS, store) == ([POINTS[0], POINTS[2]], 1)
    assert pending(POINTS, store, retry_failed=True, limit=2) == (POINTS[:2], 0)


def test_an_exception_whose_message_is_complete_is_quoted_as_it_is() -> None:
    def measure(point: Point) -> dict[str, Any]:
        raise PlainMessage("the module refused 3 channels")

    record = measure_record(POINTS[0], measure, lambda exc: "build_error")
    assert record["message"] == "the module refused 3 channels"
    assert list(record)[:2] == ["key", "name"]


def test_an_interrupted_run_keeps_its_records_and_writes_the_tables(tmp_path: Path) -> None:
    def measure(point: Point) -> dict[str, Any]:
        if point.name == "b":
            raise KeyboardInterrupt
        return {"value": 1.0}

    result, run = _run(tmp_path, measure=measure)
    assert result.interrupted and [r["name"] for r in run.records] == ["a"]
    assert list(pd.read_csv(tmp_path / "points.csv")["name"]) == ["a"]


def test_a_folder_held_by_another_run_is_refused_before_any_work(tmp_path: Path) -> None:
    called = []
    with folder_lock(tmp_path), pytest.raises(FolderLockedError):
        _run(tmp_path, measure=lambda p: called.append(p) or {})
    assert not called and not (tmp_path / "records.jsonl").exists()


@pytest.mark.parametrize("stage", list(measuring_stages()))
def test_every_stage_builds_its_files_tables_from_records(stage: str) -> None:
    """Each stage's spec names its tables function, and that function's tables are the stage's files."""
    spec = measuring_stages()[stage]
    assert spec.tables and spec.records_file
    folder = Path(__file__).resolve().parent.parent / "reports" / "cpu" / "raw" / stage
    if not folder.is_dir():
        pytest.skip("no committed reports/cpu/raw")
    records = RecordStore(folder / spec.records_file).latest_by_key()
    frames = spec.build_tables(records, folder)
    expected = {f for name, f in spec.files.items() if name not in spec.csv_only and (folder / f).is_file()}
    assert set(frames) == expected
    assert all(len(frame) for frame in frames.values())


def test_an_open_stage_writes_the_tables_when_its_body_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="worker died"), open_stage(tmp_path, "records.jsonl", _tables) as run:
        run.store.append({"key": "point|a", "name": "a", "status": "ok"})
        raise RuntimeError("worker died")
    assert list(pd.read_csv(tmp_path / "points.csv")["name"]) == ["a"] and run.written == [tmp_path / "points.csv"]
    assert not (tmp_path / ".lock").exists()


def test_records_keep_the_environment_once(tmp_path: Path) -> None:
    _run(tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert all("env_id" in line and "env_commit" not in line for line in lines)
