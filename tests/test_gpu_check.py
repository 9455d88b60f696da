"""The lent-GPU check (``benchmarks/gpu_check.sh``) and its probes, on a machine without a GPU.

The script's ``--dry-run`` is run whole; the probes run in process, their GPU paths driven by
fake CUDA timing objects (events, streams, graphs) with the modules on the CPU.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks import gpu_preflight, gpu_probe

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = ("preflight", "graph", "timer", "bench", "report")


def _script(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``gpu_check.sh --dry-run --out TMP --pack TMP/quick.tgz``, run once from another folder."""
    tmp = tmp_path_factory.mktemp("gpu-check")
    out = tmp / "quick"
    return _script("--dry-run", "--out", str(out), "--pack", "quick.tgz", tmp=tmp), out


@pytest.mark.slow
def test_dry_run_exits_0_and_lists_every_step_with_its_timeout(dry_run) -> None:
    result, out = dry_run
    assert result.returncode == 0, result.stdout + result.stderr
    total = int(re.search(r"at most (\d+) s in all", result.stdout).group(1))
    timeouts = {}
    for step in STEPS:
        line = re.search(rf"^  {step}\s+timeout\s+(\d+) s  (.+)$", result.stdout, re.MULTILINE)
        assert line, f"no plan line for {step}:\n{result.stdout}"
        timeouts[step] = int(line.group(1))
        assert str(out) in line.group(2)
    assert sum(timeouts.values()) == total <= 480  # a device command's 600 s, less every grace period
    worst = int(re.search(r"\((\d+) s with every step's", result.stdout).group(1))
    assert worst < 600
    assert "python -m suite bench --profile gpu-quick" in result.stdout


