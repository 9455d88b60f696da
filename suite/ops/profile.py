"""Where one configuration's time goes: the self CPU time of every op of its step and of its
reference's step, from ``torch.profiler`` (or, on ONNX Runtime, from ORT's own profiler).

The steps are the latency stage's (:func:`suite.timing.workloads.build_workload`: the module
and its reference -- a 3x3 conv at module level, the backbone without attention at model level
-- forward or forward + backward, eager or ``torch.compile``). Each is called
:data:`WARMUP_CALLS` times, then ``calls`` times under ``torch.profiler.profile`` (CPU
activities, shapes not recorded); the profiler's averages by op give, per op, its *self* time
(the time in the op itself, not in the ops it calls), so that the ops of one step add up to the
step's total self time without counting a nested op twice.

Names are made comparable across configurations: a compiled graph's call
(``## Call CompiledFxGraph <hash> ##``) loses its hash, a compiled region
(``Torch-Compiled Region: <frame>/<compile>``) its ids, and inductor's C++ kernels, which record
themselves under ``graph_<i>_cpp_fused_...`` (inductor's ``cpp.enable_kernel_profile``, turned on
while compiling here so that the fused kernels appear by name instead of inside the graph's
call), lose their graph index.

Under ONNX Runtime (``--compile onnxruntime``), the module and its reference are exported as the
latency stage exports them (:func:`suite.timing.runtimes.exported_graph`, its cache included) and
run in a session with ORT's profiler on (``SessionOptions.enable_profiling``); each node's kernel
time counts under ``ort::<op type>``, and a run's time outside its kernels under
:data:`ORT_SESSION_OVERHEAD`. ORT's nodes are the optimised graph's (fused where ORT fuses).

Profiling costs time at every op it records, more for a step of many small ops: the times here
are inflated and are for the breakdown (which ops, what share), not for latency; the latency
stage's figures are the latency.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from ..timing.grid import Config
from ..timing.workloads import StageError, build_workload

__all__ = [
    "WARMUP_CALLS",
    "ROLES",
    "RUNTIMES",
    "OpTime",
    "op_times",
    "normalize_op",
    "profile_step",
    "profile_config",
    "ort_trace_times",
    "read_ort_trace",
    "profile_onnxruntime",
]

WARMUP_CALLS = 3
"""Calls of each step before it is profiled (the first call, which builds or compiles, happened
already in :func:`~suite.timing.workloads.build_workload`)."""

ROLES: tuple[str, ...] = ("module", "reference")
"""What a row's step is: the configuration's module (or model with it), or its reference."""

RUNTIMES: tuple[str, ...] = ("eager", "compile", "onnxruntime")
"""The values of the ``compile`` axis this stage breaks down (torch.profiler for the first two,
ONNX Runtime's profiler for the third); a configuration under another runtime is ``unsupported``."""

ORT_SESSION_OVERHEAD = "ort::session (self)"
"""The ONNX Runtime row that holds a run's time outside its nodes' kernels."""

_COMPILED_GRAPH = re.compile(r"^## Call CompiledFxGraph \S+ ##$")
_INDUCTOR_KERNEL = re.compile(r"^graph_\d+_(cpp_.*)$")
_COMPILED_REGION = re.compile(r"^Torch-Compiled Region: \d+/\d+$")


@dataclass(frozen=True)
class OpTime:
    """One op of a step: ``self_ms_per_call`` its self time per call of the step, ``share`` of
    the step's total self time, ``calls_per_step`` how often the step runs it, and
    ``total_self_ms_per_call`` the step's total self time (the same for every op of a step)."""

    op: str
    self_ms_per_call: float
    share: float
    calls_per_step: float
    total_self_ms_per_call: float


def normalize_op(name: str) -> str:
    """An op's name without what changes from one compilation to the next (see the module docstring)."""
    if _COMPILED_GRAPH.match(name):
        return "## Call CompiledFxGraph ##"
    if _COMPILED_REGION.match(name):
        return "Torch-Compiled Region"
    kernel = _INDUCTOR_KERNEL.match(name)
    return kernel.group(1) if kernel else name


def op_times(events: Iterable[tuple[str, float, int]], calls: int) -> list[OpTime]:
    """The ops of a step from ``(name, self time in microseconds, count)`` over ``calls`` calls,
    summed by :func:`normalize_op` name, largest self time first (then by name)."""
    if calls < 1:
        raise ValueError(f"calls must be >= 1, got {calls}")
    self_us: dict[str, float] = {}
    counts: dict[str, int] = {}
    for name, microseconds, count in events:
        op = normalize_op(name)
        self_us[op] = self_us.get(op, 0.0) + max(float(microseconds), 0.0)
        counts[op] = counts.get(op, 0) + int(count)
    total = sum(self_us.values())
    total_ms = total / calls / 1000.0
    return [OpTime(op, round(self_us[op] / calls / 1000.0, 6), round(self_us[op] / total, 6) if total else 0.0,
                   round(counts[op] / calls, 4), round(total_ms, 6))
            for op in sorted(self_us, key=lambda op: (-self_us[op], op))]


def profile_step(step: Callable[[], Any], calls: int, warmup: int = WARMUP_CALLS) -> list[OpTime]:
    """``step`` called ``warmup`` times, then ``calls`` times under ``torch.profiler`` (CPU
    activities, no shapes): its ops (:func:`op_times`)."""
    for _ in range(warmup):
        step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as profiler:
        for _ in range(calls):
            step()
    return op_times(((e.key, e.self_cpu_time_total, e.count) for e in profiler.key_averages()), calls)


@contextlib.contextmanager
def _named_kernels(config: Config) -> Iterator[None]:
    """While compiling ``config``: inductor's C++ kernels record themselves by name."""
    if config.compile != "compile":
        yield
        return
    from torch._inductor import config as inductor_config

    with inductor_config.patch({"cpp.enable_kernel_profile": True}):
        yield


def profile_config(config: Config, calls: int, warmup: int = WARMUP_CALLS) -> dict[str, Any]:
    """One configuration's record fields: the reference's name, the calls profiled, and ``ops``,
    one entry per role and op (:data:`ROLES`, :class:`OpTime`). A configuration that cannot be
    built, run or compiled raises :class:`~suite.timing.workloads.StageError` with its status."""
    if config.compile not in RUNTIMES:
        raise StageError("unsupported", f"the ops stage has no breakdown under {config.compile}; "
                                        f"it breaks down {', '.join(RUNTIMES)}")
    facts: dict[str, Any] = {}
    if config.compile == "onnxruntime":
        module_ops, reference_ops, reference_name, facts = _profile_onnxruntime(config, calls, warmup)
    else:
        with _named_kernels(config):
            workload = build_workload(config)
        module_ops = profile_step(workload.step, calls, warmup)
        reference_ops = profile_step(workload.reference_step, calls, warmup)
        reference_name = workload.reference_name
    return {
        "record": "ops", "reference": reference_name, "calls": calls, "warmup": warmup, **facts,
        "ops": [{"role": role, **asdict(op)} for role, ops in zip(ROLES, (module_ops, reference_ops), strict=True)
                for op in ops],
    }


# --- ONNX Runtime -----------------------------------------------------------------------------

def ort_trace_times(trace: list[dict[str, Any]], calls: int) -> list[OpTime]:
    """The ops of the last ``calls`` runs in an ONNX Runtime profile (``SessionOptions.enable_profiling``;
    the Chrome-trace events ``end_profiling`` writes, which also hold the warm-up's runs): each
    node's kernel inside those runs (``cat`` ``Node``, a name ending ``_kernel_time``) counts under
    ``ort::<op_name>``, and the runs' time outside their kernels (``model_run`` less the kernels)
    as :data:`ORT_SESSION_OVERHEAD`. A ``ValueError`` when the trace holds fewer runs."""
    runs = sorted((e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: float(e.get("ts", 0)))[-calls:]
    if len(runs) < calls:
        raise ValueError(f"the ONNX Runtime profile holds {len(runs)} runs, fewer than the {calls} profiled")
    windows = [(float(r.get("ts", 0)), float(r.get("ts", 0)) + float(r.get("dur", 0))) for r in runs]
    events: list[tuple[str, float, int]] = []
    for event in trace:
        name, ts = str(event.get("name", "")), float(event.get("ts", 0))
        if event.get("cat") == "Node" and name.endswith("_kernel_time") and any(a <= ts <= b for a, b in windows):
            op_name = (event.get("args") or {}).get("op_name", name)
            events.append((f"ort::{op_name}", float(event.get("dur", 0)), 1))
    outside = sum(b - a for a, b in windows) - sum(us for _, us, _ in events)
    events.append((ORT_SESSION_OVERHEAD, max(outside, 0.0), calls))
    return op_times(events, calls)


def read_ort_trace(path: str | Path) -> list[dict[str, Any]]:
    """The events of the profile ONNX Runtime wrote to ``path``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return data if isinstance(data, list) else list(data.get("traceEvents", []))


def _profile_onnxruntime(config: Config, calls: int,
                         warmup: int) -> tuple[list[OpTime], list[OpTime], str, dict[str, Any]]:
    """The ONNX Runtime breakdown of ``config`` (the module's ops, the reference's, the reference's
    name, and which exporter made each graph): both built as the latency stage builds them,
    exported (or found in the export cache) by :func:`suite.timing.runtimes.exported_graph`, each
    run in a profiling session (:func:`profile_onnxruntime`). Settings ONNX Runtime is not
    measured in are ``unsupported`` (:func:`suite.timing.runtimes.check_supported`), before
    anything is built."""
    from ..timing import runtimes
    from ..timing.workloads import classify_error, instantiate, make_input, prepare

    runtimes.check_supported(config)
    raw_module, raw_reference, reference_name = instantiate(config)
    assert raw_reference is not None
    try:
        module, reference = prepare(raw_module, config), prepare(raw_reference, config)
        x = make_input(config)
    except Exception as exc:  # noqa: BLE001 - a row
        raise StageError(classify_error(exc), f"{type(exc).__name__}: {exc}") from exc
    graphs = [runtimes.exported_graph(m, x, config, role) for role, m in zip(ROLES, (module, reference), strict=True)]
    ops = [profile_onnxruntime(graph.path, x, config.threads, calls, warmup) for graph in graphs]
    facts = {"exporter": graphs[0].exporter, "reference_exporter": graphs[1].exporter}
    return ops[0], ops[1], reference_name, facts


def profile_onnxruntime(path: Path, x: torch.Tensor, threads: int, calls: int,
                        warmup: int = WARMUP_CALLS) -> list[OpTime]:
    """The ops of the ONNX graph at ``path`` run on ``x`` by ONNX Runtime: a session set as the
    latency stage sets its own (:func:`suite.timing.runtimes.onnxruntime_step`: CPU provider,
    ``threads`` intra-op threads, sequential, every graph optimisation, input and output bound
    once) with its profiler on; ``warmup`` + ``calls`` runs, the last ``calls`` counted
    (:func:`ort_trace_times`). The profile file is removed."""
    import tempfile

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="attnbench-ort-") as folder:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        source = x.detach().contiguous().numpy()
        (first,) = session.run(None, {session.get_inputs()[0].name: source})  # a warm-up run too
        output = first.copy()
        binding = session.io_binding()
        binding.bind_ortvalue_input(session.get_inputs()[0].name, ort.OrtValue.ortvalue_from_numpy(source))
        binding.bind_ortvalue_output(session.get_outputs()[0].name, ort.OrtValue.ortvalue_from_numpy(output))
        for _ in range(max(warmup - 1, 0) + calls):
            session.run_with_iobinding(binding)
        trace = read_ort_trace(session.end_profiling())
    return ort_trace_times(trace, calls)
