"""The sweep and the two CLIs end to end on tiny shapes: status rows on failure, resume, CSV
columns, unknown patterns, grid parsing. No timed assertion: budgets are tiny and only the
bookkeeping is checked."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import modules
from suite.records import RecordStore
from suite.timing import cli_latency, cli_memory
from suite.timing.grid import Axes, Config, expand, profile_axes
from suite.timing.sweep import UnknownAttentionError, resolve_names, run_sweep

FAST = ["--batch", "1", "--size", "8", "--channels", "8", "--threads", "1", "--no-progress"]


class Exploding(modules.AttentionModule):
    """Builds fine, raises in forward: must become a status row, not end the sweep."""

    def __init__(self, channels: int, **_: object) -> None:
        super().__init__()
        self.channels = channels
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("exploding forward")

    def formula_params(self) -> int:
        return 1

    def formula_macs(self, input_shape) -> int:
        return 0


def _refuses(channels: int, **_: object) -> nn.Module:
    raise ValueError("channels=8 is refused on purpose")


@pytest.fixture()
def broken_entries():
    modules.register_attention("zz_exploding", Exploding, family="test", paper="-", arxiv=None, kind="gate")
    modules.register_attention("zz_refuses", _refuses, family="test", paper="-", arxiv=None, kind="gate")
    yield
    modules.unregister_attention("zz_exploding")
    modules.unregister_attention("zz_refuses")


def _run(cli, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.main(parser.parse_args(argv))


def test_latency_failures_are_rows_and_the_sweep_goes_on(tmp_path: Path, broken_entries) -> None:
    out = tmp_path / "lat"
    argv = ["--attn", "zz_*,se", "--mode", "forward", "--budget-s", "0.05", "--warmup-s", "0",
            "--no-roofline", "--out", str(out), *FAST]
    assert _run(cli_latency, argv) == 0
    table = pd.read_csv(out / "latency.csv").set_index("name")
    assert table.loc["zz_exploding", "status"] == "error"
    assert "exploding forward" in table.loc["zz_exploding", "message"]
    assert table.loc["zz_refuses", "status"] == "build_error"
    assert "refused on purpose" in table.loc["zz_refuses", "message"]
    assert table.loc["se", "status"] == "ok"  # measured after the failures
    assert table.loc["se", "median_ms"] > 0 and table.loc["se", "ratio"] > 0
    assert list(table.reset_index().columns[: len(cli_latency.LEADING_COLUMNS)]) == list(cli_latency.LEADING_COLUMNS)
    records = RecordStore(out / "records.jsonl").read()
    assert all("env_torch_version" in r and "env_cpu" in r and r["env_threads"] == 1 for r in records)
    assert any("traceback" in r for r in records if r["status"] != "ok")


def test_latency_resume_skips_recorded_keys_and_force_remeasures(tmp_path: Path) -> None:
    out = tmp_path / "lat"
    base = ["--attn", "se", "--budget-s", "0.05", "--warmup-s", "0", "--no-roofline", "--out", str(out), *FAST]
    assert _run(cli_latency, [*base, "--mode", "forward"]) == 0
    store = RecordStore(out / "records.jsonl")
    assert len(store.read()) == 1
    assert _run(cli_latency, [*base, "--mode", "forward,train"]) == 0  # only train is new
    keys = [r["key"] for r in store.read()]
    assert len(keys) == 2 and len(set(keys)) == 2 and keys[1].split("|")[4] == "train"
    assert _run(cli_latency, [*base, "--mode", "forward,train", "--force"]) == 0
    assert len(store.read()) == 4
    assert len(pd.read_csv(out / "latency.csv")) == 2  # latest record per key


def test_retry_failed_remeasures_only_failures(tmp_path: Path, broken_entries) -> None:
    out = tmp_path / "lat"
    base = ["--attn", "zz_refuses,se", "--mode", "forward", "--budget-s", "0.05", "--warmup-s", "0",
            "--no-roofline", "--out", str(out), *FAST]
    assert _run(cli_latency, base) == 0
    assert _run(cli_latency, [*base, "--retry-failed"]) == 0
    names = [r["name"] for r in RecordStore(out / "records.jsonl").read()]
    assert sorted(names) == ["se", "zz_refuses", "zz_refuses"]


def test_latency_roofline_columns_for_forward_only(tmp_path: Path) -> None:
    out = tmp_path / "lat"
    argv = ["--attn", "se", "--budget-s", "0.05", "--warmup-s", "0", "--roofline-copy-mib", "1",
            "--out", str(out), *FAST]
    assert _run(cli_latency, argv) == 0
    table = pd.read_csv(out / "latency.csv").set_index("mode")
    se = modules.create("se", 8)
    expected_bytes = 2 * 8 * 8 * 8 * 4 + 4 * se.formula_params()
    assert table.loc["forward", "min_bytes"] == expected_bytes
    assert table.loc["forward", "formula_macs"] == se.formula_macs((1, 8, 8, 8))
    assert table.loc["forward", "bound"] in {"memory", "compute"}
    assert table.loc["forward", "roofline_fraction"] > 0
    assert pd.isna(table.loc["train", "roofline_fraction"])
    machine = pd.read_csv(out / "machine.csv")
    assert {"copy_bandwidth_GBps", "matmul_GMACps"} <= set(machine["quantity"])


class NoHalf(Exploding):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float16:
            raise NotImplementedError("\"mean_cpu\" not implemented for 'Half'")
        return x * self.w


def test_unsupported_dtype_is_a_status_row(tmp_path: Path) -> None:
    modules.register_attention("zz_nohalf", NoHalf, family="test", paper="-", arxiv=None, kind="gate")
    try:
        out = tmp_path / "lat"
        argv = ["--attn", "zz_nohalf", "--mode", "forward", "--dtype", "fp32,fp16", "--budget-s", "0.05",
                "--no-roofline", "--out", str(out), *FAST]
        assert _run(cli_latency, argv) == 0
    finally:
        modules.unregister_attention("zz_nohalf")
    table = pd.read_csv(out / "latency.csv").set_index("dtype")
    assert table.loc["fp32", "status"] == "ok"
    assert table.loc["fp16", "status"] == "unsupported" and "Half" in table.loc["fp16", "message"]


def test_compile_failure_is_a_status_row(tmp_path: Path, monkeypatch) -> None:
    def broken_compile(*args, **kwargs):
        raise RuntimeError("inductor says no")

    monkeypatch.setattr(torch, "compile", broken_compile)
    out = tmp_path / "lat"
    argv = ["--attn", "se", "--mode", "forward", "--compile", "compile", "--budget-s", "0.05",
            "--no-roofline", "--out", str(out), *FAST]
    assert _run(cli_latency, argv) == 0
    row = pd.read_csv(out / "latency.csv").iloc[0]
    assert row["status"] == "compile_error" and "inductor says no" in row["message"]


def test_unknown_pattern_fails_before_measuring_and_lists_names(tmp_path: Path, capsys) -> None:
    out = tmp_path / "lat"
    assert _run(cli_latency, ["--attn", "se,nope*", "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert "nope*" in err and "se" in err and "eca" in err
    assert not (out / "records.jsonl").exists()


def test_resolve_names_keeps_order_and_dedupes() -> None:
    assert resolve_names("b*,a*,ab", ["ab", "ac", "ba"]) == ["ba", "ab", "ac"]
    with pytest.raises(UnknownAttentionError, match="Registered \\(3\\): ab, ac, ba"):
        resolve_names("zz", ["ab", "ac", "ba"])


def test_grid_expand_and_keys() -> None:
    axes = profile_axes("cpu", "latency").override(channels=(16,), mode=("forward",))
    configs = expand("latency", ["se", "eca"], axes, device="cpu", threads=2)
    assert [c.name for c in configs] == ["se", "eca"]
    assert configs[0].key() == "latency|module|-|se|forward|cpu|fp32|contiguous|eager|b8|c16|s28|t2"
    assert len({c.key() for c in expand("latency", ["se"], Axes(batch=(1, 2), dtype=("fp32", "bf16")), device="cpu", threads=1)}) == 8
    with pytest.raises(ValueError, match="dtype must be one of"):
        Config(stage="latency", name="se", mode="forward", dtype="fp8")
    with pytest.raises(ValueError, match="batch must be a positive int"):
        Config(stage="latency", name="se", mode="forward", batch=0)
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
                 "--device", "--threads", "--budget-s", "--out", "--force", "--tf32", "--cudnn-benchmark"):
        assert flag in help_text


def test_run_sweep_classifies_exceptions_and_counts(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "r.jsonl")
    configs = [Config(stage="latency", name=n, mode="forward") for n in ("a", "b", "c")]

    def measure(config: Config) -> dict:
        if config.name == "b":
            raise torch.OutOfMemoryError("CUDA out of memory")
        return {"value": 1}

    from suite.timing.workloads import classify_error

    result = run_sweep(configs, store, measure, environment={"x": 1}, classify=classify_error, progress=False)
    assert (result.measured, result.failed, result.skipped) == (2, 1, 0)
    by_name = {r["name"]: r for r in store.read()}
    assert by_name["b"]["status"] == "oom" and by_name["a"]["status"] == "ok"
    assert by_name["a"]["env_x"] == 1 and "loadavg_1m" in by_name["a"]
    again = run_sweep(configs, store, measure, environment={}, classify=classify_error, progress=False)
    assert (again.measured, again.skipped) == (0, 3)


def test_memory_cli_subprocess_rows_and_failures(tmp_path: Path) -> None:
    out = tmp_path / "mem"
    argv = ["--attn", "se,gap_mean", "--out", str(out), *FAST]
    assert _run(cli_memory, argv) == 0
    table = pd.read_csv(out / "memory.csv")
    assert list(table.columns[: len(cli_memory.LEADING_COLUMNS)]) == list(cli_memory.LEADING_COLUMNS)
    se_train = table[(table["name"] == "se") & (table["mode"] == "train")].iloc[0]
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
        measure_memory_cpu(Config(stage="memory", name="no_such_module", mode="forward", batch=1, channels=8, size=8))
    assert info.value.status == "build_error"
    assert not out.exists()


def test_memory_worker_spawn_protocol(tmp_path: Path) -> None:
    from suite.timing.memory import MARKER, worker_main

    config = Config(stage="memory", name="se", mode="train", batch=1, channels=8, size=8)
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert worker_main([json.dumps(config.as_row())]) == 0
    line = buffer.getvalue().strip().splitlines()[-1]
    assert line.startswith(MARKER)
    fields = json.loads(line[len(MARKER):])
    assert fields["act_saved_bytes"] >= 8 * 8 * 8 * 4 and fields["output_bytes"] == 8 * 8 * 8 * 4
