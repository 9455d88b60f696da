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

pytest_plugins = ["accuracy_fixtures"]  # imagenette_root

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


ACCURACY = """
[[accuracy]]               # the smoke preset's one seed of two designs and the baseline: 3 runs, one per part
preset = "smoke"
attn = "se,eca"
data = "{data}"
cache-dir = "{cache}"
"""


@pytest.mark.slow
def test_three_parts_merged_give_the_tables_of_one_run(
        imagenette_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile_file = tmp_path / "tiny.toml"
    profile_file.write_text(TINY + ACCURACY.format(data=imagenette_root, cache=tmp_path / "cache"), encoding="utf-8")
    profile = load_profile(str(profile_file))
    stages = ["cost", "latency", "memory", "accuracy"]
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
                                 ("latency/latency.csv", True), ("memory/memory.csv", False),
                                 ("accuracy/runs.csv", True)):
        merged, single = _comparable(out / "raw" / table, measured_only), _comparable(whole / "raw" / table, measured_only)
        pd.testing.assert_frame_equal(merged, single, check_dtype=False, obj=table)
    for table in ("accuracy/gate_scale.csv", "accuracy/deltas.csv"):  # a csv-only table; the paired runs
        columns = ["attn", "gate_scale_at_init"] if "gate" in table else ["attn", "runs", "top1_pairs"]
        merged, single = (pd.read_csv(folder / "raw" / table)[columns].sort_values("attn").reset_index(drop=True)
                          for folder in (out, whole))
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
    assert "rank 1 of 2: cost, latency, memory, report run on rank 0 only, after accuracy" in err
    assert not (tmp_path / "bench.json").exists()  # the first rank writes the state and the report

    monkeypatch.setenv("RANK", "0")
    invoked.clear()
    assert run_bench(profile, tmp_path, stages=stages, progress=False, report=False) == 0
    assert invoked[0] == "accuracy"

    monkeypatch.setenv("RANK", "1")  # the first rank's state says accuracy is done: rank 1 skips it too
    invoked.clear()
    assert run_bench(profile, tmp_path, stages=stages, progress=False) == 0
    assert invoked == [] and "accuracy #0: done earlier, skipped" in capsys.readouterr().err


