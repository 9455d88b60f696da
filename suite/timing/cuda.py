"""The GPU-only pieces of latency measurement: the device, CUDA graphs, the L2 flush, host-bound
samples, other processes on the GPU, errors that spoil a CUDA context, and forking.

How a GPU row is timed (``python -m suite latency --device cuda[:N]``):

* **The device.** Each worker process calls ``torch.cuda.set_device`` with the job's device
  before it builds anything (:func:`set_device`), and the clock records its events on that
  device's current stream (:class:`suite.timing.timer.CudaEventClock`); the roofline's peaks are
  measured on the same device. ``cuda_device`` in every round record is the index in force.
* **Eager launch** (``timing_mode`` ``eager-launch``, the default). A sample is the GPU time
  between two CUDA events around a block of back-to-back calls of the step, each call launching
  its kernels from Python; the end event is synchronized before it is read. The host's time to
  enqueue the block is read beside it (``perf_counter`` around the launch loop, before the
  synchronize). A spin kernel enqueued before the start event keeps the first launch's latency
  out of the sample (:class:`~suite.timing.timer.CudaEventClock`). A small gate is 5-10 kernels
  of 5-15 us while Python's dispatch costs 50-100 us
  a step: the GPU then waits for the host, the event time is host dispatch, and a ratio to a 3x3
  conv compares Python overheads. A callable whose host enqueue time is at least
  :data:`HOST_BOUND_SHARE` of its event time (median over the round's samples) is
  ``host_bound`` in the round record, and a row whose module was host-bound in at least half its
  rounds says ``host_bound`` (:mod:`suite.timing.round_stats`).
* **CUDA graph** (``--cuda-graph on``, ``timing_mode`` ``cuda-graph``). After a warm-up on a side
  stream, each step (the module's, the reference's, the copy) is captured once into a
  ``torch.cuda.CUDAGraph`` and timed by ``graph.replay()`` (:func:`capture_graph`, the pattern of
  PyTorch's CUDA-graph notes): one launch a step, no Python dispatch inside, what a graphed or
  ``mode="reduce-overhead"`` model pays. Autocast runs with its weight-cast cache off, as graph
  capture requires. A step that cannot be captured (a host synchronisation, a CPU tensor, a
  data-dependent shape; a training step with an optimizer that is not capturable) is a row with
  status ``graph_error`` and the reason.
* **L2** (``--flush-l2``). The timer visits the same input again and again, so a small shape is
  read from the L2 cache. With the flag, every timed call is preceded by a write of a buffer
  twice the device's L2 (:func:`make_l2_flush`), outside its events, and each call gets its own
  pair of events (as Triton's ``do_bench`` does); ``flush_l2`` is in every row.
* **Other processes** (:func:`gpu_check`). Before and after each sampling window the worker asks
  which compute processes hold the device (``pynvml`` if importable, else ``nvidia-smi``). One
  that is not this process's own (:func:`is_own`: itself, an ancestor such as the worker server
  or the command that started it, a descendant such as inductor's compile workers, or a process
  of its session, which the worker server starts anew and which holds only the suite's processes)
  makes the window ``contended``, sampled again like a CPU-contended one and, if every window
  is, the round. Where the listing cannot be read, or does not show this process
  (a container's PID namespace), the check is ``unverified`` and says why.
* **Errors that spoil the context** (:func:`is_cuda_error`). After an illegal address or a
  device-side assert every later CUDA call of the process fails. The worker writes that
  configuration's result, then exits with :data:`suite.timing.worker.CUDA_ERROR_EXIT`, and the
  pool measures the rest of the round in a fresh process.
* **No fork after CUDA** (:func:`fork_refusal`). A child forked from a process with CUDA
  initialised cannot use CUDA; the worker server refuses to fork then.
"""

from __future__ import annotations

import functools
import os
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "CUDA_ERROR_MARKERS",
    "GpuCheck",
    "GpuProcess",
    "GpuQuery",
    "HOST_BOUND_SHARE",
    "TIMING_MODES",
    "capture_graph",
    "fork_refusal",
    "gpu_check",
    "host_bound",
    "is_cuda_error",
    "is_own",
    "l2_flush_bytes",
    "make_l2_flush",
    "cuda_index",
    "merge_checks",
    "own_pids",
    "query_gpu_processes",
    "set_device",
]

TIMING_MODES = {False: "eager-launch", True: "cuda-graph"}
"""``timing_mode`` of a GPU row by whether its steps were replayed from CUDA graphs."""

HOST_BOUND_SHARE = 0.9
"""A callable is host-bound when its host enqueue time is at least this share of its GPU time."""

CUDA_ERROR_MARKERS = ("cuda error", "device-side assert", "illegal memory access", "illegal address",
                      "cudaerror", "unspecified launch failure", "cublas_status_execution_failed")
"""Words of an exception's message (lower case) that name an error of the CUDA context."""

