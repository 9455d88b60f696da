"""GPU timing on a machine without a GPU: the CUDA path driven by fake ``torch.cuda`` objects
(events on a fake GPU timeline, streams that know their device, graphs, device properties, the
list of processes on a GPU). Covers the device a worker times, TF32 (PyTorch's defaults, the
legacy getters), host-bound samples, CUDA graphs, the L2 flush and other processes on the GPU."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import subprocess
import time
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from suite.timing import cuda as gpu
from suite.timing.cli_latency import LatencySettings, round_job, round_plan
from suite.timing.contention import ContentionLimits
from suite.timing.grid import Config
from suite.timing.job import Job
from suite.timing.resume import RoundProgress
from suite.timing.round_stats import RoundPlan, aggregate_rounds
from suite.timing.sweep import GridSettings
from suite.timing.timer import CudaEventClock, RoundOptions, clock_for, cuda_settings
from suite.timing.worker import ROUND, WorkerState, run_job
from suite.timing.workloads import StageError, Workload


class FakeStream:
    """A CUDA stream of one device."""

    def __init__(self, device: object = None) -> None:
        self.index = torch.device(device).index if device is not None else None
        self.waited: list[FakeStream] = []

    def wait_stream(self, other: FakeStream) -> None:
        self.waited.append(other)


class FakeEvent:
    """torch.cuda.Event on a fake GPU timeline (seconds); remembers the stream it was recorded on."""

    timeline = 0.0
    synced_until = -1.0
    log: list[tuple[str, object]] = []

    def __init__(self, enable_timing: bool = True) -> None:
        self.stamp = math.nan
        self.stream: object = "never recorded"

    def record(self, stream: object = None) -> None:
        self.stamp, self.stream = FakeEvent.timeline, stream
        FakeEvent.log.append(("record", stream))

    def synchronize(self) -> None:
        FakeEvent.synced_until = max(FakeEvent.synced_until, self.stamp)

    def elapsed_time(self, end: FakeEvent) -> float:
        assert end.stamp <= FakeEvent.synced_until, "an event is read before it was synchronized"
        return (end.stamp - self.stamp) * 1e3


@pytest.fixture()
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> dict[int, FakeStream]:
    """torch.cuda's events, streams, current device and memory counters as fakes; the streams
    handed out, by device index."""
    streams: dict[int, FakeStream] = {}
    FakeEvent.timeline, FakeEvent.synced_until, FakeEvent.log = 0.0, -1.0, []

    def current_stream(device: object = None) -> FakeStream:
        index = torch.device(device).index if device is not None else 0
        return streams.setdefault(index, FakeStream(f"cuda:{index}"))

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", current_stream)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    return streams


def _gpu_work(seconds: float, host_s: float = 0.0):
    """A callable that takes ``seconds`` of fake GPU time and ``host_s`` of real host time."""

    def run() -> None:
        end = time.perf_counter() + host_s
        while time.perf_counter() < end:
            pass
        FakeEvent.timeline += seconds

    return run


# 1. the configuration's device ------------------------------------------------------------------

def test_the_event_clock_records_on_the_configured_devices_stream(fake_gpu) -> None:
    clock = clock_for("cuda:1")
    assert clock.time(_gpu_work(0.004), 5) == pytest.approx(0.020)
    recorded = [getattr(stream, "index", None) for what, stream in FakeEvent.log if what == "record"]
    assert recorded and set(recorded) == {1}  # GPU 1's stream, not the current device's


def test_roofline_peaks_are_timed_on_the_configured_device(fake_gpu) -> None:
    from suite.timing.roofline import best_sample_s

    best = best_sample_s(_gpu_work(1e-3), torch.device("cuda:1"),
                         RoundOptions(sample_s=0.01, warmup_s=0.0, warmup_max_s=0.01))
    assert best == pytest.approx(1e-3)
    assert FakeEvent.log and {getattr(stream, "index", None) for _, stream in FakeEvent.log} == {1}


def device_echo(raw: dict, job: Job) -> tuple[str, object]:
    """A runner for the tests below: records when it measured."""
    return raw["case"], lambda: (CALLS.append(("measure", raw["case"])), {"status": "ok"})[1]


CALLS: list[tuple[str, object]] = []


def _run(job: Job, state: WorkerState | None = None) -> list[dict]:
    out = io.StringIO()
    threads = torch.get_num_threads()
    try:
        code = run_job(job, out, state or WorkerState())
    finally:
        torch.set_num_threads(threads)  # the worker sets the process's threads; this process goes on
    lines = [json.loads(line[len(ROUND):]) for line in out.getvalue().splitlines()]
    for line in lines:
        line["exit"] = code
    return lines


def test_the_worker_makes_the_jobs_device_current_before_it_measures(fake_gpu, monkeypatch) -> None:
    CALLS.clear()
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: CALLS.append(("set_device", index)))
    job = Job(threads=1, device="cuda:1", runner=f"{__name__}:device_echo").with_items([{"case": "a"}])
    (line,) = _run(job)
    assert CALLS == [("set_device", 1), ("measure", "a")]
    assert line["cuda_device"] == 1 and line["timing_mode"] == "eager-launch" and line["flush_l2"] is False


# 2. and 3. TF32: PyTorch's defaults unless asked, recorded, legacy getters still answer -----------

def _tf32_state() -> tuple:
    b = torch.backends
    return (b.cudnn.benchmark, b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision,
            b.cudnn.rnn.fp32_precision, b.cudnn.fp32_precision, b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32)


@pytest.mark.parametrize(("mode", "matmul", "conv"), [("default", False, True), ("on", True, True),
                                                      ("off", False, False)])
def test_inside_cuda_settings_the_legacy_tf32_getters_answer_what_was_set(mode: str, matmul: bool, conv: bool) -> None:
    before = _tf32_state()
    with cuda_settings(cudnn_benchmark=True, tf32=mode) as record:
        # inductor on torch 2.9-2.11 reads these two; they raise when only fp32_precision was set
        assert torch.backends.cuda.matmul.allow_tf32 is matmul
        assert torch.backends.cudnn.allow_tf32 is conv
        # and the new API agrees ("none" inherits, down to IEEE)
        assert (torch.backends.cuda.matmul.fp32_precision == "tf32") is matmul
        assert (torch.backends.cudnn.conv.fp32_precision == "tf32") is conv
        assert record == {"cudnn_benchmark": True, "tf32_matmul": matmul, "tf32_conv": conv}
    assert _tf32_state() == before


def test_cuda_settings_restore_a_state_set_with_the_new_api_exactly() -> None:
    matmul = torch.backends.cuda.matmul
    saved = matmul.fp32_precision
    try:
        matmul.fp32_precision = "tf32"  # a user's setting: the legacy matmul getter now raises
        with pytest.raises(RuntimeError):
            _ = matmul.allow_tf32
        with cuda_settings(cudnn_benchmark=False, tf32="on"):
            assert matmul.allow_tf32 is True
        assert matmul.fp32_precision == "tf32"
        with pytest.raises(RuntimeError):  # as before: the same disagreement between the two APIs
            _ = matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
        matmul.fp32_precision = saved


def test_tf32_defaults_to_pytorchs_own_and_a_cuda_job_carries_it() -> None:
    assert GridSettings().tf32 == "default"
    settings = LatencySettings()
    plan = round_plan(settings, "cuda")
    job = round_job(settings, plan, "cuda:0", 1, 1.0)
    assert (job.tf32, job.tf32_conv, job.tf32_mode) == (False, True, "default")
    assert Job.from_wire(json.loads(job.to_line())) == job
    on = round_job(LatencySettings(tf32="on"), plan, "cuda:0", 1, 1.0)
    off = round_job(LatencySettings(tf32="off"), plan, "cuda:0", 1, 1.0)
    assert (on.tf32_mode, off.tf32_mode) == ("on", "off")
    # a CPU job's line is the one every revision's worker reads: no CUDA-only keys
    cpu = round_job(settings, round_plan(settings, "cpu"), "cpu", 1, 1.0)
    assert not {"tf32_conv", "cuda_graph", "flush_l2"} & set(cpu.to_wire()) and cpu.to_wire()["tf32"] is False
    assert Job.from_wire({"threads": 1, "tf32": True}).tf32_mode == "on"  # an earlier parent's line


def test_a_graph_or_a_flush_without_cuda_is_refused() -> None:
    settings = LatencySettings(cuda_graph="on")
    with pytest.raises(ValueError, match="--cuda-graph on .* needs --device cuda"):
        round_job(settings, round_plan(settings, "cpu"), "cpu", 1, 1.0)
    with pytest.raises(ValueError, match="--flush-l2"):
        round_job(LatencySettings(flush_l2=True), round_plan(settings, "cpu"), "cpu", 1, 1.0)


# 4. host-bound samples and CUDA graphs ---------------------------------------------------------------

def test_the_event_clock_times_the_hosts_enqueue_before_it_synchronizes(fake_gpu, monkeypatch) -> None:
    synchronize = FakeEvent.synchronize
    monkeypatch.setattr(FakeEvent, "synchronize", lambda self: (time.sleep(0.05), synchronize(self)))
    clock = CudaEventClock("cuda:0", event_factory=FakeEvent)
    clock.time(_gpu_work(1e-3, host_s=2e-3), 5)
    assert 0.01 <= clock.last_host_s < 0.05  # five 2 ms enqueues, without the 50 ms synchronize


def test_the_event_clock_keeps_the_gpu_busy_before_its_start_event(fake_gpu, monkeypatch) -> None:
    """A spin kernel goes on the timed stream before the start event: the launch latency of the
    block's first call is not in the sample."""
    entered: list[object] = []

    def sleep(cycles: int) -> None:
        FakeEvent.log.append(("sleep", entered[-1] if entered else None))
        assert cycles >= 50_000

    @contextlib.contextmanager
    def on_stream(stream: object):
        entered.append(stream)
        yield

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "_sleep", sleep, raising=False)
    monkeypatch.setattr(torch.cuda, "stream", on_stream)
    clock = CudaEventClock("cuda:1", event_factory=FakeEvent)
    clock.time(_gpu_work(1e-3), 3)
    clock.time(_gpu_work(1e-3), 3)
    steps = [what for what, _ in FakeEvent.log if what in ("sleep", "record")]
    assert steps == ["sleep", "record", "record"] * 2  # each block: the spin, then its start and end events
    assert {getattr(stream, "index", None) for what, stream in FakeEvent.log if what == "sleep"} == {1}
    monkeypatch.delattr(torch.cuda, "_sleep")  # a torch without it: events alone
    FakeEvent.log.clear()
    CudaEventClock("cuda:1", event_factory=FakeEvent).time(_gpu_work(1e-3), 3)
    assert [what for what, _ in FakeEvent.log if what in ("sleep", "record")] == ["record", "record"]