def test_under_torchrun_the_distributed_stage_runs_first_on_every_rank(
        invoked: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Rank 0 trains with the others before it measures the other stages: the other ranks never
    wait at the rendezvous while it measures (their --dist-timeout would end the job)."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    profile = load_profile("smoke")
    assert run_bench(profile, tmp_path, stages=["cost", "latency", "memory", "accuracy"], progress=False,
                     report=False) == 0
    assert invoked == ["accuracy", "cost", "latency", "latency", "latency", "memory"]
    assert "accuracy first with every rank" in capsys.readouterr().err
    summary = json.loads((tmp_path / "bench.json").read_text())
    plain = plan_runs(profile, ["cost", "latency", "memory", "accuracy"], [], progress=False)
    assert summary["plan_id"] == plan_id(profile, plain)  # the order does not change the plan's id

    monkeypatch.setenv("WORLD_SIZE", "1")  # outside torchrun: the plan's order
    assert [r.stage for r in runner.run_order(plain, 1)] == ["cost", "latency", "latency", "latency", "memory",
                                                             "accuracy"]


TWO_ACCURACY = """description = "two accuracy invocations and a cost one"
attn = "se"

[[cost]]
level = "module"
channels = "64"
size = "7"

[[accuracy]]
preset = "smoke"

[[accuracy]]
preset = "smoke"
seeds = 2
"""


@pytest.mark.parametrize("rank", ["0", "1"])
def test_under_torchrun_a_failed_distributed_stage_ends_the_bench_at_once(
        rank: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[str] = []

    def invoke(run: runner.StageRun, folder: Path) -> tuple[str, str]:
        calls.append(f"{run.stage}#{run.index}")
        return ("error", "rank 1: se seed 0: boom") if run.stage == "accuracy" else ("ok", "")

    monkeypatch.setattr(runner, "_invoke", invoke)
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "2")
    path = tmp_path / "two.toml"
    path.write_text(TWO_ACCURACY, encoding="utf-8")
    out = tmp_path / "out"
    assert run_bench(load_profile(str(path)), out, stages=["cost", "accuracy"], progress=False) == 1
    assert calls == ["accuracy#0"]  # neither the second accuracy invocation nor cost
    assert "the bench ends here" in capsys.readouterr().err
    if rank == "0":
        summary = json.loads((out / "bench.json").read_text())
        assert [(r["stage"], r["status"]) for r in summary["runs"]] == [("accuracy", "error")]
        assert "report" not in summary


def test_a_failed_rank_is_an_error_with_its_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rank's exit with a message (``RankFailed``, a ``SystemExit``) keeps the message; it is no usage error."""
    from types import SimpleNamespace

    from suite.accuracy.sweep import RankFailed

    def fail(settings: object) -> int:
        raise RankFailed(1, "se seed 0: CUDA error: an illegal memory access")

    profile = apply_overrides(load_profile("smoke"), ["cost.level=module"])
    [run] = plan_runs(profile, ["cost"], [], progress=False)
    monkeypatch.setattr(runner, "stage_module", lambda stage: SimpleNamespace(main=fail))
    assert runner._invoke(run, tmp_path) == ("error", "rank 1: se seed 0: CUDA error: an illegal memory access")
    monkeypatch.setattr(runner, "stage_module", lambda stage: SimpleNamespace(main=lambda s: (_ for _ in ()).throw(
        SystemExit(3))))
    assert runner._invoke(run, tmp_path) == ("error", "exit code 3")


def _accuracy_record(key: str, attn: str, threads: int) -> dict[str, object]:
    return {"key": key, "attn": attn, "seed": 0, "status": "ok", "recipe": "r1", "data_id": "d1", "precision": "fp32",
            "threads": threads, "world_size": 1, "code_version": "c1"}


def test_merge_refuses_accuracy_parts_of_different_thread_counts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two node types give torch two default thread counts: the runs would not pair in the deltas."""
    for shard, threads in (("1/2", 8), ("2/2", 16)):
        folder = _part(tmp_path, shard) / "raw" / "accuracy"
        folder.mkdir()
        lines = [_accuracy_record(f"{a}|t{threads}", a, threads) for a in ("none", "se")]
        (folder / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert suite_main(["merge", "--shards", str(tmp_path / "shards")]) == 2
    err = capsys.readouterr().err
    assert "differ in threads (part 1/2: 8; part 2/2: 16)" in err
    assert "--set accuracy.threads=N" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]  # nothing written


def test_join_stage_keeps_each_csv_only_row_once(tmp_path: Path) -> None:
    """The accuracy stage's gate_scale.csv (no records behind it) is joined, one row per design."""
    sources = []
    for k, attns in ((1, ("se", "eca")), (2, ("se", "ca"))):
        folder = tmp_path / f"p{k}"
        folder.mkdir()
        pd.DataFrame({"attn": list(attns), "gate_scale_at_init": [0.5] * len(attns)}).to_csv(
            folder / "gate_scale.csv", index=False)
        sources.append(folder)
    join_stage(sources, tmp_path / "out", csv_files=["gate_scale.csv"])
    assert pd.read_csv(tmp_path / "out" / "gate_scale.csv")["attn"].tolist() == ["se", "eca", "ca"]


def test_a_key_measured_in_two_parts_keeps_the_earliest_invocations_record(tmp_path: Path) -> None:
    """Invocation #1 repeats a configuration of #0 (the cpu profile's latency): cut into parts, #0
    measured k1 in part 1 and #1 measured it again in part 2; one unsharded run keeps #0's."""
    lines = {1: [("k1", 0), ("k1", 0), ("k2", 0)], 2: [("k3", 0), ("k1", 1)]}
    sources = []
    for k, rows in lines.items():
        folder = tmp_path / f"p{k}"
        folder.mkdir()
        (folder / "records.jsonl").write_text("".join(json.dumps({"key": key, "by": f"{k}#{i}"}) + "\n"
                                                      for key, i in rows))
        sources.append(folder)
    ends = [[(0, 3), (1, 3)], [(0, 1), (1, 2)]]
    warnings = join_stage(sources, tmp_path / "out", records_file="records.jsonl", records_ends=ends)
    kept = [json.loads(line) for line in (tmp_path / "out" / "records.jsonl").read_text().splitlines()]
    assert [(r["key"], r["by"]) for r in kept] == [("k1", "1#0"), ("k1", "1#0"), ("k2", "1#0"), ("k3", "2#0")]
    assert "1 record(s)" in warnings[0]
    # the other way round: part 2's #0 measured it first
    ends = [[(0, 0), (1, 3)], [(0, 2), (1, 2)]]
    join_stage(sources, tmp_path / "out2", records_file="records.jsonl", records_ends=ends)
    kept = [json.loads(line) for line in (tmp_path / "out2" / "records.jsonl").read_text().splitlines()]
    assert [(r["key"], r["by"]) for r in kept] == [("k2", "1#0"), ("k3", "2#0"), ("k1", "2#1")]


def test_each_invocation_records_where_its_records_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def invoke(run: runner.StageRun, folder: Path) -> tuple[str, str]:
        with (folder / "records.jsonl").open("a") as handle:
            handle.write("".join(json.dumps({"key": f"{run.index}-{i}"}) + "\n" for i in range(run.index + 2)))
        return "ok", ""

    monkeypatch.setattr(runner, "_invoke", invoke)
    profile = load_profile("smoke")
    shard = Shard(1, 2)
    runs = plan_runs(profile, ["latency"], [], progress=False, shard=shard)
    folder = shard_folder(tmp_path, shard)
    assert run_bench(profile, folder, progress=False, runs=runs, shard=shard) == 0
    summary = json.loads((folder / "bench.json").read_text())
    assert [r["records_end"] for r in summary["runs"]] == [2, 5, 9]
    from suite.bench.merge import Part

    assert Part(folder, summary).records_ends("latency") == [(0, 2), (1, 5), (2, 9)]
    assert Part(folder, {"runs": [{"stage": "latency", "index": 0}]}).records_ends("latency") is None


COST_ONLY = """\
description = "two cost invocations, the second repeating the first's grid"
attn = "se,eca"

[[cost]]
level = "module"
channels = "64"
size = "7"

[[cost]]
level = "module"
channels = "64"
size = "7,14"
"""


@pytest.mark.slow
def test_a_bench_into_a_merged_folder_finds_its_invocations_done(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cost.toml"
    path.write_text(COST_ONLY, encoding="utf-8")
    profile = load_profile(str(path))
    out = tmp_path / "out"
    for k in (1, 2):
        shard = Shard(k, 2)
        runs = plan_runs(profile, ["cost"], [], progress=False, shard=shard)
        assert run_bench(profile, shard_folder(out, shard), progress=False, runs=runs, shard=shard) == 0
    assert suite_main(["merge", "--shards", str(out / "shards")]) == 0
    state = json.loads((out / "raw" / "cost" / "bench_state.json").read_text())
    assert state["fingerprint"] == runner.fingerprint()
    whole = plan_runs(profile, ["cost"], [], progress=False)
    assert {run.run_id for run in whole} == set(state["completed"])
    keys = [json.loads(line)["key"] for line in (out / "raw" / "cost" / "cost_records.jsonl").read_text().splitlines()]
    assert sorted(keys) == sorted(set(keys))  # a key of both invocations once
    calls: list[str] = []
    monkeypatch.setattr(runner, "_invoke", lambda run, folder: calls.append(run.stage) or ("ok", ""))
    assert run_bench(profile, out, stages=["cost"], progress=False, report=False) == 0
    assert calls == [] and not (out / "raw" / "cost.previous").exists()
    assert capsys.readouterr().err.count("done earlier, skipped") == 2
