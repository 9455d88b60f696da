"""The environment a measurement was taken in: versions, device, threads, commit, date; the GPU
measured and what it is doing (clocks, temperature, power, throttling).

Every raw record and every CSV the suite writes carries :func:`collect_environment`, so a
number can be traced to the machine and code that produced it. :func:`gpu_environment`
describes the GPU a device string names, :func:`gpu_state` reads its clocks and throttling at
one moment (``nvidia-smi``, else pynvml).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "collect_environment", "git_commit", "cpu_model", "gpu_environment", "gpu_state", "PROJECT_ROOT",
    "device_target", "package_version", "RECORDED_GPU_FIELDS", "Runner", "THROTTLE_REASONS", "nvml_handle",
]

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


Runner = Callable[[Sequence[str]], str]
"""Runs one command (``nvidia-smi`` and its arguments) and returns its standard output; raises
:class:`OSError` or :class:`subprocess.SubprocessError` when it cannot."""

THROTTLE_REASONS: dict[int, str] = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting",
}
"""NVML's clock throttle (event) reason bits, by the names :func:`gpu_state` gives them."""

RECORDED_GPU_FIELDS = ("gpu", "gpu_driver", "cuda")
"""The fields of :func:`gpu_environment` that :func:`collect_environment` puts in every record; the
records of a CUDA device get all of its fields (compute capability, SMs, memory, L2, cuDNN...)."""

_STATE_FIELDS = ("clocks.sm", "clocks.mem", "temperature.gpu", "power.draw", "clocks_throttle_reasons.active")


def _run(argv: Sequence[str]) -> str:
    """The default :data:`Runner`: ``argv``'s standard output, within 10 seconds."""
    return subprocess.run(list(argv), capture_output=True, text=True, check=True, timeout=10).stdout


def _cuda_index(device: str) -> int | None:
    """The CUDA index ``device`` names (CUDA's current device for a bare ``cuda``); ``None`` for
    another device type, or where torch sees no CUDA device."""
    try:
        parsed = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device {device!r}: {exc}; expected cpu, cuda or cuda:N") from exc
    if parsed.type != "cuda" or not torch.cuda.is_available():
        return None
    return parsed.index if parsed.index is not None else torch.cuda.current_device()


def _torch_uuid(props: Any) -> str:
    """The device's UUID as nvidia-smi writes it (``GPU-...``), from torch's properties; ``""``
    where torch does not give one."""
    uuid = getattr(props, "uuid", None)
    text = "" if uuid is None else str(uuid)
    return text if not text or text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def _smi_target(index: int, props: Any) -> str:
    """How ``nvidia-smi -i`` and NVML name this process's CUDA device ``index``: its UUID where torch
    gives it (right whatever ``CUDA_VISIBLE_DEVICES`` and ``CUDA_DEVICE_ORDER`` say), else the
    ``CUDA_VISIBLE_DEVICES`` entry at ``index``, else ``index``."""
    uuid = _torch_uuid(props)
    if uuid:
        return uuid
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[index] if index < len(visible) else str(index)


def device_target(index: int) -> str:
    """How ``nvidia-smi`` and NVML name this process's CUDA device ``index`` (see :func:`_smi_target`)."""
    return _smi_target(index, torch.cuda.get_device_properties(index))


def _smi_query(fields: Sequence[str], target: str | None, runner: Runner) -> list[str] | None:
    """``nvidia-smi --query-gpu`` of ``fields`` for the device ``target`` (the first device when
    ``None``): the values in order, or ``None`` when it cannot be run or answers otherwise."""
    argv = ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"]
    if target is not None:
        argv += ["-i", target]
    try:
        lines = runner(argv).strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    values = [value.strip() for value in lines[0].split(",")] if lines else []
    return values if len(values) == len(fields) else None