def _fake_workload(module_step, reference_step):
    def build(config, cache=None, *, graph_safe=False):
        BUILT.append(graph_safe)
        return Workload(step=module_step, reference_step=reference_step, reference_name="resnet18(attn=None)",
                        module=nn.Identity(), input_shape=(1, 3, 8, 8), output_shape=(1, 10),
                        input_element_size=4, params=0, param_bytes=0, formula_macs=None, compile_s=None)

    return build


BUILT: list[bool] = []
CONFIG = Config(stage="latency", attn="se", mode="forward", level="model", arch="resnet18", device="cuda:1",
                channels=3, batch=1, size=8)


def _round_job(**fields) -> Job:
    return Job(threads=1, device="cuda:1", tf32_conv=True,
               options=RoundOptions(sample_s=0.01, warmup_s=0.0, warmup_max_s=0.01, rewarm_s=0.001, visit_s=0.004),
               limits=ContentionLimits(), retries=1, **fields).with_items([CONFIG])


def _own_gpu(index: int) -> list[gpu.GpuProcess]:
    return [gpu.GpuProcess(os.getpid(), 500.0)]


def test_a_round_records_host_enqueue_times_and_which_callables_were_host_bound(fake_gpu, monkeypatch) -> None:
    # the module's launches take longer on the host (300 us) than its kernels on the GPU (100 us)
    monkeypatch.setattr("suite.timing.workloads.build_workload",
                        _fake_workload(_gpu_work(1e-4, host_s=3e-4), _gpu_work(1e-3)))
    (line,) = _run(_round_job(), WorkerState(gpu_query=_own_gpu))
    assert line["status"] == "ok", line.get("message")
    assert line["host_bound"] == {"module": True, "reference": False}
    assert line["host_s"]["module"] >= 3e-4 > line["host_s"]["reference"]
    assert line["timing_mode"] == "eager-launch" and line["gpu_check"] == "exclusive"
    row = aggregate_rounds(RoundProgress(0, clean=[line, line]), RoundPlan(rounds=2, max_rounds=2, max_attempts=4))
    assert row["host_bound"] is True and row["ref_host_bound"] is False and row["host_ms"] >= 0.3
    assert (row["timing_mode"], row["tf32_matmul"], row["tf32_conv"], row["flush_l2"]) == (
        "eager-launch", False, True, False)


