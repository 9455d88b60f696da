"""Adaptive timers for CPU (``perf_counter``) and CUDA (CUDA events), with explicit settings.

How a measurement goes (:func:`measure_interleaved`; :func:`measure` is the one-callable case):

1. **Settings** are set explicitly and recorded (:func:`cpu_settings`, :func:`cuda_settings`):
   the intra-op thread count on CPU; ``cudnn.benchmark`` and TF32 for matmuls and convolutions
   on CUDA (PyTorch's defaults unless asked otherwise: :data:`TF32_MODES`). Both are context
   managers that restore the previous state, so nothing leaks into the rest of the process
   (timm's benchmark script turns TF32 on for the whole process).
2. **Warm-up**: each callable runs until ``warmup_s`` has passed (and at least
   ``warmup_calls`` times): caches, allocator pools and cuDNN's algorithm search settle.
3. **Calibration**: a call shorter than ``short_call_s`` (0.2 ms) is timed in blocks of
   ``calls_per_sample`` back-to-back calls lasting about ``target_sample_s`` (1 ms), so the
   clock's own overhead (about 0.1 us for ``perf_counter``, a few us for CUDA events) stays
   below 1%. Each sample is the block time divided by the calls.
4. **Sampling**: the callables are visited in turn (A, B, A, B, ...) so slow drift of the
   machine (clock boost, another process) affects all of them alike and cancels in ratios.
   A visit to a callable whose sample is shorter than a quarter of ``visit_s`` (50 ms) first
   makes one untimed call -- the other callable has just evicted its data from the caches, and
   a memory-bound gate on a 25 MB map would otherwise be timed cold, slower and far noisier --
   then takes back-to-back samples for about ``visit_s``. A longer callable is sampled once
   per visit, where the cold start is a small part of the call.
   Sampling stops when every callable's median has a 95% CI within ``+-rel_tol`` (1%) -- see
   :mod:`suite.timing.stats` -- or when the ``budget_s`` runs out (``converged=False`` then),
   never before ``min_samples`` and never after ``max_samples``.
   Python's garbage collector is off while sampling (as in ``timeit``).

The clocks are small objects with ``time(fn, calls) -> seconds`` so that tests can drive the
loop with synthetic samples; the budget uses an injectable ``now`` for the same reason.

**On CUDA** (:class:`CudaEventClock`) a sample is the GPU time between two CUDA events recorded
on the *configuration's* device's current stream (``torch.cuda.current_stream(device)``, not the
process's current device) around the block of calls; the end event is synchronized before it is
read, so the GPU is idle when the next block starts. The clock also reads ``perf_counter``
around the launch loop, before synchronizing: the host's enqueue time of the block
(``last_host_s``). When enqueueing takes as long as the GPU's time (:mod:`suite.timing.cuda`'s
``HOST_BOUND_SHARE``), the GPU waited for Python's dispatch and the sample is host time. With an
L2 flush (``flush``), every call of a block gets its own pair of events and a write of a buffer
twice the L2's size before it, outside its events (the pattern of Triton's ``do_bench``), so
each call reads its inputs from device memory.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from .stats import TimingSummary, ci_half_width, median_ci, percentile, summarize

__all__ = [
    "Clock",
    "CpuClock",
    "CudaEventClock",
    "TF32_MODES",
    "TimerOptions",
    "clock_for",
    "cpu_settings",
    "cuda_settings",
    "default_threads",
    "measure",
    "tf32_mode",
    "measure_interleaved",
    "RoundOptions",
    "RoundSamples",
    "sample_round",
]


class Clock(Protocol):
    """Times ``calls`` back-to-back calls of ``fn`` and returns the total in seconds."""

    name: str

    def time(self, fn: Callable[[], Any], calls: int) -> float: ...


class CpuClock:
    """Wall-clock time with ``time.perf_counter``; CPU ops in PyTorch are synchronous."""

    name = "perf_counter"

    def __init__(self, counter: Callable[[], float] = time.perf_counter) -> None:
        self._counter = counter

    def time(self, fn: Callable[[], Any], calls: int) -> float:
        counter = self._counter
        start = counter()
        for _ in range(calls):
            fn()
        return counter() - start


LAUNCH_COVER_CYCLES = 100_000
"""GPU clock cycles of the spin kernel (``torch.cuda._sleep``) enqueued before a block's start
event: 50-70 us at 1.4-2 GHz, longer than the host's launch latency of the block's first call."""


class CudaEventClock:
    """GPU time between two CUDA events recorded on ``device``'s current stream around the calls
    (``device=None``: the current device's current stream).

    The end event is synchronized before reading, so each sample is complete. ``last_host_s``:
    the host's time to enqueue the latest block (``perf_counter`` around the launch loop, before
    the synchronize). ``flush``: a callable run before each call, outside its events (an L2
    flush, :func:`suite.timing.cuda.make_l2_flush`); each call then gets its own events and the
    block's time is their sum. ``event_factory`` exists for tests; by default it makes
    ``torch.cuda.Event(enable_timing=True)``.

    The start event on an idle stream is timestamped as soon as the host enqueues it, and the
    GPU then waits for the first call's launch: a sample would include the host's launch
    latency (10-50 us), the whole of a one-call sample of a small module. Where torch has
    ``torch.cuda._sleep`` and CUDA is available, a spin kernel of :data:`LAUNCH_COVER_CYCLES`
    is enqueued before the start event (outside the host time), so the GPU is still busy when
    the start event is recorded, and the block's first launches are queued by the time it is
    timestamped. Without it, the latency stays in the sample, spread over the block's calls.
    With ``flush``, the flush before each call keeps the GPU busy in the same way.
    """

    name = "cuda_event"

    def __init__(self, device: str | torch.device | None = None, event_factory: Callable[[], Any] | None = None,
                 flush: Callable[[], Any] | None = None) -> None:
        self.device = None if device is None else torch.device(device)
        self._event_factory = event_factory or (lambda: torch.cuda.Event(enable_timing=True))
        self._flush = flush
        self._start = self._event_factory()
        self._end = self._event_factory()
        self._pairs: list[tuple[Any, Any]] = []
        self._sleep = getattr(torch.cuda, "_sleep", None) if torch.cuda.is_available() else None
        self.last_host_s = 0.0

    def time(self, fn: Callable[[], Any], calls: int) -> float:
        stream = None if self.device is None else torch.cuda.current_stream(self.device)
        if self._flush is not None:
            return self._time_flushed(fn, calls, stream)
        self._keep_busy(stream)
        host_start = time.perf_counter()
        _record(self._start, stream)
        for _ in range(calls):
            fn()
        _record(self._end, stream)
        self.last_host_s = time.perf_counter() - host_start
        self._end.synchronize()
        return float(self._start.elapsed_time(self._end)) / 1e3  # elapsed_time is in ms

    def _keep_busy(self, stream: Any) -> None:
        """Enqueue the spin kernel on ``stream`` (``None``: the current one), where there is one."""
        if self._sleep is None:
            return
        if stream is None:
            self._sleep(LAUNCH_COVER_CYCLES)
            return
        with torch.cuda.stream(stream):
            self._sleep(LAUNCH_COVER_CYCLES)

    def _time_flushed(self, fn: Callable[[], Any], calls: int, stream: Any) -> float:
        """``calls`` calls, each after a flush and between its own two events; one synchronize."""
        while len(self._pairs) < calls:
            self._pairs.append((self._event_factory(), self._event_factory()))
        pairs = self._pairs[:calls]
        assert self._flush is not None
        host = 0.0
        for start, end in pairs:
            self._flush()
            _record(start, stream)
            host_start = time.perf_counter()
            fn()
            host += time.perf_counter() - host_start
            _record(end, stream)
        self.last_host_s = host
        pairs[-1][1].synchronize()
        return sum(float(start.elapsed_time(end)) for start, end in pairs) / 1e3


def _record(event: Any, stream: Any) -> None:
    """Record ``event`` on ``stream`` (``None``: the current stream)."""
    if stream is None:
        event.record()
    else:
        event.record(stream)


def clock_for(device: str | torch.device, *, flush_l2: bool = False) -> Clock:
    """The clock for ``device``: CUDA events on that device's stream on ``cuda`` (with an L2 flush
    before every call when ``flush_l2``), ``perf_counter`` otherwise."""
    device = torch.device(device)
    if device.type != "cuda":
        return CpuClock()
    flush = None
    if flush_l2:
        from .cuda import make_l2_flush

        flush = make_l2_flush(device)
    return CudaEventClock(device, flush=flush)


def default_threads() -> int:
    """CPU cores this process may run on (its affinity mask), the default thread count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def cpu_settings(threads: int) -> Iterator[dict[str, Any]]:
    """Set torch's intra-op thread count to ``threads``; yield what was set; restore after."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield {"threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads()}
    finally:
        torch.set_num_threads(previous)


TF32_MODES: dict[str, tuple[bool, bool]] = {
    "default": (False, True),
    "on": (True, True),
    "off": (False, False),
}
"""``--tf32`` -> (TF32 for fp32 matmuls, TF32 for cuDNN convolutions). ``default`` is PyTorch's
own: IEEE fp32 matmuls (``torch.get_float32_matmul_precision() == "highest"``) and TF32
convolutions, what a user's code gets without setting anything."""


