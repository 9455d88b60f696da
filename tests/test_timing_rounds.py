"""The pieces of round-based latency without a real clock: contention detection driven by fake
clocks, the across-round interval against scipy, the round sampler's warm-up and alternation,
and how round records become rows (status, resume generations)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from suite.timing.contention import (
    ContentionLimits,
    CpuProbe,
    CpuSnapshot,
    CpuUsage,
    assess,
    read_proc_stat,
)
from suite.timing.grid import Config
from suite.timing.resume import RoundProgress, progress_from_records
from suite.timing.round_stats import RoundPlan, aggregate_rounds
from suite.timing.stats import across_rounds
from suite.timing.timer import RoundOptions, sample_round


class FakeClocks:
    """Wall, own-CPU and machine clocks that advance only when told to."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.own = 0.0
        self.busy = 0.0
        self.steal = 0.0

    def run(self, seconds: float, *, own_share: float = 1.0, others: float = 0.0, steal: float = 0.0,
            threads: int = 1, cpus: int = 2) -> None:
        """``seconds`` of wall time in which this process got ``own_share`` of ``threads`` cores,
        other processes used ``others`` cores and the hypervisor stole ``steal`` of all CPUs."""
        self.wall += seconds
        self.own += seconds * threads * own_share
        self.busy += seconds * (threads * own_share + others)
        self.steal += seconds * cpus * steal

    def probe(self) -> CpuProbe:
        return CpuProbe(wall=lambda: self.wall, own_cpu=lambda: self.own, machine=lambda: (self.busy, self.steal))


def _window(clocks: FakeClocks, threads: int = 1, **run: float) -> str:
    probe = clocks.probe()
    start = probe.snapshot()
    clocks.run(0.2, threads=threads, **run)
    usage = CpuUsage.between(start, probe.snapshot(), threads=threads, cpus=2)
    return assess(usage, ContentionLimits())


def test_a_window_that_got_its_cpu_on_a_quiet_machine_is_clean() -> None:
    clocks = FakeClocks()
    assert _window(clocks, own_share=0.99, others=0.05, steal=0.01) == ""
    assert _window(clocks, threads=2, own_share=0.95) == ""


def test_a_starved_window_is_contended() -> None:
    # one thread sharing its core with a busy process gets about half of it
    reason = _window(FakeClocks(), own_share=0.5, others=1.5)
    assert "0.50 of the CPU time asked for" in reason and "other processes used 1.50 cores" in reason
    # two threads on two cores with a burner beside them: each gets 2/3
    assert "0.67 of the CPU time" in _window(FakeClocks(), threads=2, own_share=2 / 3, others=0.67)


def test_another_process_on_the_free_core_is_contended_even_at_full_cpu_share() -> None:
    reason = _window(FakeClocks(), own_share=1.0, others=0.9)
    assert reason.startswith("other processes used 0.90 cores") and "CPU time" not in reason


def test_hypervisor_steal_is_contended() -> None:
    assert "hypervisor steal 10.0%" in _window(FakeClocks(), steal=0.10)


def test_without_proc_stat_only_the_cpu_share_is_checked() -> None:
    clocks = FakeClocks()
    probe = CpuProbe(wall=lambda: clocks.wall, own_cpu=lambda: clocks.own, machine=lambda: (math.nan, math.nan))
    start = probe.snapshot()
    clocks.run(0.2, own_share=1.0)
    usage = CpuUsage.between(start, probe.snapshot(), threads=1, cpus=2)
    assert math.isnan(usage.other_cores) and math.isnan(usage.steal_share)
    assert assess(usage, ContentionLimits()) == ""
    zero = CpuUsage.between(start, start, threads=1, cpus=2)
    assert assess(zero, ContentionLimits()) == "no wall time elapsed"


def test_limits_refuse_negative_values() -> None:
    with pytest.raises(ValueError, match="min_cpu_share"):
        ContentionLimits(min_cpu_share=-1)
    with pytest.raises(ValueError, match="max_other_cores"):
        ContentionLimits(max_other_cores=-0.1)


