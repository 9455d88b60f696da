"""Time attnbench's cross-channel max pooling against the transpose/max_pool2d form of a
widely copied blog post.

That form pools groups of ``k`` consecutive channels by moving the
channel axis last, running ``F.max_pool2d`` with kernel ``(1, k)`` and moving it back. Our
``ccp_max`` views the channel axis as ``(C / k, k)`` and reduces the ``k`` axis. This script
checks that both give identical outputs and reports the median time of each, measured in one
process with the two forms interleaved, and the speed-up (the project requires >= 2x).

Usage::

    python benchmarks/bench_cross_channel.py                 # C=256, 56x56, batch 8, k=2
    python benchmarks/bench_cross_channel.py --threads 2 --repeats 50

Exit status 1 if the outputs differ or the speed-up is below ``--min-speedup``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

try:
    import modules
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import modules


def seed_cross_channel_max(x: Tensor, k: int) -> Tensor:
    """The blog post's formulation: channels last, ``max_pool2d`` with kernel ``(1, k)``, back."""
    channels_last = x.transpose(1, 3)  # (N, W, H, C)
    pooled = F.max_pool2d(channels_last, kernel_size=(1, k), stride=(1, k))  # (N, W, H, C/k)
    return pooled.transpose(1, 3).contiguous()  # (N, C/k, H, W)


def time_interleaved(
    fns: dict[str, Callable[[], Tensor]], repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per call of each function, alternating between them on every repeat."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--size", type=int, default=56, help="height and width of the map")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--k", type=int, default=2, help="channels pooled into one")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-speedup", type=float, default=2.0)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x = torch.randn(args.batch, args.channels, args.size, args.size, dtype=torch.float32)
    ours = modules.create("ccp_max", args.channels, k=args.k).eval()

    with torch.inference_mode():
        identical = torch.equal(ours(x), seed_cross_channel_max(x, args.k))
        times = time_interleaved(
            {
                "seed (transpose + max_pool2d)": lambda: seed_cross_channel_max(x, args.k),
                "ours (ccp_max, view + amax)": lambda: ours(x),
            },
            repeats=args.repeats,
            warmup=args.warmup,
        )

    print(
        f"cross-channel max pooling, input {tuple(x.shape)} fp32 CPU, k={args.k}, "
        f"threads={torch.get_num_threads()}, {args.repeats} repeats, torch {torch.__version__}"
    )
    print(f"{'implementation':<32}{'median ms':>11}{'p10 ms':>9}{'p90 ms':>9}")
    medians = {}
    for name, values in times.items():
        medians[name] = statistics.median(values)
        print(
            f"{name:<32}{medians[name] * 1e3:>11.3f}"
            f"{percentile(values, 0.1) * 1e3:>9.3f}{percentile(values, 0.9) * 1e3:>9.3f}"
        )
    seed_median, ours_median = medians.values()
    speedup = seed_median / ours_median
    print(f"speed-up (seed median / ours median): {speedup:.1f}x (required >= {args.min_speedup}x)")
    print(f"outputs identical: {identical}")
    return 0 if identical and speedup >= args.min_speedup else 1


if __name__ == "__main__":
    sys.exit(main())