class FakeGraph:
    replays = 0

    def replay(self) -> None:
        FakeGraph.replays += 1
        FakeEvent.timeline += 5e-5


@pytest.fixture()
def fake_graphs(fake_gpu, monkeypatch):
    """torch.cuda's Stream, stream(), CUDAGraph and graph() as fakes; the calls' log."""
    log: list[tuple[str, object]] = []
    state = {"stream": None, "capturing": False}

    @contextlib.contextmanager
    def stream(s):
        state["stream"] = s
        yield
        state["stream"] = None

    @contextlib.contextmanager
    def graph(g):
        state["capturing"] = True
        yield
        state["capturing"] = False

    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "stream", stream)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", graph)
    FakeGraph.replays = 0
    return log, state


def test_capture_graph_warms_on_a_side_stream_captures_once_and_times_replays(fake_graphs) -> None:
    log, state = fake_graphs
    replay = gpu.capture_graph(lambda: log.append((state["stream"], state["capturing"])), "cuda:1")
    side = log[0][0]
    assert isinstance(side, FakeStream) and side.index == 1
    assert log == [(side, False)] * 3 + [(None, True)]  # warm-up on the side stream, then one capture
    replay()
    assert FakeGraph.replays == 1 and len(log) == 4  # a replay runs no Python