def nvml_handle(nvml: Any, target: str) -> Any:
    """NVML's handle of the device ``target`` names (a ``GPU-``/``MIG-`` UUID, else an index)
    through the module ``nvml`` (pynvml). The UUID is passed as bytes, what NVML's C call takes
    (pynvml hands it to ctypes' ``c_char_p``, which refuses text), and as text where this pynvml
    refuses bytes (``TypeError``)."""
    if not target.startswith(("GPU-", "MIG-")):
        return nvml.nvmlDeviceGetHandleByIndex(int(target))
    try:
        return nvml.nvmlDeviceGetHandleByUUID(target.encode())
    except TypeError:
        return nvml.nvmlDeviceGetHandleByUUID(target)


def _nvml_read(target: str, read: Callable[[Any, Any], dict[str, Any]]) -> dict[str, Any] | None:
    """``read(pynvml, handle)`` for the device ``target`` names (:func:`nvml_handle`), between
    ``nvmlInit`` and ``nvmlShutdown``; ``None`` where pynvml is not installed or NVML fails."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        return read(pynvml, nvml_handle(pynvml, target))
    except (pynvml.NVMLError, TypeError, ValueError):
        return None
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def _nvml_call(nvml: Any, name: str, *args: Any) -> Any:
    """``nvml.name(*args)``, or ``None`` where this pynvml lacks it or the device does not report it."""
    function = getattr(nvml, name, None)
    if function is None:
        return None
    try:
        value = function(*args)
    except nvml.NVMLError:
        return None
    return value.decode() if isinstance(value, bytes) else value


def _number(text: str) -> float | None:
    """A value of nvidia-smi's CSV as a number; ``None`` for ``[N/A]``, ``[Not Supported]`` and the like."""
    try:
        return float(text)
    except ValueError:
        return None


def _whole(value: float | None) -> int | None:
    return None if value is None else int(value)


def _mask(text: str) -> int | None:
    """nvidia-smi's throttle reasons (``0x0000000000000004``) as an integer; ``None`` where not given."""
    try:
        return int(text, 16)
    except ValueError:
        return None


def _state_fields(sm_mhz: float | None, mem_mhz: float | None, temperature_c: float | None,
                  power_w: float | None, mask: int | None) -> dict[str, Any]:
    """:func:`gpu_state`'s fields from its readings (``None`` for one not read)."""
    reasons = None if mask is None else ",".join(name for bit, name in THROTTLE_REASONS.items() if mask & bit)
    return {"gpu_sm_clock_mhz": _whole(sm_mhz), "gpu_mem_clock_mhz": _whole(mem_mhz),
            "gpu_temperature_c": _whole(temperature_c), "gpu_power_w": power_w,
            "gpu_throttle_mask": mask, "gpu_throttle_reasons": reasons}