FALLBACK_FLUSH_BYTES = 256 << 20
"""The flush buffer where the device does not state its L2 size (larger than any GPU's L2 x 2)."""


def cuda_index(device: str | torch.device) -> int:
    """The index of the CUDA device ``device`` names (CUDA's current device for an index-less ``cuda``)."""
    index = torch.device(device).index
    return int(index) if index is not None else int(torch.cuda.current_device())


def set_device(device: str | torch.device) -> int:
    """Make ``device`` this process's current CUDA device (an index-less ``cuda`` keeps the
    current one); return its index."""
    index = cuda_index(device)
    torch.cuda.set_device(index)
    return index


def is_cuda_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is an error of the CUDA context:
    ``torch.cuda.CudaError``, ``torch.AcceleratorError``, or a message naming one
    (:data:`CUDA_ERROR_MARKERS`). An out-of-memory error is not one."""
    types = tuple(t for t in (getattr(torch.cuda, "CudaError", None), getattr(torch, "AcceleratorError", None))
                  if isinstance(t, type))
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, torch.OutOfMemoryError):
            return False
        text = str(current).lower()
        if (types and isinstance(current, types)) or any(marker in text for marker in CUDA_ERROR_MARKERS):
            return True
        current = current.__cause__ or current.__context__
    return False


def fork_refusal() -> str:
    """Why this process must not fork a worker now (CUDA is initialised in it: a forked child
    cannot use it), or ``""`` when it may."""
    if torch.cuda.is_initialized():
        return ("the latency worker server has initialised CUDA (a plugin or a module imported at start-up "
                "did), and a child forked from it cannot use CUDA; it forks none. Run with --isolation spawn, "
                "or keep CUDA calls out of import time")
    return ""


def l2_flush_bytes(device: str | torch.device) -> int:
    """Bytes of the buffer an L2 flush writes: twice the device's L2 cache
    (``torch.cuda.get_device_properties(device).L2_cache_size``)."""
    l2 = int(getattr(torch.cuda.get_device_properties(torch.device(device)), "L2_cache_size", 0) or 0)
    return 2 * l2 if l2 > 0 else FALLBACK_FLUSH_BYTES


def make_l2_flush(device: str | torch.device) -> Callable[[], Any]:
    """A callable that overwrites a buffer of :func:`l2_flush_bytes` on ``device`` (enqueued on its
    current stream), evicting whatever the L2 cache held."""
    buffer = torch.empty(l2_flush_bytes(device) // 4, dtype=torch.int32, device=torch.device(device))

    def flush() -> Any:
        return buffer.zero_()

    return flush


def capture_graph(fn: Callable[[], Any], device: str | torch.device, warmup_calls: int = 3) -> Callable[[], Any]:
    """``fn`` captured once into a ``torch.cuda.CUDAGraph``; returns its ``replay``.

    As PyTorch's notes prescribe: ``warmup_calls`` calls on a side stream (which waits for the
    current one) so that lazy initialisation and the allocator settle outside the capture, the
    current stream waits for the side stream, then one call inside ``torch.cuda.graph``. A step
    that cannot be captured raises :class:`suite.timing.workloads.StageError` with status
    ``graph_error`` (``oom`` when the capture ran out of memory).
    """
    from .workloads import StageError, classify_error

    device = torch.device(device)
    try:
        current = torch.cuda.current_stream(device)
        side = torch.cuda.Stream(device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(warmup_calls):
                fn()
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
    except Exception as exc:  # noqa: BLE001 - the configuration's status
        message = f"the step could not be captured into a CUDA graph: {type(exc).__name__}: {exc}"
        if classify_error(exc) == "oom":
            raise StageError("oom", message) from exc
        raise StageError("graph_error", message) from exc
    return graph.replay


def host_bound(host_s: Sequence[float], event_s: Sequence[float]) -> bool:
    """Whether the samples are host-bound: the median of host enqueue time over GPU time per
    sample (paired in order) is at least :data:`HOST_BOUND_SHARE`."""
    shares = [h / e for h, e in zip(host_s, event_s, strict=False) if e > 0]
    return bool(shares) and statistics.median(shares) >= HOST_BOUND_SHARE


@dataclass(frozen=True)
class GpuProcess:
    """A compute process on a GPU: its pid and the GPU memory it holds (MiB, when known)."""

    pid: int
    used_mib: float | None = None

    def describe(self) -> str:
        return f"pid {self.pid}" + (f" ({self.used_mib:.0f} MiB)" if self.used_mib is not None else "")


GpuQuery = Callable[[int], list[GpuProcess] | None]
"""Device index -> the compute processes on that device, or ``None`` when nothing can tell."""


@functools.cache
def _pynvml() -> Any:
    """The ``pynvml`` module, or ``None`` where it is not installed (asked once per process)."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return None
    return pynvml