def _precision_objects() -> list[Any]:
    """The objects with an ``fp32_precision`` attribute (torch >= 2.9) that TF32 for CUDA
    matmuls and cuDNN touches: cuBLAS matmuls, cuDNN convolutions and RNNs, cuDNN as a whole."""
    cudnn = torch.backends.cudnn
    candidates = (torch.backends.cuda.matmul, getattr(cudnn, "conv", None), getattr(cudnn, "rnn", None), cudnn)
    found = []
    for obj in candidates:
        try:
            if obj is not None and isinstance(obj.fp32_precision, str):
                found.append(obj)
        except (AttributeError, RuntimeError):
            continue
    return found


def _legacy_tf32() -> tuple[bool | None, bool | None]:
    """``(torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)``; ``None`` for
    a getter that raises (torch >= 2.9 refuses to answer after the two APIs were mixed)."""
    values: list[bool | None] = []
    for read in (lambda: torch.backends.cuda.matmul.allow_tf32, lambda: torch.backends.cudnn.allow_tf32):
        try:
            values.append(bool(read()))
        except RuntimeError:
            values.append(None)
    return values[0], values[1]


def _precision_is_tf32(*objects: Any) -> bool:
    """Whether the first of ``objects`` whose ``fp32_precision`` is set (not ``none``, which
    defers to the next) says ``tf32``."""
    for obj in objects:
        precision = getattr(obj, "fp32_precision", "none") if obj is not None else "none"
        if precision != "none":
            return precision == "tf32"
    return False