def _nvml_state(nvml: Any, handle: Any) -> dict[str, Any]:
    """:func:`gpu_state`'s fields read through NVML."""
    power_mw = _nvml_call(nvml, "nvmlDeviceGetPowerUsage", handle)
    mask = _nvml_call(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", handle)
    if mask is None:
        mask = _nvml_call(nvml, "nvmlDeviceGetCurrentClocksEventReasons", handle)
    return _state_fields(_nvml_call(nvml, "nvmlDeviceGetClockInfo", handle, nvml.NVML_CLOCK_SM),
                         _nvml_call(nvml, "nvmlDeviceGetClockInfo", handle, nvml.NVML_CLOCK_MEM),
                         _nvml_call(nvml, "nvmlDeviceGetTemperature", handle, nvml.NVML_TEMPERATURE_GPU),
                         None if power_mw is None else power_mw / 1000, mask)


def _nvml_identity(nvml: Any, handle: Any) -> dict[str, Any]:
    return {"uuid": _nvml_call(nvml, "nvmlDeviceGetUUID", handle) or "",
            "driver": _nvml_call(nvml, "nvmlSystemGetDriverVersion") or ""}


def _identity(target: str, runner: Runner) -> tuple[str, str]:
    """The device's UUID and the driver's version, from nvidia-smi, else NVML (``""`` for each
    one neither gives)."""
    values = _smi_query(("uuid", "driver_version"), target, runner)
    if values is not None:
        return values[0], values[1]
    nvml = _nvml_read(target, _nvml_identity)
    if nvml is not None:
        return nvml["uuid"], nvml["driver"]
    driver = _smi_query(("driver_version",), None, runner)  # the driver is the machine's, whichever device
    return "", driver[0] if driver else ""


def _no_gpu() -> dict[str, Any]:
    """:func:`gpu_environment`'s fields where no GPU is measured."""
    return {"gpu": "", "gpu_index": None, "gpu_uuid": "", "compute_capability": "", "gpu_sms": None,
            "gpu_memory_bytes": None, "gpu_l2_bytes": None, "gpu_driver": "", "cuda": "", "cudnn": None}


def gpu_environment(device: str, *, runner: Runner | None = None) -> dict[str, Any]:
    """The GPU that ``device`` (``cpu``, ``cuda``, ``cuda:N``) names: ``gpu`` (its name),
    ``gpu_index`` (torch's index), ``gpu_uuid`` (``GPU-...``), ``compute_capability`` (``"9.0"``),
    ``gpu_sms``, ``gpu_memory_bytes``, ``gpu_l2_bytes``, ``gpu_driver``, ``cuda`` (the CUDA torch
    was built with) and ``cudnn`` (``torch.backends.cudnn.version()``).

    The same fields, empty (``""`` or ``None``), for a device that is not CUDA or where torch
    sees no CUDA device. UUID and driver come from ``nvidia-smi`` (run by ``runner``), else
    from pynvml where it is installed; ``""`` where neither answers.
    """
    index = _cuda_index(device)
    if index is None:
        return _no_gpu()
    props = torch.cuda.get_device_properties(index)
    uuid, driver = _identity(_smi_target(index, props), runner or _run)
    return {
        "gpu": props.name, "gpu_index": index, "gpu_uuid": uuid or _torch_uuid(props),
        "compute_capability": f"{props.major}.{props.minor}", "gpu_sms": props.multi_processor_count,
        "gpu_memory_bytes": props.total_memory, "gpu_l2_bytes": getattr(props, "L2_cache_size", None),
        "gpu_driver": driver, "cuda": torch.version.cuda or "", "cudnn": torch.backends.cudnn.version(),
    }


def gpu_state(device: str, *, runner: Runner | None = None) -> dict[str, Any]:
    """What the GPU ``device`` names is doing now: ``gpu_sm_clock_mhz``, ``gpu_mem_clock_mhz``,
    ``gpu_temperature_c``, ``gpu_power_w``, ``gpu_throttle_mask`` (NVML's reason bits) and
    ``gpu_throttle_reasons`` (their names, comma-separated, ``""`` for none; ``gpu_idle`` is
    set on an idle GPU and says nothing about a slowdown). A value the device does not report
    is ``None``.

    Read with ``nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw,
    clocks_throttle_reasons.active -i DEVICE`` (run by ``runner``), else pynvml where it is
    installed; ``{}`` for a device that is not CUDA, or where neither answers.
    """
    index = _cuda_index(device)
    if index is None:
        return {}
    target = _smi_target(index, torch.cuda.get_device_properties(index))
    values = _smi_query(_STATE_FIELDS, target, runner or _run)
    if values is not None:
        sm, mem, temperature, power, mask = values
        return _state_fields(_number(sm), _number(mem), _number(temperature), _number(power), _mask(mask))
    return _nvml_read(target, _nvml_state) or {}


def _default_device() -> str:
    """CUDA's current device where torch sees one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def collect_environment(device: str | None = None, *, runner: Runner | None = None) -> dict[str, Any]:
    """A flat dict describing this process's environment (safe to put in a CSV row).

    The GPU fields (:data:`RECORDED_GPU_FIELDS`) describe ``device``, the device measured
    (default: CUDA's current device where torch sees one, else the CPU, whose are empty);
    ``runner`` runs ``nvidia-smi`` (:func:`gpu_environment`).
    """
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
    measured = device or _default_device()
    gpu = gpu_environment(measured, runner=runner)
    shown = gpu if measured.startswith("cuda") else {field: gpu[field] for field in RECORDED_GPU_FIELDS}
    env.update(shown)
    return env
