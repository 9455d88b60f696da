"""A roofline for each measurement: how far a module is from what the machine allows.

Measured in the same run as the latencies (:func:`measure_machine`):

* **memory bandwidth**: ``dst.copy_(src)`` on a tensor far larger than the caches
  (128 MiB on CPU, 1 GiB on CUDA by default); bytes moved = read + write = ``2 * nbytes``;
* **matmul rate**: ``a @ b`` with square ``n x n`` matrices in each dtype measured
  (1024 on CPU, 8192 on CUDA), ``n**3`` MACs per call, at the matmul precision in force while
  it is measured: for fp32 on CUDA the stage's ``--tf32`` mode decides (IEEE under ``default``
  and ``off``, TF32 under ``on``), and each matmul row of the machine records says which
  (``peak_precision``: ``ieee``, ``tf32``, ``bf16``, ``fp16``, ``reduced``; :func:`peak_precision`).

Both are sampled with the modules' timer (:func:`suite.timing.timer.sample_round`: warmed until
steady, then about a second of samples, :data:`PEAK_OPTIONS`), at the same thread count and
settings (on CUDA: on the measured device, made current while measuring, with events on its
stream and its cached memory given back afterwards), and -- as STREAM does for its bandwidth -- the rate is taken from the *best* sample:
a peak is what the hardware can do, and on a shared machine the median sample is already
disturbed.

The bound of one forward (:func:`roofline`), a *model* stated here:

* fewest bytes = read the input once + write the output once + read every parameter once,
  input and output at the input's element size, parameters at their own (fp32 under
  autocast, which keeps fp32 weights and casts on the fly);
* MACs = the module's ``formula_macs`` (the attnbench convention: elementwise ops and
  reductions count 1 per element, see ``modules/_base.py``), all at the matmul rate -- a
  generous compute roof for elementwise work, which is why attention gates come out
  memory-bound;
* ``bound_s = max(bytes / bandwidth, macs / matmul_rate)`` (the time at the roofline,
  i.e. performance ``min(peak, bandwidth * intensity)``), and
  ``roofline_fraction = bound_s / measured_s`` (1.0 = at the roof).

No bound is given for a training step: its least traffic depends on what the backward keeps.

The bandwidth roof is main memory's. A working set that fits the last-level cache (the
``fits_llc`` column: fewest bytes <= the LLC size, L3 on CPU, L2 on CUDA) is served
faster than that, as the timer calls the module on the same input again and again, and its
``roofline_fraction`` can exceed 1: read it as "cache-resident", not as an error.

The compute roof is the matmul's, at its ``peak_precision``. Under ``--tf32 default`` (PyTorch's
own settings) fp32 matmuls run IEEE while cuDNN runs fp32 convolutions in TF32, several times
faster: a compute-bound fp32 convolution row on CUDA (the 3x3 conv reference, a model) can then
reach a ``roofline_fraction`` above 1 against the IEEE peak. Read it as "TF32 convolutions", not
as an error; ``--tf32 on`` measures the peak in TF32 too.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .grid import AUTOCAST_DTYPES
from .timer import RoundOptions, clock_for, sample_round, tf32_mode

__all__ = ["MachinePeaks", "PEAK_OPTIONS", "best_sample_s", "last_level_cache_bytes", "measure_bandwidth",
           "measure_matmul_rate", "measure_machine", "min_bytes", "peak_precision", "roofline"]


@dataclass(frozen=True)
class MachinePeaks:
    """Measured bandwidth (bytes/s) and matmul rate (MACs/s per dtype name), with the precision
    each rate's matmul ran at (:func:`peak_precision`, per dtype name)."""

    device: str
    bandwidth_Bps: float
    matmul_macs_per_s: dict[str, float]
    copy_bytes: int
    matmul_n: int
    llc_bytes: int | None = None
    matmul_precision: dict[str, str] = field(default_factory=dict)

    def as_rows(self) -> list[dict[str, Any]]:
        rows = [{"device": self.device, "quantity": "copy_bandwidth_GBps", "dtype": "", "value": self.bandwidth_Bps / 1e9, "size": self.copy_bytes}]
        for dtype, rate in self.matmul_macs_per_s.items():
            rows.append({"device": self.device, "quantity": "matmul_GMACps", "dtype": dtype, "value": rate / 1e9,
                         "size": self.matmul_n, "peak_precision": self.matmul_precision.get(dtype, "")})
        rows.append({"device": self.device, "quantity": "llc_bytes", "dtype": "", "value": self.llc_bytes, "size": None})
        return rows


def last_level_cache_bytes(device: str | torch.device) -> int | None:
    """Size of the last-level cache: the largest CPU cache in sysfs, or the GPU's L2."""
    device = torch.device(device)
    if device.type == "cuda":
        size = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", None)
        return int(size) if size else None
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = entry.read_text().strip().upper()
        try:
            if text.endswith("K"):
                sizes.append(int(text[:-1]) << 10)
            elif text.endswith("M"):
                sizes.append(int(text[:-1]) << 20)
            else:
                sizes.append(int(text))
        except ValueError:
            continue
    return max(sizes) if sizes else None


def _defaults(device: torch.device) -> tuple[int, int]:
    if device.type == "cuda":
        return 1 << 30, 8192
    return 128 << 20, 1024


