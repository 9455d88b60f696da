"""A plan larger than one machine: ``bench --shard K/N`` runs part K into ``OUT/shards/K-of-N``,
``python -m suite merge`` joins the parts into one folder with its tables and report, and under
``torchrun`` the stages that are not distributed run on the first rank only."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from suite.__main__ import main as suite_main
from suite.bench import runner
from suite.bench.merge import join_stage
from suite.bench.profile import apply_overrides, load_profile
from suite.bench.runner import plan_id, plan_runs, run_bench, shard_folder
from suite.shard import Shard

CONFIG = ["key", "attn", "level", "arch", "mode", "device", "dtype", "memory_format", "compile", "batch", "channels",
          "size", "threads"]
MEASURED = re.compile(r"^(env_|wall_s$|loadavg|count_seconds$|.*rss.*|peak_reset$|.*_ms$|.*pid$|.*date)")
"""Columns measured afresh by every run (times, memory of the process, dates, the environment)."""

TINY = """\
description = "the smoke profile's tiny grid, one invocation per stage"
attn = "se,eca,ca"

[[cost]]
level = "both"
channels = "64"
size = "14,7"
arch = ["resnet18"]

[[latency]]
batch = "2"
size = "14"
channels = "64"
mode = "forward"
rounds = 2
budget-s = 0.05
no-roofline = true