def test_proc_stat_busy_and_steal(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    #                user nice system idle iowait irq softirq steal
    stat.write_text("cpu  1000 100 400 9000 50 10 40 200 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    busy, steal = read_proc_stat(str(stat))
    import os

    hz = os.sysconf("SC_CLK_TCK")
    assert busy == pytest.approx((1000 + 100 + 400 + 10 + 40) / hz) and steal == pytest.approx(200 / hz)
    assert all(math.isnan(v) for v in read_proc_stat(str(tmp_path / "missing")))


def test_across_rounds_is_student_t_on_logs() -> None:
    stats = pytest.importorskip("scipy.stats")
    import numpy as np

    values = [1.00, 1.10, 0.95, 1.04, 1.20, 0.98]
    interval = across_rounds(values)
    logs = np.log(values)
    low, high = stats.t.interval(0.95, len(logs) - 1, loc=logs.mean(), scale=stats.sem(logs))
    assert interval.center == pytest.approx(math.exp(logs.mean()), rel=1e-12)
    assert interval.low == pytest.approx(math.exp(low), rel=1e-9)
    assert interval.high == pytest.approx(math.exp(high), rel=1e-9)
    assert interval.half_width == pytest.approx(math.exp((high - low) / 2) - 1, rel=1e-9)
    assert interval.n == 6


def test_across_rounds_gives_no_interval_from_one_round_or_identical_rounds() -> None:
    one = across_rounds([2.0])
    assert one.center == 2.0 and math.isnan(one.low) and math.isnan(one.half_width)
    same = across_rounds([2.0, 2.0, 2.0])
    assert same.center == pytest.approx(2.0) and math.isnan(same.high)
    assert across_rounds([math.nan, -1.0, 0.0]).n == 0


class StepClock:
    """``time(fn, calls)`` returns a fixed per-call time per callable (the callables name themselves)."""

    name = "fake"

    def __init__(self, per_call: dict[str, float]) -> None:
        self.per_call = per_call
        self.calls: list[str] = []

    def time(self, fn, calls: int) -> float:
        name = fn()
        self.calls.extend([name] * calls)
        return self.per_call[name] * calls


def test_sample_round_warms_until_memory_is_steady_then_alternates() -> None:
    rss_values = iter([100, 200, 300, 400, 500] + [500] * 10_000)  # grows for the first calls
    clock = StepClock({"a": 1e-3, "b": 2e-3})
    options = RoundOptions(sample_s=0.05, warmup_s=0.0, warmup_calls=2, steady_calls=3, visit_s=0.008,
                           rewarm_s=0.002, min_samples=3)
    taken = sample_round({"a": lambda: "a", "b": lambda: "b"}, clock=clock, options=options,
                         rss=lambda: next(rss_values))
    assert taken.warmup_steady
    assert taken.warmup_calls["a"] == 7  # 4 calls grow the RSS, then 3 steady ones
    assert taken.warmup_calls["b"] == 3
    assert taken.calls_per_sample == {"a": 1, "b": 1}  # both at or above short_call_s
    flat = {name: [v for visit in visits for v in visit] for name, visits in taken.samples.items()}
    assert set(flat["a"]) == {1e-3} and set(flat["b"]) == {2e-3}
    assert len(taken.samples["a"]) == len(taken.samples["b"]) >= 3  # one list per visit, in cycles
    assert all(len(visit) == 8 for visit in taken.samples["a"])  # visit_s of 1 ms samples
    sampled = sum(flat["a"]) + sum(flat["b"])
    assert 0.05 <= sampled < 0.05 + 0.02
    # each visit starts with rewarm_s of untimed calls: a, a, then 8 timed a's, then b's
    after_warmup = clock.calls[7 + 3:]
    assert after_warmup[:10] == ["a"] * 10 and after_warmup[10] == "b"
    switches = sum(1 for x, y in zip(after_warmup, after_warmup[1:], strict=False) if x != y)
    assert switches >= 4


def test_sample_round_blocks_short_calls_and_caps_warm_up() -> None:
    clock = StepClock({"short": 1e-5})
    options = RoundOptions(sample_s=0.01, warmup_s=0.0, warmup_max_s=0.001, target_sample_s=1e-3)
    growing = iter(range(10_000_000))
    taken = sample_round({"short": lambda: "short"}, clock=clock, options=options, rss=lambda: next(growing))
    assert not taken.warmup_steady  # memory kept growing: the warm-up gave up at warmup_max_s
    assert taken.warmup_calls["short"] == 100
    assert taken.calls_per_sample["short"] == 100  # 1 ms blocks of 10 us calls
    assert sum(map(len, taken.samples["short"])) >= options.min_samples


def test_a_calibrated_callable_skips_its_warm_up() -> None:
    clock = StepClock({"a": 1e-3, "ref": 5e-3})
    options = RoundOptions(sample_s=0.02, warmup_s=0.0, visit_s=0.004, rewarm_s=0.0)
    taken = sample_round({"a": lambda: "a", "ref": lambda: "ref"}, clock=clock, options=options,
                         rss=lambda: 0, calibrated={"ref": (1, 5e-3)})
    assert taken.warmup_calls == {"a": 2, "ref": 0} and taken.calls_per_sample["ref"] == 1


@pytest.mark.parametrize("calibrated", [False, True])
def test_a_long_callable_is_never_called_untimed_while_sampling(calibrated: bool) -> None:
    # a 3x3 conv of 0.2 s beside a 1 ms gate: the conv's visits are one timed call each, from the
    # first visit on (no re-warm call that doubles a round's time); the gate is re-warmed
    clock = StepClock({"gate": 1e-3, "conv": 0.2})
    options = RoundOptions(sample_s=0.5, warmup_s=0.0, warmup_calls=2, steady_calls=1, visit_s=0.008,
                           rewarm_s=0.002)
    taken = sample_round({"gate": lambda: "gate", "conv": lambda: "conv"}, clock=clock, options=options,
                         rss=lambda: 0, calibrated={"conv": (1, 0.2)} if calibrated else None)
    sampled_conv = sum(map(len, taken.samples["conv"]))
    assert clock.calls.count("conv") == taken.warmup_calls["conv"] + sampled_conv
    assert all(len(visit) == 1 for visit in taken.samples["conv"])
    assert taken.block_s["conv"] == pytest.approx(0.2)
    assert clock.calls.count("gate") > taken.warmup_calls["gate"] + sum(map(len, taken.samples["gate"]))


def _round(module: float, reference: float, copy: float | None = None, status: str = "ok", **extra) -> dict:
    """A round record with two cycles of visits."""
    samples = {"module": [[module] * 2, [module]], "reference": [[reference], [reference] * 2]}
    if copy is not None:
        samples["copy"] = [[copy] * 2, [copy]]
    return {"status": status, "samples_s": samples, "calls_per_sample": {"module": 1}, "cpu_share": 0.99,
            "other_cores": 0.01, "warmup_steady": True, "message": extra.pop("message", ""), **extra}


def test_rows_come_from_the_rounds() -> None:
    plan = RoundPlan(rounds=3, max_rounds=3, rel_tol=0.05)
    progress = RoundProgress(0, clean=[_round(1e-3, 2e-3, 1e-4), _round(1.2e-3, 2.2e-3, 1.1e-4), _round(0.9e-3, 2e-3, 1e-4)])
    row = aggregate_rounds(progress, plan)
    ratios = [0.5, 1.2 / 2.2, 0.45]
    expected = across_rounds(ratios)
    assert row["status"] == "ok" and row["rounds"] == 3 and row["rounds_contended"] == 0
    assert row["ratio"] == pytest.approx(expected.center)
    assert row["ratio_ci_low"] == pytest.approx(expected.low) and row["ratio_ci_high"] == pytest.approx(expected.high)
    assert row["passes"] == pytest.approx(across_rounds([10.0, 1.2 / 0.11, 9.0]).center)
    assert row["median_ms"] == pytest.approx(across_rounds([1.0, 1.2, 0.9]).center)
    assert row["n"] == 9 and row["min_ms"] == pytest.approx(0.9)
    assert row["converged"] is (expected.half_width <= 0.05)


def test_the_ratio_pairs_adjacent_visits() -> None:
    # the machine slows down 2x between the first and the second cycle: both callables feel it, and
    # the paired ratio stays 0.5 where a ratio of whole-round medians would not
    record = {"samples_s": {"module": [[1.0, 1.0, 1.0], [2.0]], "reference": [[2.0], [4.0, 4.0, 4.0]]}}
    from suite.timing.round_stats import per_round

    assert per_round([record], "ratio") == [pytest.approx(0.5)]
    assert per_round([record], "module") == [pytest.approx(1.0)] and per_round([record], "reference") == [4.0]


def test_too_few_clean_rounds_is_contended_with_no_numbers_and_a_failure_keeps_its_status() -> None:
    plan = RoundPlan(rounds=3, max_rounds=3, max_attempts=4)
    busy = _round(1e-3, 2e-3, status="contended", message="every window of this round was contended: x")
    progress = RoundProgress(0, clean=[_round(1e-3, 2e-3)], contended=[busy, busy, busy])
    assert not progress.needs_round(plan)  # 4 tries spent
    row = aggregate_rounds(progress, plan)
    assert row["status"] == "contended" and math.isnan(row["median_ms"]) and math.isnan(row["ratio"])
    assert row["message"].startswith("1 of 3 rounds clean after 4 tries")
    failed = RoundProgress(0, clean=[_round(1e-3, 2e-3)], failed={"status": "oom", "message": "out of memory"})
    assert not failed.needs_round(plan)
    row = aggregate_rounds(failed, plan)
    assert (row["status"], row["message"]) == ("oom", "out of memory") and math.isnan(row["ratio"])


def test_extra_rounds_go_only_where_the_interval_is_still_wide() -> None:
    plan = RoundPlan(rounds=3, max_rounds=5, rel_tol=0.05)
    tight = RoundProgress(0, clean=[_round(1e-3, 2e-3), _round(1.001e-3, 2e-3), _round(0.999e-3, 2e-3)])
    wide = RoundProgress(0, clean=[_round(1e-3, 2e-3), _round(2e-3, 2e-3), _round(0.5e-3, 2e-3)])
    assert not tight.needs_round(plan) and wide.needs_round(plan)
    wide.clean += [_round(1e-3, 2e-3), _round(1e-3, 2e-3)]
    assert not wide.needs_round(plan)  # max_rounds reached
    with pytest.raises(ValueError, match="rounds must be >= 2"):
        RoundPlan(rounds=1, max_rounds=1)


def test_resume_continues_a_generation_and_force_starts_a_new_one() -> None:
    a = Config(stage="latency", attn="se", mode="forward")
    b = Config(stage="latency", attn="eca", mode="forward")
    records = [
        {"record": "latency_round", "key": f"{a.key()}|g0|r0", "config_key": a.key(), "generation": 0, **_round(1e-3, 2e-3)},
        {"record": "latency_round", "key": f"{a.key()}|g0|r1", "config_key": a.key(), "generation": 0, **_round(1e-3, 2e-3)},
        {"record": "latency", "key": a.key(), "generation": 0, "status": "ok"},
        {"record": "latency_round", "key": f"{b.key()}|g0|r0", "config_key": b.key(), "generation": 0, **_round(1e-3, 2e-3)},
    ]
    state = progress_from_records(records, [a, b], force=False, retry_failed=False)
    assert state[a.key()] is None  # done
    assert state[b.key()].generation == 0 and len(state[b.key()].clean) == 1  # interrupted: resumes
    forced = progress_from_records(records, [a, b], force=True, retry_failed=False)
    assert forced[a.key()].generation == 1 and forced[a.key()].clean == []
    assert forced[b.key()].generation == 1
    records[2]["status"] = "contended"
    retried = progress_from_records(records, [a, b], force=False, retry_failed=True)
    assert retried[a.key()].generation == 1 and retried[b.key()].generation == 0
    records[2]["status"] = "refused"  # a deliberate outcome: --retry-failed leaves it
    assert progress_from_records(records, [a, b], force=False, retry_failed=True)[a.key()] is None


def test_snapshot_fields() -> None:
    snap = CpuSnapshot(wall_s=1.0, own_cpu_s=0.5, busy_s=2.0, steal_s=0.0)
    usage = CpuUsage.between(snap, CpuSnapshot(2.0, 1.5, 3.5, 0.0), threads=1, cpus=2)
    assert usage.as_dict() == {"cpu_share": 1.0, "other_cores": 0.5, "steal_share": 0.0}


def test_worker_environment_sets_threads_and_the_allocator() -> None:
    from suite.timing.pool import worker_environment
    from suite.timing.worker import ALLOCATOR_TUNABLES

    env = worker_environment(1, "steady", base={"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1", "PATH": "/bin"})
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1:" + ALLOCATOR_TUNABLES
    assert env["PATH"] == "/bin" and env["PYTHONPATH"]
    assert "GLIBC_TUNABLES" not in worker_environment(2, "inherited", base={})
    with pytest.raises(ValueError, match="allocator must be one of steady, inherited"):
        worker_environment(1, "jemalloc", base={})


def test_the_cpu_profile_measures_every_type_in_three_backbones() -> None:
    from suite.bench.profile import load_profile

    latency = load_profile("cpu").stages["latency"]
    model = [s for s in latency if s.get("level") == "model"]
    eager = [s for s in model if s.get("compile", "eager") == "eager"]
    assert len(eager) == 1 and eager[0]["attn"] == "*,none"  # every type, and the A/A control
    runtimes = {s["compile"] for s in model if "compile" in s}
    assert runtimes == {"compile", "onnxruntime"}  # inductor and ONNX Runtime beside eager
    for table in model:
        assert table["arch"] == "resnet18,resnet50,mobilenet_v2"
        assert (table["batch"], table["size"], table["mode"]) == ("1", "224", "forward")


def test_each_round_shuffles_the_designs_of_a_reference_and_keeps_them_together() -> None:
    from suite.timing.grid import Config, reference_key
    from suite.timing.rounds import visit_order

    configs = [Config(stage="latency", attn=a, level="model", arch=arch, batch=1, channels=3, size=64, mode="forward")
               for arch in ("resnet18", "mobilenet_v2") for a in ("se", "eca", "ca", "cbam", "gsop")]
    orders = [visit_order(configs, r) for r in range(6)]
    for order in orders:
        assert sorted(c.key() for c in order) == sorted(c.key() for c in configs)
        keys = [reference_key(c) for c in order]
        assert keys[:5] == [keys[0]] * 5 and keys[5:] == [keys[5]] * 5  # one block per reference
    firsts = {order[0].attn for order in orders}
    assert len(firsts) > 1  # the design visited first after the reference was built varies
    assert [c.key() for c in visit_order(configs, 3)] == [c.key() for c in orders[3]]  # seeded by the round
