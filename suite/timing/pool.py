"""The worker processes of round-based measurement: a pool that runs each job (a round of items)
in a fresh process and hands back every item's result.

``fork`` isolation starts ``servers`` worker servers (``python -m suite.timing.worker --serve``),
each importing torch and the zoo once and forking a child per job; ``spawn`` starts a new
interpreter per job (``--once``). A job is one :class:`suite.timing.job.Job` line on the
process's stdin; results come back as ``ROUND`` lines (:mod:`suite.timing.worker`). A child that
dies or exceeds the timeout on one item costs that item its round; the rest of the job goes on
in a new child. A child that exits with :data:`suite.timing.worker.CUDA_ERROR_EXIT` after
reporting an item (an error of the CUDA context, which would fail every later item in that
process) costs nothing more: the rest of the job goes on in a new child.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .job import Job
from .worker import ALLOCATOR_TUNABLES, CHILD, CUDA_ERROR_EXIT, DONE, READY, ROUND

__all__ = ["ALLOCATORS", "ISOLATIONS", "Item", "RoundWorkers", "worker_environment"]

ISOLATIONS = ("fork", "spawn")
ALLOCATORS = ("steady", "inherited")
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Item(Protocol):
    """What a pool measures: a dataclass with a ``key()`` (a :class:`suite.timing.grid.Config`,
    the regression gate's :class:`suite.regress.cases.GateCase`)."""

    def key(self) -> str: ...


def worker_environment(threads: int, allocator: str, base: dict[str, str] | None = None, *,
                       root: Path | None = None) -> dict[str, str]:
    """The environment a worker starts with: the project importable (this one, or the tree at
    ``root`` in its place), OpenMP/MKL at ``threads``, and (``steady``) glibc's mmap and trim
    thresholds raised (:data:`ALLOCATOR_TUNABLES`)."""
    if allocator not in ALLOCATORS:
        raise ValueError(f"allocator must be one of {', '.join(ALLOCATORS)}; got {allocator!r}")
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root or _PROJECT_ROOT), env.get("PYTHONPATH", "")]))
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if allocator == "steady":
        env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES", ""), ALLOCATOR_TUNABLES]))
    return env


class _LineReader:
    """Lines from a pipe with a timeout (``None`` when it passes; ``EOFError`` at the end)."""

    def __init__(self, stream: Any) -> None:
        self._fd = stream.fileno()
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)

    def readline(self, timeout_s: float) -> str | None:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not self._selector.select(left):
                return None
            chunk = os.read(self._fd, 65536)
            if not chunk:
                raise EOFError
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode("utf-8", errors="replace")

    def close(self) -> None:
        self._selector.close()


@dataclass
class _Process:
    proc: subprocess.Popen[bytes]
    reader: _LineReader
    stderr_path: Path

    job_stderr_from: int = 0

    def mark_stderr(self) -> None:
        """What the server wrote to stderr so far belongs to earlier jobs."""
        with contextlib.suppress(OSError):
            self.job_stderr_from = self.stderr_path.stat().st_size

    def stderr_tail(self, chars: int = 1500) -> str:
        """The end of what this job's processes wrote to stderr."""
        try:
            with open(self.stderr_path, "rb") as handle:
                handle.seek(self.job_stderr_from)
                return handle.read().decode(errors="replace")[-chars:]
        except OSError:
            return ""