[[memory]]
batch = "2"
size = "14"
channels = "64"
mode = "forward,train"
"""


def _comparable(path: Path, measured_only: bool) -> pd.DataFrame:
    """The table's rows by key, without the columns every run measures afresh (``measured_only``:
    only the configuration columns, for a table whose values are all measured)."""
    frame = pd.read_csv(path)
    columns = [c for c in CONFIG if c in frame] if measured_only else [c for c in frame if not MEASURED.match(c)]
    return frame[columns].sort_values("key").reset_index(drop=True)


@pytest.mark.slow
def test_three_parts_merged_give_the_tables_of_one_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile_file = tmp_path / "tiny.toml"
    profile_file.write_text(TINY, encoding="utf-8")
    profile = load_profile(str(profile_file))
    stages = ["cost", "latency", "memory"]
    whole = tmp_path / "whole"
    assert run_bench(profile, whole, stages=stages, progress=False) == 0
    out = tmp_path / "parts"
    for k in (1, 2, 3):
        shard = Shard(k, 3)
        runs = plan_runs(profile, stages, [], progress=False, shard=shard)
        assert run_bench(profile, shard_folder(out, shard), progress=False, runs=runs, shard=shard) == 0
        assert not (shard_folder(out, shard) / "README.md").exists()  # a part renders no report
    part_keys = [{json.loads(line)["key"] for line in (shard_folder(out, Shard(k, 3)) / "raw" / "cost" /
                                                        "cost_records.jsonl").read_text().splitlines()}
                 for k in (1, 2, 3)]
    assert all(part_keys) and not (part_keys[0] & part_keys[1] or part_keys[1] & part_keys[2])  # disjoint parts

    assert suite_main(["merge", "--shards", str(out / "shards")]) == 0
    for table, measured_only in (("cost/cost_module.csv", False), ("cost/cost_model.csv", False),
                                 ("latency/latency.csv", True), ("memory/memory.csv", False)):
        merged, single = _comparable(out / "raw" / table, measured_only), _comparable(whole / "raw" / table, measured_only)
        pd.testing.assert_frame_equal(merged, single, check_dtype=False, obj=table)
    assert (out / "README.md").is_file() and (out / "cost.csv").is_file()
    summary = json.loads((out / "bench.json").read_text())
    assert [p["shard"] for p in summary["merged_from"]] == ["1/3", "2/3", "3/3"]


def _part(root: Path, shard: str, profile: str = "smoke", plan: str = "p1") -> Path:
    folder = root / "shards" / shard.replace("/", "-of-")
    (folder / "raw").mkdir(parents=True)
    (folder / "bench.json").write_text(json.dumps({"profile": profile, "plan_id": plan, "shard": shard, "runs": []}))
    return folder


@pytest.mark.parametrize(("parts", "message"), [
    ([("1/3", "smoke", "p1"), ("2/3", "smoke", "p1")], r"part\(s\) 3/3 missing"),
    ([("1/2", "smoke", "p1"), ("2/2", "cpu", "p1")], r"different profiles"),
    ([("1/2", "smoke", "p1"), ("2/2", "smoke", "p2")], r"different plans"),
    ([("1/2", "smoke", "p1"), ("2/3", "smoke", "p1"), ("3/3", "smoke", "p1")], r"different numbers of parts"),
])
def test_merge_refuses_parts_that_do_not_make_one_plan(
        parts: list[tuple[str, str, str]], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for shard, profile, plan in parts:
        _part(tmp_path, shard, profile, plan)
    assert suite_main(["merge", "--shards", str(tmp_path / "shards")]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]  # nothing written


def test_merge_refuses_a_part_given_twice_and_one_that_did_not_finish(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = _part(tmp_path / "a", "1/2")
    copy = _part(tmp_path / "b", "1/2")
    assert suite_main(["merge", "--shards", str(first), "--shards", str(copy), "--out", str(tmp_path / "o")]) == 2
    assert "1/2 given more than once" in capsys.readouterr().err
    unfinished = tmp_path / "a" / "shards" / "2-of-2"
    unfinished.mkdir()
    assert suite_main(["merge", "--shards", str(tmp_path / "a" / "shards")]) == 2
    assert "did not finish" in capsys.readouterr().err


def test_join_stage_appends_records_and_names_each_environment_once(tmp_path: Path) -> None:
    parts = []
    for k in (1, 2):
        folder = tmp_path / f"p{k}"
        folder.mkdir()
        (folder / "records.jsonl").write_text(json.dumps({"key": f"k{k}", "env_id": "e"}) + "\n" + '{"torn')
        (folder / "environments.jsonl").write_text(json.dumps({"env_id": "e", "fields": {}}) + "\n")
        (folder / "val_images-x.json").write_text("[1]")
        (folder / "bench_state.json").write_text("{}")
        (folder / "records.csv").write_text("derived")
        parts.append(folder)
    assert join_stage(parts, tmp_path / "out") == []
    out = tmp_path / "out"
    assert [json.loads(line)["key"] for line in (out / "records.jsonl").read_text().splitlines()] == ["k1", "k2"]
    assert len((out / "environments.jsonl").read_text().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["environments.jsonl", "records.jsonl", "val_images-x.json"]


def test_a_part_writes_under_out_shards_and_names_its_plan(tmp_path: Path) -> None:
    profile = apply_overrides(load_profile("smoke"), ["cost.level=module"], attn="se,eca,ca")
    shard = Shard(2, 3)
    runs = plan_runs(profile, ["cost"], [], progress=False, shard=shard)
    assert runs[0].settings.shard == shard and "--shard" in runs[0].argv
    folder = shard_folder(tmp_path, shard)
    assert folder == tmp_path / "shards" / "2-of-3"
    assert run_bench(profile, folder, progress=False, runs=runs, shard=shard) == 0
    summary = json.loads((folder / "bench.json").read_text())
    assert summary["shard"] == "2/3" and "report" not in summary
    other = plan_runs(profile, ["cost"], [], progress=False, shard=Shard(1, 3))
    assert summary["plan_id"] == plan_id(profile, other)  # the same plan in every part
    changed = apply_overrides(profile, ["cost.size=7"])
    assert plan_id(changed, plan_runs(changed, ["cost"], [], progress=False)) != summary["plan_id"]
    assert len((folder / "raw" / "cost" / "cost_records.jsonl").read_text().splitlines()) == 1  # 1 of 3 jobs


def test_a_stage_without_shard_runs_whole_in_part_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "takes_shard", lambda stage: False)
    profile = apply_overrides(load_profile("smoke"), ["cost.level=module"], attn="se,eca,ca")
    for k, records in ((1, 3), (2, None)):
        shard = Shard(k, 2)
        runs = plan_runs(profile, ["cost"], [], progress=False, shard=shard)
        assert "--shard" not in runs[0].argv
        folder = shard_folder(tmp_path, shard)
        assert run_bench(profile, folder, progress=False, runs=runs, shard=shard) == 0
        path = folder / "raw" / "cost" / "cost_records.jsonl"
        assert (len(path.read_text().splitlines()) if path.exists() else None) == records


@pytest.fixture
def invoked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The stage invocations the bench makes (each succeeds at once, measuring nothing)."""
    calls: list[str] = []
    monkeypatch.setattr(runner, "_invoke", lambda run, folder: calls.append(run.stage) or ("ok", ""))
    return calls


def test_under_torchrun_other_ranks_run_only_the_distributed_stage(
        invoked: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    profile = load_profile("smoke")
    stages = ["cost", "latency", "memory", "accuracy"]
    assert run_bench(profile, tmp_path, stages=stages, progress=False) == 0
    assert invoked == ["accuracy"]
    err = capsys.readouterr().err
    assert "rank 1 of 2: cost, latency, memory, report run on rank 0 only" in err
    assert not (tmp_path / "bench.json").exists()  # the first rank writes the state and the report

    monkeypatch.setenv("RANK", "0")
    invoked.clear()
    assert run_bench(profile, tmp_path, stages=stages, progress=False, report=False) == 0
    assert invoked == ["cost", "latency", "latency", "latency", "memory", "accuracy"]

    monkeypatch.setenv("RANK", "1")  # the first rank's state says accuracy is done: rank 1 skips it too
    invoked.clear()
    assert run_bench(profile, tmp_path, stages=stages, progress=False) == 0
    assert invoked == [] and "accuracy #0: done earlier, skipped" in capsys.readouterr().err
