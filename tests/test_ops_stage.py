"""The ops stage (``python -m suite ops``): torch.profiler's self time by op for each design and its
reference, at the latency stage's shapes; its table, its refusals, failure rows, resume, and the
top ops a report shows."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import pytest

from suite.__main__ import main as suite_main
from suite.ops.profile import ORT_SESSION_OVERHEAD, normalize_op, op_times, ort_trace_times
from suite.ops.tables import TOP_COLUMNS, report_table, top_ops
from suite.report.load import StageData

TINY = ["--attn", "se", "--batch", "1", "--size", "14", "--channels", "16", "--profile-calls", "3", "--no-progress"]


def _ops(out: Path, *extra: str) -> int:
    return suite_main(["ops", *TINY, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny module-level run of se (forward and train), shared by the tests that read it."""
    out = tmp_path_factory.mktemp("ops")
    assert _ops(out) == 0
    return out


def test_a_tiny_run_breaks_down_the_module_and_its_reference(tiny_run: Path) -> None:
    frame = pd.read_csv(tiny_run / "ops.csv")
    assert set(frame["status"]) == {"ok"} and set(frame["mode"]) == {"forward", "train"}
    assert set(frame["attn"]) == {"se"} and set(frame["channels"]) == {16} and set(frame["size"]) == {14}
    assert set(frame["compile"]) == {"eager"} and set(frame["threads"]) == {1}
    shares = frame.groupby(["mode", "role"])["share"].sum()
    assert set(shares.index.get_level_values("role")) == {"module", "reference"}
    assert shares.between(0.999, 1.001).all(), shares
    module = frame[(frame["role"] == "module") & (frame["mode"] == "forward")].set_index("op")
    assert module.loc["aten::mul", "calls_per_step"] >= 1 and module.loc["aten::sigmoid", "calls_per_step"] == 1
    assert (module["self_ms_per_call"] >= 0).all() and module["self_ms_per_call"].max() > 0
    reference = frame[(frame["role"] == "reference") & (frame["mode"] == "forward")]
    assert "aten::convolution" in set(reference["op"]) and "aten::sigmoid" not in set(reference["op"])
    assert set(reference["reference"]) == {"conv3x3(16->16)"}
    train = frame[(frame["role"] == "module") & (frame["mode"] == "train")]
    assert train["op"].str.contains("Backward").any()  # the backward's ops are in a train step
    assert frame["env_torch_version"].notna().all()  # the environment columns every stage carries


def test_the_table_sorts_each_step_by_self_time_and_totals_it(tiny_run: Path) -> None:
    frame = pd.read_csv(tiny_run / "ops.csv")
    for _, step in frame.groupby(["mode", "role"]):
        assert list(step["self_ms_per_call"]) == sorted(step["self_ms_per_call"], reverse=True)
        assert step["self_ms_per_call"].sum() == pytest.approx(step["total_self_ms_per_call"].iloc[0], rel=1e-3)


