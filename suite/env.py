"""The environment a measurement was taken in: versions, device, threads, commit, date.

Every raw record and every CSV the suite writes carries this, so a number can be traced to
the machine and code that produced it.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

__all__ = ["collect_environment", "git_commit", "cpu_model", "PROJECT_ROOT", "package_version"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent

_PACKAGES = ("torch", "torchvision", "fvcore", "thop", "numpy", "pandas", "timm")


def package_version(name: str) -> str:
    """Installed version of distribution ``name``, or ``"absent"``."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The project's git commit (with ``-dirty`` when the tree has changes), or ``"unknown"``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=PROJECT_ROOT, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "modules", "suite"],
            cwd=PROJECT_ROOT, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, platform otherwise)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_info() -> dict[str, Any]:
    if not torch.cuda.is_available():
        return {"gpu": "", "gpu_driver": "", "cuda": ""}
    props = torch.cuda.get_device_properties(0)
    driver = ""
    try:
        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    return {"gpu": props.name, "gpu_driver": driver, "cuda": torch.version.cuda or ""}


def collect_environment() -> dict[str, Any]:
    """A flat dict describing this process's environment (safe to put in a CSV row)."""
    env: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    env.update({f"{p}_version": package_version(p) for p in _PACKAGES})
    env.update(_gpu_info())
    return env
