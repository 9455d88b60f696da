"""The contention rule on machines of several sizes, driven by fake clocks: which policy
(``strict``, ``lenient``, ``auto``) takes which window, what the rows record about the load and
the policy, and the bench's last line when latency rows came out ``contended``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest

import suite.timing.cli_latency as cli_latency
import suite.timing.rounds as rounds_module
from suite.bench.cli import finish_line, latency_row_problems
from suite.records import RecordStore
from suite.timing.cli_latency import LatencySettings, round_job, round_plan
from suite.timing.contention import (
    ContentionLimits,
    CpuProbe,
    CpuUsage,
    assess,
    resolve_policy,
)
from suite.timing.grid import Config
from suite.timing.job import Job
from suite.timing.resume import RoundProgress
from suite.timing.round_stats import RoundPlan, aggregate_rounds
from suite.timing.rounds import run_rounds
from suite.timing.timer import RoundOptions


class FakeMachine:
    """Wall, own-CPU and machine clocks of a machine with ``cpus`` CPUs that advance only when told to."""

    def __init__(self, cpus: int) -> None:
        self.cpus = cpus
        self.wall = self.own = self.busy = self.steal = 0.0

    def probe(self) -> CpuProbe:
        return CpuProbe(wall=lambda: self.wall, own_cpu=lambda: self.own, machine=lambda: (self.busy, self.steal))

    def window(self, *, threads: int, own_share: float, others: float, steal: float = 0.0,
               seconds: float = 0.2) -> CpuUsage:
        """The usage of a window in which the worker got ``own_share`` of its ``threads`` cores,
        other processes used ``others`` cores and the hypervisor stole ``steal`` of the CPUs."""
        probe = self.probe()
        start = probe.snapshot()
        self.wall += seconds
        self.own += seconds * threads * own_share
        self.busy += seconds * (threads * own_share + others)
        self.steal += seconds * self.cpus * steal
        return CpuUsage.between(start, probe.snapshot(), threads=threads, cpus=self.cpus)


def _judge(cpus: int, choice: str, *, threads: int = 1, **window: float) -> str:
    """The reason (``""``: clean) a window on ``cpus`` CPUs gets under ``--contention choice``."""
    usage = FakeMachine(cpus).window(threads=threads, **window)
    return assess(usage, ContentionLimits(policy=resolve_policy(choice, cpus)))


# (cpus, threads, own_share, other cores, steal) of each machine and load
QUIET_2 = (2, 1, 0.99, 0.3, 0.01)  # 2 cores, a shell and the parent process beside the measurement
ONE_BUSY_2 = (2, 1, 0.99, 1.0, 0.01)  # 2 cores, one other busy process on the free core
BURNER_2 = (2, 1, 2 / 3, 4 / 3, 0.01)  # 2 cores, one busy process per core: the worker waits for a core
BURNER_2_HALF = (2, 1, 0.5, 1.5, 0.01)
ORDINARY_4 = (4, 1, 0.99, 0.8, 0.0)  # 4 CPUs, ordinary background work
HEAVY_4 = (4, 1, 0.97, 3.0, 0.0)  # 4 CPUs, three busy processes
BROWSER_16 = (16, 1, 0.99, 1.5, 0.0)  # 16 CPUs, a browser and an editor
HALF_BUSY_16 = (16, 1, 0.99, 10.0, 0.0)  # 16 CPUs, ten busy processes: caches, memory bus, SMT siblings shared
HEAVY_16 = (16, 1, 0.6, 15.0, 0.0)  # 16 CPUs, fifteen busy processes
FOUR_THREADS_16 = (16, 4, 0.98, 3.0, 0.0)  # 16 CPUs, 4 threads measured, three other cores busy
STEAL_16 = (16, 1, 0.99, 0.5, 0.2)  # 16 vCPUs, the hypervisor takes a fifth of them


@pytest.mark.parametrize(("load", "choice", "clean"), [
    (QUIET_2, "auto", True),
    (QUIET_2, "strict", True),
    (ONE_BUSY_2, "strict", False),
    (ONE_BUSY_2, "lenient", True),
    (ONE_BUSY_2, "auto", False),
    (BURNER_2, "strict", False),
    (BURNER_2, "lenient", False),
    (BURNER_2_HALF, "lenient", False),
    (ORDINARY_4, "auto", False),
    (ORDINARY_4, "lenient", True),
    (HEAVY_4, "lenient", False),
    (BROWSER_16, "auto", True),
    (BROWSER_16, "strict", False),
    (HALF_BUSY_16, "auto", False),
    (HEAVY_16, "auto", False),
    (HEAVY_16, "lenient", False),
    (FOUR_THREADS_16, "auto", True),
    (STEAL_16, "lenient", False),
], ids=lambda v: v if isinstance(v, str) else None)
def test_the_rule_scales_with_the_cores_free_beside_the_measurement(
        load: tuple[int, int, float, float, float], choice: str, clean: bool) -> None:
    cpus, threads, own_share, others, steal = load
    reason = _judge(cpus, choice, threads=threads, own_share=own_share, others=others, steal=steal)
    assert (reason == "") is clean, reason


def test_a_worker_that_waited_for_a_core_is_contended_under_every_policy() -> None:
    for choice in ("strict", "lenient", "auto"):
        reason = _judge(2, choice, own_share=2 / 3, others=4 / 3)
        assert "0.67 of the CPU time asked for" in reason
    assert "of the CPU time asked for" in _judge(16, "lenient", own_share=0.6, others=15.0)


def test_the_lenient_allowance_is_one_busy_process_or_half_the_machine() -> None:
    limits = ContentionLimits(policy="lenient")
    assert limits.other_cores_allowed(cpus=2, threads=1) == pytest.approx(1.5)
    assert limits.other_cores_allowed(cpus=4, threads=1) == pytest.approx(1.5)
    assert limits.other_cores_allowed(cpus=16, threads=1) == pytest.approx(7.0)
    assert limits.other_cores_allowed(cpus=16, threads=4) == pytest.approx(4.0)
    assert ContentionLimits().other_cores_allowed(cpus=16, threads=1) == pytest.approx(0.5)
    assert ContentionLimits(max_other_cores=1.0, policy="lenient").other_cores_allowed(cpus=2, threads=1) == 2.0


def test_strict_says_when_lenient_would_have_taken_the_window() -> None:
    reason = _judge(2, "strict", own_share=0.99, others=1.0)
    assert reason == "other processes used 1.00 cores (> 0.5, strict); --contention lenient allows 1.5"
    assert "lenient allows" not in _judge(16, "strict", own_share=0.99, others=10.0)
    assert _judge(16, "lenient", own_share=0.99, others=10.0) == "other processes used 10.00 cores (> 7, lenient)"


@pytest.mark.parametrize(("cpus", "policy"), [(1, "strict"), (2, "strict"), (4, "strict"), (5, "lenient"),
                                              (16, "lenient")])
def test_auto_is_strict_on_small_machines_and_lenient_above(cpus: int, policy: str) -> None:
    assert resolve_policy("auto", cpus) == policy
    assert resolve_policy("strict", cpus) == "strict" and resolve_policy("lenient", cpus) == "lenient"


def test_unknown_policies_are_refused_with_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match="--contention must be one of auto, strict, lenient, got 'loose'"):
        resolve_policy("loose", 2)
    with pytest.raises(ValueError, match="policy must be one of strict, lenient"):
        ContentionLimits(policy="auto")  # auto is resolved before a job is built


@pytest.mark.parametrize(("choice", "cpus", "policy"), [("auto", 2, "strict"), ("auto", 16, "lenient"),
                                                        ("lenient", 2, "lenient"), ("strict", 16, "strict")])
def test_the_latency_job_carries_the_resolved_policy_to_the_worker(
        choice: str, cpus: int, policy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_latency, "online_cpus", lambda: cpus)
    settings = LatencySettings(contention=choice)
    job = round_job(settings, round_plan(settings, "cpu"), "cpu", 1, 1.0)
    assert job.limits is not None and job.limits.policy == policy
    back = Job.from_wire(json.loads(job.to_line()))
    assert back.limits == job.limits


def test_a_bad_contention_setting_is_refused_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = LatencySettings(contention="loose")
    with pytest.raises(ValueError, match="--contention must be one of"):
        round_job(settings, round_plan(settings, "cpu"), "cpu", 1, 1.0)


def _round_fields(other_cores: float, cpu_share: float = 0.98, status: str = "ok") -> dict[str, Any]:
    """A worker's result for one round: two cycles of visits and the load its window saw."""
    return {"status": status, "message": "" if status == "ok" else "every window of this round was contended: x",
            "samples_s": {"module": [[1e-3, 1e-3], [1.1e-3]], "reference": [[2e-3], [2e-3, 2.1e-3]],
                          "copy": [[1e-4], [1e-4]]},
            "calls_per_sample": {"module": 1, "reference": 1, "copy": 1}, "cpu_share": cpu_share,
            "other_cores": other_cores, "steal_share": 0.01, "warmup_steady": True}


