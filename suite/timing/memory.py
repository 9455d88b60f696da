"""Memory of one forward or training step: CUDA peak allocation, or CPU peak RSS and the bytes
autograd saves for backward.

CUDA (:func:`measure_memory_cuda_isolated`): each configuration runs in a new ``python``
interpreter (spawned, never forked: the parent has initialised CUDA) with a timeout, under the
parent's cuDNN autotuning and TF32 mode (:func:`backend_flags`), set there as in the parent by
:func:`suite.timing.timer.cuda_settings` (the one place the suite sets TF32: both TF32 APIs
agree, so the legacy getters answer in the worker too). There :func:`measure_memory_cuda` runs
one warm-up step (cuDNN's algorithm search allocates workspaces once), then
``reset_peak_memory_stats``, a second step, and ``max_memory_allocated`` -- reported as the
absolute peak and as the peak above what was allocated before the step (module, input,
gradients of the warm-up set to ``None``). A child that hangs is killed at the timeout (status
``timeout``), one that dies is an ``error`` (``oom`` when killed by SIGKILL, the kernel's OOM
killer), and a CUDA out-of-memory error in the step is ``oom``; a sticky CUDA error ends with its
process, so the next configuration starts on a clean device.

CPU (:func:`measure_memory_cpu`): each configuration runs in a fresh ``python`` subprocess
(forked from a clean pre-imported server, or spawned: see :func:`measure_memory_cpu`),
so nothing allocated by an earlier configuration or by the parent's own sweep inflates the
figure. This process itself is never forked: the ``forkserver`` server is a new interpreter
that imports the libraries and initialises no CUDA. The worker builds the module and input, then

1. for a ``train`` config, counts the bytes saved for backward with the cost stage's
   ``saved_activations`` (see :func:`saved_bytes`);
2. runs one step on a tiny input to fault in the code the ops use (:func:`_warm_code_pages`);
3. resets the kernel's RSS high-water mark (``/proc/self/clear_refs`` = 5, Linux >= 4.0;
   where refused, the figures are relative to the peak of the start-up instead);
4. runs one step (``forward``: eval + ``no_grad``; ``train``: forward + backward) and reads
   the process's peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``, which the reset also
   lowers) and the RSS before the step. ``step_rss_bytes`` = peak - RSS before: what the step
   added at its worst moment, allocator slack included.

``peak_rss_bytes`` includes the Python interpreter and torch itself (a few hundred MB); the
step figure is the one to compare between modules.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..cost.activations import saved_activations
from ..plugins import load_plugins_from_env
from .grid import AUTOCAST_DTYPES, Config
from .timer import cuda_settings, tf32_mode
from .workloads import StageError, classify_error, instantiate, make_input, prepare

__all__ = [
    "ISOLATIONS",
    "backend_flags",
    "measure_memory_cpu",
    "measure_memory_cuda",
    "measure_memory_cuda_isolated",
    "saved_bytes",
    "worker_main",
    "MARKER",
]

MARKER = "ATTNBENCH_MEMORY_RESULT "
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


class _AsConfigured(nn.Module):
    """Hands ``module`` its input in the configuration's dtype and memory format.

    :func:`suite.cost.activations.saved_activations` builds an fp32 contiguous input itself;
    this cast (which saves nothing for backward) gives the module the input it gets in the
    measured step, so a bf16 row counts bf16 activations.
    """

    def __init__(self, module: nn.Module, dtype: torch.dtype, memory_format: torch.memory_format) -> None:
        super().__init__()
        self.module = module
        self.dtype = dtype
        self.memory_format = memory_format

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x.to(dtype=self.dtype).contiguous(memory_format=self.memory_format))


def saved_bytes(module: nn.Module, x: Tensor, config: Config) -> dict[str, Any]:
    """``act_saved_bytes`` / ``act_saved_tensors`` of one training forward of ``module``.

    Counted by the cost stage's :func:`suite.cost.activations.saved_activations` (distinct
    storages, parameters and buffers excluded, the input included as it requires grad), on an
    input of ``x``'s shape, dtype and memory format, under the configuration's autocast.
    """
    memory_format = torch.channels_last if config.memory_format == "channels_last" else torch.contiguous_format
    wrapped = _AsConfigured(module, x.dtype, memory_format)
    autocast = AUTOCAST_DTYPES[config.dtype]
    context = (
        torch.autocast(device_type=config.torch_device.type, dtype=autocast)
        if autocast is not None else contextlib.nullcontext()
    )
    with context, torch.enable_grad():
        return saved_activations(wrapped, tuple(x.shape), device=x.device)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # Linux reports kB


def _static_sizes(module: nn.Module, x: Tensor) -> dict[str, Any]:
    return {
        "input_bytes": x.numel() * x.element_size(),
        "param_bytes": sum(p.numel() * p.element_size() for p in module.parameters()),
        "params": sum(p.numel() for p in module.parameters()),
    }


def _one_step(module: nn.Module, x: Tensor, config: Config) -> Tensor:
    autocast = AUTOCAST_DTYPES[config.dtype]
    device_type = config.torch_device.type
    with torch.set_grad_enabled(config.mode == "train"):
        if autocast is None:
            out = module(x)
        else:
            with torch.autocast(device_type=device_type, dtype=autocast):
                out = module(x)
    if config.mode == "train":
        out.backward(torch.ones_like(out))
    return out.detach()


def _build(config: Config) -> tuple[nn.Module, Tensor]:
    module, _, _ = instantiate(config, with_reference=False)
    try:
        module = prepare(module, config)
        x = make_input(config)
    except Exception as exc:  # noqa: BLE001
        raise StageError(classify_error(exc), f"{type(exc).__name__}: {exc}") from exc
    return module, x


def _warm_code_pages(module: nn.Module, config: Config) -> None:
    """One step on a tiny input (batch 1, at most 16 x 16) before the measured one.

    It faults in the library code the ops run and starts the thread pool, which a fresh
    process would otherwise count as the step's memory (a forked worker more so: file-backed
    pages resident in its parent are not yet mapped in it). A failure here is ignored; the
    measured step reports it.
    """
    from dataclasses import replace

    tiny = replace(config, batch=1, size=min(config.size, 16))
    try:
        _one_step(module, make_input(tiny), tiny)
    except Exception:  # noqa: BLE001
        pass
    module.zero_grad(set_to_none=True)


def _measure_cpu_here(config: Config) -> dict[str, Any]:
    """The worker's measurement (runs inside the fresh subprocess)."""
    torch.set_num_threads(config.threads)
    module, x = _build(config)
    row: dict[str, Any] = _static_sizes(module, x)
    if config.mode == "train":
        row.update(saved_bytes(module, x, config))
    _warm_code_pages(module, config)
    reset_ok = _reset_peak_rss()
    before = _rss_bytes()
    try:
        out = _one_step(module, x, config)
    except Exception as exc:  # noqa: BLE001
        raise StageError(classify_error(exc), f"{type(exc).__name__}: {exc}") from exc
    peak = _peak_rss_bytes()
    row.update({
        "output_bytes": out.numel() * out.element_size(),
        "rss_before_bytes": before,
        "peak_rss_bytes": peak,
        "step_rss_bytes": max(0, peak - before),
        "peak_reset": reset_ok,
        "threads_set": torch.get_num_threads(),
    })
    return row


