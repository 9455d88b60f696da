"""The runtimes a configuration can be timed under besides eager PyTorch, and their caches.

The ``compile`` axis of :class:`suite.timing.grid.Config` names the runtime: ``eager``;
``compile``, ``torch.compile`` with inductor (built in :mod:`suite.timing.workloads`; here only
its on-disk cache); ``onnxruntime`` and ``openvino``, both running a graph exported with
``torch.onnx.export`` on the CPU (here). The reference of a configuration (the 3x3 conv, or the
backbone without attention) runs under the same runtime as the module, so the ratio compares two
graphs the same runtime executes.

Exported runtimes measure the deployed case only: ``forward`` mode (eval, no gradient), fp32,
the CPU and a contiguous (NCHW) input. Any other setting is ``unsupported``
(:func:`check_supported`), decided before anything is built; so is a runtime whose package is not
installed (the ``runtimes`` extra: ``pip install 'attnbench[runtimes]'``; OpenVINO:
``attnbench[openvino]``).

Export (:func:`exported_graph`). The module in eval mode is exported with this torch's default
exporter (``dynamo=True``: ``torch.export`` and onnxscript); where that fails, with the TorchScript
exporter (``dynamo=False``). The round records which one made the graph (``exporter``). Both
failing is status ``export_error``, its message naming the operator the exporter stopped at where
the exception says (:func:`failed_op`; also the round's ``failed_op``).

Export cache. Rounds run in fresh processes, and exporting is seconds per module (tens of
seconds for a backbone), so the exported file is kept in :func:`cache_root` ``/onnx``, named by a
digest of all that decides the graph (:func:`export_cache_key`): the role (module or reference),
the configuration's axes except the runtime and the thread count, the source files of every class
in the module, a hash of the module's weights and buffers, and the torch, onnx and onnxscript
versions. A later round (or run) finds it and only creates the session (``export_cache``:
``hit`` / ``miss``).

ONNX Runtime (:func:`onnxruntime_step`): an ``InferenceSession`` on ``CPUExecutionProvider`` with
``intra_op_num_threads`` = the configuration's threads, ``inter_op_num_threads`` = 1, sequential
execution and every graph optimisation (``ORT_ENABLE_ALL``). The timed step runs the session on an
IO binding made once: the input bound to the memory of the torch input (no copy), the output to a
preallocated array, so a call is ORT's run without building feeds or allocating the output.

OpenVINO (:func:`openvino_step`): the same exported file compiled for ``CPU`` with
``INFERENCE_NUM_THREADS`` = threads, one stream, the latency hint and fp32 inference precision
(the CPU plugin would otherwise run bf16 on processors with bf16 units); the timed step is an
infer request whose input tensor shares the torch input's memory.

``compile_s`` of an exported configuration is the module's export (nothing on a cache hit) plus
its session creation (``export_s`` + ``session_s``). The first run of each session checks that it
runs, and ``runtime_max_abs_err`` records the largest difference of the module's output from the
eager output.

torch.compile's cache. Inductor keeps compiled graphs on disk (the FX graph cache and the
AOTAutograd cache, both on by default in torch >= 2.4) under ``TORCHINDUCTOR_CACHE_DIR``;
:func:`runtime_environment` sets it to :func:`cache_root` ``/inductor`` for the worker processes
(unless the caller set it), so that the rounds after the first, and later runs, load the compiled
graph instead of compiling it again. :class:`CompileCacheCount` reads from torch's counters
whether a compile hit that cache (``compile_cache``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import json
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .grid import Config

__all__ = [
    "EXPORTED_RUNTIMES",
    "CompileCacheCount",
    "RuntimeStep",
    "cache_root",
    "check_supported",
    "export_cache_key",
    "exported_graph",
    "exported_step",
    "failed_op",
    "runtime_environment",
    "runtime_versions",
    "unsupported_reason",
]

EXPORTED_RUNTIMES: tuple[str, ...] = ("onnxruntime", "openvino")
"""Values of the ``compile`` axis that run a graph exported with ``torch.onnx.export``."""

PACKAGES: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("onnxruntime", "onnx", "onnxscript"),
    "openvino": ("openvino", "onnx", "onnxscript"),
}
"""The packages whose versions a run under an exported runtime records in its environment."""

REQUIRED: dict[str, tuple[str, ...]] = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "onnx")}
"""The packages without which a runtime's rows are ``unsupported`` (onnxscript only feeds the
default exporter; without it the TorchScript exporter is used)."""

EXPORT_FORMAT = 1
"""Part of every export cache key: raised when the way graphs are exported here changes."""

EXPORTERS: tuple[tuple[str, bool], ...] = (("dynamo", True), ("torchscript", False))
"""The exporters tried in turn: ``(name, torch.onnx.export's dynamo argument)``."""


# --- what a runtime measures ----------------------------------------------------------------------

def unsupported_reason(config: Config) -> str:
    """Why ``config`` cannot run under its exported runtime (empty when it can); the setting is
    checked before the package, so the reason is the same on every machine."""
    if config.compile not in EXPORTED_RUNTIMES:
        return ""
    runtime = config.compile
    wrong = [
        (config.mode != "forward", f"mode {config.mode}: {runtime} runs inference only (forward)"),
        (config.dtype != "fp32", f"dtype {config.dtype}: {runtime} rows are fp32 (the exported graph is fp32)"),
        (config.device != "cpu", f"device {config.device}: {runtime} is measured on the CPU"),
        (config.memory_format != "contiguous",
         f"memory format {config.memory_format}: the exported graph takes a contiguous NCHW input"),
    ]
    for is_wrong, reason in wrong:
        if is_wrong:
            return reason
    for package in REQUIRED[runtime]:
        if not _importable(package):
            return f"{package} is not installed"
    return ""


def check_supported(config: Config) -> None:
    """Raise ``StageError('unsupported', reason)`` where :func:`unsupported_reason` gives one."""
    from .workloads import StageError

    if reason := unsupported_reason(config):
        raise StageError("unsupported", reason)


def _importable(package: str) -> bool:
    """Whether ``package`` is installed (found, not imported: the export's packages are imported
    only when a graph is exported)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def runtime_versions(runtimes: Iterable[str]) -> dict[str, str]:
    """``{package}_version`` of each package the runtimes among ``runtimes`` use (``absent`` where
    it is not installed), for the environment of a run that measures them."""
    from ..env import package_version

    packages = dict.fromkeys(p for r in runtimes for p in PACKAGES.get(r, ()))
    return {f"{p}_version": package_version(p) for p in packages}


# --- caches ---------------------------------------------------------------------------------------

def cache_root() -> Path:
    """Where this stage caches exported graphs and compiled code: ``latency`` in the suite's cache
    (``$ATTNBENCH_CACHE``, else ``$XDG_CACHE_HOME/attnbench``, else ``~/.cache/attnbench``)."""
    from ..accuracy.data import default_cache_dir

    return default_cache_dir() / "latency"


def runtime_environment(runtimes: Iterable[str], base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment variables worker processes need for ``runtimes``: with ``compile``,
    ``TORCHINDUCTOR_CACHE_DIR`` at :func:`cache_root` ``/inductor``, unless ``base`` (default:
    this process's environment) already sets it."""
    base = os.environ if base is None else base
    if "compile" in runtimes and "TORCHINDUCTOR_CACHE_DIR" not in base:
        return {"TORCHINDUCTOR_CACHE_DIR": str(cache_root() / "inductor")}
    return {}


_CACHE_COUNTERS = (("inductor", "fxgraph_cache_hit"), ("aot_autograd", "autograd_cache_hit"),
                   ("inductor", "fxgraph_cache_miss"), ("aot_autograd", "autograd_cache_miss"))


class CompileCacheCount:
    """Whether the compiles inside a ``with`` block loaded their graphs from inductor's on-disk
    caches: :attr:`outcome` is ``hit`` (only hits), ``miss`` (only misses), ``partial`` (both) or
    ``bypass`` (neither counted: a cache off, or a graph it refuses)."""

    def __init__(self) -> None:
        self.outcome = "bypass"
        self._before: list[int] = []

    @staticmethod
    def _read() -> list[int]:
        from torch._dynamo.utils import counters

        return [int(counters[group][name]) for group, name in _CACHE_COUNTERS]

    def __enter__(self) -> CompileCacheCount:
        self._before = self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        delta = [after - before for after, before in zip(self._read(), self._before, strict=True)]
        hits, misses = delta[0] + delta[1], delta[2] + delta[3]
        self.outcome = {(True, False): "hit", (False, True): "miss", (True, True): "partial"}.get(
            (hits > 0, misses > 0), "bypass")


def _code_digest(module: nn.Module) -> str:
    """A hash of the source files of every class in ``module`` and their bases (torch's own files
    are left to the torch version in the key)."""
    torch_dir = str(Path(torch.__file__).parent)
    files: set[str] = set()
    for sub in module.modules():
        for cls in type(sub).__mro__:
            with contextlib.suppress(TypeError, OSError):
                path = inspect.getsourcefile(cls)
                if path and not path.startswith(torch_dir):
                    files.add(path)
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(Path(path).name.encode() + b"\0" + Path(path).read_bytes())
    return digest.hexdigest()


def _weights_digest(module: nn.Module) -> str:
    """A hash of every parameter and buffer of ``module`` (names, dtypes, shapes, values)."""
    digest = hashlib.sha256()
    for name, value in module.state_dict().items():
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def export_cache_key(module: nn.Module, config: Config, role: str) -> dict[str, Any]:
    """What decides the exported graph of ``module`` (``role``: ``module`` or ``reference``): the
    configuration's axes but the runtime and threads, its code, the exporting libraries' versions
    and the module's weights. The reference's key names neither the attention type nor its
    weights: one export of the 3x3 conv or plain backbone serves every design of a shape, as one
    eager reference serves every design a worker visits (its weights, drawn after the design's
    from :data:`~suite.timing.workloads.WEIGHT_SEED`, differ by design and not its speed)."""
    from ..env import package_version

    axes = {k: v for k, v in asdict(config).items() if k not in ("stage", "compile", "threads")}
    key: dict[str, Any] = {"format": EXPORT_FORMAT, "role": role, "axes": axes, "code": _code_digest(module),
                           "versions": {p: package_version(p) for p in ("torch", "onnx", "onnxscript")}}
    if role == "reference":
        axes.pop("attn")
    else:
        key["weights"] = _weights_digest(module)
    return key


# --- export ---------------------------------------------------------------------------------------

@dataclass
class ExportedGraph:
    """An exported ONNX file: which exporter made it, whether it came from the cache, the seconds
    exporting took (0 on a hit)."""

    path: Path
    exporter: str
    cache: str
    seconds: float


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_OP_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"No ONNX function found for <OpOverload\(op='(?P<op>[\w.]+)', overload='(?P<overload>\w+)'\)>"),
    re.compile(r"Unsupported FX nodes: \{[^}]*?\[\s*'(?P<op>[\w.:]+)'"),
    re.compile(r"target=torch\.ops\.(?P<op>[\w.]+)\]"),
    re.compile(r"Exporting the operator '?(?P<op>[\w:.]+?)'? to ONNX"),
    re.compile(r"ONNX export of operator (?P<op>[\w:.]+)"),
    re.compile(r"Could not find an implementation for (?P<op>\w+)\(\d+\)"),
    re.compile(r"Op \((?P<op>\w+)\)"),
    re.compile(r"\b(?P<op>aten(?:::|\.)[A-Za-z_][\w.]*)"),
)
"""Where exporters and runtimes name the operator that failed, most specific first: the dynamo
exporter's dispatch error and its unsupported FX nodes, the TorchScript exporter's unsupported
operator, ONNX Runtime's missing kernel or failing node, then any ``aten`` operator."""