class FakeWorkers:
    """Round workers that hand back prepared results, one per configuration and round."""

    def __init__(self, loads: list[float]) -> None:
        self.loads = list(loads)

    def run(self, configs: list[Config], job: Job, on_result: Any) -> None:
        load = self.loads.pop(0)
        for config in configs:
            on_result(config, _round_fields(load))


def test_rounds_and_rows_state_the_load_and_the_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rounds_module, "online_cpus", lambda: 2)
    store = RecordStore(tmp_path / "records.jsonl")
    job = Job(threads=1, options=RoundOptions(sample_s=0.1), limits=ContentionLimits(policy="lenient"), retries=0)
    config = Config(stage="latency", attn="se", mode="forward")
    result = run_rounds([config], store, FakeWorkers([1.02, 0.97]), job, RoundPlan(rounds=2, max_rounds=2),
                        environment={}, progress=False)
    assert result.measured == 1
    records = store.read()
    rounds = [r for r in records if r["record"] == "latency_round"]
    assert [(r["contention_policy"], r["other_cores_allowed"]) for r in rounds] == [("lenient", 1.5)] * 2
    (row,) = [r for r in records if r["record"] == "latency"]
    assert row["status"] == "ok" and row["contention_policy"] == "lenient" and row["other_cores_allowed"] == 1.5
    assert row["other_cores_max"] == pytest.approx(1.02) and row["cpu_share_min"] == pytest.approx(0.98)