def backend_flags() -> dict[str, Any]:
    """This process's cuDNN autotuning and TF32 mode (a :data:`~suite.timing.timer.TF32_MODES`
    name, :func:`~suite.timing.timer.tf32_mode`): what a CUDA worker sets before it measures
    (:func:`_measure_here`), so that it runs as the stage's settings asked."""
    return {"cudnn_benchmark": bool(torch.backends.cudnn.benchmark), "tf32": tf32_mode()}


def _measure_here(config: Config, flags: dict[str, Any]) -> dict[str, Any]:
    """One configuration measured in this (fresh) process: on its CUDA device under ``flags``
    (:func:`backend_flags`, set by :func:`~suite.timing.timer.cuda_settings`;
    :func:`measure_memory_cuda`), else on the CPU."""
    if config.torch_device.type != "cuda":
        return _measure_cpu_here(config)
    benchmark, tf32 = bool(flags.get("cudnn_benchmark", True)), str(flags.get("tf32", "default"))
    with cuda_settings(cudnn_benchmark=benchmark, tf32=tf32):
        if config.torch_device.index is not None:
            torch.cuda.set_device(config.torch_device)
        return measure_memory_cuda(config)


def worker_main(argv: list[str] | None = None) -> int:
    """Entry point of the subprocess: one JSON config in argv (and, for a CUDA config, the JSON
    of :func:`backend_flags` after it), one marked JSON line out."""
    argv = sys.argv[1:] if argv is None else argv
    flags = json.loads(argv[1]) if len(argv) > 1 else {}
    print(MARKER + json.dumps(_measure_in_child(argv[0], flags)), flush=True)
    return 0