def test_a_rerun_skips_what_is_recorded_and_profiles_only_the_new(tiny_run: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "resumed"
    out.mkdir()
    for name in ("ops_records.jsonl", "environments.jsonl"):
        (out / name).write_bytes((tiny_run / name).read_bytes())
    lines = len((out / "ops_records.jsonl").read_text().splitlines())
    assert _ops(out, "--mode", "forward,train") == 0
    assert len((out / "ops_records.jsonl").read_text().splitlines()) == lines
    assert "0 profiled, 0 failed (rows with a status), 2 already recorded" in capsys.readouterr().err
    assert _ops(out, "--channels", "16,8", "--mode", "forward") == 0
    records = [json.loads(line) for line in (out / "ops_records.jsonl").read_text().splitlines()]
    assert len(records) == lines + 1 and records[-1]["channels"] == 8
    assert set(pd.read_csv(out / "ops.csv")["channels"]) == {8, 16}


def test_a_failing_design_is_a_status_row_and_the_sweep_goes_on(failing_entries: list[str], tmp_path: Path) -> None:
    out = tmp_path / "failing"
    assert suite_main(["ops", *TINY, "--attn", "zz_exploding,zz_refuses,se", "--mode", "forward",
                       "--out", str(out)]) == 0
    frame = pd.read_csv(out / "ops.csv")
    status = frame.groupby("attn")["status"].agg(set).to_dict()
    assert status == {"se": {"ok"}, "zz_exploding": {"error"}, "zz_refuses": {"build_error"}}
    refused = frame[frame["attn"] == "zz_refuses"]
    assert len(refused) == 1 and "refused on purpose" in refused["message"].iloc[0]
    assert refused["op"].isna().all()


@pytest.mark.parametrize("argv", [["--attn", "no_such_design"], ["--level", "model", "--arch", "no_such_arch"]])
def test_refused_input_is_exit_status_2_before_any_work(argv: list[str], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "refused"
    assert suite_main(["ops", "--out", str(out), "--no-progress", *argv]) == 2
    assert "error:" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("argv", [["--level", "network"], ["--profile-calls", "0"], ["--compile", "jit"]])
def test_a_value_the_flag_does_not_accept_is_exit_status_2(argv: list[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        suite_main(["ops", "--attn", "se", "--out", str(tmp_path / "x"), *argv])
    assert exit_info.value.code == 2 and not (tmp_path / "x").exists()


def test_the_grid_is_the_latency_stages(capsys: pytest.CaptureFixture[str]) -> None:
    assert suite_main(["ops", "--attn", "se", "--dry-run"]) == 0
    keys = capsys.readouterr().out.split()
    assert keys == [f"ops|module|-|se|{mode}|cpu|fp32|contiguous|eager|b8|c{c}|s28|t1"
                    for c in (64, 256) for mode in ("forward", "train")]


def test_onnxruntime_rows_break_down_the_exported_graphs(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    out = tmp_path / "ort"
    assert _ops(out, "--compile", "onnxruntime") == 0
    frame = pd.read_csv(out / "ops.csv")
    train = frame[frame["mode"] == "train"]
    assert len(train) == 1 and train["status"].iloc[0] == "unsupported" and "forward" in train["message"].iloc[0]
    forward = frame[frame["mode"] == "forward"]
    assert set(forward["status"]) == {"ok"} and forward["op"].str.startswith("ort::").all()
    assert forward.groupby("role")["share"].sum().between(0.999, 1.001).all()
    module = set(forward.loc[forward["role"] == "module", "op"])
    assert {"ort::Mul", "ort::ReduceMean", ORT_SESSION_OVERHEAD} <= module
    assert "ort::Conv" in set(forward.loc[forward["role"] == "reference", "op"])
    assert set(forward["exporter"]) <= {"dynamo", "torchscript"}


# --- the pieces ---------------------------------------------------------------------------------

def test_op_times_sum_by_name_and_give_shares_per_call() -> None:
    events = [("aten::mul", 300.0, 6), ("aten::add", 100.0, 3), ("## Call CompiledFxGraph abc123 ##", 400.0, 3),
              ("## Call CompiledFxGraph def456 ##", 200.0, 3)]
    ops = {op.op: op for op in op_times(events, calls=3)}
    graph = ops["## Call CompiledFxGraph ##"]
    assert graph.self_ms_per_call == pytest.approx(0.2) and graph.calls_per_step == 2 and graph.share == 0.6
    assert ops["aten::mul"].share == 0.3 and ops["aten::mul"].calls_per_step == 2
    assert ops["aten::add"].total_self_ms_per_call == pytest.approx(1000 / 3 / 1000, rel=1e-5)
    assert [op.op for op in op_times(events, calls=3)][0] == "## Call CompiledFxGraph ##"
    with pytest.raises(ValueError, match="calls"):
        op_times(events, calls=0)


def test_names_that_change_with_each_compilation_are_normalised() -> None:
    assert normalize_op("graph_3_cpp_fused_mul_sigmoid_2") == "cpp_fused_mul_sigmoid_2"
    assert normalize_op("Torch-Compiled Region: 1/0") == "Torch-Compiled Region"
    assert normalize_op("aten::mul") == "aten::mul"


def _ort_run(ts: float, nodes: list[tuple[str, float]]) -> list[dict]:
    run = [{"cat": "Node", "name": f"/{op}_kernel_time", "ts": ts + 1 + i, "dur": dur, "args": {"op_name": op}}
           for i, (op, dur) in enumerate(nodes)]
    return [*run, {"cat": "Session", "name": "model_run", "ts": ts, "dur": 100.0, "args": {}}]


def test_an_onnxruntime_trace_counts_only_the_last_runs_and_the_session_time_outside_kernels() -> None:
    warmup = _ort_run(0, [("Conv", 90.0)])
    trace = [{"cat": "Session", "name": "session_initialization", "ts": 0, "dur": 5000}, *warmup,
             *_ort_run(1000, [("Conv", 40.0), ("Mul", 20.0)]), *_ort_run(2000, [("Conv", 60.0), ("Mul", 20.0)])]
    ops = {op.op: op for op in ort_trace_times(trace, calls=2)}
    assert ops["ort::Conv"].self_ms_per_call == pytest.approx(0.05) and ops["ort::Conv"].calls_per_step == 1
    assert ops["ort::Mul"].share == pytest.approx(0.2)
    assert ops[ORT_SESSION_OVERHEAD].self_ms_per_call == pytest.approx(0.03)
    with pytest.raises(ValueError, match="fewer"):
        ort_trace_times(trace, calls=4)


def test_onnxruntime_profiles_an_exported_graph(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    import torch

    from suite.ops.profile import profile_onnxruntime

    model = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1), torch.nn.Sigmoid()).eval()
    x = torch.randn(1, 4, 8, 8)
    path = tmp_path / "tiny.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation: fast, and enough here
        torch.onnx.export(model, (x,), str(path), dynamo=False)
    ops = profile_onnxruntime(path, x, threads=1, calls=3)
    names = {op.op for op in ops}
    assert {"ort::Conv", ORT_SESSION_OVERHEAD} <= names
    assert sum(op.share for op in ops) == pytest.approx(1, abs=1e-3)


def _frame() -> pd.DataFrame:
    rows = []
    for channels, scale in ((16, 1.0), (32, 2.0)):
        for op, ms in (("aten::mul", 0.3), ("aten::mean", 0.5), ("aten::sigmoid", 0.1), ("aten::view", 0.05)):
            rows.append({"attn": "se", "level": "module", "mode": "forward", "compile": "eager", "channels": channels,
                         "role": "module", "op": op, "self_ms_per_call": ms * scale, "share": 0.0, "status": "ok"})
    rows.append({"attn": "se", "level": "module", "mode": "forward", "compile": "eager", "channels": 16,
                 "role": "reference", "op": "aten::convolution", "self_ms_per_call": 9.0, "status": "ok"})
    rows.append({"attn": "eca", "level": "module", "mode": "forward", "compile": "eager", "channels": 16,
                 "role": "module", "op": "aten::conv1d", "self_ms_per_call": 7.0, "status": "ok"})
    rows.append({"attn": "cbam", "level": "module", "mode": "forward", "compile": "eager", "channels": 16,
                 "status": "build_error", "message": "no"})
    return pd.DataFrame(rows)


def test_top_ops_are_the_largest_self_times_of_each_configuration() -> None:
    top = top_ops(_frame(), "se", n=2)
    assert list(top.columns) == list(TOP_COLUMNS)
    assert list(zip(top["channels"], top["rank"], top["op"], strict=True)) == [
        (16, 1, "aten::mean"), (16, 2, "aten::mul"), (32, 1, "aten::mean"), (32, 2, "aten::mul")]
    assert list(top["self_ms_per_call"]) == [0.5, 0.3, 1.0, 0.6]
    assert list(top_ops(_frame(), "se", n=1, role="reference")["op"]) == ["aten::convolution"]
    assert len(top_ops(_frame(), "se", n=10)) == 8 and top_ops(_frame(), "cbam").empty
    with pytest.raises(ValueError, match="n must be"):
        top_ops(_frame(), "se", n=0)


def test_the_report_table_lists_each_designs_top_ops_and_its_failures() -> None:
    table = report_table(StageData("ops", Path("."), "ok", {"ops": _frame()}))
    assert list(table.columns) == list(TOP_COLUMNS)
    assert set(table.loc[table["status"] == "ok", "attn"]) == {"se", "eca"}
    assert (table.loc[table["attn"] == "se", "role"] == "module").all()
    assert table.loc[table["attn"] == "cbam", "status"].tolist() == ["build_error"]
    assert report_table(StageData("ops", Path("."))).columns.tolist() == list(TOP_COLUMNS)
