"""Profiles that say what they cost: every shipped profile states its expected duration, and
``bench --dry-run`` prints each stage invocation's configurations and estimated minutes and the
estimated total, for a CUDA plan too on a machine without CUDA (suite/bench/estimate.py)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from suite.__main__ import main as suite_main
from suite.bench.estimate import estimate_runs
from suite.bench.profile import ProfileError, apply_overrides, list_profiles, load_profile
from suite.bench.runner import plan_runs
from suite.env import PROJECT_ROOT
from suite.shard import Shard
from suite.stages import measuring_stages

SHIPPED = ("cpu", "smoke", "quick", "gpu-quick", "gpu", "gpu-full")
COMMITTED = PROJECT_ROOT / "reports" / "cpu"
STAGES = list(measuring_stages())


def _estimates(profile: str, shard: Shard | None = None) -> list:
    runs = plan_runs(load_profile(profile), STAGES, [], progress=False, shard=shard)
    return estimate_runs(runs, native_bf16=True)  # the committed cpu run's CPU has native bf16


def _minutes(profile: str) -> float:
    return sum(e.seconds for e in _estimates(profile)) / 60


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any question to CUDA fails the test: planning must not touch the device."""
    import torch

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the dry run asked CUDA")

    for name in ("is_available", "device_count", "init", "get_device_properties", "current_device"):
        monkeypatch.setattr(torch.cuda, name, refuse)


def _invocation(stage: str, argv: list[str]) -> tuple[str, str] | None:
    """An invocation as its stage parses it (its settings without the output folder and the
    progress flag), however the bench that ran it spelled its flags; None for flags this version
    no longer takes."""
    from suite.__main__ import build_parser, settings_from
    from suite.stages import command

    args, unknown = build_parser(stage).parse_known_args([stage, *argv])
    if unknown:
        return None
    settings = settings_from(args, command(stage).command_module().SETTINGS)
    fields = {k: v for k, v in vars(settings).items() if k not in ("out", "no_progress", "progress")}
    return stage, repr(sorted(fields.items()))


def _compiles_or_exports(argv: list[str]) -> bool:
    """Whether an invocation runs a runtime other than eager (``--compile``), whose first round
    compiles or exports unless inductor's or the export cache's on-disk entries are already there."""
    if "--compile" not in argv:
        return False
    return any(runtime != "eager" for runtime in argv[argv.index("--compile") + 1].split(","))


def test_the_cpu_estimate_is_within_25_percent_of_the_committed_run() -> None:
    """Each invocation of the cpu profile that the committed run made with the same flags is
    estimated within 25% of its wall time (an invocation the profile changed since has no
    measurement to hold it to until the profile's next run); the accuracy stage's per run. An
    invocation that compiles or exports is estimated for cold caches, and the committed run may
    have found them warm: its estimate may exceed the wall time, but not fall more than 25% short."""
    bench = json.loads((COMMITTED / "bench.json").read_text())
    measured = {_invocation(r["stage"], r["argv"]): r["wall_s"] for r in bench["runs"]}
    cached = {_invocation(r["stage"], r["argv"]) for r in bench["runs"] if _compiles_or_exports(r["argv"])}
    measured.pop(None, None)
    runs = plan_runs(load_profile("cpu"), STAGES, [], progress=False)
    estimates = {_invocation(run.stage, run.argv): e.seconds
                 for run, e in zip(runs, estimate_runs(runs, native_bf16=True), strict=True)}
    common = set(measured) & set(estimates)
    assert common, sorted(measured)  # the committed run predates some of the profile's invocations
    for key in common:
        if key in cached:
            assert estimates[key] >= 0.75 * measured[key], (key, round(estimates[key]), measured[key])
        else:
            assert abs(estimates[key] / measured[key] - 1) <= 0.25, (key, round(estimates[key]), measured[key])
    committed = pd.read_csv(COMMITTED / "raw" / "accuracy" / "runs.csv")
    baseline_s = float(committed.loc[committed["attn"] == "none", "wall_s"].median())
    from suite.accuracy.recipe import PROFILES
    from suite.bench.estimate import CPU, run_seconds

    assert abs(run_seconds(PROFILES["cpu"], "none", CPU, True) / baseline_s - 1) <= 0.25, baseline_s