def _measure_in_child(config_json: str, flags: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a fresh process reports for one configuration: its fields, or a status and message
    (the plugins the parent passed on in ``$ATTNBENCH_PLUGINS`` are loaded first)."""
    load_plugins_from_env()
    config = Config.from_wire(json.loads(config_json))
    try:
        return _measure_here(config, flags or {})
    except StageError as exc:
        return {"status": exc.status, "message": str(exc)[:2000]}
    except Exception as exc:  # noqa: BLE001
        return {"status": classify_error(exc), "message": f"{type(exc).__name__}: {exc}"[:2000]}


def _child(config_json: str, conn: Any) -> None:  # pragma: no cover - runs in the child
    conn.send(_measure_in_child(config_json))
    conn.close()


_FORKSERVER_PRELOAD = ["torch", "torchvision", "modules", "suite.timing.memory"]


def _run_forkserver(config: Config, timeout_s: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_FORKSERVER_PRELOAD)
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(json.dumps(config.to_wire()), child_conn), daemon=True)
    process.start()
    child_conn.close()
    try:
        if not parent_conn.poll(timeout_s):
            process.kill()
            process.join()
            raise StageError("timeout", f"memory worker took more than {timeout_s:g} s")
        fields = parent_conn.recv()
    except EOFError:
        process.join()
        status = "oom" if process.exitcode == -signal.SIGKILL else "error"
        raise StageError(status, f"memory worker died with exit code {process.exitcode} and no result") from None
    finally:
        parent_conn.close()
    process.join(timeout=30)
    return fields


def _worker_command(python: str, arguments: list[str]) -> list[str]:
    """The command line of a spawned worker (:func:`worker_main` with ``arguments``)."""
    return [python, "-m", "suite.timing.memory", *arguments]


def _kill(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` and every process it started (its own session), and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def _run_spawn(config: Config, timeout_s: float, python: str | None, flags: dict[str, Any] | None = None) -> dict[str, Any]:
    """``config`` measured by a new interpreter, in its own session so that a timeout (or an
    interrupt of this process) kills it and whatever it started."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PROJECT_ROOT), env.get("PYTHONPATH", "")]))
    env.setdefault("OMP_NUM_THREADS", str(config.threads))
    arguments = [json.dumps(config.to_wire())] + ([json.dumps(flags)] if flags is not None else [])
    proc = subprocess.Popen(_worker_command(python or sys.executable, arguments), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=_PROJECT_ROOT, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise StageError("timeout", f"memory worker took more than {timeout_s:g} s") from None
    except BaseException:
        _kill(proc)
        raise
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    tail = (stderr or stdout)[-1500:]
    status = "oom" if proc.returncode in (-9, 137) else "error"
    raise StageError(status, f"memory worker exited with {proc.returncode} and no result: {tail}")


ISOLATIONS = ("forkserver", "spawn")


def measure_memory_cpu(
    config: Config, *, isolation: str = "forkserver", timeout_s: float = 300.0, python: str | None = None
) -> dict[str, Any]:
    """Measure ``config`` in a fresh process and return its fields.

    ``forkserver`` (default): a process forked from a server that has imported torch,
    torchvision and the zoo and run nothing else, so every configuration starts from the same
    clean state without paying the imports (seconds each on the 2-core machine).
    ``spawn``: a new ``python -m suite.timing.memory`` interpreter per configuration.
    A worker that dies (killed by the OOM killer, a crash) or times out raises
    :class:`StageError` (``oom`` for SIGKILL, ``timeout``, ``error``); a worker that reports
    a failure raises it with the worker's status.
    """
    if isolation == "forkserver":
        fields = _run_forkserver(config, timeout_s)
    elif isolation == "spawn":
        fields = _run_spawn(config, timeout_s, python)
    else:
        raise ValueError(f"isolation must be one of {', '.join(ISOLATIONS)}; got {isolation!r}")
    return _reported(fields, isolation)


def _reported(fields: dict[str, Any], isolation: str) -> dict[str, Any]:
    """A worker's ``fields`` with the isolation it ran in; :class:`StageError` with the worker's
    status where it reports a failure."""
    if fields.get("status", "ok") != "ok":
        raise StageError(fields["status"], fields.get("message", ""))
    fields["isolation"] = isolation
    return fields


def measure_memory_cuda_isolated(config: Config, *, timeout_s: float = 300.0, python: str | None = None) -> dict[str, Any]:
    """Measure the CUDA configuration ``config`` in a new interpreter (``python``, default this
    one) and return its fields (:func:`measure_memory_cuda` runs there, under this process's
    :func:`backend_flags`).

    Spawned, never forked: this process has initialised CUDA, which a forked child cannot use.
    A worker that does not answer within ``timeout_s`` is killed (``timeout``); one that dies
    raises ``error`` (``oom`` for SIGKILL); one that reports a failure (``oom`` for CUDA out of
    memory) raises it with the worker's status.
    """
    if config.torch_device.type != "cuda":
        raise ValueError(f"measure_memory_cuda_isolated measures a CUDA device; got {config.device!r}")
    return _reported(_run_spawn(config, timeout_s, python, backend_flags()), "spawn")


def measure_memory_cuda(config: Config) -> dict[str, Any]:
    """Peak CUDA allocation of one step after a warm-up step, in this process (the worker that
    :func:`measure_memory_cuda_isolated` starts)."""
    device = config.torch_device
    module, x = _build(config)
    row: dict[str, Any] = _static_sizes(module, x)
    try:
        if config.mode == "train":
            row.update(saved_bytes(module, x, config))
        _one_step(module, x, config)  # warm-up: cuDNN autotuning, lazy allocations
        x.grad = None
        module.zero_grad(set_to_none=True)
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        out = _one_step(module, x, config)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        row.update({
            "output_bytes": out.numel() * out.element_size(),
            "cuda_before_bytes": before,
            "cuda_peak_bytes": peak,
            "cuda_step_peak_bytes": peak - before,
            "cuda_peak_reserved_bytes": torch.cuda.max_memory_reserved(device),
            "isolation": "in-process",
        })
    except Exception as exc:  # noqa: BLE001
        raise StageError(classify_error(exc), f"{type(exc).__name__}: {exc}") from exc
    finally:
        del module, x
        torch.cuda.empty_cache()
    return row


if __name__ == "__main__":
    sys.exit(worker_main())
