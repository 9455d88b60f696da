"""Did a timing window get the CPU it asked for? CPU accounting around a measurement.

A worker that asks for ``threads`` cores and is handed fewer (another process on the same
cores, a hypervisor stealing the vCPU) reports times that are not the module's. Wall time
alone cannot tell; the kernel's accounting can. Around each window the worker reads

* its own CPU time (``time.process_time``: every thread of the process, exact to the
  scheduler's accounting),
* the machine's busy and steal time from ``/proc/stat`` (all CPUs, in clock ticks),
* the wall clock,

and :func:`assess` compares them with what the window should have seen:

* ``cpu_share = own CPU / (wall x threads)``: below ``min_cpu_share`` (0.9) the process was
  waiting for a core (a compute-bound window on an idle machine reads 0.97-1.0);
* ``other_cores = (machine busy - own CPU) / wall``: cores' worth of work done by other
  processes at the same time; above the policy's allowance (:meth:`ContentionLimits.other_cores_allowed`)
  something else ran beside the measurement that shares its caches, memory bus or, on a
  machine with two hardware threads per core, its core;
* ``steal_share = steal / (wall x CPUs)``: above ``max_steal_share`` (0.1; these VMs show 1-3% at rest) the hypervisor
  took the vCPUs away.

How much other work a window tolerates is the policy's (``--contention``):

* ``strict``: at most ``max_other_cores`` (0.5): nothing else runs. On 2 cores with 1 thread
  another busy process takes no CPU from the worker but shares the caches and the memory bus.
* ``lenient``: at most ``max_other_cores + 1`` (one other busy process), or, on a larger
  machine, as much as keeps half of its CPUs free in all (``cpus / 2 - threads``): the
  scheduler fills idle physical cores first, so the measurement's core stays its own, and the
  memory bus is at most half loaded. A browser and an editor beside a 16-CPU measurement pass;
  fifteen busy processes do not.
* ``auto`` (:func:`resolve_policy`): ``strict`` on up to :data:`AUTO_STRICT_MAX_CPUS` CPUs,
  ``lenient`` above.

Under every policy the worker must get ``min_cpu_share`` of the CPU time it asked for and
steal must stay below ``max_steal_share``: a worker that waited for a core (one busy process
per core beside it) is contended whatever the policy. The policy and its allowance are
recorded with every CPU round and row (``contention_policy``, ``other_cores_allowed``), beside
the load seen (``cpu_share``, ``other_cores``).

``/proc/stat`` counts in ticks (10 ms at ``USER_HZ`` = 100), so ``other_cores`` over a
0.1 s window is known to about +-0.2 cores per CPU that was busy; the thresholds sit well above
that. Where ``/proc/stat`` is missing (not Linux) only ``cpu_share`` is checked. The readers
are injectable so tests drive :class:`CpuProbe` with fake clocks.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AUTO_STRICT_MAX_CPUS",
    "CONTENTION_CHOICES",
    "ContentionLimits",
    "CpuProbe",
    "CpuSnapshot",
    "CpuUsage",
    "POLICIES",
    "assess",
    "online_cpus",
    "read_proc_stat",
    "resolve_policy",
]

POLICIES = ("strict", "lenient")
"""How much other work a window tolerates (see the module docstring)."""

CONTENTION_CHOICES = ("auto", *POLICIES)
"""What ``--contention`` accepts: a policy, or ``auto`` (:func:`resolve_policy`)."""

AUTO_STRICT_MAX_CPUS = 4
"""``auto`` is ``strict`` on machines with at most this many CPUs (the 2-core reference VMs, and
4-CPU machines, often two cores with two hardware threads each), ``lenient`` above."""

LENIENT_EXTRA_CORES = 1.0
"""What ``lenient`` allows beyond ``max_other_cores`` on any machine: one other busy process."""


def online_cpus() -> int:
    """The CPUs ``/proc/stat`` counts (``os.cpu_count()``; 1 when unknown)."""
    return os.cpu_count() or 1


def resolve_policy(choice: str, cpus: int) -> str:
    """The policy ``choice`` names on a machine with ``cpus`` CPUs (``auto`` picks by size); a
    ValueError names a choice that is not one of :data:`CONTENTION_CHOICES`."""
    if choice not in CONTENTION_CHOICES:
        raise ValueError(f"--contention must be one of {', '.join(CONTENTION_CHOICES)}, got {choice!r}")
    if choice == "auto":
        return "strict" if cpus <= AUTO_STRICT_MAX_CPUS else "lenient"
    return choice


@dataclass(frozen=True)
class CpuSnapshot:
    """Clocks read at one instant (seconds); ``busy_s`` / ``steal_s`` are NaN without /proc/stat."""

    wall_s: float
    own_cpu_s: float
    busy_s: float
    steal_s: float


def read_proc_stat(path: str = "/proc/stat") -> tuple[float, float]:
    """Machine-wide ``(busy, steal)`` seconds since boot from the ``cpu`` line of /proc/stat.

    Busy is user + nice + system + irq + softirq (idle, iowait and steal excluded; guest time
    is already inside user). ``(nan, nan)`` when the file cannot be read.
    """
    try:
        with open(path, encoding="ascii") as handle:
            fields = handle.readline().split()
    except OSError:
        return math.nan, math.nan
    if not fields or fields[0] != "cpu":
        return math.nan, math.nan
    ticks = [int(v) for v in fields[1:]] + [0] * 8
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]
    hz = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
    return (user + nice + system + irq + softirq) / hz, steal / hz


class CpuProbe:
    """Takes :class:`CpuSnapshot` s; every clock is injectable for tests."""

    def __init__(
        self,
        wall: Callable[[], float] = time.perf_counter,
        own_cpu: Callable[[], float] = time.process_time,
        machine: Callable[[], tuple[float, float]] = read_proc_stat,
    ) -> None:
        self._wall, self._own_cpu, self._machine = wall, own_cpu, machine

    def snapshot(self) -> CpuSnapshot:
        busy, steal = self._machine()
        return CpuSnapshot(wall_s=self._wall(), own_cpu_s=self._own_cpu(), busy_s=busy, steal_s=steal)


@dataclass(frozen=True)
class CpuUsage:
    """What happened between two snapshots, relative to what ``threads`` of ``cpus`` would get."""

    wall_s: float
    cpu_share: float
    other_cores: float
    steal_share: float
    threads: int = 1
    cpus: int = 1

    @classmethod
    def between(cls, start: CpuSnapshot, end: CpuSnapshot, *, threads: int, cpus: int) -> CpuUsage:
        wall = end.wall_s - start.wall_s
        own = end.own_cpu_s - start.own_cpu_s
        if wall <= 0:
            return cls(wall_s=max(wall, 0.0), cpu_share=math.nan, other_cores=math.nan, steal_share=math.nan,
                       threads=threads, cpus=cpus)
        busy = end.busy_s - start.busy_s
        steal = end.steal_s - start.steal_s
        return cls(
            wall_s=wall,
            cpu_share=own / (wall * threads),
            other_cores=max(0.0, busy - own) / wall if math.isfinite(busy) else math.nan,
            steal_share=steal / (wall * cpus) if math.isfinite(steal) else math.nan,
            threads=threads,
            cpus=cpus,
        )

    def as_dict(self) -> dict[str, float]:
        return {
            "cpu_share": round(self.cpu_share, 4),
            "other_cores": round(self.other_cores, 4),
            "steal_share": round(self.steal_share, 4),
        }


@dataclass(frozen=True)
class ContentionLimits:
    """When a window counts as contended (see the module docstring). ``policy`` is ``strict`` or
    ``lenient`` (``auto`` is resolved before, :func:`resolve_policy`): under ``strict``
    ``max_other_cores`` is the most other work allowed, under ``lenient`` the floor it adds one
    core to."""

    min_cpu_share: float = 0.9
    max_other_cores: float = 0.5
    max_steal_share: float = 0.1
    policy: str = "strict"

    def __post_init__(self) -> None:
        if self.min_cpu_share < 0:
            raise ValueError(f"min_cpu_share must be >= 0, got {self.min_cpu_share}")
        if self.max_other_cores < 0 or self.max_steal_share < 0:
            raise ValueError("max_other_cores and max_steal_share must be >= 0")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")

    def other_cores_allowed(self, *, cpus: int, threads: int, policy: str | None = None) -> float:
        """Cores' worth of other work a window of ``threads`` threads on ``cpus`` CPUs tolerates
        under ``policy`` (this one's when ``None``)."""
        if (policy or self.policy) == "strict":
            return self.max_other_cores
        return max(self.max_other_cores + LENIENT_EXTRA_CORES, cpus / 2 - threads)

    def describe(self, *, cpus: int, threads: int) -> dict[str, Any]:
        """The fields a round record and a row carry about the policy: ``contention_policy`` and
        ``other_cores_allowed``."""
        return {"contention_policy": self.policy,
                "other_cores_allowed": round(self.other_cores_allowed(cpus=cpus, threads=threads), 3)}


def assess(usage: CpuUsage, limits: ContentionLimits) -> str:
    """``""`` when the window got the CPU it asked for, else the reason it did not.

    A quantity that could not be read (NaN) is not held against the window; a window of no
    wall time is contended (nothing was measured). Other work above the allowance of
    ``limits.policy`` for the window's ``threads`` and ``cpus`` is contended; under ``strict``
    the reason says when ``lenient`` would have allowed it.
    """
    if usage.wall_s <= 0 or math.isnan(usage.cpu_share):
        return "no wall time elapsed"
    reasons = []
    if usage.cpu_share < limits.min_cpu_share:
        reasons.append(f"got {usage.cpu_share:.2f} of the CPU time asked for (< {limits.min_cpu_share})")
    allowed = limits.other_cores_allowed(cpus=usage.cpus, threads=usage.threads)
    if usage.other_cores > allowed:
        reasons.append(_other_cores_reason(usage, limits, allowed))
    if usage.steal_share > limits.max_steal_share:
        reasons.append(f"hypervisor steal {usage.steal_share:.1%} (> {limits.max_steal_share:.0%})")
    return "; ".join(reasons)


def _other_cores_reason(usage: CpuUsage, limits: ContentionLimits, allowed: float) -> str:
    """Why the other processes' work was too much, and under ``strict`` what ``lenient`` allows
    where it would have passed."""
    reason = f"other processes used {usage.other_cores:.2f} cores (> {allowed:g}, {limits.policy})"
    if limits.policy == "strict":
        lenient = limits.other_cores_allowed(cpus=usage.cpus, threads=usage.threads, policy="lenient")
        if usage.other_cores <= lenient:
            reason += f"; --contention lenient allows {lenient:g}"
    return reason