def failed_op(text: str) -> str:
    """The operator an export or runtime error names (``aten._linalg_eigh.default``,
    ``aten::histc``, an ONNX op type); empty where it names none."""
    text = _ANSI.sub("", text)
    for pattern in _OP_PATTERNS:
        if match := pattern.search(text):
            groups = match.groupdict()
            return f"{groups['op']}.{groups['overload']}" if groups.get("overload") else groups["op"]
    return ""


def _summary(exc: BaseException) -> str:
    """One line of an exporter's exception: the dynamo exporter's "Exception summary" line where
    it has one (its first line only says which step failed), else the first line."""
    text = _ANSI.sub("", str(exc))
    _, found, summary = text.partition("## Exception summary")
    lines = [line.strip() for line in (summary if found else text).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:400]


def _export_once(module: nn.Module, x: Tensor, path: Path, dynamo: bool) -> None:
    """``torch.onnx.export`` of ``module`` at ``x`` into ``path`` (one file, static shapes)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        kwargs: dict[str, Any] = {"external_data": False} if dynamo else {}
        torch.onnx.export(module, (x,), str(path), dynamo=dynamo, input_names=["input"],
                          output_names=["output"], verbose=False, **kwargs)


def _export(module: nn.Module, x: Tensor, path: Path) -> str:
    """Export with each of :data:`EXPORTERS` until one succeeds; its name. Every one failing is a
    ``StageError('export_error')`` naming the operator (``details['failed_op']``)."""
    from .workloads import StageError

    failures: list[tuple[str, BaseException]] = []
    for name, dynamo in EXPORTERS:
        try:
            _export_once(module, x, path, dynamo)
            return name
        except Exception as exc:  # noqa: BLE001 - the next exporter, or a row
            failures.append((name, exc))
    op = next((found for _, exc in failures if (found := failed_op(str(exc)))), "")
    where = f" at {op}" if op else ""
    tried = "; ".join(f"{name} exporter: {_summary(exc)}" for name, exc in failures)
    raise StageError("export_error", f"torch.onnx.export failed{where} ({tried})", details={"failed_op": op})


def exported_graph(module: nn.Module, x: Tensor, config: Config, role: str, root: Path | None = None) -> ExportedGraph:
    """The ONNX file of ``module`` at input ``x``: from the export cache (``root``, default
    :func:`cache_root` ``/onnx``) where an equal export is there, else exported and stored."""
    key = export_cache_key(module, config, role)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    folder = root if root is not None else cache_root() / "onnx"
    stem = f"{config.arch or 'module'}-{config.attn if role == 'module' else 'reference'}-{digest}"
    path, sidecar = folder / f"{stem}.onnx", folder / f"{stem}.json"
    if path.is_file() and sidecar.is_file():
        with contextlib.suppress(OSError, ValueError, KeyError):
            return ExportedGraph(path, json.loads(sidecar.read_text())["exporter"], "hit", 0.0)
    from ..records import write_text_atomic

    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{stem}.{os.getpid()}.partial.onnx"
    started = time.perf_counter()
    try:
        exporter = _export(module, x, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    write_text_atomic(sidecar, json.dumps({"exporter": exporter, "key": key}, sort_keys=True))
    return ExportedGraph(path, exporter, "miss", seconds)


# --- sessions -------------------------------------------------------------------------------------

@dataclass
class RuntimeStep:
    """A timed step under an exported runtime and what building it recorded: ``output`` (the first
    run's), ``seconds`` (export + session creation) and the ``facts`` of its round."""

    step: Callable[[], Any]
    output: Any
    seconds: float
    facts: dict[str, Any] = field(default_factory=dict)


def onnxruntime_step(path: Path, x: Tensor, config: Config) -> tuple[Callable[[], Any], str]:
    """An ONNX Runtime session of ``path`` (see the module docstring) and its IO-bound step, which
    returns the output array; and the runtime's version."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = config.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its warnings would fill the worker's stderr
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    source = x.detach().numpy()
    (first,) = session.run(None, {session.get_inputs()[0].name: source})
    output = first.copy()
    binding = session.io_binding()
    binding.bind_ortvalue_input(session.get_inputs()[0].name, ort.OrtValue.ortvalue_from_numpy(source))
    binding.bind_ortvalue_output(session.get_outputs()[0].name, ort.OrtValue.ortvalue_from_numpy(output))

    def step() -> Any:
        session.run_with_iobinding(binding)
        return output

    return step, f"onnxruntime {ort.__version__}"


def openvino_step(path: Path, x: Tensor, config: Config) -> tuple[Callable[[], Any], str]:
    """An OpenVINO CPU compilation of ``path`` (see the module docstring) and its step, which
    returns the output array; and the runtime's version."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {
        "INFERENCE_NUM_THREADS": config.threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(x.detach().numpy(), shared_memory=True))

    def step() -> Any:
        request.infer()
        return request.get_output_tensor().data

    from ..env import package_version

    return step, f"openvino {package_version('openvino')}"


