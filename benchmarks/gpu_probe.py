"""GPU timing probes: eager launches against a CUDA graph, and CUDA events against ``Timer``.

    python -m benchmarks.gpu_probe graph [--out graph_probe.csv] [--dry-run]
    python -m benchmarks.gpu_probe timer [--out timer_probe.csv] [--dry-run]

``graph``: a small attention gate (SE at 64 channels, 14x14, batch 1 to 32, fp32 and bf16,
forward under ``no_grad``) timed three ways. ``eager_event_us``: CUDA events around ``--calls``
back-to-back eager calls, per call. ``host_enqueue_us``: the wall time of the same loop from
before the first launch to after the last, before synchronizing, per call: the host's cost of
dispatching the kernels. ``graph_us``: the same forward captured once in a
``torch.cuda.CUDAGraph`` and replayed, events around the replays, per replay: the kernels
without Python's dispatch. Capture and the ``host_bound`` test are the latency stage's own
(:func:`suite.timing.cuda.capture_graph`, :func:`suite.timing.cuda.host_bound`): a row is
host-bound when the host's enqueue time is at least ``HOST_BOUND_SHARE`` of the event time
(median over the samples), so the GPU waited for launches and the eager event time measures
Python and the dispatcher rather than the kernels (``graph_speedup`` says by how much).

``timer``: a 3x3 convolution (the latency stage's reference) and SE at a small and a large
shape, fp32, timed by plain CUDA events (``events_us``), by the latency stage's timer
(``suite.timing.timer.measure`` with its CUDA event clock; ``harness_us``) and by
``torch.utils.benchmark.Timer.blocked_autorange`` (``timer_us``, which synchronizes around each
block of calls), with the ratios of the first two to the third.

Every figure is the median over ``--samples`` samples, after warm-up; the input is the same
tensor on every call, so small shapes are read from L2. PyTorch's default TF32 and cuDNN
settings are left as they are. Both probes need CUDA and exit 2 without it; ``--dry-run`` needs
none and prints the rows it would measure.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suite.errors import USAGE_EXIT, UsageError

__all__ = ["Shape", "graph_plan", "timer_plan", "main"]

GRAPH_COLUMNS = ("module", "shape", "dtype", "calls", "eager_event_us", "host_enqueue_us", "graph_us",
                 "graph_speedup", "host_bound")
TIMER_COLUMNS = ("module", "shape", "dtype", "events_us", "harness_us", "timer_us", "events_over_timer",
                 "harness_over_timer")
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
HARNESS = {"graph": ("suite.timing.cuda", ("capture_graph", "host_bound")),
           "timer": ("suite.timing.timer", ("TimerOptions", "clock_for", "measure"))}
"""The latency stage's names each probe uses; a dry run imports them, so it fails where a GPU run would."""
DEVICE = "cuda"
"""Where the probed modules run (tests drive the probes on the CPU with fake CUDA timing objects)."""


@dataclass(frozen=True)
class Shape:
    """One probed row: a module name (``conv3x3`` or a registered attention type), an input
    shape ``(N, C, H, W)`` and a dtype name (``fp32`` or ``bf16``)."""

    module: str
    batch: int
    channels: int
    size: int
    dtype: str

    @property
    def text(self) -> str:
        return f"{self.batch}x{self.channels}x{self.size}x{self.size}"


def graph_plan(module: str = "se", channels: int = 64, size: int = 14,
               batches: Iterable[int] = (1, 2, 4, 8, 16, 32), dtypes: Iterable[str] = ("fp32", "bf16")) -> list[Shape]:
    """The graph probe's rows: every batch in every dtype."""
    return [Shape(module, b, channels, size, d) for d in dtypes for b in batches]


def timer_plan() -> list[Shape]:
    """The timer probe's rows: a 3x3 conv and SE, at a launch-bound and a compute-bound shape."""
    return [Shape(m, b, c, s, "fp32") for b, c, s in ((1, 64, 14), (32, 256, 56)) for m in ("conv3x3", "se")]


def require_cuda() -> None:
    """Raise :class:`UsageError` naming CUDA when no CUDA device is usable."""
    import torch

    if not torch.cuda.is_available():
        raise UsageError(f"CUDA is not available (torch.cuda.is_available() is False; torch {torch.__version__}, "
                         f"CUDA build {torch.version.cuda}): these probes time GPU kernels. "
                         "Run them on a CUDA GPU, or pass --dry-run to print what they would measure")


def build(shape: Shape) -> tuple[Callable[[], Any], Any, Any]:
    """The module for ``shape`` on the GPU in eval mode, its input, and the forward step."""
    import torch
    from torch import nn

    import modules

    dtype = getattr(torch, DTYPES[shape.dtype])
    if shape.module == "conv3x3":
        module: nn.Module = nn.Conv2d(shape.channels, shape.channels, 3, padding=1, bias=False)
    else:
        module = modules.create(shape.module, shape.channels)
    module = module.to(device=DEVICE, dtype=dtype).eval()
    x = torch.randn(shape.batch, shape.channels, shape.size, shape.size, device=DEVICE, dtype=dtype)

    def step() -> Any:
        with torch.no_grad():
            return module(x)

    return step, module, x


