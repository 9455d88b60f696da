"""The instruction gate: Callgrind dumps parsed, counts matched to cases, the machine class of
counts, the CLI's verdicts and exit codes (fast, with the collector stubbed), and one real
valgrind process counting SE and its planted 5% copy."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
from pathlib import Path

import pytest

import modules
from suite.errors import UsageError
from suite.plugins import load_plugins
from suite.regress import callgrind, cli
from suite.regress.cases import RegressSettings
from suite.regress.gate import build_baseline, compare, format_table, machine_mismatch

ROOT = Path(__file__).resolve().parent.parent
PLANTED = ROOT / "benchmarks" / "planted_se.py"

DUMP = """# callgrind format
version: 1
creator: callgrind-3.19.0
desc: I1 cache: 32768 B, 64 B, 8-way associative
desc: Trigger: Client Request: attnbench:se|forward|b2c64s28:0

positions: line
events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
summary: 1456375 454474 244015 46763 70153 30102 9
fn=(1) main
0 5 3
totals: 1458935 451914 244015 46830 70086 30102 9 61 78
"""

DISPATCH = {"torch": "2.14.1+cpu", "python": "3.11", "arch": "x86_64", "aten_isa": "AVX2",
            "onednn_isa": "Intel AVX2", "blas": "mkl 2024.2", "cpu_vendor": "AuthenticAMD", "threads": 1,
            "device": "cpu"}


def test_parse_dump_reads_the_label_and_the_summary_with_trailing_zeros_filled() -> None:
    label, events = callgrind.parse_dump(DUMP)
    assert label == "attnbench:se|forward|b2c64s28:0"
    assert events["Ir"] == 1456375 and events["D1mw"] == 30102
    assert events["DLmr"] == 0 and events["DLmw"] == 0  # left out of the summary line: zero
    with pytest.raises(ValueError, match="not a Callgrind dump"):
        callgrind.parse_dump("hello\n")


def _manifest(labels: bool) -> list[dict]:
    counted = {"kind": "counted", "attn": "se", "mode": "forward", "shape": [2, 64, 28, 28], "params": 1,
               "calls": 2}
    return [
        {"kind": "facts", **DISPATCH},
        {**counted, "case": "se|forward|s", "labels": ["attnbench:se|forward|s:0", "attnbench:se|forward|s:1"]},
        {"kind": "error", "case": "eca|forward|s", "status": "build_error", "message": "ValueError: no"},
        {**counted, "case": "ca|forward|s", "labels": ["attnbench:ca|forward|s:0", "attnbench:ca|forward|s:1"]},
    ] if labels else []


def test_assemble_matches_labelled_dumps_per_call_and_takes_the_median() -> None:
    dumps = [
        ("attnbench:ca|forward|s:0", {"Ir": 400, "D1mr": 10, "D1mw": 2, "I1mr": 4, "ILmr": 1, "DLmr": 1}),
        ("attnbench:se|forward|s:0", {"Ir": 200}),
        ("attnbench:se|forward|s:1", {"Ir": 204}),
        ("attnbench:ca|forward|s:1", {"Ir": 400, "D1mr": 10, "D1mw": 2, "I1mr": 4, "ILmr": 1, "DLmr": 1}),
    ]
    counts = callgrind._assemble(_manifest(labels=True), dumps)
    assert counts.dispatch["aten_isa"] == "AVX2"
    assert counts.errors == {"eca|forward|s": "build_error: ValueError: no"}
    assert counts.cases["se|forward|s"]["instructions_repeats"] == [100, 102]  # 2 calls per repetition
    assert counts.cases["se|forward|s"]["instructions"] == 101
    ca = counts.cases["ca|forward|s"]
    assert (ca["instructions"], ca["d1_misses"], ca["ll_misses"], ca["i1_misses"]) == (200, 6, 1, 2)


def test_a_case_whose_dump_is_missing_is_an_error_not_a_zero() -> None:
    counts = callgrind._assemble(_manifest(labels=True), [("attnbench:se|forward|s:0", {"Ir": 200}),
                                                          ("attnbench:se|forward|s:1", {"Ir": 200})])
    assert "ca|forward|s" not in counts.cases
    assert "no dump" in counts.errors["ca|forward|s"]


def test_unlabelled_dumps_are_matched_in_order() -> None:
    manifest = [row for row in _manifest(labels=True) if row["kind"] != "error"]
    dumps = [("", {"Ir": 200}), ("", {"Ir": 200}), ("", {"Ir": 600}), ("", {"Ir": 600})]
    counts = callgrind._assemble(manifest, dumps)
    assert counts.cases["se|forward|s"]["instructions"] == 100
    assert counts.cases["ca|forward|s"]["instructions"] == 300


def test_machine_class_of_counts_keeps_what_they_depend_on_and_not_the_cpu_model() -> None:
    machine = callgrind.machine_class({**DISPATCH, "cpu": "AMD EPYC"})
    assert machine["counter"] == "instructions" and "cpu" not in machine
    assert machine_mismatch(machine, callgrind.machine_class(DISPATCH)) == []
    other = callgrind.machine_class({**DISPATCH, "aten_isa": "DEFAULT", "torch": "2.15.0+cpu"})
    diffs = machine_mismatch(machine, other)
    assert len(diffs) == 2 and any("DEFAULT" in d for d in diffs) and any("2.15.0" in d for d in diffs)
    ratio_class = {"cpu": "AMD EPYC", "threads": 1, "device": "cpu", "torch": "2.14"}
    assert machine_mismatch(ratio_class, machine)  # a ratio baseline never matches an instruction run


def _runs(values: dict[str, list[float]]) -> list[dict]:
    n = len(next(iter(values.values())))
    return [{case: {"instructions": v[i], "i1_misses": 1.0, "d1_misses": 2.0, "ll_misses": 3.0}
             for case, v in values.items()} for i in range(n)]


def test_instruction_baseline_tolerance_and_verdicts() -> None:
    baseline = build_baseline(_runs({"se|forward|s": [1000.0, 1001.0, 1002.0]}), environment={},
                              machine=callgrind.machine_class(DISPATCH), settings={}, floor=0.01, factor=3,
                              counter="instructions")
    entry = baseline["cases"]["se|forward|s"]
    assert baseline["counter"] == "instructions" and entry["instructions"] == 1001.0
    assert entry["tolerance"] == 0.01  # 3 x 0.1% spread is under the floor
    assert entry["d1_misses"] == 2.0
    results = {r.case: r for r in compare(baseline, {"se|forward|s": [1051.0]})}
    assert results["se|forward|s"].verdict == "regression"
    assert results["se|forward|s"].change == pytest.approx(1051 / 1001 - 1)
    assert compare(baseline, {"se|forward|s": [1005.0]})[0].verdict == "ok"
    assert compare(baseline, {"se|forward|s": [950.0]})[0].verdict == "faster"
    table = format_table(compare(baseline, {"se|forward|s": [1051.0]}), "instructions",
                         {"se|forward|s": {"d1_misses": 12.0, "ll_misses": 3.0}})
    assert "1,001" in table and "1,051" in table and "d1_misses" in table and "regression" in table
    assert math.isclose(baseline["cases"]["se|forward|s"]["spread"], math.log(1001 / 1000))  # the farther sample


def _args(tmp_path: Path, *extra: str) -> cli.GateSettings:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    parsed = parser.parse_args(["--counter", "instructions", "--attn", "se", "--mode", "forward",
                                "--baseline", str(tmp_path / "baseline.json"), "--out", str(tmp_path / "out"), *extra])
    return cli.GateSettings(**{f.name: getattr(parsed, f.name) for f in dataclasses.fields(cli.GateSettings)})


@pytest.fixture
def stub_counts(monkeypatch: pytest.MonkeyPatch):
    """``callgrind.collect`` replaced by counts from a list (one per process), valgrind 'found'."""
    values: list[float] = []
    dispatch = dict(DISPATCH)

    def collect(settings: RegressSettings, work_dir: Path, *, rotate: int = 0) -> callgrind.Counts:
        value = values.pop(0)
        cases = {f"{n}|{m}|{settings.shape_label}": {"instructions": value, "i1_misses": 1.0, "d1_misses": 2.0,
                                                      "ll_misses": 3.0} for n, m in settings.cases()}
        return callgrind.Counts(cases=cases, dispatch=dict(dispatch), valgrind="3.19.0", wall_s=1.0)

    monkeypatch.setattr(callgrind, "collect", collect)
    monkeypatch.setattr(callgrind, "find_valgrind", lambda: "/usr/bin/valgrind")
    return values, dispatch


def test_cli_takes_a_baseline_then_passes_fails_and_refuses_another_class(tmp_path: Path, stub_counts,
                                                                         capsys: pytest.CaptureFixture) -> None:
    values, dispatch = stub_counts
    values += [1000.0, 1002.0, 1001.0]
    assert cli.main(_args(tmp_path, "--update-baseline")) == 0  # 3 processes by default
    baseline = json.loads((tmp_path / "baseline.json").read_text())
    assert baseline["counter"] == "instructions" and baseline["repeats"] == 3
    assert baseline["cases"]["se|forward|b2c64s28"]["samples"] == [1000.0, 1002.0, 1001.0]

    values.append(1003.0)
    assert cli.main(_args(tmp_path)) == 0
    verdict = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert verdict["counter"] == "instructions" and verdict["results"][0]["verdict"] == "ok"
    assert (tmp_path / "out" / "instructions.json").exists()

    values.append(1060.0)  # +5.9%
    assert cli.main(_args(tmp_path)) == cli.EXIT_REGRESSION
    assert "FAIL" in capsys.readouterr().out

    dispatch["onednn_isa"] = "Intel AVX-512"
    values.append(1001.0)
    assert cli.main(_args(tmp_path)) == cli.EXIT_MISMATCH
    assert "INCOMPARABLE" in capsys.readouterr().out
    values.append(1001.0)
    assert cli.main(_args(tmp_path, "--on-mismatch", "warn")) == 0
    verdict = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert verdict["results"][0]["verdict"] == "incomparable" and verdict["mismatch"]


def test_cli_refuses_a_ratio_baseline_for_the_instruction_counter(tmp_path: Path, stub_counts) -> None:
    (tmp_path / "baseline.json").write_text((ROOT / "suite" / "regress" / "baselines" / "regress_cpu.json").read_text())
    with pytest.raises(UsageError, match="holds ratio values, not instructions"):
        cli.main(_args(tmp_path))


def test_cli_says_when_valgrind_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(UsageError) as refused:
        cli.main(_args(tmp_path))
    assert "valgrind is not installed" in str(refused.value) and "apt-get install valgrind" in str(refused.value)
    assert not (tmp_path / "out").exists()  # nothing done


@pytest.fixture
def planted_se(tmp_path: Path):
    """``se_plus5`` registered here for the test (a copy of the plugin at a new path: a file
    already imported is not imported again, so it would not register again)."""
    copy = tmp_path / "planted_se.py"
    shutil.copy(PLANTED, copy)
    load_plugins([str(copy)])
    yield
    modules.unregister_attention("se_plus5")


def test_planted_copy_has_the_output_of_se(planted_se) -> None:
    import torch

    torch.manual_seed(0)
    se = modules.create("se", 64)
    planted = modules.create("se_plus5", 64)
    planted.load_state_dict(se.state_dict())
    x = torch.randn(2, 64, 8, 8)
    assert torch.equal(planted(x), se(x))
    planted.train()
    se.train()
    assert torch.equal(planted(x), se(x))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_callgrind_counts_se_and_sees_the_planted_five_percent(planted_se, tmp_path: Path) -> None:
    """One real valgrind process (about 2.5 minutes on the 2-core machine)."""
    settings = RegressSettings(attn=("se", "se_plus5"), plugins=(str(PLANTED),))
    counts = callgrind.collect(settings, tmp_path / "cg")
    assert counts.errors == {}
    assert counts.dispatch["threads"] == 1 and counts.dispatch["aten_isa"]
    for mode in settings.mode:
        se, planted = (counts.cases[f"{name}|{mode}|b2c64s28"] for name in ("se", "se_plus5"))
        repeats = se["instructions_repeats"]
        assert max(repeats) / min(repeats) < 1.005  # deterministic to well under the 1% floor
        assert 1.02 < planted["instructions"] / se["instructions"] < 1.10  # about +5%
        assert se["d1_misses"] > 0


def test_without_a_compiler_the_worker_falls_back_to_torchs_requests(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    shim, why = callgrind.build_shim(tmp_path)
    assert shim is None and "no C compiler" in why
    command = callgrind.valgrind_command("valgrind", tmp_path, instrument_from_start=True)
    assert "--instr-atstart=yes" in command and "--collect-atstart=no" in command


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
def test_the_shim_compiles_and_is_a_no_op_outside_valgrind(tmp_path: Path) -> None:
    from suite.regress.callgrind_worker import _ShimRequests

    shim, why = callgrind.build_shim(tmp_path)
    if shim is None and "headers" in why:
        pytest.skip(why)
    assert shim is not None, why
    requests = _ShimRequests(str(shim))
    assert requests.running_on_valgrind() is False
    calls = []
    requests.start_instrumentation()
    requests.count(lambda: calls.append(1), 3, "attnbench:x:0")
    assert calls == [1, 1, 1]


def test_rotation_starts_the_cases_elsewhere() -> None:
    from suite.regress.callgrind_worker import rotated

    cases = [("se", "forward"), ("se", "train"), ("eca", "forward")]
    assert rotated(cases, 0) == cases
    assert rotated(cases, 4) == [("se", "train"), ("eca", "forward"), ("se", "forward")]
    assert rotated([], 3) == []


class _Bar:
    def __init__(self) -> None:
        self.updates, self.lines, self.postfix = 0, [], ""

    def update(self, n: int) -> None:
        self.updates += n

    def write(self, line: str) -> None:
        self.lines.append(line)

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text


def test_the_workers_progress_lines_advance_the_bar_and_the_tail_is_kept() -> None:
    script = ("import sys\n"
              "print('callgrind: torch imported in 1 s; 2 case(s) built', file=sys.stderr)\n"
              "print('callgrind: 1/2 se|forward|s counted in 1 s', file=sys.stderr)\n"
              "print('callgrind: 2/2 ca|forward|s failed: error', file=sys.stderr)\n"
              "print('valgrind says something')\n"
              "sys.exit(3)\n")
    bar = _Bar()
    returncode, tail = callgrind._run_streaming([sys.executable, "-c", script], {}, bar)
    assert returncode == 3 and "valgrind says something" in tail
    assert bar.updates == 2 and bar.postfix == "counting" and bar.lines[0].startswith("callgrind: torch imported")
