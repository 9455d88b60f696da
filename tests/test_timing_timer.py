"""The adaptive timer's logic driven by fake clocks: convergence, budget, interleaving,
calls-per-sample calibration, and the CPU / CUDA settings (no GPU and no real timing needed)."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from suite.timing.timer import (
    CudaEventClock,
    TimerOptions,
    cpu_settings,
    cuda_settings,
    measure,
    measure_interleaved,
)


class FakeClock:
    """Returns per-call times drawn from a per-function generator; advances a fake `now`."""

    name = "fake"

    def __init__(self, per_call: dict[object, callable]) -> None:
        self.per_call = per_call
        self.t = 0.0
        self.log: list[tuple[object, int]] = []

    def now(self) -> float:
        return self.t

    def time(self, fn, calls: int) -> float:
        fn()
        total = sum(self.per_call[fn]() for _ in range(calls))
        self.t += total
        self.log.append((fn, calls))
        return total


def _noop() -> None:
    pass


def _other() -> None:
    pass


def test_low_noise_converges_quickly() -> None:
    rng = random.Random(0)
    clock = FakeClock({_noop: lambda: 0.01 * (1 + rng.gauss(0, 0.002))})
    s = measure(_noop, clock=clock, now=clock.now, options=TimerOptions(budget_s=100))
    assert s.converged
    assert 6 <= s.n <= 60  # 10 ms samples: 5 per 50 ms visit, converged within a few visits
    assert s.median == pytest.approx(0.01, rel=0.01)
    assert s.calls_per_sample == 1


def test_high_noise_stops_at_the_budget_unconverged() -> None:
    rng = random.Random(1)
    clock = FakeClock({_noop: lambda: 0.01 * (1 + abs(rng.gauss(0, 0.5)))})
    s = measure(_noop, clock=clock, now=clock.now, options=TimerOptions(budget_s=1.0))
    assert not s.converged
    assert clock.t < 1.1  # stopped right after the budget ran out
    assert s.ci_rel > 0.01


def test_min_samples_are_taken_even_past_the_budget() -> None:
    clock = FakeClock({_noop: lambda: 1.0})
    s = measure(_noop, clock=clock, now=clock.now, options=TimerOptions(budget_s=0.5, min_samples=7))
    assert s.n == 7


def test_max_samples_caps_sampling() -> None:
    rng = random.Random(2)
    clock = FakeClock({_noop: lambda: 0.01 * (1 + abs(rng.gauss(0, 0.5)))})
    s = measure(_noop, clock=clock, now=clock.now, options=TimerOptions(budget_s=1e9, max_samples=40))
    assert 40 <= s.n < 45 and not s.converged  # the visit in progress ends at the cap


def test_short_calls_are_batched_and_reported_per_call() -> None:
    clock = FakeClock({_noop: lambda: 2e-6})
    s = measure(_noop, clock=clock, now=clock.now, options=TimerOptions(budget_s=10))
    assert s.calls_per_sample == 500  # 1 ms target / 2 us
    assert s.median == pytest.approx(2e-6)
    assert all(calls == 500 for _, calls in clock.log[-s.n:])


def test_fixed_calls_per_sample_is_respected() -> None:
    clock = FakeClock({_noop: lambda: 2e-6})
    s = measure(_noop, clock=clock, now=clock.now, options=TimerOptions(budget_s=10, calls_per_sample=3))
    assert s.calls_per_sample == 3


def test_interleaving_alternates_and_waits_for_both() -> None:
    rng = random.Random(3)
    noisy = itertools.count()

    def noisy_time() -> float:  # converges only after ~200 samples
        return 0.002 * (1 + (0.3 if next(noisy) < 150 and rng.random() < 0.5 else 0.0) + rng.gauss(0, 0.001))

    clock = FakeClock({_noop: lambda: 0.001, _other: noisy_time})
    out = measure_interleaved({"a": _noop, "b": _other}, clock=clock, now=clock.now, options=TimerOptions(budget_s=100))
    assert out["a"].n > 6  # a alone would have converged within its first visits
    # visits alternate: runs of a's calls and runs of b's calls, a run for each per round
    runs = [fn for fn, _ in itertools.groupby(fn for fn, _ in clock.log)]
    assert all(x is not y for x, y in itertools.pairwise(runs))
    assert abs(runs.count(_noop) - runs.count(_other)) <= 1 and runs.count(_noop) > 6
    # a visit samples for about visit_s (50 ms): 1 ms calls come in runs of ~50 plus a re-warm
    assert max(len(list(g)) for fn, g in itertools.groupby(fn for fn, _ in clock.log) if fn is _noop) >= 50
    assert out["a"].converged and out["b"].converged


def test_exception_from_the_callable_propagates() -> None:
    def boom() -> None:
        raise RuntimeError("kaput")

    with pytest.raises(RuntimeError, match="kaput"):
        measure(boom, options=TimerOptions(budget_s=0.1))


def test_real_cpu_clock_runs_and_counts_calls() -> None:
    calls = itertools.count()
    s = measure(lambda: next(calls), options=TimerOptions(budget_s=0.2, warmup_s=0.0))
    assert s.n >= 6 and s.calls_per_sample > 1  # a Python no-op is far under 0.2 ms


def test_options_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="rel_tol"):
        TimerOptions(rel_tol=0)
    with pytest.raises(ValueError, match="budget_s"):
        TimerOptions(budget_s=-1)
    with pytest.raises(ValueError, match="min_samples"):
        TimerOptions(min_samples=10, max_samples=5)


class FakeEvent:
    """Stands in for torch.cuda.Event: elapsed_time returns ms from a fake GPU timeline."""

    timeline = 0.0

    def __init__(self) -> None:
        self.stamp = None
        self.synced = False

    def record(self) -> None:
        self.stamp = FakeEvent.timeline

    def synchronize(self) -> None:
        self.synced = True

    def elapsed_time(self, end: FakeEvent) -> float:
        assert end.synced, "must synchronize the end event before reading"
        return (end.stamp - self.stamp) * 1e3


def test_cuda_event_clock_converts_ms_and_synchronizes() -> None:
    clock = CudaEventClock(event_factory=FakeEvent)

    def kernel() -> None:
        FakeEvent.timeline += 0.004  # 4 ms of "GPU time" per call

    assert clock.time(kernel, 5) == pytest.approx(0.020)
    assert clock._end.synced


def test_cpu_settings_set_record_and_restore_threads() -> None:
    before = torch.get_num_threads()
    with cpu_settings(1) as record:
        assert torch.get_num_threads() == 1
        assert record["threads"] == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        with cpu_settings(0):
            pass


@pytest.mark.parametrize(("autotune", "tf32"), [(True, False), (False, True)])
def test_cuda_settings_set_record_and_restore(autotune: bool, tf32: bool) -> None:
    cudnn = torch.backends.cudnn
    before = (cudnn.benchmark, torch.backends.cuda.matmul.fp32_precision, cudnn.conv.fp32_precision)
    with cuda_settings(cudnn_benchmark=autotune, tf32=tf32) as record:
        assert record == {"cudnn_benchmark": autotune, "tf32_matmul": tf32, "tf32_conv": tf32}
        assert cudnn.benchmark is autotune
        assert torch.backends.cuda.matmul.fp32_precision == ("tf32" if tf32 else "ieee")
    after = (cudnn.benchmark, torch.backends.cuda.matmul.fp32_precision, cudnn.conv.fp32_precision)
    assert after == before