def time_events(fn: Callable[[], Any], calls: int, samples: int, warmup: int = 5) -> tuple[list[float], list[float]]:
    """Per sample, the per-call GPU time between two CUDA events around ``calls`` calls, and the
    per-call host time of the same loop up to its last launch (before synchronizing), in us."""
    import torch

    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    gpu, host = [], []
    for _ in range(samples):
        torch.cuda.synchronize()
        begun = time.perf_counter()
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        enqueued = time.perf_counter()
        end.synchronize()
        gpu.append(start.elapsed_time(end) * 1e3 / calls)
        host.append((enqueued - begun) * 1e6 / calls)
    return gpu, host


def graph_row(shape: Shape, calls: int, samples: int) -> dict[str, Any]:
    """One row of the graph probe (see the module docstring)."""
    from suite.timing.cuda import capture_graph, host_bound

    step, _, _ = build(shape)
    eager, host = time_events(step, calls, samples)
    graph, _ = time_events(capture_graph(step, DEVICE), calls, samples)
    eager_us, graph_us = statistics.median(eager), statistics.median(graph)
    return {"module": shape.module, "shape": shape.text, "dtype": shape.dtype, "calls": calls,
            "eager_event_us": round(eager_us, 2), "host_enqueue_us": round(statistics.median(host), 2),
            "graph_us": round(graph_us, 2), "graph_speedup": round(eager_us / graph_us, 2),
            "host_bound": host_bound(host, eager)}


def timer_row(shape: Shape, calls: int, samples: int, min_run_time: float) -> dict[str, Any]:
    """One row of the timer probe (see the module docstring)."""
    import torch
    from torch.utils.benchmark import Timer

    from suite.timing.timer import TimerOptions, clock_for, measure

    step, _, _ = build(shape)
    events_us = statistics.median(time_events(step, calls, samples)[0])
    harness_us = measure(step, clock=clock_for(DEVICE), options=TimerOptions(budget_s=min_run_time)).median * 1e6
    timer = Timer("step()", globals={"step": step}, num_threads=torch.get_num_threads(), label=shape.module)
    timer_us = timer.blocked_autorange(min_run_time=min_run_time).median * 1e6
    return {"module": shape.module, "shape": shape.text, "dtype": shape.dtype, "events_us": round(events_us, 2),
            "harness_us": round(harness_us, 2), "timer_us": round(timer_us, 2),
            "events_over_timer": round(events_us / timer_us, 3), "harness_over_timer": round(harness_us / timer_us, 3)}


def write_rows(path: Path, columns: tuple[str, ...], rows: Iterable[dict[str, Any]]) -> int:
    """Write each row to the CSV at ``path`` (header ``columns``) and print it as it is measured,
    so a probe stopped by its timeout keeps the rows it finished; returns the number written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    print("  ".join(columns), flush=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            handle.flush()
            print("  ".join(str(row[c]) for c in columns), flush=True)
            written += 1
    return written


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    probes = parser.add_subparsers(dest="probe", required=True, metavar="{graph,timer}")
    for name, default_out in (("graph", "graph_probe.csv"), ("timer", "timer_probe.csv")):
        sub = probes.add_parser(name, help=f"the {name} probe (see the description)")
        sub.add_argument("--out", type=Path, default=Path(default_out), help=f"CSV to write (default {default_out})")
        sub.add_argument("--calls", type=int, default=20, help="back-to-back calls per sample (default 20)")
        sub.add_argument("--samples", type=int, default=25, help="samples per figure (default 25)")
        sub.add_argument("--dry-run", action="store_true", help="no GPU needed: print the rows it would measure")
    probes.choices["timer"].add_argument("--min-run-time", type=float, default=1.0,
                                         help="Timer.blocked_autorange's min_run_time and the harness timer's "
                                              "budget, seconds (default 1.0)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run one probe (or print its plan with ``--dry-run``); raises :class:`UsageError` without CUDA."""
    plan = graph_plan() if args.probe == "graph" else timer_plan()
    if args.dry_run:
        module, names = HARNESS[args.probe]
        missing = [name for name in names if not hasattr(importlib.import_module(module), name)]
        if missing:
            raise ImportError(f"{module} has no {', '.join(missing)}, which the {args.probe} probe uses")
        what = ("eager CUDA events and host enqueue time, then a CUDA graph's replay" if args.probe == "graph"
                else "CUDA events, the harness's timer and torch.utils.benchmark.Timer")
        print(f"gpu_probe {args.probe} (dry run): would time {len(plan)} rows ({what}), "
              f"{args.calls} calls x {args.samples} samples each, into {args.out}; "
              f"with {module}.{{{','.join(names)}}}")
        for shape in plan:
            print(f"  {shape.module} {shape.text} {shape.dtype}")
        return 0
    require_cuda()
    if args.probe == "graph":
        write_rows(args.out, GRAPH_COLUMNS, (graph_row(s, args.calls, args.samples) for s in plan))
    else:
        write_rows(args.out, TIMER_COLUMNS,
                   (timer_row(s, args.calls, args.samples, args.min_run_time) for s in plan))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line: 0 on success, 2 (with ``error: ...`` on stderr) without CUDA."""
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_EXIT


if __name__ == "__main__":
    sys.exit(main())