def test_a_round_in_graph_mode_times_replays_and_says_so(fake_graphs, monkeypatch) -> None:
    monkeypatch.setattr("suite.timing.workloads.build_workload", _fake_workload(_gpu_work(1e-3), _gpu_work(1e-3)))
    BUILT.clear()
    (line,) = _run(_round_job(cuda_graph=True), WorkerState(gpu_query=_own_gpu))
    assert line["status"] == "ok" and line["timing_mode"] == "cuda-graph"
    assert BUILT == [True]  # steps fit for capture: autocast without its cache
    assert FakeGraph.replays > 0
    assert all(v == pytest.approx(5e-5) for visit in line["samples_s"]["module"] for v in visit)


def test_a_step_that_cannot_be_captured_is_a_graph_error_not_a_crash(fake_graphs, monkeypatch) -> None:
    @contextlib.contextmanager
    def refusing(g):
        raise RuntimeError("operation not permitted when stream is capturing")
        yield

    monkeypatch.setattr(torch.cuda, "graph", refusing)
    with pytest.raises(StageError) as caught:
        gpu.capture_graph(lambda: None, "cuda:0")
    assert caught.value.status == "graph_error" and "not permitted" in str(caught.value)
    monkeypatch.setattr("suite.timing.workloads.build_workload", _fake_workload(_gpu_work(1e-3), _gpu_work(1e-3)))
    (line,) = _run(_round_job(cuda_graph=True), WorkerState(gpu_query=_own_gpu))
    assert line["status"] == "graph_error" and "could not be captured" in line["message"] and line["exit"] == 0


