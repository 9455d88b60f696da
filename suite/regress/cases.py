"""The regression cases: one attention type, one mode, one small fixed shape.

A case is measured exactly as ``python -m suite latency`` measures a configuration
(:func:`suite.timing.workloads.build_workload`: the module and a 3x3 conv ``C -> C`` of the same
input as reference, eval + ``no_grad`` for ``forward``, forward + backward for ``train``), and
timed as it times a round: :func:`suite.timing.timer.sample_round` (:data:`GATE_TIMER`; warm-up
until memory is steady, then the module and the reference sampled in alternation) under
:func:`suite.timing.timer.cpu_settings`. The measurement is repeated ``visits`` times in the same
process (``--visits``) and the case's ratio is the median of the per-visit ratios
``module min / reference min``. The timer is part of a ratio's machine class
(:func:`suite.regress.gate.machine_class`): ratios of another timer are never compared.

Why the fastest samples and not the medians: on a shared machine a neighbour's CPU bursts slow
whichever callable happens to run during them, and the medians follow what fraction of each
callable's samples was hit. Measured on the 2-core machine next to a 2-thread training job
(5 in-process repeats, batch 2, C=64, 28x28, 1 thread): the spread ``max/min - 1`` of the
per-repeat ratio was 56-111% with medians and 2-3% with minima for the SE, CA and
CBAM training steps (16% for CBAM's), 0-1% vs 1-4% for their forwards. A real slowdown moves
the fastest sample as much as the typical one. The median ratio is recorded as well
(``ratio_median``).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from suite.timing.grid import Config
    from suite.timing.job import Job

GATE_TIMER = "sample_round"
"""How the gate's ratio cases are timed (:func:`suite.timing.timer.sample_round`, as the latency
stage's rounds are). Ratios recorded without a timer came from the earlier
``measure_interleaved`` (:data:`EARLIER_TIMER`)."""

EARLIER_TIMER = "measure_interleaved"
"""The timer of ratio cases and baselines that do not name one."""

__all__ = [
    "GATE_TIMER",
    "EARLIER_TIMER",
    "DEFAULT_ATTN",
    "GateCase",
    "RegressSettings",
    "gate_case",
    "gate_job",
    "WIRE_NAMES",
    "WORKER_RECORD_KEYS",
    "case_id",
    "config_for",
    "load_settings",
    "measure_case",
]

DEFAULT_ATTN: tuple[str, ...] = ("se", "eca", "cbam", "ca")
"""The default small set: four common gates, memory-bound (the noisy kind), 8 cases with both modes."""


WIRE_NAMES: dict[str, str] = {"mode": "modes", "visits": "repeats"}
"""Fields of :class:`RegressSettings` whose key in the worker protocol differs from their name:
``{field: wire key}``. Every revision's gate worker (``gate_case``, the Callgrind worker) reads
these keys, and the committed baselines' ``settings`` hold them."""


