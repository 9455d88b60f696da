"""End to end: the smoke profile with a user plugin produces every CSV, figure and the README,
and a bench killed mid-way resumes without redoing work or duplicating rows."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from plugin_fixtures import write_half_gate

from suite.accuracy.data import default_cache_dir
from suite.env import PROJECT_ROOT
from suite.report.readme import FIGURE_TEXT

pytestmark = pytest.mark.slow

LATENCY_FIGURES = {"latency_heatmap": "module", "latency_scaling": "module", "model_latency": "model"}
"""The figures drawn from latency rows, with the level of those rows. On a busy machine every
row of a level may rightly be ``contended`` (no clean measurement); the figure is then not
drawn and the README says why. Every other figure is drawn on any machine."""


def _env(tmp_path: Path) -> dict[str, str]:
    write_half_gate(tmp_path, "user_plugin")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(PROJECT_ROOT), env.get("PYTHONPATH", "")])
    env.pop("ATTNBENCH_PLUGINS", None)
    return env


def _bench(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "suite", "bench", "--profile", "smoke", "--attn", "se",
            "--out", str(out), "--no-progress", *extra]


def test_smoke_profile_with_plugin_writes_every_output(tmp_path: Path) -> None:
    env = _env(tmp_path)
    out = tmp_path / "smoke"
    proc = subprocess.run(_bench(out, "--plugin", "user_plugin:HalfGate"), cwd=PROJECT_ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "bench.json").read_text())
    assert {r["stage"] for r in summary["runs"]} == {"cost", "latency", "memory", "accuracy"}
    assert summary["report"]["status"] == "ok", summary["report"]

    for name in ("cost", "latency", "memory", "accuracy", "summary"):
        table = pd.read_csv(out / f"{name}.csv")
        assert len(table) > 0, name
        assert {"se", "halfgate"} <= set(table["attn"].astype(str)), (name, table.columns.tolist())
    summary_table = pd.read_csv(out / "summary.csv")
    assert summary_table[summary_table.columns[0]].is_unique
    for stage, records_file in (("cost", "cost_records.jsonl"), ("latency", "records.jsonl"),
                                ("memory", "records.jsonl"), ("accuracy", "runs.jsonl")):
        # the run's environment is written once; every record names it instead of copying it
        folder = out / "raw" / stage
        lines = [json.loads(line) for line in (folder / records_file).read_text().splitlines()]
        environments = [json.loads(line) for line in (folder / "environments.jsonl").read_text().splitlines()]
        assert {line.get("env_id") for line in lines} <= {e["env_id"] for e in environments}, stage
        assert not [k for line in lines for k in line if k in ("env_commit", "commit")], stage

    _assert_every_figure_drawn_or_explained(out)
    cache = Path(os.environ["ATTNBENCH_CACHE"])  # the session's temporary cache (conftest.py)
    assert any(cache.glob("*.pt")), "the accuracy stage did not use the tests' cache"


def _assert_every_figure_drawn_or_explained(out: Path) -> None:
    """Each figure of the report is a PNG the README shows, or, for a latency figure whose rows
    the machine's load made all ``contended``, a README line that says why it is not drawn."""
    readme = (out / "README.md").read_text()
    latency = pd.read_csv(out / "latency.csv")
    assert set(latency["status"]) <= {"ok", "contended"}, latency[["attn", "status", "message"]]
    for key, (title, _) in FIGURE_TEXT.items():
        figure = out / "figures" / f"{key}.png"
        section = readme.split(f"### {title}\n", 1)[1].split("\n#", 1)[0]
        if figure.exists():
            data = figure.read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, figure.name
            assert f"](figures/{figure.name})" in section, key
            continue
        assert key in LATENCY_FIGURES, f"{key} is not drawn: {section.strip()}"
        rows = latency[latency["level"] == LATENCY_FIGURES[key]]
        assert len(rows) and (rows["status"] == "contended").all(), (key, rows[["attn", "status"]])
        assert re.search(r"_Not drawn: [^\n]*successful[^\n]*latency", section), (key, section)


def test_the_tests_use_a_temporary_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = default_cache_dir()
    assert cache.is_relative_to(tmp_path_factory.getbasetemp())
    assert not cache.is_relative_to(Path.home() / ".cache")


def test_killed_bench_resumes_without_redoing_work(tmp_path: Path) -> None:
    env = _env(tmp_path)
    out = tmp_path / "killed"
    command = _bench(out, "--stages", "cost,latency", "--no-report")
    proc = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    latency_records = out / "raw" / "latency" / "records.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if latency_records.exists() and latency_records.read_text().count("\n") >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the bench finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    cost_lines = (out / "raw" / "cost" / "cost_records.jsonl").read_text().splitlines()
    measured_before = latency_records.read_text().count("\n")

    again = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "cost #0: done earlier, skipped" in again.stderr
    assert (out / "raw" / "cost" / "cost_records.jsonl").read_text().splitlines() == cost_lines
    records = [json.loads(line) for line in latency_records.read_text().splitlines() if line.strip()]
    keys = [r["key"] for r in records if r.get("record", "latency") == "latency"]
    assert len(keys) == len(set(keys)), "a configuration was measured twice"
    assert len(records) >= measured_before
    table = pd.read_csv(out / "raw" / "latency" / "latency.csv")
    assert not table.duplicated(subset=["key"]).any()


@pytest.mark.parametrize(("path", "ignored"), [
    ("reports/smoke/README.md", True),  # the smoke profile's default output: a check, not a report
    ("reports/smoke/raw/latency/records.jsonl", True),
    ("reports/regress/baseline-run-1.json", True),  # a baseline run's per-run measurement
    ("reports/cpu/README.md", False),  # committed reference reports stay tracked
    ("reports/regress/ab_gate_ratio.json", False),
])
def test_run_outputs_are_ignored_and_reference_reports_are_not(path: str, ignored: bool) -> None:
    if not (PROJECT_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    check = subprocess.run(["git", "check-ignore", "--quiet", "--no-index", path], cwd=PROJECT_ROOT)
    assert check.returncode == (0 if ignored else 1), path