class RoundWorkers:
    """Runs jobs (a round's configurations) in fresh processes; see :mod:`suite.timing.worker`.

    ``fork``: ``servers`` server processes import torch once each (in parallel, before any
    measurement) and fork a child per job; jobs go to the servers in turn, so rounds also differ
    in the server's library layout. ``spawn``: a new interpreter per job. A child that dies or
    exceeds ``timeout_s`` on one configuration costs that configuration its round (status
    ``error`` / ``oom`` / ``timeout``); the rest of the job goes on in a new child, as it does
    after a child reported a CUDA error and left.

    ``cwd``: the folder the processes start in (``python -m`` puts it first on their path: the
    regression gate's A/B runs start each side's workers in that side's tree).
    """

    def __init__(self, *, isolation: str, servers: int, env: dict[str, str], timeout_s: float,
                 python: str | None = None, cwd: Path | None = None) -> None:
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {', '.join(ISOLATIONS)}; got {isolation!r}")
        if servers < 1:
            raise ValueError(f"servers must be >= 1, got {servers}")
        self.isolation, self.env, self.timeout_s = isolation, env, timeout_s
        self.python = python or sys.executable
        self.cwd = cwd
        self.servers_wanted = servers if isolation == "fork" else 0
        self._servers: list[_Process] = []
        self._next = 0
        self._tmp = tempfile.TemporaryDirectory(prefix="attnbench-workers-")

    def __enter__(self) -> RoundWorkers:
        try:
            for _ in range(self.servers_wanted):  # started together, awaited in turn
                self._servers.append(self._start("--serve"))
            for server in self._servers:
                self._await_ready(server)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        for server in self._servers:
            self._stop(server, kill=exc_type is not None)
        self._servers = []
        self._tmp.cleanup()

    def _start(self, mode: str) -> _Process:
        stderr_path = Path(self._tmp.name) / f"worker-{time.monotonic_ns()}.err"
        with open(stderr_path, "wb") as stderr:
            proc = subprocess.Popen([self.python, "-m", "suite.timing.worker", mode], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=stderr, env=self.env, cwd=self.cwd,
                                    start_new_session=True)
        return _Process(proc, _LineReader(proc.stdout), stderr_path)

    def _await_ready(self, server: _Process) -> None:
        try:
            line = server.reader.readline(600.0)
        except EOFError:
            line = None
        if line != READY:
            self._stop(server)
            raise RuntimeError(f"the latency worker server did not start: {server.stderr_tail()}")

    @staticmethod
    def _stop(process: _Process, kill: bool = False) -> None:
        """Close the server's stdin and wait for it; on an interrupt (``kill``), or when it does not
        end, kill its whole session, so a child still measuring dies with it."""
        with contextlib.suppress(OSError):
            if process.proc.stdin:
                process.proc.stdin.close()
        try:
            if kill:
                raise subprocess.TimeoutExpired(process.proc.args, 0)
            process.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.proc.pid, signal.SIGKILL)
            process.proc.wait()
        process.reader.close()
        with contextlib.suppress(OSError):
            if process.proc.stdout:
                process.proc.stdout.close()

    def _process_for_job(self) -> tuple[_Process, bool]:
        """A server (fork) or a new interpreter (spawn); a dead server is replaced."""
        if self.isolation == "spawn":
            return self._start("--once"), True
        index = self._next % len(self._servers)
        self._next += 1
        server = self._servers[index]
        if server.proc.poll() is not None:
            self._stop(server, kill=True)
            server = self._start("--serve")
            self._await_ready(server)
            self._servers[index] = server
        return server, False

    def run(self, items: Sequence[Item], job: Job, on_result: Callable[[Item, dict[str, Any]], None]) -> None:
        """Measure ``items`` (one round each) with ``job``'s settings and hand every result to
        ``on_result``."""
        remaining = list(items)
        while remaining:
            process, single_use = self._process_for_job()
            try:
                remaining = self._run_job(process, remaining, job, on_result)
            finally:
                if single_use:
                    self._stop(process)

    def _run_job(self, process: _Process, items: list[Item], job: Job,
                 on_result: Callable[[Item, dict[str, Any]], None]) -> list[Item]:
        """Send one job of ``items``; return the items still to measure after a crash, a timeout or
        a CUDA error (:data:`~suite.timing.worker.CUDA_ERROR_EXIT`: the item that raised it was
        reported, the next one is not charged)."""
        by_key = {item.key(): item for item in items}
        remaining = list(items)
        reported = 0
        process.mark_stderr()
        if process.proc.stdin is None:
            raise RuntimeError("the worker process has no stdin to send its job to")
        process.proc.stdin.write(job.with_items(items).to_line().encode())
        process.proc.stdin.flush()
        child = None
        while True:
            try:
                line = process.reader.readline(self.timeout_s if child else 600.0)
            except EOFError:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.proc.wait(timeout=5)
                line = DONE + "eof"
            if line is None:  # the child is stuck on remaining[0]
                self._kill(child or process.proc.pid)
                self._drain_done(process)
                on_result(remaining[0], {"status": "timeout",
                                         "message": f"worker took more than {self.timeout_s:.0f} s on this configuration"})
                return remaining[1:]
            if line.startswith(CHILD):
                child = int(line[len(CHILD):])
            elif line.startswith(ROUND):
                try:
                    fields = json.loads(line[len(ROUND):])
                    item = by_key[fields.pop("key")]
                except (ValueError, KeyError):  # a child killed while writing: it died on remaining[0]
                    self._kill(child or process.proc.pid)
                    self._drain_done(process)
                    on_result(remaining[0], {"status": "error", "message": (
                        f"worker wrote an unreadable result and died: {process.stderr_tail()}")})
                    return remaining[1:]
                remaining.remove(item)
                reported += 1
                on_result(item, fields)
            elif DONE in line:
                code = line.split(DONE, 1)[1]
                if code == "eof" and process.proc.poll() is not None:
                    code = str(process.proc.returncode)
                if remaining and code == str(CUDA_ERROR_EXIT) and reported:
                    return remaining  # a fresh child for the rest
                if remaining:
                    status = "oom" if code in ("-9", "137") else "error"
                    on_result(remaining[0], {"status": status, "message": (
                        f"worker died with exit code {code} on this configuration: {process.stderr_tail()}")})
                    return remaining[1:]
                return []

    @staticmethod
    def _kill(pid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)

    @staticmethod
    def _drain_done(process: _Process) -> None:
        """Read up to the server's DONE line after its child was killed."""
        with contextlib.suppress(EOFError):
            while (line := process.reader.readline(30.0)) is not None and DONE not in line:
                pass