def tf32_mode() -> str:
    """The :data:`TF32_MODES` name of the TF32 settings in force (the legacy getters, or where one
    raises the ``fp32_precision`` it disagreed with): what :func:`cuda_settings` sets again in
    another process. TF32 matmuls with IEEE convolutions, which no mode sets, count as ``on``."""
    cudnn = torch.backends.cudnn
    matmul, conv = _legacy_tf32()
    if matmul is None:
        matmul = _precision_is_tf32(torch.backends.cuda.matmul)
    if conv is None:
        conv = _precision_is_tf32(getattr(cudnn, "conv", None), cudnn)
    names = {pair: name for name, pair in TF32_MODES.items()}
    return names.get((matmul, conv), "on")


def _set_legacy_tf32(matmul: bool | None, conv: bool | None) -> None:
    if matmul is not None:
        torch.backends.cuda.matmul.allow_tf32 = matmul
    if conv is not None:
        torch.backends.cudnn.allow_tf32 = conv


@contextlib.contextmanager
def cuda_settings(*, cudnn_benchmark: bool, tf32: str | bool) -> Iterator[dict[str, Any]]:
    """Set cuDNN autotuning and TF32 (``tf32``: a :data:`TF32_MODES` name, or a bool for ``on`` /
    ``off``) explicitly; yield the settings read back, for the record; restore the previous state.

    TF32 is set through the legacy setters (``torch.backends.cuda.matmul.allow_tf32``,
    ``torch.backends.cudnn.allow_tf32``): they exist in every torch >= 1.7, and from 2.9 on they
    also set the ``fp32_precision`` of matmuls, convolutions and RNNs, so both APIs agree and both
    getters answer (inductor on torch 2.9-2.11 reads the legacy ones; setting only the new API
    makes them raise). On exit the legacy values are set back, then every ``fp32_precision`` as
    it was (a legacy matmul getter that raised before still raises: its flag is set back to the
    opposite of ``fp32_precision``, the disagreement that made it raise). Setting these flags does
    not need a GPU.
    """
    mode = ("on" if tf32 else "off") if isinstance(tf32, bool) else tf32
    if mode not in TF32_MODES:
        raise ValueError(f"tf32 must be one of {', '.join(TF32_MODES)}; got {tf32!r}")
    matmul_tf32, conv_tf32 = TF32_MODES[mode]
    cudnn = torch.backends.cudnn
    saved_benchmark = cudnn.benchmark
    saved_legacy = _legacy_tf32()
    saved_precision = [(obj, obj.fp32_precision) for obj in _precision_objects()]
    if saved_legacy[0] is None:  # the getter raised: the legacy flag disagreed with fp32_precision
        saved_legacy = (torch.backends.cuda.matmul.fp32_precision != "tf32", saved_legacy[1])
    _set_legacy_tf32(matmul_tf32, conv_tf32)
    cudnn.benchmark = cudnn_benchmark
    try:
        matmul_now, conv_now = _legacy_tf32()
        yield {
            "cudnn_benchmark": bool(cudnn.benchmark),
            "tf32_matmul": bool(matmul_now),
            "tf32_conv": bool(conv_now),
        }
    finally:
        cudnn.benchmark = saved_benchmark
        _set_legacy_tf32(*saved_legacy)
        for obj, precision in saved_precision:
            obj.fp32_precision = precision


