"""The process that runs under Callgrind for the instruction counter (:mod:`suite.regress.callgrind`).

    valgrind --tool=callgrind --instr-atstart=no ... python -m suite.regress.callgrind_worker \\
        SETTINGS_JSON MANIFEST_JSONL [--shim LIB]

One process counts every case, so torch is imported under valgrind once. In order:

Cases run in the settings' order, rotated by ``--rotate`` (the baseline's processes use
different rotations, so that its spread includes how much a count depends on what ran before).

1. import torch, set the thread count, load the plugins, and record what the counts depend on
   (:func:`dispatch_facts`: torch and Python versions, the ISA ATen and oneDNN dispatch to, the
   BLAS and the CPU vendor it dispatches by, the thread count) as they are *inside* valgrind,
   whose CPU hides what it cannot simulate (AVX-512);
2. build every case's workload (:func:`suite.timing.workloads.build_workload`, exactly what the
   latency stage runs) and run each step ``warmup`` times, uninstrumented;
3. start the instrumentation (with the shim; without it valgrind instruments from the start,
   about 5x slower), then per case: one instrumented call, which translates the code it runs,
   and ``visits`` counted repetitions of ``calls`` calls each (``--visits``), with the garbage collector off;
   every repetition ends in a Callgrind dump labelled ``attnbench:CASE:REPETITION``.

The manifest (JSON lines) gets a ``facts`` row, then per case a ``counted`` row with the labels
of its dumps or an ``error`` row with the status and message of what failed; the other cases go
on. Progress goes to stderr, one line per case (``callgrind: ...``, read by the parent's
progress bar).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["LABEL_PREFIX", "dispatch_facts", "main"]

LABEL_PREFIX = "attnbench"
"""Dump labels are ``attnbench:CASE:REPETITION``."""


class _ShimRequests:
    """Callgrind client requests through the compiled shim (``callgrind_shim.c``)."""

    instruments_from_start = False

    def __init__(self, path: str) -> None:
        self._lib = ctypes.CDLL(path)
        self._lib.attnbench_dump_stats_at.argtypes = [ctypes.c_char_p]

    def running_on_valgrind(self) -> bool:
        return bool(self._lib.attnbench_running_on_valgrind())

    def start_instrumentation(self) -> None:
        self._lib.attnbench_start_instrumentation()

    def count(self, step: Callable[[], Any], calls: int, label: str) -> None:
        self._lib.attnbench_zero_stats()
        self._lib.attnbench_toggle_collect()
        for _ in range(calls):
            step()
        self._lib.attnbench_toggle_collect()
        self._lib.attnbench_dump_stats_at(label.encode())


class _TorchRequests:
    """The requests torch exposes (collection toggle, unlabelled dump): the fallback when the
    shim could not be compiled; valgrind then instruments from the start and dumps are matched
    to cases by their order."""

    instruments_from_start = True

    def running_on_valgrind(self) -> bool:
        return "vgpreload" in os.environ.get("LD_PRELOAD", "")  # valgrind preloads its core library

    def start_instrumentation(self) -> None:
        pass

    def count(self, step: Callable[[], Any], calls: int, label: str) -> None:
        import torch

        torch._C._valgrind_toggle()
        for _ in range(calls):
            step()
        torch._C._valgrind_toggle_and_dump_stats()


def _captured_fd_output(fd: int, action: Callable[[], Any]) -> str:
    """What C code writes to file descriptor ``fd`` while ``action`` runs."""
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(fd)
        try:
            sys.stdout.flush()
            os.dup2(sink.fileno(), fd)
            action()
        finally:
            os.dup2(saved, fd)
            os.close(saved)
        sink.seek(0)
        return sink.read().decode(errors="replace")


def _onednn_isa() -> str:
    """The ISA oneDNN dispatches to, from its verbose header (``isa:Intel AVX2``)."""
    import torch

    def convolve() -> None:
        with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
            torch.nn.functional.conv2d(torch.ones(2, 8, 8, 8), torch.ones(8, 8, 3, 3))  # oneDNN's size

    if not torch.backends.mkldnn.is_available():
        return "unavailable"
    match = re.search(r"isa:([^\n,]+)", _captured_fd_output(1, convolve))
    return match.group(1).strip() if match else "unknown"


def _cpu_vendor() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^vendor_id\s*:\s*(\S+)", text, flags=re.MULTILINE)
    return match.group(1) if match else platform.machine()


def _blas() -> str:
    import torch

    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", config)
    mkl = re.search(r"Math Kernel Library Version (\d[\d.]*)", config)
    name = blas.group(1) if blas else "unknown"
    return f"{name} {mkl.group(1)}" if name == "mkl" and mkl else name


def dispatch_facts(threads: int) -> dict[str, Any]:
    """What instruction counts depend on, as this process sees it."""
    import torch

    return {
        "torch": torch.__version__,
        "python": ".".join(platform.python_version_tuple()[:2]),
        "arch": platform.machine(),
        "aten_isa": torch.backends.cpu.get_cpu_capability(),
        "onednn_isa": _onednn_isa(),
        "blas": _blas(),
        "cpu_vendor": _cpu_vendor(),
        "threads": threads,
        "device": "cpu",
    }


def _append(manifest: Path, row: dict[str, Any]) -> None:
    with manifest.open("a") as fh:
        fh.write(json.dumps(row) + "\n")


def rotated(cases: list[tuple[str, str]], rotate: int) -> list[tuple[str, str]]:
    """``cases`` starting at index ``rotate`` (modulo their number)."""
    if not cases:
        return cases
    start = rotate % len(cases)
    return cases[start:] + cases[:start]


def _build(settings: Any, manifest: Path, rotate: int) -> dict[str, Any]:
    """Every case's workload (in the order rotated by ``rotate``), warmed up; failures become
    ``error`` rows."""
    from suite.regress.cases import case_id, config_for
    from suite.stage import failure_fields
    from suite.timing.workloads import build_workload, classify_error

    workloads = {}
    for name, mode in rotated(settings.cases(), rotate):
        case = case_id(name, mode, settings)
        try:
            workload = build_workload(config_for(name, mode, settings))
            for _ in range(settings.warmup):
                workload.step()
        except Exception as exc:  # noqa: BLE001 - becomes the case's status, the others go on
            failure = failure_fields(exc, classify_error(exc))
            _append(manifest, {"kind": "error", "case": case, "attn": name, "mode": mode, **failure})
            print(f"callgrind: {case} could not be built: {failure['status']}", file=sys.stderr, flush=True)
            continue
        workloads[case] = (name, mode, workload)
    return workloads


def _count_all(settings: Any, workloads: dict[str, Any], requests: Any, manifest: Path) -> None:
    from suite.stage import failure_fields
    from suite.timing.workloads import classify_error

    requests.start_instrumentation()
    gc.collect()
    gc.freeze()
    gc.disable()
    for index, (case, (name, mode, workload)) in enumerate(workloads.items(), start=1):
        started = time.perf_counter()
        labels = [f"{LABEL_PREFIX}:{case}:{rep}" for rep in range(settings.visits)]
        try:
            workload.step()  # instrumented, not collected: translates the code the step runs
            for label in labels:
                requests.count(workload.step, settings.calls, label)
        except Exception as exc:  # noqa: BLE001 - becomes the case's status, the others go on
            failure = failure_fields(exc, classify_error(exc))
            _append(manifest, {"kind": "error", "case": case, "attn": name, "mode": mode, **failure})
            print(f"callgrind: {index}/{len(workloads)} {case} failed: {failure['status']}", file=sys.stderr,
                  flush=True)
            continue
        _append(manifest, {"kind": "counted", "case": case, "attn": name, "mode": mode,
                           "shape": list(workload.input_shape), "params": workload.params,
                           "calls": settings.calls, "labels": labels})
        print(f"callgrind: {index}/{len(workloads)} {case} counted in {time.perf_counter() - started:.0f} s",
              file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings", type=Path, help="RegressSettings as JSON")
    parser.add_argument("manifest", type=Path, help="JSON lines written here")
    parser.add_argument("--shim", default=None, help="the compiled callgrind_shim.c (default: torch's requests)")
    parser.add_argument("--rotate", type=int, default=0, help="build and count the cases starting at this index")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    import torch

    from suite.plugins import load_plugins
    from suite.regress.cases import RegressSettings

    settings = RegressSettings.from_json(json.loads(args.settings.read_text()))
    torch.set_num_threads(settings.threads)
    load_plugins(settings.plugins)
    requests = _ShimRequests(args.shim) if args.shim else _TorchRequests()
    _append(args.manifest, {"kind": "facts", **dispatch_facts(torch.get_num_threads()),
                            "requests": "shim" if args.shim else "torch",
                            "running_on_valgrind": requests.running_on_valgrind()})
    imported = time.perf_counter()
    workloads = _build(settings, args.manifest, args.rotate)
    print(f"callgrind: torch imported in {imported - started:.0f} s; {len(workloads)} case(s) built and warmed "
          f"up in {time.perf_counter() - imported:.0f} s; counting", file=sys.stderr, flush=True)
    _count_all(settings, workloads, requests, args.manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