# 5. the L2 flush ----------------------------------------------------------------------------------

def test_the_l2_flush_is_twice_the_l2_and_runs_before_every_call_outside_its_events(fake_gpu, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: SimpleNamespace(L2_cache_size=50 << 20))
    assert gpu.l2_flush_bytes("cuda:1") == 100 << 20

    def flush() -> None:
        FakeEvent.log.append(("flush", None))
        FakeEvent.timeline += 1e-3  # the flush's own GPU time must stay outside the samples

    clock = CudaEventClock("cuda:1", event_factory=FakeEvent, flush=flush)
    assert clock.time(_gpu_work(1e-4), 3) == pytest.approx(3e-4)
    kinds = [what for what, _ in FakeEvent.log]
    assert kinds == ["flush", "record", "record"] * 3


def test_a_round_with_the_flush_flushes_on_the_rounds_device_and_records_it(fake_gpu, monkeypatch) -> None:
    flushed: list[object] = []
    monkeypatch.setattr(gpu, "make_l2_flush", lambda device: lambda: flushed.append(torch.device(device)))
    monkeypatch.setattr("suite.timing.workloads.build_workload", _fake_workload(_gpu_work(1e-3), _gpu_work(1e-3)))
    (line,) = _run(_round_job(flush_l2=True), WorkerState(gpu_query=_own_gpu))
    assert line["status"] == "ok" and line["flush_l2"] is True
    assert flushed and set(flushed) == {torch.device("cuda:1")}


# 6. other processes on the GPU ------------------------------------------------------------------------

def test_another_process_on_the_gpu_makes_the_round_contended(fake_gpu, monkeypatch) -> None:
    monkeypatch.setattr("suite.timing.workloads.build_workload", _fake_workload(_gpu_work(1e-3), _gpu_work(1e-3)))
    asked: list[int] = []

    def busy(index: int) -> list[gpu.GpuProcess]:
        asked.append(index)
        return [gpu.GpuProcess(os.getpid(), 500.0), gpu.GpuProcess(4_000_000, 2048.0)]

    (line,) = _run(_round_job(), WorkerState(gpu_query=busy))
    assert line["status"] == "contended" and "pid 4000000 (2048 MiB)" in line["message"]
    assert line["attempts"] == 2 and len(line["rejected"]) == 2  # retried once, then given up
    assert set(asked) == {1} and line["gpu_check"] == "shared"


def test_the_gpu_check_ignores_this_process_and_its_ancestors_and_says_when_it_cannot_tell() -> None:
    me, parent = os.getpid(), os.getppid()
    assert parent in gpu.own_pids() and me in gpu.own_pids()
    assert gpu.gpu_check(0, lambda i: [gpu.GpuProcess(me), gpu.GpuProcess(parent)]).state == "exclusive"
    shared = gpu.gpu_check(0, lambda i: [gpu.GpuProcess(me), gpu.GpuProcess(4_000_000, 10.0)])
    assert shared.state == "shared" and shared.reason(0) == "other processes use GPU 0: pid 4000000 (10 MiB)"
    assert gpu.gpu_check(0, lambda i: None).state == "unverified"
    hidden = gpu.gpu_check(0, lambda i: [gpu.GpuProcess(4_000_000)])  # another PID namespace
    assert hidden.state == "unverified" and "PID namespace" in hidden.note and not hidden.reason(0)


def _orphan(new_session: bool) -> int:
    """A ``sleep`` whose parent (a shell) has exited: not a descendant of this process; in this
    process's session unless ``new_session``."""
    command = ("setsid " if new_session else "") + "sleep 30 >/dev/null 2>&1 & echo $!"
    pid = int(subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=True).stdout)
    for _ in range(100):  # setsid forks when it is a process group leader: wait for the sleep's own session
        if not new_session or os.getsid(pid) != os.getsid(0):
            break
        time.sleep(0.01)
    return pid


