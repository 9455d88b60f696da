"""The latency stage's worker: one round of configurations measured in a fresh process.

A round visits every configuration it is given once, in order: build the workload
(:func:`suite.timing.workloads.build_workload`), warm it until the allocator is steady, then
sample the module, its compute reference (the 3x3 conv, or the backbone without attention)
and, at module level, its memory reference (one copy of the input into a preallocated tensor:
a read and a write pass) in alternation (:func:`suite.timing.timer.sample_round`). Around the
sampling the process's CPU accounting is read (:mod:`suite.timing.contention`); a window
that did not get the CPU it asked for is discarded and sampled again, up to ``retries``
times, before the round is reported ``contended``.

Processes. ``python -m suite.timing.worker --serve`` imports torch and the zoo once, prints
``READY`` and then, for each job line on stdin, forks a child that runs the job and exits: every
round is a fresh process (its own heap, page placement and thread pool) without paying the
imports again. The server runs nothing itself, so the children start from the same clean
state. ``--once`` runs one job in the process itself (the ``spawn`` isolation: a new
interpreter per round). A job is one :class:`suite.timing.job.Job` in its wire form; results go
to stdout as one ``ROUND`` line (JSON) per configuration. What a process keeps between rounds
(the reference steps it built, their calibration) is its :class:`WorkerState`.

The measurement environment is set here, not inherited: the thread count
(``torch.set_num_threads``), the flush-denormal mode and, on CUDA, the device (first, before
anything touches CUDA), cuDNN autotuning and TF32; the allocator tunables arrive in the
environment the parent starts the server with (:data:`ALLOCATOR_TUNABLES`). Each result records
what was in force.

On CUDA a round also times the host's enqueue beside the GPU's events (``host_s``,
``host_bound``), can replay each step from a CUDA graph (``timing_mode``) and flush the L2
before every timed call (``flush_l2``), and checks that no other process used the GPU during
the window (``gpu_check``): :mod:`suite.timing.cuda` says how. A configuration that fails with
an error of the CUDA context writes its result, then the child exits with
:data:`CUDA_ERROR_EXIT` and the pool measures the rest of the round in a fresh process. The
server never forks once CUDA is initialised in it (it exits with :data:`FORK_REFUSED_EXIT`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..portable import format_traceback
from .job import Job

READY = "ATTNBENCH_READY"
CHILD = "ATTNBENCH_CHILD "
ROUND = "ATTNBENCH_ROUND "
DONE = "ATTNBENCH_DONE "

CUDA_ERROR_EXIT = 86
"""A child's exit status after a configuration failed with an error of the CUDA context: that
configuration's result was written; the rest of its job needs a fresh process."""
FORK_REFUSED_EXIT = 87
"""The server's exit status when CUDA was initialised in it before a fork
(:func:`suite.timing.cuda.fork_refusal`)."""

ALLOCATOR_TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"
"""glibc malloc tunables of the ``steady`` allocator: every block comes from the heap and freed
memory is kept, so a step's tensors reuse the same pages from the second call on instead of
being mapped and faulted in afresh (which made the same module 1.3-3x slower in some processes
than in others on the 2-core VM)."""

__all__ = ["ALLOCATOR_TUNABLES", "CHILD", "CUDA_ERROR_EXIT", "DONE", "FORK_REFUSED_EXIT", "READY", "ROUND",
           "WorkerState", "measure_round", "run_job", "main"]

_PRELOAD = ("torch", "torchvision", "modules", "suite.timing.workloads", "suite.timing.timer", "suite.timing.cuda")


def _copy_step(x: Any) -> Any:
    """The memory reference: one read and one write pass over a tensor of the input's size."""
    import torch

    buffer = torch.empty_like(x, requires_grad=False)

    def copy() -> Any:
        with torch.no_grad():
            return buffer.copy_(x)

    return copy


def _facts(workload: Any) -> dict[str, Any]:
    """The workload's static facts in its round record, with what its runtime recorded (an
    exported graph's exporter and cache, inductor's cache: :mod:`suite.timing.runtimes`)."""
    return {
        "reference": workload.reference_name,
        "params": workload.params,
        "param_bytes": workload.param_bytes,
        "formula_macs": workload.formula_macs,
        "compile_s": workload.compile_s,
        "input_shape": "x".join(map(str, workload.input_shape)),
        "output_shape": "x".join(map(str, workload.output_shape)),
        "input_element_size": workload.input_element_size,
        **workload.facts,
    }