@dataclass(frozen=True)
class RegressSettings:
    """What the cases measure. Field names follow the flags of ``python -m suite regress``
    (``mode``: ``--mode``, ``visits``: ``--visits``). Written to the gate's files with
    :meth:`to_json`, sent to a worker with :meth:`to_wire` (:func:`gate_case` and
    :mod:`suite.regress.callgrind_worker` read it), read back from either with :meth:`from_json`."""

    attn: tuple[str, ...] = DEFAULT_ATTN
    mode: tuple[str, ...] = ("forward", "train")
    batch: int = 2
    channels: int = 64
    size: int = 28
    threads: int = 1
    visits: int = 3  # measurements per case in one process; the case's value is their median
    budget_s: float = 0.25  # ratio: sampling time of one of the visits (module and reference together)
    visit_s: float = 0.02  # ratio: the timer's time on one callable before switching to the other
    calls: int = 4  # instructions: calls of the step per counted repetition
    warmup: int = 3  # instructions: uninstrumented calls of each step before counting
    plugins: tuple[str, ...] = field(default_factory=tuple)  # suite.plugins specs: extra types to gate

    def __post_init__(self) -> None:
        for axis in ("batch", "channels", "size", "threads", "visits", "calls", "warmup"):
            value = getattr(self, axis)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{axis} must be a positive int, got {value!r}")
        if self.budget_s <= 0 or self.visit_s <= 0:
            raise ValueError(f"budget_s and visit_s must be > 0, got {self.budget_s}, {self.visit_s}")
        if not self.attn or not self.mode:
            raise ValueError("attn and mode must name at least one value each")

    @property
    def shape_label(self) -> str:
        return f"b{self.batch}c{self.channels}s{self.size}"

    def cases(self) -> list[tuple[str, str]]:
        return [(name, mode) for name in self.attn for mode in self.mode]

    def to_json(self) -> dict[str, Any]:
        """The settings as the gate's files record them (the field names)."""
        return asdict(self)

    def to_wire(self) -> dict[str, Any]:
        """The settings as a worker of any revision reads them (keys renamed by :data:`WIRE_NAMES`)."""
        return {WIRE_NAMES.get(name, name): value for name, value in asdict(self).items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RegressSettings:
        """The settings of :meth:`to_json`'s or :meth:`to_wire`'s form (a committed baseline's
        ``settings`` are in the wire form)."""
        by_wire = {wire: name for name, wire in WIRE_NAMES.items()}
        fields = {by_wire.get(key, key): value for key, value in data.items()}
        for key in ("attn", "mode", "plugins"):
            if key in fields:
                fields[key] = tuple(fields[key])
        return cls(**fields)


def load_settings(path: str | Path | None) -> RegressSettings:
    """The settings in the JSON file ``path``; the defaults when ``path`` is None."""
    if path is None:
        return RegressSettings()
    return RegressSettings.from_json(json.loads(Path(path).read_text()))


def case_id(name: str, mode: str, settings: RegressSettings) -> str:
    """The key a case has in the benchmark JSON and the baseline, e.g. ``se|forward|b2c64s28``."""
    return f"{name}|{mode}|{settings.shape_label}"


def config_for(name: str, mode: str, settings: RegressSettings) -> Config:
    """The latency stage's configuration of one gate case (its workload is what the case times)."""
    from suite.timing.grid import Config

    return Config(stage="regress", attn=name, mode=mode, batch=settings.batch,
                  channels=settings.channels, size=settings.size, threads=settings.threads)


@dataclass(frozen=True)
class GateCase:
    """One case as the gate hands it to a worker process (:mod:`suite.timing.worker`)."""

    name: str
    mode: str
    case: str

    def key(self) -> str:
        return self.case


WORKER_RECORD_KEYS = ("status", "threads_set", "flush_denormal", "allocator_tunables", "pid")
"""What the worker adds to a case's facts (its settings record); not part of the facts."""


def gate_job(settings: RegressSettings) -> Job:
    """The worker job that measures the cases of ``settings`` (:func:`gate_case` as the runner of
    :mod:`suite.timing.worker`): the gate's threads, on the CPU, flush-denormal off; the cases
    are added per job (:meth:`suite.timing.job.Job.with_items`)."""
    from suite.timing.job import Job

    return Job(threads=settings.threads, device="cpu", runner="suite.regress.cases:gate_case",
               gate_settings=settings.to_wire())


def gate_case(raw: dict[str, Any], job: Job) -> tuple[str, Callable[[], dict[str, Any]]]:
    """The worker's runner for one gate case: its key and a callable that measures it under the
    job's gate settings (:attr:`suite.timing.job.Job.gate_settings`) and returns its facts with
    status ``ok``."""
    from suite.plugins import load_plugins
    from suite.timing.timer import cpu_settings

    if job.gate_settings is None:
        raise ValueError("a gate job names its gate_settings")
    settings = RegressSettings.from_json(job.gate_settings)

    def measure() -> dict[str, Any]:
        load_plugins(settings.plugins)
        with cpu_settings(settings.threads):
            facts, _ = measure_case(raw["name"], raw["mode"], settings)
        return {"status": "ok", **facts}

    return raw["case"], measure


def measure_case(name: str, mode: str, settings: RegressSettings) -> tuple[dict[str, Any], Any]:
    """Measure one case; return its facts (``ratio`` and the rest) and the workload.

    The workload is returned so that a caller can time the same step for its
    record. Call inside :func:`suite.timing.timer.cpu_settings` (the benchmark case does).
    """
    import torch

    from suite.timing.timer import RoundOptions, sample_round
    from suite.timing.workloads import build_workload

    config = config_for(name, mode, settings)
    workload = build_workload(config)
    options = RoundOptions(sample_s=settings.budget_s, visit_s=settings.visit_s)
    ratios: list[float] = []
    median_ratios: list[float] = []
    module_s: list[float] = []
    reference_s: list[float] = []
    for _ in range(settings.visits):
        samples = sample_round({"module": workload.step, "reference": workload.reference_step},
                               options=options).samples
        module = [t for visit in samples["module"] for t in visit]
        reference = [t for visit in samples["reference"] for t in visit]
        module_s.append(statistics.median(module))
        reference_s.append(statistics.median(reference))
        ratios.append(min(module) / min(reference))
        median_ratios.append(statistics.median(module) / statistics.median(reference))
    facts = {
        "case": case_id(name, mode, settings),
        "attn": name,
        "mode": mode,
        "shape": list(workload.input_shape),
        "params": workload.params,
        "formula_macs": workload.formula_macs,
        "device": config.device,
        "dtype": config.dtype,
        "threads": torch.get_num_threads(),
        "reference": workload.reference_name,
        "module_ms": statistics.median(module_s) * 1e3,
        "module_ms_repeats": [s * 1e3 for s in module_s],
        "reference_ms": statistics.median(reference_s) * 1e3,
        "ratio": statistics.median(ratios),
        "ratio_repeats": ratios,
        "ratio_median": statistics.median(median_ratios),
        "repeats": settings.visits,
        "timer": GATE_TIMER,
    }
    return facts, workload