def test_the_gpu_check_counts_descendants_and_this_session_as_its_own() -> None:
    """Inductor's compile workers (descendants, or processes of the worker server's session) on
    the GPU do not make a window contended; a process of another session and parentage does."""
    me = gpu.GpuProcess(os.getpid())
    child = subprocess.Popen(["sleep", "30"], start_new_session=True)  # a descendant in a session of its own
    sibling, stranger = _orphan(new_session=False), _orphan(new_session=True)
    try:
        assert gpu.gpu_check(0, lambda i: [me, gpu.GpuProcess(child.pid)]).state == "exclusive"
        assert gpu.gpu_check(0, lambda i: [me, gpu.GpuProcess(sibling)]).state == "exclusive"
        shared = gpu.gpu_check(0, lambda i: [me, gpu.GpuProcess(stranger)])
        assert shared.state == "shared" and f"pid {stranger}" in shared.reason(0)
    finally:
        child.kill()
        child.wait()
        for pid in (sibling, stranger):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_nvidia_smi_is_asked_about_the_device_by_its_uuid(monkeypatch) -> None:
    asked: list[list[str]] = []

    def run(command, **kwargs):
        asked.append(command)
        return SimpleNamespace(stdout="1234, 512\n5678, [N/A]\n")

    monkeypatch.setattr(gpu.subprocess, "run", run)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid="abcd-ef"))
    monkeypatch.setattr(gpu, "_query_pynvml", lambda target: None)
    assert gpu.query_gpu_processes(1) == [gpu.GpuProcess(1234, 512.0), gpu.GpuProcess(5678, None)]
    assert "--id=GPU-abcd-ef" in asked[0] and "--query-compute-apps=pid,used_memory" in asked[0]


# 7. errors that spoil the CUDA context ----------------------------------------------------------------

@pytest.mark.parametrize(("error", "spoiled"), [
    (RuntimeError("CUDA error: an illegal memory access was encountered"), True),
    (RuntimeError("CUDA error: device-side assert triggered"), True),
    (StageError("error", "RuntimeError: cudaErrorLaunchFailure: unspecified launch failure"), True),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), False),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
])
def test_which_errors_spoil_the_cuda_context(error: BaseException, spoiled: bool) -> None:
    assert gpu.is_cuda_error(error) is spoiled
    wrapped = StageError("error", "measuring failed")
    wrapped.__cause__ = error
    assert gpu.is_cuda_error(wrapped) is spoiled


def test_host_bound_is_the_median_share_of_host_time_over_gpu_time() -> None:
    assert gpu.host_bound([9e-5, 1e-4, 1e-4], [1e-4, 1e-4, 1e-4])
    assert not gpu.host_bound([1e-5, 1e-5, 2e-4], [1e-4, 1e-4, 1e-4])
    assert not gpu.host_bound([], [])
    assert math.isclose(gpu.HOST_BOUND_SHARE, 0.9)


@pytest.mark.parametrize(("mode", "fp32"), [("default", "ieee"), ("off", "ieee"), ("on", "tf32")])
def test_the_machine_records_say_at_which_precision_each_matmul_peak_ran(
        mode: str, fp32: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``--tf32 default`` the fp32 peak is IEEE while cuDNN convolutions run TF32: the
    records say so, for a conv row's roofline_fraction above 1 to be read right."""
    from suite.timing import roofline

    monkeypatch.setattr(roofline, "measure_matmul_rate", lambda device, dtype, n, options=None: 1e12)
    monkeypatch.setattr(roofline, "measure_bandwidth", lambda device, nbytes, options=None: 1e11)
    monkeypatch.setattr(roofline, "last_level_cache_bytes", lambda device: None)
    monkeypatch.setattr(roofline, "_on_device", lambda device: contextlib.nullcontext())
    with cuda_settings(cudnn_benchmark=True, tf32=mode):
        peaks = roofline.measure_machine("cuda:0", ("fp32", "bf16"))
    rows = {r["dtype"]: r for r in peaks.as_rows() if r["quantity"] == "matmul_GMACps"}
    assert rows["fp32"]["peak_precision"] == fp32 and rows["bf16"]["peak_precision"] == "bf16"
    assert roofline.peak_precision("cpu", "fp32") == "ieee"