def _rss_for(device: str) -> Any:
    """What "the allocator is steady" is read from: process RSS on CPU, reserved CUDA memory."""
    import torch

    from .timer import _resident_bytes

    if device.startswith("cuda"):
        return lambda: int(torch.cuda.memory_reserved(torch.device(device)))
    return _resident_bytes


@dataclass
class WorkerState:
    """What a worker process keeps between the rounds it measures.

    ``references``: reference steps built in this process, by
    :func:`suite.timing.workloads.reference_key` (the 3x3 conv, or plain backbone, of a shape is
    built and warmed once per process, not once per attention type; the key names the runtime, so
    an eager reference is never reused for an exported one). ``calls``: calls per sample
    and seconds per sample of each cached reference, calibrated on its first clean round in this
    process. ``flush_denormal``: ``on`` / ``off`` as set for this process, ``unsupported`` where
    torch refuses (no SSE3), ``not set`` before :meth:`apply_settings`. ``gpu_query``: how the
    compute processes on a GPU are listed (:func:`suite.timing.cuda.query_gpu_processes` unless a
    test injects one).
    """

    references: dict[str, Any] = field(default_factory=dict)
    calls: dict[str, tuple[int, float]] = field(default_factory=dict)
    flush_denormal: str = "not set"
    gpu_query: Callable[[int], Any] | None = None

    def apply_settings(self, job: Job) -> Any:
        """Make a CUDA job's device current (before anything else touches CUDA), set threads and
        flush-denormal for this process; return the CUDA settings context (its record names the
        device, TF32 and cuDNN settings, the timing mode and the L2 flush)."""
        import torch

        cuda = job.device.startswith("cuda")
        index = None
        if cuda:
            from .cuda import set_device

            index = set_device(job.device)
        torch.set_num_threads(job.threads)
        supported = torch.set_flush_denormal(job.flush_denormal)
        wanted = "on" if job.flush_denormal else "off"
        self.flush_denormal = wanted if supported or not job.flush_denormal else "unsupported"
        if cuda:
            return _cuda_context(job, index)
        return contextlib.nullcontext({})

    def settings_record(self) -> dict[str, Any]:
        """The process settings in force, recorded with every result."""
        import torch

        return {
            "threads_set": torch.get_num_threads(),
            "flush_denormal": self.flush_denormal,
            "allocator_tunables": os.environ.get("GLIBC_TUNABLES", ""),
            "pid": os.getpid(),
        }


@contextlib.contextmanager
def _cuda_context(job: Job, index: int | None) -> Iterator[dict[str, Any]]:
    """cuDNN autotuning and TF32 as the job says (:func:`suite.timing.timer.cuda_settings`); yields
    the record of every CUDA round: the device index, those settings, the timing mode and the L2
    flush."""
    from .cuda import TIMING_MODES
    from .timer import cuda_settings

    with cuda_settings(cudnn_benchmark=job.cudnn_benchmark, tf32=job.tf32_mode) as record:
        yield {**record, "cuda_device": index, "timing_mode": TIMING_MODES[job.cuda_graph], "flush_l2": job.flush_l2}


def _host_fields(taken: Any) -> dict[str, Any]:
    """Per callable: the median host enqueue time per call (``host_s``) and whether the round was
    host-bound (``host_bound``, :func:`suite.timing.cuda.host_bound`)."""
    import statistics

    from .cuda import host_bound

    host_s, bound = {}, {}
    for name, times in taken.host_s.items():
        events = [v for visit in taken.samples[name] for v in visit]
        host_s[name] = float(f"{statistics.median(times):.5g}")
        bound[name] = host_bound(times, events)
    return {"host_s": host_s, "host_bound": bound}


def _gpu_fields(check: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"gpu_check": check.state}
    if check.others:
        fields["gpu_others"] = [p.describe() for p in check.others]
    if check.note:
        fields["gpu_check_note"] = check.note
    return fields