SESSIONS: dict[str, Callable[[Path, Tensor, Config], tuple[Callable[[], Any], str]]] = {
    "onnxruntime": onnxruntime_step,
    "openvino": openvino_step,
}
"""How each exported runtime loads a graph into a timed step."""


def exported_step(module: nn.Module, x: Tensor, config: Config, role: str, *,
                  expected: Tensor | None = None) -> RuntimeStep:
    """``module`` exported (or found in the cache) and loaded into ``config.compile``'s runtime;
    its first run checks that it runs (``StageError('error')`` naming the failing operator where
    the runtime does), compared with ``expected`` (the eager output) where given. Facts are named
    for ``role`` (``reference_exporter`` ...) except the module's."""
    from .workloads import StageError

    graph = exported_graph(module, x, config, role)
    started = time.perf_counter()
    try:
        step, version = SESSIONS[config.compile](graph.path, x, config)
        session_s = time.perf_counter() - started
        output = step()
    except Exception as exc:  # noqa: BLE001 - a row
        op = failed_op(str(exc))
        raise StageError("error", f"{config.compile} could not run the exported graph{f' at {op}' if op else ''}: "
                                  f"{type(exc).__name__}: {exc}", details={"failed_op": op}) from exc
    prefix = "" if role == "module" else f"{role}_"
    facts: dict[str, Any] = {f"{prefix}exporter": graph.exporter, f"{prefix}export_cache": graph.cache,
                             f"{prefix}export_s": round(graph.seconds, 4), f"{prefix}session_s": round(session_s, 4),
                             "runtime_version": version}
    if expected is not None:
        difference = torch.tensor(output).reshape(expected.shape) - expected.detach()
        facts[f"{prefix}runtime_max_abs_err"] = float(f"{difference.abs().max().item():.3g}")
    return RuntimeStep(step, output, graph.seconds + session_s, facts)

