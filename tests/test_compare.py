"""``python -m suite compare A B``: rows matched by configuration, both values with their
intervals, the change and a verdict per row; refused input before any work (exit 2).

Every folder here is a few synthetic rows written with pandas (no stage runs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from suite.__main__ import main as suite_main
from suite.compare import (
    METRICS,
    SUMMARY,
    Metric,
    compare_tables,
    inspect_folder,
    judge,
    stage_metrics,
    summary_lines,
)
from suite.errors import UsageError
from suite.stages import COMMANDS, measuring_stages

AMD, INTEL = "AMD EPYC 7763", "Intel Xeon 8480"


def _latency_row(attn: str, channels: int, median: float, ratio: float, *, half: float = 0.02, mode: str = "forward",
                 status: str = "ok", cpu: str = AMD, reference: str | None = None) -> dict:
    """One latency row with intervals of +-``half`` (relative) around both values."""
    ok = status == "ok"
    return {"name": attn, "level": "module", "mode": mode, "device": "cpu", "dtype": "fp32",
            "memory_format": "contiguous", "compile": "eager", "batch": 8, "channels": channels, "size": 28,
            "threads": 1, "status": status, "median_ms": median if ok else None,
            "ci_low_ms": median * (1 - half) if ok else None, "ci_high_ms": median * (1 + half) if ok else None,
            "ratio": ratio if ok else None, "ratio_ci_low": ratio * (1 - half) if ok else None,
            "ratio_ci_high": ratio * (1 + half) if ok else None,
            "reference": reference or f"conv3x3({channels}->{channels})", "env_cpu": cpu, "env_gpu": "",
            "env_commit": "abc", "env_torch_version": "2.14.1"}


def _write(folder: Path, name: str, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / name, index=False)
    return folder


def _memory_rows(step: float, saved: float, cpu: str = AMD) -> list[dict]:
    return [{"name": "se", "level": "module", "mode": "train", "device": "cpu", "dtype": "fp32", "batch": 8,
             "channels": 64, "size": 56, "threads": 1, "status": "ok", "input_bytes": 1000,
             "act_saved_bytes": saved, "step_rss_bytes": step, "isolation": "forkserver", "env_cpu": cpu}]


A_ROWS = [_latency_row("se", 64, 1.00, 0.10), _latency_row("eca", 64, 1.00, 0.10),
          _latency_row("ca", 64, 1.00, 0.10), _latency_row("cbam", 64, 1.00, 0.10),
          _latency_row("gsop", 64, 1.00, 0.10), _latency_row("dycaconv", 64, 1.00, 0.10, reference="conv3x3(64->64)")]
B_ROWS = [_latency_row("se", 64, 1.01, 0.101),          # inside both intervals: same
          _latency_row("eca", 64, 0.80, 0.08),          # faster
          _latency_row("ca", 64, 1.30, 0.13),           # slower
          _latency_row("cbam", 64, 1.0, 0.1, status="contended"),
          _latency_row("simam", 64, 1.0, 0.1),          # only in B
          _latency_row("dycaconv", 64, 1.00, 0.10, reference="conv1x1(64->64)")]


@pytest.fixture()
def latency_pair(tmp_path: Path) -> tuple[Path, Path]:
    return (_write(tmp_path / "a" / "raw" / "latency", "latency.csv", A_ROWS).parent.parent,
            _write(tmp_path / "b_latency", "latency.csv", B_ROWS))


def _lines(table: pd.DataFrame, metric: str) -> dict[str, dict]:
    return {row["attn"]: row for row in table[table["metric"] == metric].to_dict("records")}


def test_each_row_has_both_values_their_intervals_the_change_and_a_verdict() -> None:
    a = pd.DataFrame(A_ROWS).rename(columns={"name": "attn"})
    b = pd.DataFrame(B_ROWS).rename(columns={"name": "attn"})
    table = compare_tables(a, b, METRICS["latency"])
    median, ratio = _lines(table, "median_ms"), _lines(table, "ratio")
    assert {k: v["verdict"] for k, v in median.items()} == {
        "se": "same", "eca": "faster", "ca": "slower", "cbam": "not comparable", "gsop": "not comparable",
        "dycaconv": "same", "simam": "not comparable"}
    assert median["ca"]["change"] == pytest.approx(30.0)
    assert (median["ca"]["a"], median["ca"]["a_ci_low"], median["ca"]["b_ci_high"]) == pytest.approx((1.0, 0.98, 1.326))
    assert median["cbam"]["reason"] == "status: A ok, B contended"
    assert median["gsop"]["reason"] == "only in A" and median["simam"]["reason"] == "only in B"
    # the ratio is relative to its reference: another reference is not comparable, the time still is
    assert ratio["dycaconv"]["verdict"] == "not comparable"
    assert ratio["dycaconv"]["reason"] == "reference differs: A conv3x3(64->64), B conv1x1(64->64)"
    assert ratio["ca"]["verdict"] == "slower" and ratio["eca"]["verdict"] == "faster"
    assert list(table.columns[:12]) == ["attn", "level", "mode", "device", "dtype", "memory_format", "compile",
                                        "batch", "channels", "size", "threads", "metric"]


def test_a_change_under_the_threshold_is_the_same_where_the_intervals_do_not_overlap() -> None:
    metric = METRICS["latency"][0]
    a, b = _latency_row("se", 64, 1.00, 0.1, half=0.01), _latency_row("se", 64, 1.04, 0.1, half=0.01)
    assert judge(a, b, metric)["verdict"] == "slower"
    assert judge(a, b, metric, threshold=5.0)["verdict"] == "same"
    assert judge(a, b, metric, threshold=3.0)["verdict"] == "slower"


def test_rows_from_another_machine_class_are_judged_only_when_asked() -> None:
    metric = METRICS["latency"][1]
    a, b = _latency_row("se", 64, 1.0, 0.10), _latency_row("se", 64, 1.0, 0.30, cpu=INTEL)
    line = judge(a, b, metric)
    assert line["verdict"] == "not comparable" and line["change"] is None
    assert line["reason"] == f"machine differs: A {AMD}, B {INTEL} (--across-machines judges it)"
    line = judge(a, b, metric, across_machines=True)
    assert line["verdict"] == "slower" and line["reason"] == f"machine differs: A {AMD}, B {INTEL}"
    # counts do not depend on the machine
    counts = {"status": "ok", "params_total": 10, "env_cpu": AMD}
    assert judge(counts, {**counts, "env_cpu": INTEL}, METRICS["cost"][0])["verdict"] == "same"


def test_counts_are_the_same_only_when_equal() -> None:
    params = METRICS["cost"][0]
    row = {"status": "ok", "params_total": 1000}
    assert judge(row, dict(row), params)["verdict"] == "same"
    line = judge(row, {**row, "params_total": 1001}, params)
    assert line["verdict"] == "larger" and line["change"] == pytest.approx(0.1)
    assert judge({**row, "params_total": 0}, {**row, "params_total": 0}, params)["verdict"] == "same"
    line = judge({**row, "params_total": 0}, {**row, "params_total": 5}, params)
    assert line["verdict"] == "larger" and math.isinf(line["change"])
    assert judge(row, {**row, "params_total": 900}, params)["verdict"] == "smaller"


def test_the_accuracy_delta_changes_in_points_and_higher_is_better() -> None:
    metric = METRICS["accuracy"][0]
    a = {"status": "ok", "top1_delta_pp": 0.5, "top1_ci_low_pp": 0.3, "top1_ci_high_pp": 0.7}
    b = {"status": "ok", "top1_delta_pp": 1.5, "top1_ci_low_pp": 1.2, "top1_ci_high_pp": 1.8}
    line = judge(a, b, metric)
    assert (line["verdict"], line["change"], line["unit"]) == ("better", pytest.approx(1.0), "pp")
    assert judge(b, a, metric)["verdict"] == "worse"
    assert judge(a, b, metric, threshold=1.0)["verdict"] == "same"  # the threshold is in points here


def test_a_metric_neither_row_has_is_no_line_and_one_side_missing_is_not_comparable() -> None:
    metric = METRICS["memory"][1]
    forward = {"status": "ok", "act_saved_bytes": None}
    assert judge(forward, dict(forward), metric) is None
    line = judge(forward, {"status": "ok", "act_saved_bytes": 10.0}, metric)
    assert (line["verdict"], line["reason"]) == ("not comparable", "no act_saved_bytes in A")


def test_the_summary_line_counts_verdicts_and_gives_the_geometric_mean_change() -> None:
    table = pd.DataFrame([
        {"stage": "latency", "metric": "median_ms", "a": 1.0, "b": 2.0, "change": 100.0, "unit": "%", "verdict": "slower"},
        {"stage": "latency", "metric": "median_ms", "a": 2.0, "b": 1.0, "change": -50.0, "unit": "%", "verdict": "faster"},
        {"stage": "latency", "metric": "median_ms", "a": 1.0, "b": 1.21, "change": 21.0, "unit": "%", "verdict": "same"},
        {"stage": "latency", "metric": "median_ms", "a": 1.0, "b": None, "change": None, "unit": "%",
         "verdict": "not comparable"},
        {"stage": "accuracy", "metric": "top1_delta_pp", "a": 0.5, "b": 1.5, "change": 1.0, "unit": "pp",
         "verdict": "better"},
        {"stage": "accuracy", "metric": "top1_delta_pp", "a": 0.5, "b": 0.0, "change": -0.5, "unit": "pp",
         "verdict": "same"},
    ])
    lines = summary_lines(table)
    assert lines[0] == ("latency median_ms: 4 rows: 1 same, 1 faster, 1 slower, 1 not comparable; "
                        "geometric mean change +6.6% over 3")  # (2 * 0.5 * 1.21) ** (1/3) = 1.0656
    assert lines[1] == "accuracy top1_delta_pp: 2 rows: 1 same, 1 better; mean change +0.25 pp over 2"


def test_the_cli_prints_the_changed_rows_writes_every_row_and_fails_on_slower_when_asked(
        latency_pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = latency_pair
    out = tmp_path / "changes.csv"
    assert suite_main(["compare", str(a), str(b), "--csv", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"A {a}: a bench folder holding raw/latency" in text and f"B {b}: a latency stage folder" in text
    assert "-- latency median_ms --" in text and "-- latency ratio --" in text
    assert "fixed: level module, mode forward, device cpu" in text
    shown = [line.split()[0] for line in text.split("-- latency ratio --")[0].splitlines()
             if line.split() and line.split()[0] in {"se", "eca", "ca", "cbam", "gsop", "simam", "dycaconv"}]
    assert shown == ["eca", "ca", "cbam", "gsop", "simam"]  # the same rows are counted, not shown
    assert "not shown (--all shows them): 2 rows the same" in text
    assert "latency median_ms: 7 rows: 2 same, 1 faster, 1 slower, 3 not comparable" in text
    written = pd.read_csv(out)
    assert len(written) == 14 and set(written["stage"]) == {"latency"}
    assert suite_main(["compare", str(a), str(b), "--fail-on-slower"]) == 1
    assert suite_main(["compare", str(a), str(b), "--fail-on-slower", "--min-change", "50"]) == 0
    capsys.readouterr()
    assert suite_main(["compare", str(a), str(b), "--all"]) == 0
    assert "not shown" not in capsys.readouterr().out


def test_rows_of_another_machine_and_rows_not_ok_in_both_are_counted_not_listed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write(tmp_path / "a", "latency.csv", [_latency_row("se", 64, 1.0, 0.1),
                                               _latency_row("eca", 64, 1.0, 0.1, status="refused")])
    b = _write(tmp_path / "b", "latency.csv", [_latency_row("se", 64, 2.0, 0.2, cpu=INTEL),
                                               _latency_row("eca", 64, 1.0, 0.1, status="refused", cpu=INTEL)])
    assert suite_main(["compare", str(a), str(b), "--fail-on-slower"]) == 0  # nothing judged, nothing slower
    text = capsys.readouterr().out
    assert ("not shown (--all shows them): 1 row measured on another machine class (--across-machines judges "
            "them); 1 row not ok in both folders") in text
    assert "latency ratio: 2 rows: 2 not comparable" in text
    assert suite_main(["compare", str(a), str(b), "--fail-on-slower", "--across-machines"]) == 1
    text = capsys.readouterr().out
    assert "+100.0%  slower   machine differs: A AMD EPYC 7763, B Intel Xeon 8480" in text
    assert "latency ratio: 2 rows: 1 slower, 1 not comparable" in text


def test_only_the_rows_b_measured_worse_make_fail_on_slower_fail(tmp_path: Path) -> None:
    a = _write(tmp_path / "a", "latency.csv", [_latency_row("se", 64, 1.0, 0.1)])
    b = _write(tmp_path / "b", "latency.csv", [_latency_row("se", 64, 0.5, 0.05)])
    assert suite_main(["compare", str(a), str(b), "--fail-on-slower"]) == 0
    assert suite_main(["compare", str(b), str(a), "--fail-on-slower"]) == 1


def test_bench_folders_compare_every_stage_both_hold_and_the_summary(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a / "raw" / "latency", "latency.csv", A_ROWS)
    _write(b / "raw" / "latency", "latency.csv", B_ROWS)
    _write(a / "raw" / "memory", "memory.csv", _memory_rows(2**20, 4000))
    _write(b / "raw" / "memory", "memory.csv", _memory_rows(2**21, 4000))
    _write(a / "raw" / "cost", "cost_module.csv", [{"attn": "se", "channels": 64, "height": 28, "width": 28,
                                                   "batch": 1, "status": "ok", "params_total": 512,
                                                   "macs_fvcore": 10**6}])
    assert suite_main(["compare", str(a), str(b)]) == 0
    text = capsys.readouterr().out
    assert "== latency ==" in text and "== memory ==" in text and "== cost ==" not in text  # cost: only in A
    assert "memory step_peak_bytes: 1 row: 1 larger; geometric mean change +100.0% over 1" in text
    assert "memory act_saved_bytes: 1 row: 1 same" in text
    assert suite_main(["compare", str(a), str(b), "--stage", "summary", "--all"]) == 0
    text = capsys.readouterr().out
    assert "-- summary latency_ratio_fwd --" in text and "summary act_saved_bytes_max: " in text


def test_every_summary_headline_column_has_a_metric() -> None:
    columns = [m.column for m in stage_metrics(SUMMARY)]
    assert columns == [c for spec in measuring_stages().values() for c in spec.headline_columns]
    assert set(METRICS) == set(measuring_stages())
    assert all(isinstance(m, Metric) for metrics in METRICS.values() for m in metrics)


def test_a_stage_folder_is_recognised_by_its_records_where_stages_share_the_file_name(tmp_path: Path) -> None:
    memory = tmp_path / "anything"
    memory.mkdir()
    (memory / "records.jsonl").write_text(json.dumps({"key": "k", "stage": "memory", "status": "ok"}) + "\n")
    assert inspect_folder(memory, "A").stages == ("memory",)
    cost = tmp_path / "counted"
    cost.mkdir()
    (cost / "cost_records.jsonl").write_text("{}\n")
    assert inspect_folder(cost, "B").stages == ("cost",)


def test_compare_is_a_command() -> None:
    assert COMMANDS["compare"].module == "suite.compare" and not COMMANDS["compare"].measures


# --- refused input --------------------------------------------------------------------------------

def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert suite_main(["compare", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing compared or printed before the refusal
    assert captured.err.startswith("error: ")
    return captured.err


def test_a_folder_that_does_not_exist_is_refused(latency_pair: tuple[Path, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = latency_pair
    err = _refused([str(a), str(tmp_path / "missing")], capsys)
    assert f"B {tmp_path / 'missing'}: no such folder; expected a bench folder" in err


def test_a_folder_without_any_stage_is_refused(latency_pair: tuple[Path, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    err = _refused([str(tmp_path / "empty"), str(latency_pair[1])], capsys)
    assert "A " in err and "holds no stage's records or tables" in err


def test_folders_of_different_stages_are_refused_naming_what_each_holds(
        latency_pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    memory = _write(tmp_path / "mem", "memory.csv", _memory_rows(1.0, 1.0))
    err = _refused([str(latency_pair[1]), str(memory)], capsys)
    assert "A and B hold no stage in common" in err
    assert f"{latency_pair[1]}: a latency stage folder" in err and f"{memory}: a memory stage folder" in err


def test_a_stage_a_folder_does_not_hold_is_refused(latency_pair: tuple[Path, Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    a, b = latency_pair
    err = _refused([str(a), str(b), "--stage", "memory"], capsys)
    assert "--stage memory needs the memory stage in both folders" in err and "raw/latency" in err
    err = _refused([str(a), str(b), "--stage", "summary"], capsys)
    assert "--stage summary needs a bench folder with at least one stage in both folders" in err
    assert f"B {b}: a latency stage folder" in err


def test_a_bench_folder_whose_raw_holds_no_stage_is_refused(latency_pair: tuple[Path, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bare" / "raw" / "latency").mkdir(parents=True)  # a folder, but nothing measured in it
    err = _refused([str(latency_pair[0]), str(tmp_path / "bare")], capsys)
    assert "B " in err and "its raw/ holds no stage's records or tables" in err


def test_a_folder_holding_several_stages_tables_is_refused(latency_pair: tuple[Path, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    mixed = _write(tmp_path / "mixed", "latency.csv", A_ROWS)
    _write(mixed, "memory.csv", _memory_rows(1.0, 1.0))
    err = _refused([str(mixed), str(latency_pair[1])], capsys)
    assert "several stages (latency, memory)" in err


def test_a_csv_into_a_missing_folder_is_refused_before_anything_is_compared(
        latency_pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = latency_pair
    err = _refused([str(a), str(b), "--csv", str(tmp_path / "no" / "such.csv")], capsys)
    assert "--csv" in err and "does not exist" in err


def test_an_unknown_stage_and_a_negative_threshold_are_refused_by_the_parser(
        latency_pair: tuple[Path, Path]) -> None:
    a, b = latency_pair
    for argv in (["--stage", "speed"], ["--min-change", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            suite_main(["compare", str(a), str(b), *argv])
        assert exit_info.value.code == 2


def test_a_missing_folder_argument_is_refused(latency_pair: tuple[Path, Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert "name two folders: python -m suite compare A B" in _refused([str(latency_pair[0])], capsys)
    assert "name two folders" in _refused([], capsys)


def test_inspect_folder_raises_usage_error() -> None:
    with pytest.raises(UsageError, match="no such folder"):
        inspect_folder(Path("/nonexistent/folder"), "A")


# --- the quick profile: a cut of the cpu profile, so that compare matches its rows to the reference ------

def _planned_keys(profile: str, stage: str) -> set[str]:
    """The configuration keys ``profile`` plans for ``stage`` (nothing measured)."""
    from suite.bench.profile import load_profile
    from suite.bench.runner import plan_runs

    runs = plan_runs(load_profile(profile), [stage], [], progress=False)
    if stage == "cost":
        from suite.cost.cli import plan_jobs

        return {job.key() for run in runs for job in plan_jobs(run.settings)}
    from suite.timing.cli_common import plan_sweep

    return {config.key() for run in runs for config in plan_sweep(run.settings, stage, cpu_threads=1).configs}


def test_the_quick_profile_is_a_cut_of_the_cpu_profile_in_minutes() -> None:
    from suite.bench.estimate import estimate_runs
    from suite.bench.profile import load_profile
    from suite.bench.runner import plan_runs

    quick = load_profile("quick")
    assert set(quick.stages) == {"cost", "latency", "memory"}  # no accuracy
    assert quick.attn == "se,eca,ca,gsop,cbam,dycaconv,dsan_channel"
    for stage in quick.stages:
        keys = _planned_keys("quick", stage)
        assert keys and keys <= _planned_keys("cpu", stage), stage  # every row has its reference row
    latency = _planned_keys("quick", "latency")
    assert all("|eager|" in key for key in latency)
    assert any("|model|resnet18|" in key for key in latency) and any("|train|" in key for key in latency)
    runs = plan_runs(quick, list(quick.stages), [], progress=False)
    minutes = sum(e.seconds for e in estimate_runs(runs, native_bf16=True)) / 60
    assert minutes <= 8 and quick.expected_minutes is not None and quick.expected_minutes <= 8
