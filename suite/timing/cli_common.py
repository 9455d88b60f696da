"""What ``suite latency`` and ``suite memory`` share: parsing the device and the grid into
configurations, and the settings context (threads, cuDNN / TF32) with the environment."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..env import collect_environment
from ..errors import UsageError
from ..shard import select_shard
from .grid import Config, expand
from .sweep import GridSettings, axes_from_settings, busy_warning
from .timer import cpu_settings, cuda_settings, default_threads

__all__ = ["SweepPlan", "plan_sweep", "measurement_settings"]


@dataclass
class SweepPlan:
    """The configurations a stage will measure, and how."""

    device: str
    torch_device: torch.device
    threads: int
    axes: Any
    configs: list[Config]


def plan_sweep(settings: GridSettings, stage: str, cpu_threads: int | None = None) -> SweepPlan:
    """The plan for ``stage`` from its settings (part ``--shard`` of it), before anything is measured; a bad ``--device``,
    no CUDA, an unknown ``--attn`` pattern or ``--arch`` raise :class:`UsageError`. Without
    ``--threads``: ``cpu_threads`` on the CPU when given, else the cores this process may use."""
    device = settings.device or "cpu"
    torch_device = _torch_device(device)

    names = _attention_names(settings.attn, settings.level)
    stage_default = cpu_threads if cpu_threads is not None and torch_device.type == "cpu" else None
    threads = settings.threads if settings.threads is not None else (stage_default or default_threads())
    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    archs = _archs(settings)
    axes = axes_from_settings(settings, stage, device)
    configs = select_shard([config for arch in archs for config in expand(
        stage, names, axes, device=device, threads=threads, level=settings.level, arch=arch)], settings.shard)
    return SweepPlan(device, torch_device, threads, axes, configs)


def _attention_names(spec: str, level: str | None) -> list[str]:
    """The types ``--attn`` names; at model level an explicit ``none`` (:data:`modules.BASELINE`)
    adds the A/A control: a second backbone without attention, built and timed as a design is,
    whose ratio to the reference measures the harness itself (1 when nothing differs but the
    timing). :class:`UsageError` for an unknown pattern, or ``none`` at module level."""
    import modules

    parts = [p.strip() for p in spec.split(",") if p.strip()]
    control = modules.BASELINE in parts
    if control and level != "model":
        raise UsageError(f"--attn {modules.BASELINE}: the A/A control (the backbone against itself) exists at "
                         "--level model only")
    rest = ",".join(p for p in parts if p != modules.BASELINE)
    try:
        names = modules.list_attention(rest, strict=True) if rest else []
    except ValueError as exc:
        raise UsageError(f"--attn: {exc}") from exc
    return [*names, modules.BASELINE] if control else names


def _torch_device(device: str) -> torch.device:
    """``device`` as torch's; :class:`UsageError` for a name torch refuses or CUDA it cannot see."""
    try:
        torch_device = torch.device(device)
    except RuntimeError as exc:
        raise UsageError(f"--device {device!r}: {exc}") from exc
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda but torch sees no CUDA device")
    return torch_device


def _archs(settings: GridSettings) -> list[str]:
    """The backbones of a model-level sweep (``[""]`` at module level); :class:`UsageError` for
    an unknown or empty ``--arch``."""
    if settings.level != "model":
        return [""]
    import modules

    archs = list(settings.arch)
    unknown = [a for a in archs if a not in modules.list_archs()]
    if unknown or not archs:
        raise UsageError(f"--arch {','.join(archs)!r}: unknown {', '.join(unknown) or 'empty list'}; "
                         f"accepted: {', '.join(modules.list_archs())}")
    return archs


@contextlib.contextmanager
def measurement_settings(settings: GridSettings, plan: SweepPlan) -> Iterator[dict[str, Any]]:
    """Set threads (and cuDNN benchmark / TF32 on CUDA, ``--tf32`` a
    :data:`~suite.timing.timer.TF32_MODES` name) for the sweep; yield the environment with those
    settings recorded. Warns on stderr when the CPU is busy."""
    cuda_context = (
        cuda_settings(cudnn_benchmark=settings.cudnn_benchmark == "on", tf32=settings.tf32)
        if plan.torch_device.type == "cuda" else contextlib.nullcontext({})
    )
    with cpu_settings(plan.threads) as cpu_record, cuda_context as cuda_record:
        if plan.torch_device.type == "cpu" and (warning := busy_warning(plan.threads)):
            print(warning, file=sys.stderr)
        environment = collect_environment(str(plan.torch_device))
        environment.update(cpu_record)
        environment.update(cuda_record)
        yield environment
