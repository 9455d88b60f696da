"""The environment is written once per run beside the records, and every record reads back whole."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from suite.records import (
    ENVIRONMENT_FIELDS,
    ENVIRONMENTS_FILE,
    RecordStore,
    compact_record,
    current_environment_names,
    environment_columns,
    environment_fields,
    expand_record,
    main,
)

ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENT = {"env_date": "2026-12-02T12:00:00+00:00", "env_commit": "abc123", "env_threads": 1,
               "env_torch_version": "2.14.1"}


def _record(key: str, value: float) -> dict:
    return {"key": key, "attn": "se", "median_ms": value, "status": "ok", "loadavg_1m": 0.3, **ENVIRONMENT}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_name_the_environment_written_once_and_read_back_whole(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "records.jsonl")
    records = [_record("a", 1.0), _record("b", 2.0)]
    for record in records:
        store.append(record, environment=ENVIRONMENT)
    written = _lines(store.path)
    assert all("env_id" in line and not set(ENVIRONMENT) & set(line) for line in written)
    assert len({line["env_id"] for line in written}) == 1
    environments = _lines(tmp_path / ENVIRONMENTS_FILE)
    assert len(environments) == 1 and environments[0]["fields"] == ENVIRONMENT
    assert store.read() == records
    assert [list(r) for r in store.read()] == [list(r) for r in records]  # the fields' order too


def test_a_second_environment_gets_its_own_entry(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "records.jsonl")
    other = {**ENVIRONMENT, "env_commit": "def456"}
    store.append(_record("a", 1.0), environment=ENVIRONMENT)
    store.append({**_record("b", 2.0), **other}, environment=other)
    assert len(_lines(tmp_path / ENVIRONMENTS_FILE)) == 2
    assert [r["env_commit"] for r in store.read()] == ["abc123", "def456"]


def test_a_record_that_would_not_read_back_exactly_is_written_whole() -> None:
    # the environment's fields are not together in the record: expanding would move "attn"
    environment = {"env_date": "d", "env_commit": "c"}
    record = {"key": "a", "env_date": "d", "attn": "se", "env_commit": "c"}
    assert compact_record(record, environment, "id") == record
    # a field of the record's own (env_threads 4, not the environment's 1) keeps its value and place
    environment = {"env_date": "d", "env_commit": "c", "env_threads": 1}
    record = {"key": "a", "env_date": "d", "env_commit": "c", "env_threads": 4}
    compact = compact_record(record, environment, "id")
    assert compact == {"key": "a", "env_id": "id", "env_threads": 4}
    assert list(expand_record(compact, {"id": environment}).items()) == list(record.items())


def test_values_are_stored_as_json_reads_them_back() -> None:
    compact = compact_record({"key": "a", "shape": (1, 2), "x": math.nan, **ENVIRONMENT}, ENVIRONMENT, "id")
    assert compact == {"key": "a", "shape": [1, 2], "x": None, "env_id": "id"}
    assert expand_record(compact, {"id": ENVIRONMENT}) == {"key": "a", "shape": [1, 2], "x": None, **ENVIRONMENT}


def test_an_unknown_environment_id_leaves_the_record_as_written() -> None:
    assert expand_record({"key": "a", "env_id": "gone"}, {}) == {"key": "a", "env_id": "gone"}


def test_compact_rewrites_old_records_without_changing_what_they_read_back_as(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    rounds = {"env_commit": "abc123", "env_date": "2026-12-02T12:00:00+00:00"}
    old = [_record("a", 1.0), {"key": "r1", "record": "latency_round", **rounds}, _record("b", 2.0)]
    path.write_text("".join(json.dumps(r) + "\n" for r in old))
    assert main(["compact", str(path)]) == 0
    assert RecordStore(path).read() == old
    assert len(_lines(tmp_path / ENVIRONMENTS_FILE)) == 2  # the rows' environment and the rounds'
    assert path.stat().st_size < sum(len(json.dumps(r)) + 1 for r in old)


def test_environment_fields_are_the_prefixed_and_the_known_ones() -> None:
    timing = {"key": "a", "threads": 1, "env_id": "x", "env_timer": "rounds=5", "env_date": "d", "attn": "se"}
    assert environment_fields(timing) == {"env_timer": "rounds=5", "env_date": "d"}
    cost = {"key": "a", "date": "d", "threads": 1, "attn": "se"}
    assert environment_fields(cost) == {"date": "d", "threads": 1}


def test_the_known_fields_are_those_the_environment_has() -> None:
    from suite.env import collect_environment

    assert set(collect_environment()) <= set(ENVIRONMENT_FIELDS)


def test_compact_refuses_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["compact", str(tmp_path / "none.jsonl")])
    assert exit_info.value.code == 2 and "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("stage", ["cost", "latency", "memory", "accuracy"])
def test_the_committed_records_name_their_environment(stage: str) -> None:
    folder = ROOT / "reports" / "cpu" / "raw" / stage
    if not folder.is_dir():
        pytest.skip("no committed reports/cpu/raw")
    records_file = next(p for p in folder.glob("*.jsonl") if p.name not in ("per_image.jsonl", ENVIRONMENTS_FILE))
    written = _lines(records_file)
    assert all("env_id" in line for line in written)
    copied = [k for line in written for k in line if k.startswith("env_") and k != "env_id"]
    if stage in ("cost", "accuracy"):  # stored by a version that wrote these stages' fields without the prefix
        copied += [k for line in written for k in line if k in ENVIRONMENT_FIELDS and k != "threads"]  # the run's own
    assert not copied
    read = RecordStore(records_file).read()
    assert all(record["env_commit"] for record in read)
    assert not any(k in ENVIRONMENT_FIELDS and k != "threads" for record in read for k in record)


def test_every_stage_names_the_environment_with_the_prefix() -> None:
    assert environment_columns({"commit": "abc", "threads": 2}) == {"env_commit": "abc", "env_threads": 2}


def test_an_environment_stored_without_the_prefix_reads_under_the_current_names(tmp_path: Path) -> None:
    """Older cost and accuracy records stored their environment unprefixed; they read as new ones,
    and a record's own field of the same name (the accuracy run's ``threads``) is its own."""
    path = tmp_path / "records.jsonl"
    (tmp_path / ENVIRONMENTS_FILE).write_text(json.dumps(
        {"env_id": "old", "fields": {"commit": "abc", "threads": 2, "cpu": "AMD EPYC"}}) + "\n")
    path.write_text(json.dumps({"key": "a", "threads": 1, "env_id": "old", "status": "ok"}) + "\n")
    assert RecordStore(path).read() == [
        {"key": "a", "threads": 1, "env_commit": "abc", "env_threads": 2, "env_cpu": "AMD EPYC", "status": "ok"}]
    assert current_environment_names({"env_commit": "abc"}) == {"env_commit": "abc"}
    inline = tmp_path / "inline.jsonl"
    inline.write_text(json.dumps({"key": "b", "commit": "abc", "date": "d", "torch_version": "2.1", "x": 1}) + "\n")
    assert RecordStore(inline).read() == [
        {"key": "b", "env_commit": "abc", "env_date": "d", "env_torch_version": "2.1", "x": 1}]