@dataclass(frozen=True)
class TimerOptions:
    """Knobs of the adaptive timer (defaults are the harness's)."""

    rel_tol: float = 0.01
    confidence: float = 0.95
    budget_s: float = 2.0
    warmup_s: float = 0.1
    warmup_calls: int = 2
    min_samples: int = 6  # the fewest with a 95% CI of the median (ranks 1 and 6)
    max_samples: int = 5000
    short_call_s: float = 2e-4
    target_sample_s: float = 1e-3
    max_calls_per_sample: int = 10_000
    calls_per_sample: int | None = None  # fixed instead of calibrated
    visit_s: float = 0.05  # time spent on one callable before switching to the next

    def __post_init__(self) -> None:
        if not 0 < self.rel_tol < 1:
            raise ValueError(f"rel_tol must be in (0, 1), got {self.rel_tol}")
        if self.budget_s <= 0:
            raise ValueError(f"budget_s must be > 0, got {self.budget_s}")
        if self.min_samples < 1 or self.max_samples < self.min_samples:
            raise ValueError(
                f"need 1 <= min_samples <= max_samples, got {self.min_samples}, {self.max_samples}"
            )
        if self.calls_per_sample is not None and self.calls_per_sample < 1:
            raise ValueError(f"calls_per_sample must be >= 1, got {self.calls_per_sample}")


def _calls_for(single_call_s: float, options: TimerOptions) -> int:
    if options.calls_per_sample is not None:
        return options.calls_per_sample
    if single_call_s >= options.short_call_s:
        return 1
    calls = math.ceil(options.target_sample_s / max(single_call_s, 1e-9))
    return int(min(max(calls, 1), options.max_calls_per_sample))


def _converged(data: list[float], options: TimerOptions) -> bool:
    lo, hi = median_ci(data, options.confidence)
    return ci_half_width(percentile(data, 50), lo, hi) <= options.rel_tol


def _visit(
    fn: Callable[[], Any],
    calls: int,
    sink: list[float],
    sample_s: dict[str, float],
    name: str,
    clock: Clock,
    options: TimerOptions,
) -> None:
    """One visit: re-warm a short callable with an untimed call, then sample it for about
    ``visit_s``; a long callable gets a single sample (see step 4 above)."""
    short = sample_s[name] < options.visit_s / 4
    if short and sample_s[name] > 0:
        clock.time(fn, calls)
    spent = 0.0
    while True:
        block = clock.time(fn, calls)
        bisect.insort(sink, block / calls)
        sample_s[name] = block
        spent += block
        if not short or spent >= options.visit_s or len(sink) >= options.max_samples:
            break


