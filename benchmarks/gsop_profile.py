"""Where a GSoP training step of the accuracy stage's network spends its time.

Times the small ResNet's training step (batch 128, 32 px, channels-last, bf16 autocast where
the CPU has native bf16, as the cpu accuracy preset trains it) with and without GSoP,
interleaving the two networks' steps in one process, and prints torch.profiler's self time by
op for the GSoP network. ``--official`` runs GSoP's row BN and row-wise conv as the official
code does (BN on the covariance viewed as ``(N, d, d, 1)``, a grouped conv with kernel
``(d, 1)``), for the before/after comparison::

    python -m benchmarks.gsop_profile
    python -m benchmarks.gsop_profile --official

Timing: run it alone on the machine (``uptime`` first); the ratio is the median step time of
the GSoP network over the baseline's, both measured in the same rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import modules
from modules.second_order import GSoP
from suite.accuracy.train import cpu_has_native_bf16


def _official_row_wise(self: GSoP, cov: torch.Tensor) -> torch.Tensor:
    """The official layout: BN on ``(N, d, d, 1)``, then the grouped conv."""
    return self.row_conv(self.row_bn(cov.unsqueeze(3))).flatten(1)


def _training_step(attn: str | None, batch: int, bf16: bool) -> Callable[[], float]:
    """A closure running one SGD step of ``resnet_small`` with ``attn`` and returning its seconds."""
    torch.manual_seed(0)
    model = modules.build_model("resnet_small", attn, num_classes=10).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step() -> float:
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - started

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", action="store_true", help="GSoP's row BN and conv in the official layout")
    parser.add_argument("--rounds", type=int, default=25, help="interleaved timed steps per network (default: 25)")
    parser.add_argument("--batch", type=int, default=128, help="batch size (default: 128, the cpu preset's)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2, the cpu preset's)")
    parser.add_argument("--top", type=int, default=15, help="profiler rows to print (default: 15)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.official:
        GSoP.row_wise = _official_row_wise  # type: ignore[method-assign]
    bf16 = cpu_has_native_bf16()
    steps = {"none": _training_step(None, args.batch, bf16), "gsop": _training_step("gsop", args.batch, bf16)}
    for step in steps.values():
        for _ in range(3):
            step()
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            seconds[name].append(step())
    median = {name: statistics.median(values) * 1000 for name, values in seconds.items()}
    layout = "official grouped conv" if args.official else "row-major batched matmul"
    print(f"GSoP row-wise conv: {layout}; bf16 autocast: {bf16}; threads {args.threads}; batch {args.batch}")
    print(f"median training step: none {median['none']:.1f} ms, gsop {median['gsop']:.1f} ms, "
          f"ratio {median['gsop'] / median['none']:.2f} ({args.rounds} interleaved rounds)")
    with torch.profiler.profile() as profile:
        for _ in range(5):
            steps["gsop"]()
    print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