PEAK_OPTIONS = RoundOptions(sample_s=1.0, warmup_s=0.05)
"""How a peak is sampled: warmed until steady, then about a second of samples."""


def best_sample_s(fn: Callable[[], Any], device: torch.device, options: RoundOptions | None = None) -> float:
    """The fastest per-call time (seconds) of ``fn`` over one round of samples on ``device``'s
    clock (:func:`suite.timing.timer.sample_round`; CUDA events on that device's stream)."""
    taken = sample_round({"peak": fn}, clock=clock_for(device), options=options or PEAK_OPTIONS)
    return min(v for visit in taken.samples["peak"] for v in visit)


def measure_bandwidth(device: str | torch.device, nbytes: int | None = None, *,
                      options: RoundOptions | None = None) -> float:
    """Copy bandwidth in bytes/s (read + write) of a ``nbytes`` tensor copy on ``device``."""
    device = torch.device(device)
    nbytes = nbytes or _defaults(device)[0]
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    return 2 * src.numel() * src.element_size() / best_sample_s(lambda: dst.copy_(src), device, options)


def measure_matmul_rate(device: str | torch.device, dtype: str = "fp32", n: int | None = None, *,
                        options: RoundOptions | None = None) -> float:
    """Square matmul rate in MACs/s for dtype ``dtype`` (``fp32``, ``bf16``, ``fp16``)."""
    device = torch.device(device)
    n = n or _defaults(device)[1]
    torch_dtype = AUTOCAST_DTYPES[dtype] or torch.float32
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device=device, dtype=torch_dtype)
    b = torch.randn(n, n, generator=generator).to(device=device, dtype=torch_dtype)
    return n**3 / best_sample_s(lambda: torch.mm(a, b), device, options)


def peak_precision(device: str | torch.device, dtype: str) -> str:
    """The precision a ``dtype`` matmul runs at on ``device`` now: ``bf16`` / ``fp16`` for those;
    for fp32 on CUDA ``tf32`` where TF32 matmuls are on (:func:`suite.timing.timer.tf32_mode`
    ``on``), on the CPU ``reduced`` where ``torch.get_float32_matmul_precision()`` is not
    ``highest`` (oneDNN may then use a lower precision); else ``ieee``."""
    if dtype != "fp32":
        return dtype
    if torch.device(device).type == "cuda":
        return "tf32" if tf32_mode() == "on" else "ieee"
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "reduced"


@contextlib.contextmanager
def _on_device(device: torch.device) -> Iterator[None]:
    """``device`` as the current CUDA device while measuring (nothing on the CPU); its cached
    memory is given back after, so that the workers have the GPU to themselves."""
    if device.type != "cuda":
        yield
        return
    with torch.cuda.device(device):
        try:
            yield
        finally:
            torch.cuda.empty_cache()


def measure_machine(
    device: str | torch.device,
    dtypes: Iterable[str] = ("fp32",),
    *,
    copy_bytes: int | None = None,
    matmul_n: int | None = None,
    options: RoundOptions | None = None,
) -> MachinePeaks:
    """Bandwidth and per-dtype matmul rates of ``device`` (a dtype that fails gets ``nan``), each
    with the precision it ran at (:func:`peak_precision`)."""
    device = torch.device(device)
    default_bytes, default_n = _defaults(device)
    copy_bytes = copy_bytes or default_bytes
    matmul_n = matmul_n or default_n
    rates: dict[str, float] = {}
    with _on_device(device):
        for dtype in dict.fromkeys(dtypes):
            try:
                rates[dtype] = measure_matmul_rate(device, dtype, matmul_n, options=options)
            except (RuntimeError, NotImplementedError):
                rates[dtype] = math.nan
        bandwidth = measure_bandwidth(device, copy_bytes, options=options)
    precision = {dtype: peak_precision(device, dtype) for dtype in rates}
    return MachinePeaks(str(device), bandwidth, rates, copy_bytes, matmul_n, last_level_cache_bytes(device), precision)


def min_bytes(input_shape: Iterable[int], output_shape: Iterable[int], element_size: int, param_bytes: int) -> int:
    """Fewest bytes a forward must move: input read + output written + parameters read."""
    return (math.prod(input_shape) + math.prod(output_shape)) * element_size + param_bytes


def roofline(measured_s: float, bytes_moved: int, macs: int | None, bandwidth_Bps: float, macs_per_s: float) -> dict[str, Any]:
    """Bound time, which roof binds, and the achieved fraction of the bound for one forward."""
    memory_s = bytes_moved / bandwidth_Bps if bandwidth_Bps > 0 else math.nan
    compute_s = macs / macs_per_s if macs is not None and macs_per_s > 0 else math.nan
    candidates = [t for t in (memory_s, compute_s) if math.isfinite(t)]
    bound_s = max(candidates) if candidates else math.nan
    if not candidates:
        bound = ""
    elif math.isfinite(compute_s) and compute_s > memory_s:
        bound = "compute"
    else:
        bound = "memory"
    fraction = bound_s / measured_s if measured_s > 0 and math.isfinite(bound_s) else math.nan
    return {
        "min_bytes": bytes_moved,
        "memory_bound_ms": memory_s * 1e3,
        "compute_bound_ms": compute_s * 1e3,
        "bound_ms": bound_s * 1e3,
        "bound": bound,
        "roofline_fraction": fraction,
    }