@pytest.mark.slow
def test_dry_run_writes_the_folder_with_steps_and_preflight(dry_run) -> None:
    result, out = dry_run
    with (out / "check" / "steps.csv").open() as handle:
        rows = {row["step"]: row for row in csv.DictReader(handle)}
    assert list(rows) == list(STEPS)
    assert rows["preflight"]["status"] == "ok"
    assert rows["graph"]["status"] == rows["timer"]["status"] == "planned"
    assert rows["bench"]["status"] == "ok"
    assert all(int(rows[s]["timeout_s"]) > 0 for s in STEPS)
    assert "torchvision" in (out / "check" / "logs" / "preflight.txt").read_text()
    report = json.loads((out / "check" / "preflight.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert report["dry_run"] is True
    assert checks["cuda"]["status"] == "fail" and "cuda" in report["missing"]  # CUDA_VISIBLE_DEVICES=""
    assert checks["compile_default"]["status"] == "skipped"
    minutes = float(re.search(r"estimated total: ([\d.]+) minutes", result.stdout).group(1))
    assert minutes <= 8


@pytest.mark.slow
def test_dry_run_packs_the_folder_into_one_file(dry_run) -> None:
    import tarfile

    result, out = dry_run
    with tarfile.open(out.parent / "quick.tgz") as archive:
        names = archive.getnames()
    assert {"quick/check/steps.csv", "quick/check/preflight.json", "quick/check/logs/bench.txt"} <= set(names)
    assert "packed into" in result.stdout


@pytest.mark.slow
def test_dry_run_leaves_no_absolute_path_in_the_folder(dry_run) -> None:
    from suite.portable import ABSOLUTE_PATH

    _, out = dry_run
    found = [f"{path.name}: {line}" for path in (out / "check").rglob("*") if path.is_file()
             for line in path.read_text().splitlines() if ABSOLUTE_PATH.search(line)]
    assert not found, found[:5]


FAKE_PYTHON = """#!/usr/bin/env bash
# A stand-in interpreter: records its arguments; the bench exits $BENCH_EXIT unless --skip-preflight.
echo "$*" >> "$CALLS"
case "$*" in
    *"-m suite bench"*--skip-preflight*) exit 0 ;;
    *"-m suite bench"*) echo "error: preflight: no Python.h" >&2; exit "$BENCH_EXIT" ;;
esac
exit 0
"""


def _fake_script(tmp: Path, bench_exit: int, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """The script with :data:`FAKE_PYTHON` as its interpreter; its result and the interpreter's calls."""
    fake = tmp / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    calls = tmp / "calls.txt"
    env = {**os.environ, "PYTHON": str(fake), "CALLS": str(calls), "BENCH_EXIT": str(bench_exit)}
    result = subprocess.run(["bash", str(SCRIPT), "--out", str(tmp / "out"), *args], cwd=tmp, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    return result, calls.read_text().splitlines()


def _steps(out: Path) -> dict[str, dict[str, str]]:
    """The rows of ``out/check/steps.csv`` by step."""
    return _steps_of(out / "check" / "steps.csv")


def test_dry_run_fails_when_the_bench_cannot_plan(tmp_path: Path) -> None:
    result, _ = _fake_script(tmp_path, 1, "--dry-run")
    assert result.returncode == 1, result.stdout
    assert _steps(tmp_path / "out")["bench"]["status"] == "failed"
    assert "the dry run's bench did not run" in result.stderr


def test_a_bench_refused_by_its_preflight_runs_again_without_compiled_rows(tmp_path: Path) -> None:
    result, calls = _fake_script(tmp_path, 2)
    benches = [c for c in calls if "-m suite bench" in c]
    assert len(benches) == 2 and "--skip-preflight --set latency.compile=eager" in benches[1]
    steps = _steps(tmp_path / "out")
    assert (steps["bench"]["status"], steps["bench"]["exit_code"]) == ("failed", "2")
    assert steps["bench_eager"]["status"] == "ok" and 0 < int(steps["bench_eager"]["timeout_s"]) <= 270
    assert steps["report"]["status"] == "skipped"  # the second bench rendered it
    assert "its preflight refused the plan" in result.stdout
    assert result.returncode == 1  # the plan did not run as asked


def test_a_bench_that_fails_otherwise_is_not_run_again(tmp_path: Path) -> None:
    _, calls = _fake_script(tmp_path, 1)
    assert len([c for c in calls if "-m suite bench" in c]) == 1
    assert "bench_eager" not in _steps(tmp_path / "out")


def test_a_step_at_its_timeout_gets_keyboard_interrupt_first(tmp_path: Path) -> None:
    """SIGINT, not SIGTERM: Python runs its ``finally`` blocks (the bench stops its worker sessions)."""
    child = ("import time\ntry:\n    time.sleep(30)\nexcept KeyboardInterrupt:\n"
             "    open('interrupted', 'w').write('yes')\n    raise SystemExit(130)\n")
    snippet = f"""
source {SCRIPT}
CHECK={tmp_path}; LOGS={tmp_path}/logs; STEPS_CSV={tmp_path}/steps.csv
mkdir -p "$LOGS"; echo "step,status,exit_code,seconds,timeout_s,log" > "$STEPS_CSV"
TIMEOUT_S[probe]=1; KILL_AFTER_S=5
run_step probe failed {sys.executable} -c "$CHILD"
"""
    started = time.monotonic()
    result = subprocess.run(["bash", "-c", snippet], cwd=tmp_path, env={**os.environ, "CHILD": child},
                            capture_output=True, text=True, timeout=60, check=False)
    assert (tmp_path / "interrupted").read_text() == "yes", result.stdout + result.stderr
    assert time.monotonic() - started < 5  # not the kill-after
    assert _steps_of(tmp_path / "steps.csv")["probe"]["status"] == "timed_out"


def _steps_of(path: Path) -> dict[str, dict[str, str]]:
    """The rows of the steps file ``path`` by step."""
    with path.open() as handle:
        return {row["step"]: row for row in csv.DictReader(handle)}


def test_script_refuses_an_unknown_argument(tmp_path: Path) -> None:
    result = _script("--bogus", tmp=tmp_path)
    assert result.returncode == 2
    assert "--bogus" in result.stderr and "--dry-run" in result.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("probe", ["graph", "timer"])
def test_probe_dry_run_prints_its_rows_without_cuda(probe: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "probe.csv"
    assert gpu_probe.main([probe, "--dry-run", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    plan = gpu_probe.graph_plan() if probe == "graph" else gpu_probe.timer_plan()
    assert f"would time {len(plan)} rows" in printed
    assert all(f"{s.module} {s.text} {s.dtype}" in printed for s in plan)
    assert not out.exists()


@pytest.mark.parametrize("probe", ["graph", "timer"])
def test_probe_without_cuda_exits_2_naming_cuda(probe: str, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "probe.csv"
    assert gpu_probe.main([probe, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: CUDA is not available") and "--dry-run" in error
    assert not out.exists()


class FakeEvent:
    """A CUDA event on the host clock, or with a fixed elapsed time (``elapsed_ms``)."""

    elapsed_ms: float | None = None

    def __init__(self, enable_timing: bool = False) -> None:
        self.at = 0.0

    def record(self, stream: Any = None) -> None:
        self.at = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: FakeEvent) -> float:
        return self.elapsed_ms if self.elapsed_ms is not None else (end.at - self.at) * 1e3


class FakeGraph:
    """A CUDA graph whose replay launches nothing."""

    replays = 0

    def replay(self) -> None:
        FakeGraph.replays += 1


class FakeStream:
    def __init__(self, device: Any = None) -> None:
        pass

    def wait_stream(self, other: Any) -> None:
        pass


@pytest.fixture()
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeEvent]]:
    """CUDA "available" with fake events, streams and graphs; the probed modules on the CPU."""
    monkeypatch.setattr(gpu_probe, "DEVICE", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    if hasattr(torch, "accelerator"):  # Timer synchronizes through it where torch has it
        monkeypatch.setattr(torch.accelerator, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: FakeStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", lambda graph: contextlib.nullcontext())
    monkeypatch.setattr(FakeEvent, "elapsed_ms", None)
    FakeGraph.replays = 0
    yield FakeEvent


def test_graph_probe_writes_one_row_per_shape(fake_cuda, one_thread, tmp_path: Path, monkeypatch) -> None:
    plan = gpu_probe.graph_plan(batches=(1, 4))
    monkeypatch.setattr(gpu_probe, "graph_plan", lambda: plan)
    out = tmp_path / "graph.csv"
    assert gpu_probe.main(["graph", "--out", str(out), "--calls", "2", "--samples", "3"]) == 0
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == gpu_probe.GRAPH_COLUMNS
    assert [(r["shape"], r["dtype"]) for r in rows] == [
        ("1x64x14x14", "fp32"), ("4x64x14x14", "fp32"), ("1x64x14x14", "bf16"), ("4x64x14x14", "bf16")]
    assert all(float(r["eager_event_us"]) > 0 and float(r["host_enqueue_us"]) > 0 for r in rows)
    assert FakeGraph.replays == 4 * (5 + 2 * 3)  # warm-up and every sample's calls replay the graph


@pytest.mark.parametrize(("elapsed_ms", "host_bound"), [(1e-4, True), (1e3, False)])
def test_graph_row_is_host_bound_when_enqueueing_takes_the_event_time(fake_cuda, one_thread, elapsed_ms: float,
                                                                      host_bound: bool) -> None:
    fake_cuda.elapsed_ms = elapsed_ms  # 0.05 us or 500 ms per call against the host's real launches
    row = gpu_probe.graph_row(gpu_probe.Shape("se", 1, 64, 14, "fp32"), calls=2, samples=3)
    assert row["host_bound"] is host_bound  # by suite.timing.cuda.host_bound, the latency stage's test
    assert row["eager_event_us"] == pytest.approx(elapsed_ms * 1e3 / 2)


def test_timer_row_compares_events_and_the_harness_with_timer(fake_cuda, one_thread) -> None:
    row = gpu_probe.timer_row(gpu_probe.Shape("conv3x3", 1, 8, 8, "fp32"), calls=2, samples=3, min_run_time=0.02)
    assert tuple(row) == gpu_probe.TIMER_COLUMNS
    assert row["timer_us"] > 0 and row["harness_us"] > 0
    assert row["events_over_timer"] == pytest.approx(row["events_us"] / row["timer_us"], abs=1e-3)
    assert row["harness_over_timer"] == pytest.approx(row["harness_us"] / row["timer_us"], abs=1e-3)


def test_preflight_dry_run_reports_what_is_missing_and_exits_0(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "preflight.json"
    assert gpu_preflight.main(["--dry-run", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert {"python", "torch", "torchvision", "dependencies", "cuda", "driver", "c_compiler", "python_headers",
            "data", "tf32_torch", "tf32_suite", "compile_default", "compile_suite_settings"} <= set(checks)
    assert "cuda" in report["missing"] and report["ready"] is False
    assert checks["compile_suite_settings"]["status"] == "skipped"
    assert "not ready: cuda" in capsys.readouterr().out
    assert gpu_preflight.main(["--out", str(out)]) == 1  # without --dry-run a missing GPU fails


def test_preflight_passes_the_suites_tf32_settings() -> None:
    suite = next(c for c in gpu_preflight.check_tf32_getters() if c.name == "tf32_suite")
    assert suite.status == "ok", suite.detail


def test_preflight_fails_settings_that_make_the_legacy_getters_raise(monkeypatch) -> None:
    if not gpu_preflight._has_fp32_precision_api():
        pytest.skip("torch < 2.9 has no fp32_precision API to mix with the legacy one")
    if not gpu_preflight._read_getters(lambda: gpu_preflight._fp32_precision("ieee"))[1]:
        pytest.skip(f"torch {torch.__version__} answers the legacy getters after the new API was set")
    monkeypatch.setattr(gpu_preflight, "_suite_settings", lambda mode: gpu_preflight._fp32_precision("ieee"))
    suite = next(c for c in gpu_preflight.check_tf32_getters() if c.name == "tf32_suite")
    assert suite.status == "fail" and "raises RuntimeError" in json.dumps(suite.value)


def test_probe_dry_run_fails_when_a_latency_stage_name_it_uses_is_gone(monkeypatch) -> None:
    monkeypatch.setitem(gpu_probe.HARNESS, "graph", ("suite.timing.cuda", ("capture_graph", "no_such_name")))
    with pytest.raises(ImportError, match="no_such_name"):
        gpu_probe.main(["graph", "--dry-run"])