@pytest.mark.parametrize("profile", SHIPPED)
def test_dry_run_prints_each_invocation_its_configurations_minutes_and_the_total(
        profile: str, no_cuda: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert suite_main(["bench", "--profile", profile, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    commands = [i for i, line in enumerate(lines) if line.startswith("python -m suite ")]
    assert len(commands) == sum(len(t) for t in load_profile(profile).stages.values())
    for i in commands:
        assert re.fullmatch(r"  # \d+ (configurations|runs), estimated [\d.]+ minutes.* \((cpu|cuda) model\)",
                            lines[i + 1]), lines[i + 1]
    total = next(line for line in lines if "estimated total" in line)
    assert re.search(r"estimated total: [\d.]+ minutes", total)
    uses_cuda = any("--device cuda" in lines[i] or "--preset gpu" in lines[i] for i in commands)
    assert ("unverified until a GPU runs it" in total) == uses_cuda
    assert os.listdir(tmp_path) == []  # planning writes nothing


def test_the_gpu_profiles_fit_their_budgets() -> None:
    assert _minutes("gpu-quick") <= 5  # within gpu_check.sh's bench step on a lent GPU
    assert 90 <= _minutes("gpu") <= 150  # about 2 hours of one H100-class GPU
    assert _minutes("gpu-full") > 10 * _minutes("gpu")


@pytest.mark.parametrize("profile", list_profiles())
def test_every_shipped_profile_states_what_it_costs(profile: str) -> None:
    loaded = load_profile(profile)
    assert re.search(r"\b(minute|hour)", loaded.expected), loaded.expected
    assert loaded.expected_minutes is not None
    estimated = _minutes(profile)
    assert abs(loaded.expected_minutes / estimated - 1) <= 0.25 or abs(loaded.expected_minutes - estimated) <= 1, (
        profile, loaded.expected_minutes, round(estimated, 1))


def test_gpu_full_keeps_the_whole_grid_and_gpu_is_its_cut() -> None:
    counts = {(e.stage, e.index): e.count for e in _estimates("gpu-full")}
    assert counts[("latency", 0)] == 1584 and counts[("latency", 1)] == 528
    assert counts[("memory", 0)] == 528 and counts[("accuracy", 0)] == 64
    gpu = {(e.stage, e.index): e.count for e in _estimates("gpu")}
    assert sum(v for (s, _), v in gpu.items() if s == "latency") < 1584 + 528


def test_a_part_of_the_plan_estimates_its_part() -> None:
    whole = {(e.stage, e.index): e.count for e in _estimates("gpu-full")}
    part = {(e.stage, e.index): e.count for e in _estimates("gpu-full", Shard(3, 8))}
    assert part[("cost", 0)] == len(range(2, whole[("cost", 0)], 8))


def test_an_invocation_counts_only_what_an_earlier_one_did_not_measure() -> None:
    """The cpu profile's scaling invocation repeats 9 configurations of the first one (the same
    keys in the same folder), which it skips."""
    counts = {(e.stage, e.index): e.count for e in _estimates("cpu")}
    assert counts[("latency", 1)] == 9 * 3 * 3 * 1 - 9


def test_the_estimate_follows_overrides() -> None:
    profile = apply_overrides(load_profile("cpu"), ["accuracy.seeds=2"])
    runs = plan_runs(profile, ["accuracy"], [], progress=False)
    [estimate] = estimate_runs(runs, native_bf16=True)
    assert estimate.count == (8 + 2) * 2  # baseline, 7 designs and 2 width-matched arms (se, gsop), 2 seeds


def test_expected_minutes_must_be_a_positive_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('description = "x"\nexpected_minutes = "soon"\n', encoding="utf-8")
    with pytest.raises(ProfileError, match="expected_minutes"):
        load_profile(str(path))


def test_a_cuda_memory_configuration_costs_a_fresh_interpreter_with_its_cuda_context() -> None:
    """Each CUDA memory configuration runs in a new interpreter that imports torch and creates a
    CUDA context before it builds and steps: 5-8 s, not the CPU's fraction of a second."""
    profile = apply_overrides(load_profile("gpu-quick"), ["memory.dtype=fp32,bf16", "memory.mode=forward,train"])
    [estimate] = estimate_runs(plan_runs(profile, ["memory"], [], progress=False), native_bf16=True)
    assert estimate.model == "cuda" and estimate.count == 20
    assert estimate.seconds >= 20 * 5
