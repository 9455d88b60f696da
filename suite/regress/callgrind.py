"""The instruction counter: every case counted under Callgrind in one valgrind process.

Wall time on a shared 2-core machine moves by 10% or more between runs; the number of
instructions a step executes does not (under 1% between processes on this machine), so a
5% change of CPU-side work is visible in it on any runner of the same ISA. PyTorch's CI
counts instructions the same way (``benchmarks/instruction_counts``,
``torch.utils.benchmark.Timer.collect_callgrind``); unlike ``collect_callgrind``, which starts
one valgrind process per measurement and imports torch under it each time (about 140 s here),
:func:`collect` runs :mod:`suite.regress.callgrind_worker` once for all cases and starts the
instrumentation after the import (a small C shim, compiled on first use, issues the Callgrind
client requests torch does not expose).

**Quantity.** Instructions executed (Callgrind's ``Ir``) per call of the step: a forward
(eval, ``no_grad``) or a training step (forward and backward), the median over ``visits``
counted repetitions of ``calls`` calls. Callgrind's cache simulation runs beside it with a
fixed geometry (:data:`CACHE_GEOMETRY`, not the host's, so the counts of misses compare
across hosts): first-level data misses (``D1mr + D1mw``), instruction-cache misses (``I1mr``)
and last-level misses (``ILmr + DLmr + DLmw``) per call are reported, not gated.

**Noise.** A process that does the same things executes the same instructions: three
processes counting the default set in the same order gave identical counts. What moves a count
is context: which cases ran before it, which plugins were imported (the heap and Python's
state differ, and so does the length of a path in ``argv``), by up to 0.9% for a case of 0.36M
instructions here, less for larger ones. The baseline's processes therefore count the cases in rotated
orders (``rotate``), so its spread, and the tolerance derived from it, include that shift.

**What counts depend on** (the machine class of an instruction baseline): torch's version,
Python's major.minor, the ISA ATen and oneDNN dispatch to, the BLAS and the CPU vendor it
dispatches by, the thread count, all as seen inside valgrind (:func:`machine_class`). The CPU
model is not in it: a runner of another model with the same ISA compares; another vendor is
judged with a warning (:data:`suite.regress.gate.SOFT_KEYS`).
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..records import RecordStore
from ..stage import progress_bar
from ..timing.pool import worker_environment
from .callgrind_worker import LABEL_PREFIX
from .cases import RegressSettings

__all__ = [
    "CACHE_GEOMETRY",
    "CounterUnavailable",
    "Counts",
    "MACHINE_CLASS_KEYS",
    "collect",
    "machine_class",
    "parse_dump",
    "valgrind_command",
]

CACHE_GEOMETRY: tuple[str, ...] = ("--I1=32768,8,64", "--D1=32768,8,64", "--LL=8388608,16,64")
"""Callgrind's simulated caches (size, associativity, line): 32 KiB L1s, an 8 MiB last level."""

MACHINE_CLASS_KEYS: tuple[str, ...] = (
    "counter", "torch", "python", "arch", "aten_isa", "onednn_isa", "blas", "cpu_vendor", "threads", "device",
)
SHIM_SOURCE = Path(__file__).with_name("callgrind_shim.c")
TIMEOUT_S = 3600.0
"""A valgrind process that runs longer than this is stopped (the default set takes 2-3 minutes)."""


class CounterUnavailable(RuntimeError):
    """valgrind is missing or could not run; the message says what to install."""


@dataclass
class Counts:
    """What :func:`collect` returns: per case its facts (``instructions`` per call and the
    rest), the cases that could not be counted, and the facts counts depend on."""

    cases: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    dispatch: dict[str, Any] = field(default_factory=dict)
    valgrind: str = ""
    wall_s: float = 0.0


def find_valgrind() -> str:
    """The valgrind executable, or :class:`CounterUnavailable` saying how to get it."""
    path = shutil.which("valgrind")
    if path is None:
        raise CounterUnavailable(
            "valgrind is not installed: the instruction counter runs the cases under Callgrind "
            "(install it with `apt-get install valgrind`, `dnf install valgrind` or `brew install valgrind`; "
            "or use --counter ratio)")
    return path