def test_a_gpu_round_carries_no_cpu_policy(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "records.jsonl")
    job = Job(threads=1, device="cuda", options=RoundOptions(sample_s=0.1), limits=ContentionLimits(), retries=0)
    config = Config(stage="latency", attn="se", mode="forward", device="cuda")
    run_rounds([config], store, FakeWorkers([0.0, 0.0]), job, RoundPlan(rounds=2, max_rounds=2),
               environment={}, progress=False)
    assert not any("contention_policy" in r for r in store.read())


def test_a_contended_row_states_the_load_that_kept_it_from_numbers() -> None:
    plan = RoundPlan(rounds=2, max_rounds=2, max_attempts=3)
    policy = {"contention_policy": "strict", "other_cores_allowed": 0.5}
    busy = {**_round_fields(1.3, status="contended"), **policy}
    progress = RoundProgress(0, clean=[{**_round_fields(0.1), **policy}], contended=[busy, {**busy, "other_cores": 1.1}])
    row = aggregate_rounds(progress, plan)
    assert row["status"] == "contended" and math.isnan(row["ratio"])
    assert row["other_cores_max"] == pytest.approx(1.3) and row["cpu_share_min"] == pytest.approx(0.98)
    assert row["contention_policy"] == "strict" and row["other_cores_allowed"] == 0.5


def _latency_folder(out: Path, statuses: list[str]) -> Path:
    table = out / "raw" / "latency" / "latency.csv"
    table.parent.mkdir(parents=True)
    with table.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["attn", "status", "ratio"])
        writer.writerows([f"a{i}", status, "0.1" if status == "ok" else ""] for i, status in enumerate(statuses))
    return table


def test_latency_rows_without_numbers_are_counted_by_status(tmp_path: Path) -> None:
    _latency_folder(tmp_path, ["ok", "contended", "build_error", "contended", "refused", "ok"])
    assert latency_row_problems(tmp_path) == (6, {"contended": 2, "build_error": 1})
    assert latency_row_problems(tmp_path / "nothing") == (0, {})


def test_the_last_line_says_partial_when_latency_rows_are_contended(tmp_path: Path) -> None:
    table = _latency_folder(tmp_path, ["ok"] * 28 + ["contended"] * 12)
    assert finish_line(61.4, 0, tmp_path) == (
        f"bench: finished in 61 s (stages ok; partial: 12 of 40 latency rows contended, see {table}); "
        f"results in {tmp_path}")
    assert "some stages failed, see bench.json; partial: 12 of 40" in finish_line(5, 1, tmp_path)


def test_the_last_line_says_all_stages_ok_only_when_nothing_is_missing(tmp_path: Path) -> None:
    assert finish_line(3, 0, tmp_path) == f"bench: finished in 3 s (all stages ok); results in {tmp_path}"
    _latency_folder(tmp_path, ["ok", "refused"])
    assert "(all stages ok)" in finish_line(3, 0, tmp_path)
    assert "(some stages failed, see bench.json)" in finish_line(3, 1, tmp_path)


def test_the_bench_ends_on_the_contended_rows_it_left(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import suite.bench.cli as bench_cli
    from suite.__main__ import main as suite_main

    def fake_bench(profile: Any, out: Path, **_: Any) -> int:
        _latency_folder(out, ["ok", "contended", "contended"])
        return 0

    monkeypatch.setattr(bench_cli, "run_bench", fake_bench)
    out = tmp_path / "bench"
    argv = ["bench", "--profile", "smoke", "--stages", "latency", "--out", str(out), "--skip-preflight", "--no-progress"]
    assert suite_main(argv) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("bench: finished in ") and "all stages ok" not in last
    assert "(stages ok; partial: 2 of 3 latency rows contended, see " in last