def measure_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    *,
    clock: Clock | None = None,
    options: TimerOptions | None = None,
    now: Callable[[], float] = time.perf_counter,
) -> dict[str, TimingSummary]:
    """Time several callables in alternation until all medians are tight or the budget is spent.

    Returns one :class:`TimingSummary` per name (per-call seconds). The budget covers warm-up,
    calibration and sampling of all callables together. An exception from a callable
    propagates (the caller turns it into a status row).
    """
    if not fns:
        raise ValueError("fns must name at least one callable")
    clock = clock or CpuClock()
    options = options or TimerOptions()
    names = list(fns)
    started = now()

    # warm-up, then calibrate with one timed call each
    calls: dict[str, int] = {}
    for name in names:
        fn = fns[name]
        warm_elapsed = 0.0
        done = 0
        while done < options.warmup_calls or warm_elapsed < options.warmup_s:
            warm_elapsed += clock.time(fn, 1)
            done += 1
            if now() - started > options.budget_s:
                break
        single = clock.time(fn, 1)
        if single < options.short_call_s:  # one short call is too noisy to size the blocks
            single = clock.time(fn, 10) / 10
        calls[name] = _calls_for(single, options)

    samples: dict[str, list[float]] = {name: [] for name in names}  # kept sorted
    converged = {name: False for name in names}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        rounds = 0
        sample_s = dict.fromkeys(names, 0.0)  # latest sample length, to size the visits
        while True:
            for name in names:
                _visit(fns[name], calls[name], samples[name], sample_s, name, clock, options)
            rounds += 1
            if rounds >= options.min_samples:
                # checking every round is O(n) per check; thin it out for long runs
                if rounds < 200 or rounds % max(1, rounds // 50) == 0:
                    converged = {name: _converged(samples[name], options) for name in names}
                    if all(converged.values()):
                        break
                fewest = min(len(samples[name]) for name in names)
                if fewest >= options.max_samples or now() - started > options.budget_s:
                    break
    finally:
        if gc_was_enabled:
            gc.enable()
    elapsed = now() - started
    return {
        name: summarize(
            samples[name],
            calls_per_sample=calls[name],
            rel_tol=options.rel_tol,
            confidence=options.confidence,
            elapsed_s=elapsed,
        )
        for name in names
    }


def measure(
    fn: Callable[[], Any],
    *,
    clock: Clock | None = None,
    options: TimerOptions | None = None,
    now: Callable[[], float] = time.perf_counter,
) -> TimingSummary:
    """Time one callable (see :func:`measure_interleaved`)."""
    return measure_interleaved({"fn": fn}, clock=clock, options=options, now=now)["fn"]


@dataclass(frozen=True)
class RoundOptions:
    """Knobs of one round of :func:`sample_round` (the latency stage's per-process measurement).

    ``sample_s`` is the sampling time of all callables together; warm-up comes on top.
    """

    sample_s: float = 0.12
    warmup_s: float = 0.02
    warmup_calls: int = 2
    warmup_max_s: float = 1.0
    steady_calls: int = 2
    min_samples: int = 1
    max_samples: int = 2000
    short_call_s: float = 2e-4
    target_sample_s: float = 2e-3
    max_calls_per_sample: int = 10_000
    visit_s: float = 0.015
    rewarm_s: float = 0.005

    def __post_init__(self) -> None:
        if self.sample_s <= 0:
            raise ValueError(f"sample_s must be > 0, got {self.sample_s}")
        if self.warmup_s < 0 or self.warmup_max_s < self.warmup_s:
            raise ValueError(f"need 0 <= warmup_s <= warmup_max_s, got {self.warmup_s}, {self.warmup_max_s}")
        if self.min_samples < 1 or self.max_samples < self.min_samples:
            raise ValueError(
                f"need 1 <= min_samples <= max_samples, got {self.min_samples}, {self.max_samples}"
            )

    @property
    def as_timer_options(self) -> TimerOptions:
        """The equivalent calibration settings for :func:`_calls_for`."""
        return TimerOptions(short_call_s=self.short_call_s, target_sample_s=self.target_sample_s,
                            max_calls_per_sample=self.max_calls_per_sample, visit_s=self.visit_s)


@dataclass
class RoundSamples:
    """Per-call sample times (seconds) of each callable in one round, one list per visit, in the
    order taken: visit ``k`` of every callable belongs to the same cycle A, B, C (adjacent in time)."""

    samples: dict[str, list[list[float]]]
    calls_per_sample: dict[str, int]
    warmup_calls: dict[str, int]
    warmup_steady: bool
    block_s: dict[str, float]
    """Seconds of one sample block of each callable as calibrated before sampling (warm-up's
    fastest recent call times calls per sample)."""
    host_s: dict[str, list[float]] = field(default_factory=dict)
    """Per-call host enqueue time (seconds) of each sample, in the order of ``samples``, where the
    clock measures it (:class:`CudaEventClock`); empty on the CPU."""


def _resident_bytes() -> int:
    """Resident set size of this process (Linux ``/proc/self/statm``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _warm_until_steady(
    fn: Callable[[], Any], clock: Clock, options: RoundOptions, rss: Callable[[], int]
) -> tuple[int, bool, float]:
    """Call ``fn`` until the process's resident memory stopped growing for ``steady_calls``
    calls in a row (the allocator has every block the call needs), at least ``warmup_calls``
    times and ``warmup_s`` long, at most ``warmup_max_s``. Returns (calls, steady, the fastest of
    the last ``steady_calls`` calls in seconds: one slow call must not size the sample blocks)."""
    calls, steady, spent = 0, 0, 0.0
    recent: list[float] = []
    previous = rss()
    while True:
        last = clock.time(fn, 1)
        spent += last
        calls += 1
        recent = [*recent[-(options.steady_calls - 1):], last] if options.steady_calls > 1 else [last]
        current = rss()
        steady = steady + 1 if current <= previous else 0
        previous = max(previous, current)
        warm = calls >= options.warmup_calls and spent >= options.warmup_s and steady >= options.steady_calls
        if warm or spent >= options.warmup_max_s:
            return calls, warm, min(recent)


def sample_round(
    fns: Mapping[str, Callable[[], Any]],
    *,
    clock: Clock | None = None,
    options: RoundOptions | None = None,
    rss: Callable[[], int] = _resident_bytes,
    calibrated: Mapping[str, tuple[int, float]] | None = None,
) -> RoundSamples:
    """One round: warm every callable until steady, then sample them in alternation.

    Visits go A, B, C, A, B, C, ... until ``sample_s`` of sampling has passed and every callable
    has ``min_samples``. A short callable (a sample under ``visit_s / 4``) gets ``rewarm_s`` of
    untimed calls, then about ``visit_s`` of back-to-back samples per visit; a long one a single
    sample. The re-warm is longer than one call because one is not enough here: after a 3x3 conv
    had the caches, a memory-bound gate's first samples of a visit were 1.5-3x its steady time
    and fell over the next 5-10 samples (a victim L3 refills over several passes). The garbage collector is off while sampling. An exception propagates.
    A callable named in ``calibrated`` (name -> calls per sample and seconds per sample, as
    :attr:`RoundSamples.block_s` gave them) is already warm in this process: its warm-up and
    calibration are skipped (``warmup_calls`` 0). Whether a callable is short is known from its
    calibration before its first visit, so a long one (a 3x3 conv of 0.1-0.3 s) is never called
    untimed between visits.
    """
    if not fns:
        raise ValueError("fns must name at least one callable")
    clock = clock or CpuClock()
    options = options or RoundOptions()
    calibration = options.as_timer_options
    names = list(fns)
    warm_calls: dict[str, int] = {}
    calls: dict[str, int] = {}
    last_block: dict[str, float] = {}  # seconds of the latest sample block, to size the visits
    all_steady = True
    calibrated = calibrated or {}
    for name in names:
        if name in calibrated:
            warm_calls[name] = 0
            calls[name], last_block[name] = calibrated[name]
            continue
        warm_calls[name], steady, single = _warm_until_steady(fns[name], clock, options, rss)
        all_steady = all_steady and steady
        if single < options.short_call_s:  # one short call is too noisy to size the blocks
            single = clock.time(fns[name], 10) / 10
        calls[name] = _calls_for(single, calibration)
        last_block[name] = single * calls[name]
    block_s = dict(last_block)
    samples: dict[str, list[list[float]]] = {name: [] for name in names}
    host: dict[str, list[float]] = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        spent = 0.0
        while True:
            for name in names:
                samples[name].append([])
                spent += _round_visit(fns[name], calls[name], samples[name][-1], last_block, name, clock, options,
                                      host[name])
            counts = [sum(map(len, visits)) for visits in samples.values()]
            enough = min(counts) >= options.min_samples
            full = max(counts) >= options.max_samples
            if (enough and spent >= options.sample_s) or full:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return RoundSamples(samples=samples, calls_per_sample=calls, warmup_calls=warm_calls, warmup_steady=all_steady,
                        block_s=block_s, host_s={name: times for name, times in host.items() if times})


def _round_visit(
    fn: Callable[[], Any],
    calls: int,
    sink: list[float],
    last_block: dict[str, float],
    name: str,
    clock: Clock,
    options: RoundOptions,
    host_sink: list[float] | None = None,
) -> float:
    """One visit of :func:`sample_round`; appends per-call times to ``sink`` (and, where the clock
    measures it, per-call host enqueue times to ``host_sink``), returns the time sampled."""
    short = last_block[name] < options.visit_s / 4
    if short:  # the other callables evicted its data: re-warm for rewarm_s, untimed
        warmed = 0.0
        while warmed < options.rewarm_s:
            warmed += clock.time(fn, calls)
    spent = 0.0
    while True:
        block = clock.time(fn, calls)
        sink.append(block / calls)
        host = getattr(clock, "last_host_s", None)
        if host is not None and host_sink is not None:
            host_sink.append(host / calls)
        last_block[name] = block
        spent += block
        if not short or spent >= options.visit_s or len(sink) >= options.max_samples:
            return spent