def _query_pynvml(target: str) -> list[GpuProcess] | None:
    pynvml = _pynvml()
    if pynvml is None:
        return None
    from ..env import nvml_handle

    try:
        pynvml.nvmlInit()
        try:
            found = pynvml.nvmlDeviceGetComputeRunningProcesses(nvml_handle(pynvml, target))
        finally:
            pynvml.nvmlShutdown()
    except (pynvml.NVMLError, TypeError, ValueError):
        return None
    return [GpuProcess(int(p.pid), p.usedGpuMemory / 2**20 if p.usedGpuMemory else None) for p in found]


def _query_nvidia_smi(target: str) -> list[GpuProcess] | None:
    command = ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits",
               f"--id={target}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    processes = []
    for line in done.stdout.splitlines():
        pid, _, used = (part.strip() for part in line.partition(","))
        if pid.isdigit():
            processes.append(GpuProcess(int(pid), float(used) if used.replace(".", "", 1).isdigit() else None))
    return processes


def query_gpu_processes(index: int) -> list[GpuProcess] | None:
    """The compute processes on CUDA device ``index`` (NVML through ``pynvml`` if importable, else
    ``nvidia-smi --query-compute-apps``, the device named by its UUID); ``None`` when neither
    answers."""
    from ..env import device_target

    target = device_target(index)  # the UUID: torch's index is not NVML's under CUDA_VISIBLE_DEVICES
    found = _query_pynvml(target)
    return found if found is not None else _query_nvidia_smi(target)


def _parent_of(pid: int) -> int:
    """The parent pid of ``pid`` from ``/proc/PID/stat`` (0 when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return int(handle.read().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def own_pids() -> frozenset[int]:
    """This process and its ancestors (the worker server, the command that started it, ...)."""
    pids = {os.getpid(), os.getppid()}
    current = os.getppid()
    while current > 1 and len(pids) < 64:
        current = _parent_of(current)
        if current in pids:
            break
        pids.add(current)
    return frozenset(p for p in pids if p > 0)


def _session_of(pid: int) -> int | None:
    """The session id of ``pid`` (``None`` when the process is gone or not ours to ask about)."""
    try:
        return os.getsid(pid)
    except OSError:  # ProcessLookupError, PermissionError
        return None


def _descends_from(pid: int, ancestor: int) -> bool:
    """Whether ``ancestor`` is among the parents of ``pid`` (``/proc``; at most 64 levels)."""
    current = pid
    for _ in range(64):
        current = _parent_of(current)
        if current == ancestor:
            return True
        if current <= 1:
            return False
    return False


def is_own(pid: int, own: frozenset[int] | None = None) -> bool:
    """Whether ``pid`` is this process's own: this process or an ancestor (``own``, by default
    :func:`own_pids`), a descendant (inductor's compile workers, started by the worker), or a
    process of this process's session. The latency workers run in a session of their own (the
    worker server is started with ``start_new_session``), which holds only the worker server,
    its workers and what they started, such as compile workers started beside this worker."""
    if pid in (own_pids() if own is None else own):
        return True
    if _descends_from(pid, os.getpid()):
        return True
    session = _session_of(pid)
    return session is not None and session == _session_of(0)


@dataclass(frozen=True)
class GpuCheck:
    """Who else held the GPU around a window: ``state`` ``exclusive``, ``shared`` (``others``
    listed) or ``unverified`` (``note`` says why)."""

    state: str
    others: tuple[GpuProcess, ...] = ()
    note: str = ""

    def reason(self, index: int) -> str:
        """Why the window is contended, or ``""``."""
        if self.state != "shared":
            return ""
        return f"other processes use GPU {index}: " + ", ".join(p.describe() for p in self.others)


def gpu_check(index: int, query: GpuQuery | None = None, own: frozenset[int] | None = None) -> GpuCheck:
    """Compare the compute processes on device ``index`` (``query``, by default
    :func:`query_gpu_processes`) with this process's own (:func:`is_own`; ``own``: this process
    and its ancestors, by default :func:`own_pids`)."""
    listed = (query or query_gpu_processes)(index)
    if listed is None:
        return GpuCheck("unverified", note="neither pynvml nor nvidia-smi answered")
    if os.getpid() not in {p.pid for p in listed}:
        return GpuCheck("unverified", note=(
            "this process is not among the GPU's processes listed (another PID namespace?), so others "
            "cannot be told apart"))
    own = own_pids() if own is None else own
    others = tuple(p for p in listed if not is_own(p.pid, own))
    return GpuCheck("shared", others) if others else GpuCheck("exclusive")


def merge_checks(first: GpuCheck, second: GpuCheck) -> GpuCheck:
    """The two checks of a window as one: shared if either saw others, else unverified if either
    could not tell, else exclusive."""
    if first.state == "shared" or second.state == "shared":
        others = {p.pid: p for p in (*first.others, *second.others)}
        return GpuCheck("shared", tuple(others.values()))
    if first.state == "unverified" or second.state == "unverified":
        return first if first.state == "unverified" else second
    return first