def valgrind_version(valgrind: str) -> str:
    proc = subprocess.run([valgrind, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc.stdout.strip().removeprefix("valgrind-")


def build_shim(directory: Path) -> tuple[Path | None, str]:
    """Compile ``callgrind_shim.c`` into ``directory``; ``(None, why)`` without a C compiler or
    valgrind's headers (the worker then uses torch's requests, instrumenting from the start)."""
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        return None, "no C compiler (cc) found"
    target = directory / "callgrind_shim.so"
    proc = subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-o", str(target), str(SHIM_SOURCE)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        return None, f"{compiler} could not build the shim (valgrind's headers missing?): {proc.stdout.strip()[:300]}"
    return target, ""


def valgrind_command(valgrind: str, out_dir: Path, *, instrument_from_start: bool) -> list[str]:
    """The valgrind arguments: Callgrind, nothing collected until the worker asks, the cache
    simulation at :data:`CACHE_GEOMETRY`, one dump file per request in ``out_dir``."""
    return [
        valgrind, "--tool=callgrind", "--quiet",
        f"--instr-atstart={'yes' if instrument_from_start else 'no'}", "--collect-atstart=no",
        "--cache-sim=yes", *CACHE_GEOMETRY,
        f"--callgrind-out-file={out_dir / 'callgrind.out.%p'}",
    ]


def parse_dump(text: str) -> tuple[str, dict[str, int]]:
    """``(label, {event: count})`` of one Callgrind dump (its ``desc: Trigger`` and its
    ``events:`` / ``summary:`` or ``totals:`` lines)."""
    label, events, totals = "", [], []
    for line in text.splitlines():
        if line.startswith("desc: Trigger:"):
            label = line.split("Client Request:", 1)[-1].strip() if "Client Request:" in line else ""
        elif line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith(("summary:", "totals:")) and not totals:
            totals = [int(v) for v in line.split()[1:]]
    if not events:
        raise ValueError("not a Callgrind dump: no 'events:' line")
    totals += [0] * (len(events) - len(totals))  # Callgrind leaves trailing zero events out
    return label, dict(zip(events, totals, strict=True))


def _dumps(out_dir: Path) -> list[tuple[str, dict[str, int]]]:
    """The numbered dumps of the worker (``callgrind.out.PID.N``), in the order written."""
    files = [p for p in out_dir.glob("callgrind.out.*.*") if p.suffix[1:].isdigit()]
    return [parse_dump(p.read_text(errors="replace")) for p in sorted(files, key=lambda p: int(p.suffix[1:]))]


def _per_call(events: Mapping[str, int], calls: int) -> dict[str, float]:
    return {
        "instructions": events.get("Ir", 0) / calls,
        "i1_misses": events.get("I1mr", 0) / calls,
        "d1_misses": (events.get("D1mr", 0) + events.get("D1mw", 0)) / calls,
        "ll_misses": (events.get("ILmr", 0) + events.get("DLmr", 0) + events.get("DLmw", 0)) / calls,
    }


def _case_facts(row: Mapping[str, Any], counted: list[dict[str, int]]) -> dict[str, Any]:
    per_call = [_per_call(events, int(row["calls"])) for events in counted]
    facts = {key: row[key] for key in ("case", "attn", "mode", "shape", "params", "calls")}
    facts["repeats"] = len(per_call)
    facts["instructions_repeats"] = [p["instructions"] for p in per_call]
    for key in ("instructions", "i1_misses", "d1_misses", "ll_misses"):
        facts[key] = statistics.median(p[key] for p in per_call)
    return facts


def _assemble(manifest: list[dict[str, Any]], dumps: list[tuple[str, dict[str, int]]]) -> Counts:
    """Match the worker's manifest to its dumps (by label; by order when dumps are unlabelled)."""
    counts = Counts()
    labelled = {label: events for label, events in dumps if label.startswith(f"{LABEL_PREFIX}:")}
    ordered = iter(events for _, events in dumps)
    for row in manifest:
        if row["kind"] == "facts":
            counts.dispatch = {k: v for k, v in row.items() if k != "kind"}
        elif row["kind"] == "error":
            counts.errors[row["case"]] = f"{row['status']}: {row['message']}"
        elif row["kind"] == "counted":
            if labelled:
                missing = [label for label in row["labels"] if label not in labelled]
                if missing:
                    counts.errors[row["case"]] = f"error: Callgrind wrote no dump for {', '.join(missing)}"
                    continue
                counted = [labelled[label] for label in row["labels"]]
            else:
                counted = [next(ordered, {}) for _ in row["labels"]]
            counts.cases[row["case"]] = _case_facts(row, counted)
    return counts


def _run_streaming(command: list[str], env: dict[str, str], progress: Any,
                   cwd: Path | None = None) -> tuple[int, str]:
    """Run ``command``, advancing ``progress`` (a tqdm bar) on the worker's progress lines;
    ``(exit code, its last lines)``. Stopped after :data:`TIMEOUT_S`."""
    tail: collections.deque[str] = collections.deque(maxlen=40)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd)
    watchdog = threading.Timer(TIMEOUT_S, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line)
            if line.startswith("callgrind: torch imported"):
                progress.write(line.rstrip())
                progress.set_postfix_str("counting")
            elif line.startswith("callgrind: "):
                progress.update(1)
        returncode = proc.wait()
    finally:
        watchdog.cancel()
    if returncode == -9:
        tail.append(f"stopped after {TIMEOUT_S:.0f} s\n")
    return returncode, "".join(tail)[-3000:]


def collect(settings: RegressSettings, work_dir: Path, *, rotate: int = 0, root: Path | None = None,
            label: str = "callgrind", env: dict[str, str] | None = None) -> Counts:
    """Count every case of ``settings`` in one valgrind process, in their order rotated by
    ``rotate``; dumps and the manifest are kept in ``work_dir`` (emptied first).

    ``root``: the tree whose ``suite`` and ``modules`` the worker imports (it starts there; the
    regression gate's A/B runs count each side in its own tree), this project when None.
    ``label`` names the progress bar; ``env``: the worker's environment (by default this
    project's, :func:`suite.timing.pool.worker_environment` with the ``steady`` allocator).

    Raises :class:`CounterUnavailable` when valgrind is missing or the process fails as a
    whole; a case that fails is in ``Counts.errors``. A progress bar on stderr counts the cases."""
    valgrind = find_valgrind()
    started = time.perf_counter()
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    manifest = work_dir / "manifest.jsonl"
    settings_path = work_dir / "settings.json"
    settings_path.write_text(json.dumps(settings.to_wire()))  # read by either revision's worker
    with progress_bar(len(settings.cases()), label, unit="case") as progress:
        shim, why = build_shim(work_dir)
        if shim is None:
            progress.write(f"callgrind: {why}; valgrind instruments from the start instead (slower)")
        command = [*valgrind_command(valgrind, work_dir, instrument_from_start=shim is None),
                   sys.executable, "-m", "suite.regress.callgrind_worker", str(settings_path), str(manifest),
                   "--rotate", str(rotate)]
        if shim is not None:
            command += ["--shim", str(shim)]
        env = dict(env) if env is not None else worker_environment(settings.threads, "steady", root=root)
        env["PYTHONHASHSEED"] = "0"
        progress.set_postfix_str("importing torch, building the cases")
        returncode, tail = _run_streaming(command, env, progress, cwd=root)
    if returncode != 0 or not manifest.exists():
        raise CounterUnavailable(f"the valgrind process failed (exit {returncode}): {tail}")
    counts = _assemble(list(RecordStore(manifest).read()), _dumps(work_dir))
    counts.valgrind = valgrind_version(valgrind)
    counts.wall_s = time.perf_counter() - started
    return counts


def machine_class(dispatch: Mapping[str, Any]) -> dict[str, Any]:
    """What must match for two instruction baselines to compare (see the module docstring)."""
    return {"counter": "instructions", **{key: dispatch.get(key) for key in MACHINE_CLASS_KEYS if key != "counter"}}
