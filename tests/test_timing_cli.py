"""The sweep and the two CLIs end to end on tiny shapes: status rows on failure, resume, CSV
columns, unknown patterns, grid parsing. No timed assertion: budgets are tiny and only the
bookkeeping is checked."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

import modules
from suite.errors import UsageError
from suite.records import RecordStore
from suite.stage import run_configs
from suite.timing import cli_latency, cli_memory
from suite.timing.grid import Axes, Config, expand, profile_axes

FAST = ["--batch", "1", "--size", "8", "--channels", "8", "--threads", "1", "--no-progress"]


def _run(cli, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    parsed = parser.parse_args(argv)
    return cli.main(cli.SETTINGS(**{f.name: getattr(parsed, f.name) for f in dataclasses.fields(cli.SETTINGS)}))


ROUNDS = ["--rounds", "2", "--budget-s", "0.02", "--warmup-s", "0", "--servers", "1",
          "--min-cpu-share", "0", "--max-other-cores", "99", "--max-steal", "1"]
"""Two rounds of a few ms each, contention checks off: only the bookkeeping is checked."""


def _rows(out: Path) -> list[dict]:
    return [r for r in RecordStore(out / "records.jsonl").read() if r.get("record") == "latency"]


@pytest.mark.slow
def test_latency_failures_are_rows_and_the_sweep_goes_on(tmp_path: Path, failing_entries) -> None:
    out = tmp_path / "lat"
    argv = ["--attn", "zz_exploding,zz_refuses,zz_crashing,se", "--mode", "forward", *ROUNDS,
            "--no-roofline", "--out", str(out), *FAST]
    assert _run(cli_latency, argv) == 0
    table = pd.read_csv(out / "latency.csv").set_index("attn")
    assert table.loc["zz_exploding", "status"] == "error"
    assert "exploding forward" in table.loc["zz_exploding", "message"]
    assert table.loc["zz_refuses", "status"] == "build_error"
    assert "refused on purpose" in table.loc["zz_refuses", "message"]
    assert table.loc["zz_crashing", "status"] == "error"
    assert "worker died with exit code 139" in table.loc["zz_crashing", "message"]
    assert table.loc["se", "status"] == "ok"  # measured after the failures, in the same rounds
    assert table.loc["se", "median_ms"] > 0 and table.loc["se", "ratio"] > 0 and table.loc["se", "rounds"] == 2
    assert pd.isna(table.loc["zz_exploding", "median_ms"])
    assert list(table.reset_index().columns[: len(cli_latency.LEADING_COLUMNS)]) == list(cli_latency.LEADING_COLUMNS)
    rows = _rows(out)
    assert all("env_torch_version" in r and "env_cpu" in r and r["env_threads"] == 1 for r in rows)
    rounds = [r for r in RecordStore(out / "records.jsonl").read() if r.get("record") == "latency_round"]
    assert sum(r["attn"] == "zz_exploding" for r in rounds) == 1  # a failure ends the configuration
    assert any("traceback" in r for r in rounds if r["status"] == "error" and r["attn"] == "zz_exploding")


@pytest.mark.slow
def test_latency_resume_skips_recorded_keys_and_force_remeasures(tmp_path: Path) -> None:
    out = tmp_path / "lat"
    base = ["--attn", "se", *ROUNDS, "--no-roofline", "--out", str(out), *FAST]
    assert _run(cli_latency, [*base, "--mode", "forward"]) == 0
    assert len(_rows(out)) == 1
    assert _run(cli_latency, [*base, "--mode", "forward,train"]) == 0  # only train is new
    keys = [r["key"] for r in _rows(out)]
    assert len(keys) == 2 and len(set(keys)) == 2 and keys[1].split("|")[4] == "train"
    assert _run(cli_latency, [*base, "--mode", "forward,train", "--force"]) == 0
    rows = _rows(out)
    assert len(rows) == 4 and sorted(r["generation"] for r in rows) == [0, 0, 1, 1]
    assert len(pd.read_csv(out / "latency.csv")) == 2  # latest record per key


@pytest.mark.slow
def test_retry_failed_remeasures_only_failures(tmp_path: Path, failing_entries) -> None:
    out = tmp_path / "lat"
    base = ["--attn", "zz_refuses,se", "--mode", "forward", *ROUNDS, "--no-roofline", "--out", str(out), *FAST]
    assert _run(cli_latency, base) == 0
    assert _run(cli_latency, [*base, "--retry-failed"]) == 0
    names = [r["attn"] for r in _rows(out)]
    assert sorted(names) == ["se", "zz_refuses", "zz_refuses"]


@pytest.mark.slow
def test_a_latency_run_that_never_gets_the_cpu_is_contended_not_ok(tmp_path: Path) -> None:
    # a cpu share above 1 is never reached: every window is contended, so every row must be
    out = tmp_path / "lat"
    argv = ["--attn", "se", "--mode", "forward", "--rounds", "2", "--max-attempts", "3", "--retries", "1",
            "--budget-s", "0.02", "--warmup-s", "0", "--servers", "1", "--min-cpu-share", "5",
            "--no-roofline", "--out", str(out), *FAST]
    assert _run(cli_latency, argv) == 0
    row = pd.read_csv(out / "latency.csv").iloc[0]
    assert row["status"] == "contended" and row["rounds"] == 0 and row["rounds_contended"] == 3
    assert pd.isna(row["median_ms"]) and pd.isna(row["ratio"]) and pd.isna(row["passes"])
    assert "0 of 2 rounds clean after 3 tries" in row["message"] and "CPU time asked for" in row["message"]
    rounds = [r for r in RecordStore(out / "records.jsonl").read() if r.get("record") == "latency_round"]
    assert len(rounds) == 3 and all(len(r["rejected"]) == 2 for r in rounds)


@pytest.mark.slow
def test_spawn_isolation_runs_each_round_in_a_new_interpreter(tmp_path: Path) -> None:
    out = tmp_path / "lat"
    argv = ["--attn", "se", "--mode", "forward", *ROUNDS, "--isolation", "spawn", "--no-roofline",
            "--allocator", "inherited", "--out", str(out), *FAST]
    assert _run(cli_latency, argv) == 0
    rounds = [r for r in RecordStore(out / "records.jsonl").read() if r.get("record") == "latency_round"]
    assert len({r["pid"] for r in rounds}) == 2
    assert all(r["allocator_tunables"] == "" or "mmap_threshold" not in r["allocator_tunables"] for r in rounds)


@pytest.mark.slow
def test_latency_roofline_columns_for_forward_only(tmp_path: Path) -> None:
    out = tmp_path / "lat"
    argv = ["--attn", "se", *ROUNDS, "--roofline-copy-mib", "1", "--out", str(out), *FAST]
    assert _run(cli_latency, argv) == 0
    table = pd.read_csv(out / "latency.csv").set_index("mode")
    se = modules.create("se", 8)
    expected_bytes = 2 * 8 * 8 * 8 * 4 + 4 * se.formula_params()
    assert table.loc["forward", "min_bytes"] == expected_bytes
    assert table.loc["forward", "macs_formula"] == se.formula_macs((1, 8, 8, 8))
    assert table.loc["forward", "bound"] in {"memory", "compute"}
    assert table.loc["forward", "roofline_fraction"] > 0
    assert pd.isna(table.loc["train", "roofline_fraction"])
    machine = pd.read_csv(out / "machine.csv")
    assert {"copy_bandwidth_GBps", "matmul_GMACps"} <= set(machine["quantity"])


@pytest.mark.slow
def test_unsupported_dtype_is_a_status_row(tmp_path: Path, failing_entries) -> None:
    out = tmp_path / "lat"
    argv = ["--attn", "zz_nohalf", "--mode", "forward", "--dtype", "fp32,fp16", *ROUNDS,
            "--no-roofline", "--out", str(out), *FAST]
    assert _run(cli_latency, argv) == 0
    table = pd.read_csv(out / "latency.csv").set_index("dtype")
    assert table.loc["fp32", "status"] == "ok"
    assert table.loc["fp16", "status"] == "unsupported" and "Half" in table.loc["fp16", "message"]


def test_compile_failure_is_a_status(monkeypatch) -> None:
    from suite.timing.workloads import StageError, build_workload

    def broken_compile(*args, **kwargs):
        raise RuntimeError("inductor says no")

    monkeypatch.setattr(torch, "compile", broken_compile)
    config = Config(stage="latency", attn="se", mode="forward", compile="compile", batch=1, channels=8, size=8)
    with pytest.raises(StageError) as info:
        build_workload(config)
    assert info.value.status == "compile_error" and "inductor says no" in str(info.value)


def test_unknown_pattern_fails_before_measuring_and_lists_names(tmp_path: Path) -> None:
    out = tmp_path / "lat"
    with pytest.raises(UsageError) as refused:
        _run(cli_latency, ["--attn", "se,nope*", "--out", str(out), *FAST])
    err = str(refused.value)
    assert "nope*" in err and "se" in err and "eca" in err
    assert not (out / "records.jsonl").exists()


def test_grid_expand_and_keys() -> None:
    axes = profile_axes("cpu", "latency").override(channels=(16,), mode=("forward",))
    configs = expand("latency", ["se", "eca"], axes, device="cpu", threads=2)
    assert [c.attn for c in configs] == ["se", "eca"]
    assert configs[0].key() == "latency|module|-|se|forward|cpu|fp32|contiguous|eager|b8|c16|s28|t2"
    assert len({c.key() for c in expand("latency", ["se"], Axes(batch=(1, 2), dtype=("fp32", "bf16")), device="cpu", threads=1)}) == 8
    with pytest.raises(ValueError, match="dtype must be one of"):
        Config(stage="latency", attn="se", mode="forward", dtype="fp8")
    with pytest.raises(ValueError, match="batch must be a positive int"):
        Config(stage="latency", attn="se", mode="forward", batch=0)
    with pytest.raises(ValueError, match="unknown axes"):
        Axes().override(colour=("red",))


def test_gpu_profile_includes_compile_and_cpu_profile_does_not() -> None:
    assert "compile" in profile_axes("gpu", "latency").compile
    assert profile_axes("cpu", "latency").compile == ("eager",)


def test_bad_flag_values_are_refused_by_the_parser() -> None:
    parser = argparse.ArgumentParser()
    cli_latency.add_arguments(parser)
    for argv in (["--dtype", "fp8"], ["--batch", "0"], ["--memory-format", "nhwc"], ["--compile", "yes"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
    help_text = parser.format_help()
    for flag in ("--attn", "--batch", "--size", "--channels", "--dtype", "--memory-format", "--compile",
                 "--device", "--threads", "--budget-s", "--out", "--force", "--tf32", "--cudnn-benchmark",
                 "--rounds", "--max-rounds", "--isolation", "--allocator", "--flush-denormal", "--min-cpu-share",
                 "--max-other-cores", "--max-steal", "--retries", "--max-attempts", "--timeout-s"):
        assert flag in help_text


def test_run_configs_classifies_exceptions_and_counts(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "r.jsonl")
    configs = [Config(stage="latency", attn=n, mode="forward") for n in ("a", "b", "c")]

    def measure(config: Config) -> dict:
        if config.attn == "b":
            raise torch.OutOfMemoryError("CUDA out of memory")
        return {"value": 1}

    from suite.timing.workloads import classify_error

    result = run_configs(configs, store, measure, environment={"env_x": 1}, classify=classify_error, progress=False)
    assert (result.measured, result.failed, result.skipped) == (2, 1, 0)
    by_name = {r["attn"]: r for r in store.read()}
    assert by_name["b"]["status"] == "oom" and by_name["a"]["status"] == "ok"
    assert by_name["a"]["env_x"] == 1 and "loadavg_1m" in by_name["a"]
    again = run_configs(configs, store, measure, environment={}, classify=classify_error, progress=False)
    assert (again.measured, again.skipped) == (0, 3)


@pytest.mark.slow
def test_memory_cli_subprocess_rows_and_failures(tmp_path: Path) -> None:
    out = tmp_path / "mem"
    argv = ["--attn", "se,gap_mean", "--out", str(out), *FAST]
    assert _run(cli_memory, argv) == 0
    table = pd.read_csv(out / "memory.csv")
    assert list(table.columns[: len(cli_memory.LEADING_COLUMNS)]) == list(cli_memory.LEADING_COLUMNS)
    se_train = table[(table["attn"] == "se") & (table["mode"] == "train")].iloc[0]
    assert se_train["status"] == "ok"
    assert se_train["act_saved_bytes"] >= 8 * 8 * 8 * 4  # the input, kept for x * gate
    assert se_train["peak_rss_bytes"] > se_train["step_rss_bytes"] >= 0
    assert se_train["isolation"] == "forkserver"
    assert (table["status"] == "ok").all()


def test_memory_worker_reports_a_failing_module(tmp_path: Path) -> None:
    # fp16 autocast of an unknown name fails in the worker's build: a row, not a crash
    out = tmp_path / "mem"
    from suite.timing.memory import measure_memory_cpu
    from suite.timing.workloads import StageError

    with pytest.raises(StageError) as info:
        measure_memory_cpu(Config(stage="memory", attn="no_such_module", mode="forward", batch=1, channels=8, size=8))
    assert info.value.status == "build_error"
    assert not out.exists()


def test_memory_worker_spawn_protocol(tmp_path: Path) -> None:
    from suite.timing.memory import MARKER, worker_main

    config = Config(stage="memory", attn="se", mode="train", batch=1, channels=8, size=8)
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert worker_main([json.dumps(config.as_row())]) == 0
    line = buffer.getvalue().strip().splitlines()[-1]
    assert line.startswith(MARKER)
    fields = json.loads(line[len(MARKER):])
    assert fields["act_saved_bytes"] >= 8 * 8 * 8 * 4 and fields["output_bytes"] == 8 * 8 * 8 * 4


def test_model_level_takes_a_list_of_backbones_and_refuses_unknown_ones(tmp_path: Path, capsys) -> None:
    out = tmp_path / "lat"
    with pytest.raises(UsageError) as refused:
        _run(cli_latency, ["--level", "model", "--arch", "resnet18,resnet99", "--attn", "se", "--out", str(out),
                           *FAST])
    err = str(refused.value)
    assert "resnet99" in err and "resnet50" in err and not out.exists()
    assert _run(cli_latency, ["--level", "model", "--arch", "resnet18,mobilenet_v2", "--attn", "se,gsop",
                              "--mode", "forward", "--dry-run", *FAST]) == 0
    keys = capsys.readouterr().out.split()
    assert len(keys) == 4 and {k.split("|")[2] for k in keys} == {"resnet18", "mobilenet_v2"}


@pytest.mark.slow
def test_a_model_level_refusal_is_refused_not_failed(tmp_path: Path) -> None:
    out = tmp_path / "lat"
    argv = ["--level", "model", "--arch", "resnet18", "--attn", "ccp_max", "--mode", "forward", *ROUNDS,
            "--no-roofline", "--out", str(out), "--batch", "1", "--size", "32", "--no-progress"]
    assert _run(cli_latency, argv) == 0
    row = pd.read_csv(out / "latency.csv").iloc[0]
    assert row["status"] == "refused" and "no place in a backbone" in row["message"]


@pytest.mark.parametrize("stage", ["latency", "memory"])
@pytest.mark.slow
def test_tables_only_rewrites_the_tables_from_the_records_and_measures_nothing(tmp_path: Path, stage: str) -> None:
    cli, table = (cli_latency, "latency.csv") if stage == "latency" else (cli_memory, "memory.csv")
    out = tmp_path / stage
    extra = [*ROUNDS, "--no-roofline"] if stage == "latency" else []
    assert _run(cli, ["--attn", "se", "--mode", "forward", *extra, "--out", str(out), *FAST]) == 0
    written = (out / table).read_text()
    records = (out / "records.jsonl").read_text()
    (out / table).unlink()
    assert _run(cli, ["--attn", "se", "--mode", "forward", "--out", str(out), "--tables-only", *FAST]) == 0
    assert (out / table).read_text() == written
    assert (out / "records.jsonl").read_text() == records and not (out / ".lock").exists()


def test_none_is_the_model_level_a_a_control_and_refused_at_module_level() -> None:
    from suite.errors import UsageError
    from suite.timing.cli_common import _attention_names

    assert _attention_names("se,none", "model") == ["se", "none"]
    assert "none" not in _attention_names("*", "model")  # the control is asked for by name only
    with pytest.raises(UsageError, match="model only"):
        _attention_names("none", "module")
