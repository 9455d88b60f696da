"""Agreement of the harness's timer with ``torch.utils.benchmark.Timer.blocked_autorange``.

For each module in ``--names`` (five by default), in one process and at the same thread
count, the forward (eval, no_grad, fp32) is timed by ``suite.timing.timer.measure`` and by
``Timer(..., num_threads=N).blocked_autorange(min_run_time=...)``, in the order ours,
theirs, ours, theirs (both repetitions pooled by taking the median of the two medians), so
drift over the run affects both alike. The table shows both medians and their difference,
and our mean: blocked_autorange's samples are means of blocks of calls, so on a busy machine
(right-skewed call times) its median follows our mean more than our median.

    python -m benchmarks.latency_agreement [--device cpu|cuda] [--threads N] [--tolerance 0.05]

On CUDA the harness uses CUDA events and Timer synchronizes; both set the same cuDNN / TF32
settings (cudnn.benchmark on, TF32 off). Exits 1 when a difference exceeds ``--tolerance``
(the issue's 5%).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys

DEFAULT_NAMES = ("se", "eca", "cbam", "ca", "gap_mean")


def main(argv: list[str] | None = None) -> int:
    import torch
    from torch.utils.benchmark import Timer

    import modules
    from suite.timing.timer import (
        TimerOptions,
        clock_for,
        cpu_settings,
        cuda_settings,
        default_threads,
        measure,
    )

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", default=",".join(DEFAULT_NAMES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--budget-s", type=float, default=3.0, help="our timer's budget per measurement")
    parser.add_argument("--min-run-time", type=float, default=3.0, help="blocked_autorange's min_run_time")
    parser.add_argument("--tolerance", type=float, default=0.05)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    settings = cuda_settings(cudnn_benchmark=True, tf32=False) if device.type == "cuda" else contextlib.nullcontext({})
    rows = []
    load_before = os.getloadavg()[0]
    with cpu_settings(args.threads), settings as recorded:
        for name in args.names.split(","):
            kwargs = {"out_channels": args.channels, "kernel_size": 3, "stride": 1} if modules.get_info(name).kind == "conv" else {}
            module = modules.create(name, args.channels, **kwargs).to(device).eval()
            x = torch.randn(args.batch, args.channels, args.size, args.size, device=device)

            def step(module=module, x=x):
                with torch.no_grad():
                    return module(x)

            timer = Timer("step()", globals={"step": step}, num_threads=args.threads, label=name)
            ours, theirs = [], []
            for _ in range(2):
                ours.append(measure(step, clock=clock_for(device), options=TimerOptions(budget_s=args.budget_s)))
                theirs.append(timer.blocked_autorange(min_run_time=args.min_run_time))
            our_median = statistics.median(s.median for s in ours)
            their_median = statistics.median(m.median for m in theirs)
            our_mean = statistics.median(s.mean for s in ours)
            rows.append((name, our_median, our_mean, their_median, our_median / their_median - 1,
                         max(s.ci_rel for s in ours), sum(m.number_per_run * len(m.times) for m in theirs) // 2,
                         ours[0].calls_per_sample))
    load_after = os.getloadavg()[0]

    print(f"forward, fp32, eval, no_grad; device {device}; batch {args.batch}, C={args.channels}, "
          f"{args.size}x{args.size}; threads {args.threads} (both); settings {recorded or 'n/a'}")
    print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after; cpu count {os.cpu_count()}")
    print("| name | ours ms (median) | ours ms (mean) | blocked_autorange ms (median of block means) | diff of medians | our ci_rel | their calls | our calls/sample | ok |")
    print("|---|---|---|---|---|---|---|---|---|")
    failed = False
    for name, ours_ms, ours_mean_ms, theirs_ms, diff, ci, calls, cps in rows:
        ok = abs(diff) <= args.tolerance
        failed |= not ok
        print(f"| {name} | {ours_ms * 1e3:.4g} | {ours_mean_ms * 1e3:.4g} | {theirs_ms * 1e3:.4g} | {diff:+.2%} | {ci:.2%} | {calls} | {cps} | {'ok' if ok else 'FAIL'} |")
    print(f"criterion: |ours / blocked_autorange - 1| <= {args.tolerance:.0%} on every module: {'PASS' if not failed else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
