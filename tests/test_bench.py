"""``python -m suite bench``: profiles, overrides, plugins, and resuming without redoing work."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from plugin_fixtures import write_half_gate

import modules
from suite.bench.profile import (
    ProfileError,
    apply_overrides,
    list_profiles,
    load_profile,
)
from suite.bench.runner import BenchError, plan_runs, run_bench
from suite.plugins import PluginError, load_plugin, normalize_spec, parse_spec


def test_shipped_profiles_load_with_every_stage() -> None:
    assert {"smoke", "cpu", "gpu"} <= set(list_profiles())
    for name in ("smoke", "cpu", "gpu"):
        profile = load_profile(name)
        expected = {"cost", "latency", "memory", "accuracy"} | ({"ops"} if name == "cpu" else set())
        assert set(profile.stages) == expected, name


def test_a_profile_table_becomes_checked_settings_and_a_command_line() -> None:
    profile = apply_overrides(load_profile("smoke"), ["latency.0.batch=1,8", "latency.0.budget-s=0.5"], attn="se")
    run = plan_runs(profile, ["latency"], [], progress=False)[0]
    assert run.settings.batch == (1, 8) and run.settings.budget_s == 0.5 and run.settings.no_progress
    assert run.argv[:4] == ["--attn", "se", "--batch", "1,8"]
    assert "--budget-s" in run.argv and "--no-progress" in run.argv


def test_overrides_replace_values_per_stage_and_per_run() -> None:
    profile = load_profile("smoke")
    changed = apply_overrides(profile, ["latency.batch=16", "latency.1.size=7", "accuracy.seeds=2"], attn="se")
    assert [run["batch"] for run in changed.stages["latency"]] == ["16", "16", "16"]
    assert [run["size"] for run in changed.stages["latency"]] == ["14", "7", "64"]
    assert changed.stages["accuracy"][0]["seeds"] == "2"
    assert changed.attn == "se"
    assert profile.stages["latency"][0]["batch"] == "2"  # the loaded profile is untouched


@pytest.mark.parametrize(("bad", "message"), [
    ("latency", "STAGE.KEY=VALUE"), ("nostage.batch=1", "STAGE.KEY=VALUE"),
    ("latency.9.batch=1", "runs 0..2"), ("latency.x.batch=1", "runs 0..2"),
])
def test_bad_override_is_refused_with_the_accepted_form(bad: str, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        apply_overrides(load_profile("smoke"), [bad])


def test_unknown_profile_lists_the_shipped_ones() -> None:
    with pytest.raises(ProfileError, match="smoke"):
        load_profile("nope")


def test_unknown_attention_pattern_fails_before_measuring() -> None:
    with pytest.raises(BenchError, match=r"cost: --attn: attention pattern 'zz\*' matches no .*Registered \(\d+\): .*se"):
        plan_runs(apply_overrides(load_profile("smoke"), [], attn="zz*"), ["cost"], [], progress=False)


def test_only_the_accuracy_stage_takes_the_baseline_name() -> None:
    profile = apply_overrides(load_profile("smoke"), [], attn="none,se")
    [run] = plan_runs(profile, ["accuracy"], [], progress=False)
    assert run.argv[run.argv.index("--attn") + 1] == "none,se"
    with pytest.raises(BenchError, match="cost: --attn: .*'none'"):
        plan_runs(profile, ["cost"], [], progress=False)


@pytest.mark.parametrize("spec", ["", "a b:C", "pkg.mod:1x", "x=pkg.mod", "bad name=pkg.mod:C"])
def test_malformed_plugin_spec_is_refused(spec: str) -> None:
    with pytest.raises(PluginError):
        parse_spec(spec)


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write_half_gate(tmp_path, "my_attn_plugin")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_attn_plugin"
    for name in ("halfgate", "mygate"):
        if name in modules.list_attention():
            modules.unregister_attention(name)
    sys.modules.pop("my_attn_plugin", None)


def test_plugin_class_is_registered_under_its_name(plugin_module: str) -> None:
    assert load_plugin(f"{plugin_module}:HalfGate") == ["halfgate"]
    assert load_plugin(f"{plugin_module}:HalfGate") == []  # loading twice is harmless
    assert load_plugin(f"mygate={plugin_module}:HalfGate") == ["mygate"]
    assert modules.get_info("halfgate").family == "plugin"
    with pytest.raises(PluginError, match="no class"):
        load_plugin(f"{plugin_module}:Missing")
    with pytest.raises(PluginError, match="already registered"):
        load_plugin(f"se={plugin_module}:HalfGate")


def test_plugin_from_a_python_file(plugin_module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = normalize_spec("mygate=my_attn_plugin.py:HalfGate")
    assert spec == f"mygate={tmp_path / 'my_attn_plugin.py'}:HalfGate"  # absolute: children find it
    assert load_plugin(spec) == ["mygate"]
    assert load_plugin(spec) == []  # the file is executed once
    with pytest.raises(PluginError, match="cannot import"):
        load_plugin(str(tmp_path / "missing.py"))


def test_bench_resumes_without_redoing_finished_stages(tmp_path: Path) -> None:
    profile = apply_overrides(load_profile("smoke"), ["cost.level=module"], attn="se,eca")
    out = tmp_path / "bench"
    assert run_bench(profile, out, stages=["cost"], progress=False, report=False) == 0
    records = (out / "raw" / "cost" / "cost_records.jsonl").read_text().splitlines()
    assert len(records) == 2  # two types x one shape
    first = json.loads((out / "bench.json").read_text())
    assert [r["status"] for r in first["runs"]] == ["ok"]

    assert run_bench(profile, out, stages=["cost"], progress=False, report=False) == 0
    second = json.loads((out / "bench.json").read_text())
    assert second["runs"][0].get("skipped") is True
    assert (out / "raw" / "cost" / "cost_records.jsonl").read_text().splitlines() == records

    assert run_bench(profile, out, stages=["cost"], progress=False, report=False, force=True) == 0
    assert (out / "raw" / "cost.previous" / "cost_records.jsonl").exists()  # nothing deleted
    assert len((out / "raw" / "cost" / "cost_records.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
def test_failing_stage_is_a_status_and_the_bench_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import suite.cost.cli

    def broken(args: object) -> int:
        raise RuntimeError("the counter broke")

    monkeypatch.setattr(suite.cost.cli, "main", broken)
    profile = apply_overrides(load_profile("smoke"), ["cost.level=module", "latency.0.size=7"], attn="se")
    runs = plan_runs(profile, ["cost", "latency"], [], progress=False)[:2]
    runs[1].settings.mode, runs[1].settings.rounds, runs[1].settings.no_roofline = ("forward",), 2, True
    out = tmp_path / "bench"
    assert run_bench(profile, out, progress=False, report=False, runs=runs) == 1
    summary = json.loads((out / "bench.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["error", "ok"]
    assert "RuntimeError: the counter broke" in summary["runs"][0]["message"]


@pytest.mark.parametrize(("override", "message"), [
    ("cost.size=0", r"\[\[cost\]\] #0: size = '0': must be >= 1"),
    ("latency.bogus=1", r"\[\[latency\]\] #0: unknown key 'bogus'; accepted: .*budget-s"),
    ("latency.1.mode=back", r"\[\[latency\]\] #1: mode = 'back': back not one of forward, train"),
    ("accuracy.size=32,64", r"\[\[accuracy\]\] #0: --size: the accuracy stage takes one value"),
    ("memory.force=maybe", r"\[\[memory\]\] #0: force = 'maybe': expected true or false"),
])
def test_a_bad_profile_value_is_refused_with_its_table_and_key(override: str, message: str) -> None:
    with pytest.raises(BenchError, match=message):
        plan_runs(apply_overrides(load_profile("smoke"), [override]), ["cost", "latency", "memory", "accuracy"], [],
                  progress=False)


def test_a_stage_does_not_leave_its_thread_count_to_the_next(tmp_path: Path) -> None:
    """The cost stage counts with 1 thread; the accuracy stage after it in the same process
    must still get torch's default (it trained 1.5x slower when the count leaked)."""
    import torch

    before = torch.get_num_threads()
    target = 2 if before == 1 else before  # a count the cost stage (1 thread) would change
    torch.set_num_threads(target)
    try:
        profile = apply_overrides(load_profile("smoke"), ["cost.level=module", "cost.threads=1"], attn="se")
        assert run_bench(profile, tmp_path / "bench", stages=["cost"], progress=False, report=False) == 0
        assert torch.get_num_threads() == target
    finally:
        torch.set_num_threads(before)