def measure_round(config: Any, job: Job, state: WorkerState, probe: Any = None) -> dict[str, Any]:
    """Measure ``config`` once in this process; the result fields of its round record.

    On CUDA (:mod:`suite.timing.cuda`): with ``job.cuda_graph`` each step is captured into a CUDA
    graph and its replay is timed; with ``job.flush_l2`` the clock flushes the L2 before every
    timed call; the window is contended when another process held the GPU; the record adds the
    host enqueue times and whether each callable was host-bound.
    """
    import torch

    from .contention import CpuProbe, CpuUsage, assess
    from .timer import clock_for, sample_round
    from .workloads import StageError, build_workload, classify_error, reference_key

    if job.options is None or job.limits is None:
        raise ValueError("a latency round's job names its options and limits")
    probe = probe or CpuProbe()
    cuda = config.device.startswith("cuda")
    graphed = cuda and job.cuda_graph
    started = time.perf_counter()
    workload = build_workload(config, state.references, graph_safe=graphed)
    built = time.perf_counter()
    cache_key = reference_key(config)
    fns = {"module": workload.step, "reference": workload.reference_step}
    if config.level == "module":
        fns["copy"] = _copy_step(workload.input)
    if graphed:
        from .cuda import capture_graph

        fns = {name: capture_graph(fn, config.device) for name, fn in fns.items()}
    clock = clock_for(config.device, flush_l2=cuda and job.flush_l2)
    rss = _rss_for(config.device)
    rejected: list[str] = []
    cpus = os.cpu_count() or 1
    gpu = None
    for _attempt in range((job.retries or 0) + 1):
        gpu_before = _gpu_check(config.device, state) if cuda else None  # outside the CPU window
        start = probe.snapshot()
        try:
            taken = sample_round(fns, clock=clock, options=job.options, rss=rss,
                                 calibrated=_calibration(config, state, cache_key))
        except Exception as exc:  # noqa: BLE001 - the configuration's status, not the round's end
            raise StageError(classify_error(exc), f"{type(exc).__name__}: {exc}") from exc
        usage = CpuUsage.between(start, probe.snapshot(), threads=config.threads, cpus=cpus)
        if cuda:
            from .cuda import cuda_index, merge_checks

            gpu = merge_checks(gpu_before, _gpu_check(config.device, state))
            reason = gpu.reason(cuda_index(config.device))
        else:
            reason = assess(usage, job.limits) if config.device == "cpu" else ""
        if cache_key in state.references and not reason:  # calibrated in a clean window only
            state.calls.setdefault(cache_key, (taken.calls_per_sample["reference"], taken.block_s["reference"]))
        if not reason:
            break
        rejected.append(reason)
    fields: dict[str, Any] = {
        "status": "contended" if reason else "ok",
        "message": f"every window of this round was contended: {reason}" if reason else "",
        "attempts": len(rejected) + (0 if reason else 1),
        "rejected": rejected,
        **usage.as_dict(),
        "warmup_steady": taken.warmup_steady,
        "warmup_calls": taken.warmup_calls,
        "calls_per_sample": taken.calls_per_sample,
        "reference_reused": taken.warmup_calls.get("reference", 1) == 0,
        "measured_at": round(time.time(), 3),
        "build_s": round(built - started, 4),
        "round_s": round(time.perf_counter() - started, 4),
        "samples_s": {name: [[float(f"{v:.5g}") for v in visit] for visit in visits]
                      for name, visits in taken.samples.items()},
        **_facts(workload),
    }
    if taken.host_s:
        fields.update(_host_fields(taken))
    if gpu is not None:
        fields.update(_gpu_fields(gpu))
    del workload, fns
    if cuda:
        torch.cuda.empty_cache()
    return fields


def _calibration(config: Any, state: WorkerState, cache_key: str) -> dict[str, Any] | None:
    """The reused reference's calibration (its warm-up skipped), at module level only. A model-level
    reference (a whole backbone) is warmed up beside every design like the design itself: the
    design's build writes a network's worth of fresh weights and evicts the backbone's from the
    caches, and a reference timed cold against a warm design reads as the design being cheaper."""
    if config.level == "model" or cache_key not in state.calls:
        return None
    return {"reference": state.calls[cache_key]}


def _gpu_check(device: str, state: WorkerState) -> Any:
    """Who holds the GPU now (:func:`suite.timing.cuda.gpu_check`)."""
    from .cuda import cuda_index, gpu_check

    return gpu_check(cuda_index(device), state.gpu_query)


