"""What ``suite latency`` and ``suite memory`` share: parsing the device and the grid into
configurations, and the settings context (threads, cuDNN / TF32) with the environment."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..env import collect_environment
from .grid import Config, expand
from .sweep import axes_from_args, busy_warning
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


def plan_sweep(args: argparse.Namespace, stage: str, cpu_threads: int | None = None) -> SweepPlan | int:
    """The plan for ``stage`` from the CLI arguments, or an exit code after printing the error
    (a bad ``--device``, no CUDA, an unknown ``--attn`` pattern), before anything is measured.
    Without ``--threads``: ``cpu_threads`` on the CPU when given, else the cores this process may use."""
    device = args.device or "cpu"
    try:
        torch_device = torch.device(device)
    except RuntimeError as exc:
        print(f"error: --device {device!r}: {exc}", file=sys.stderr)
        return 2
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    import modules

    try:
        names = modules.list_attention(args.attn, strict=True)
    except ValueError as exc:
        print(f"error: --attn: {exc}", file=sys.stderr)
        return 2
    stage_default = cpu_threads if cpu_threads is not None and torch_device.type == "cpu" else None
    threads = args.threads if args.threads is not None else (stage_default or default_threads())
    if threads < 1:
        print(f"error: --threads must be >= 1, got {threads}", file=sys.stderr)
        return 2
    archs = [""]
    if args.level == "model":
        archs = list(args.arch)
        unknown = [a for a in archs if a not in modules.list_archs()]
        if unknown or not archs:
            print(f"error: --arch {','.join(archs)!r}: unknown {', '.join(unknown) or 'empty list'}; "
                  f"accepted: {', '.join(modules.list_archs())}", file=sys.stderr)
            return 2
    axes = axes_from_args(args, stage, device)
    configs = [config for arch in archs for config in expand(
        stage, names, axes, device=device, threads=threads, level=args.level, arch=arch)]
    return SweepPlan(device, torch_device, threads, axes, configs)


@contextlib.contextmanager
def measurement_settings(args: argparse.Namespace, plan: SweepPlan) -> Iterator[dict[str, Any]]:
    """Set threads (and cuDNN benchmark / TF32 on CUDA) for the sweep; yield the environment
    with those settings recorded. Warns on stderr when the CPU is busy."""
    cuda_context = (
        cuda_settings(cudnn_benchmark=args.cudnn_benchmark == "on", tf32=args.tf32 == "on")
        if plan.torch_device.type == "cuda" else contextlib.nullcontext({})
    )
    with cpu_settings(plan.threads) as cpu_record, cuda_context as cuda_record:
        if plan.torch_device.type == "cpu" and (warning := busy_warning(plan.threads)):
            print(warning, file=sys.stderr)
        environment = collect_environment()
        environment.update(cpu_record)
        environment.update(cuda_record)
        yield environment