Runner = Callable[[dict[str, Any], Job], tuple[str, Callable[[], dict[str, Any]]]]
"""A job's runner: an item's fields and the job -> the item's key and a callable measuring it."""


def _runner(job: Job, state: WorkerState) -> Runner:
    """The job's runner (:attr:`Job.runner`), or the latency round of a configuration."""
    if not job.runner:
        from .grid import Config

        def latency_round(raw: dict[str, Any], job: Job) -> tuple[str, Callable[[], dict[str, Any]]]:
            config = Config.from_wire(raw)
            return config.key(), lambda: measure_round(config, job, state)

        return latency_round
    import importlib

    module, _, name = job.runner.partition(":")
    return getattr(importlib.import_module(module), name)


def run_job(job: Job, out: Any = None, state: WorkerState | None = None) -> int:
    """Measure every item of ``job`` in this process, one ``ROUND`` line each (an item is a
    latency configuration, or what the job's runner measures: the regression gate's cases).

    Returns 0, or :data:`CUDA_ERROR_EXIT` when an item failed with an error of the CUDA context
    (:func:`suite.timing.cuda.is_cuda_error`): its line is written and the items after it are
    left to a fresh process, since every later CUDA call of this one would fail too."""
    from .cuda import is_cuda_error
    from .workloads import StageError, classify_error

    out = out or sys.stdout
    state = state or WorkerState()
    with state.apply_settings(job) as cuda_record:
        runner = _runner(job, state)
        settings = {**state.settings_record(), **cuda_record}
        for raw in job.items:
            key, measure = runner(raw, job)
            failure: BaseException | None = None
            try:
                fields = measure()
            except StageError as exc:
                failure = exc
                fields = {"status": exc.status, "message": str(exc)[:2000], **exc.details,
                          "traceback": format_traceback(exc)}
            except Exception as exc:  # noqa: BLE001
                failure = exc
                fields = {"status": classify_error(exc), "message": f"{type(exc).__name__}: {exc}"[:2000],
                          "traceback": format_traceback(exc)}
            spoiled = failure is not None and is_cuda_error(failure)
            if spoiled:
                fields["message"] = (f"{fields['message']} [a CUDA error: the rest of the round went to a fresh "
                                     "worker process]")[:2000]
            out.write(ROUND + json.dumps({"key": key, **fields, **settings}) + "\n")
            out.flush()
            if spoiled:
                return CUDA_ERROR_EXIT
    return 0


def _preload() -> None:
    """Import torch and the zoo, then freeze every object that exists now out of the garbage
    collector's reach: the timer's ``gc.collect()`` before each sampling window then takes
    microseconds instead of the 0.2 s a full collection over torch's objects takes."""
    import gc
    import importlib

    for name in _PRELOAD:
        importlib.import_module(name)
    from ..plugins import load_plugins_from_env

    load_plugins_from_env()  # the plugins the parent passed on ($ATTNBENCH_PLUGINS)
    gc.collect()
    gc.freeze()


def _serve() -> int:
    """Fork a child per job line on stdin; report its pid and, when it ends, its exit status.
    Refuses (exit :data:`FORK_REFUSED_EXIT`, the reason on stderr) to fork once CUDA is
    initialised in this process."""
    from .cuda import fork_refusal

    _preload()
    if refusal := fork_refusal():
        print(refusal, file=sys.stderr, flush=True)
        return FORK_REFUSED_EXIT
    print(READY, flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        job = Job.from_wire(json.loads(line))
        if refusal := fork_refusal():
            print(refusal, file=sys.stderr, flush=True)
            return FORK_REFUSED_EXIT
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:  # the child: a fresh process for this round
            code = 0
            try:
                code = run_job(job)
            except BaseException:  # noqa: BLE001 - reported through the exit code and stderr
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                os._exit(code)
        print(CHILD + str(pid), flush=True)
        _, status = os.waitpid(pid, 0)
        print(DONE + str(os.waitstatus_to_exitcode(status)), flush=True)
    return 0


def _once() -> int:
    _preload()
    job = Job.from_wire(json.loads(sys.stdin.readline()))
    print(CHILD + str(os.getpid()), flush=True)
    code = run_job(job)
    print(DONE + str(code), flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--serve"]:
        return _serve()
    if argv == ["--once"]:
        return _once()
    print("usage: python -m suite.timing.worker --serve | --once  (a job as one JSON line on stdin)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
