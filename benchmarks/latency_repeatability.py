"""Repeatability of the latency harness: the same forward measurement in separate processes.

Each of ``--processes`` (3) fresh ``python`` processes measures the forward of every module
in ``--names`` exactly as ``python -m suite latency`` does (module and 3x3-conv reference
interleaved, adaptive timer, fp32, eval, no_grad) at C=256, 56x56, batch 8 by default, one
process after the other. The table shows each process's median, the spread
``max / min - 1`` across processes, and the same for the module/reference ratio.

    python -m benchmarks.latency_repeatability [--threads N] [--budget-s 4] [--tolerance 0.03]

Exits 1 when a median's spread exceeds ``--tolerance`` (the issue's 3%) or a module fails.
The 1-minute load average before and after is printed: on a shared machine the result says
as much about the neighbours as about the timer.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SEED_DESIGNS = ("se", "eca", "ca", "gsop", "cbam", "dycaconv", "ccp_max", "gap_mean")
ROOT = Path(__file__).resolve().parent.parent


def _child(args: argparse.Namespace) -> int:
    import torch

    from suite.timing.cli_latency import measure_latency
    from suite.timing.grid import Config
    from suite.timing.timer import TimerOptions, cpu_settings

    options = TimerOptions(budget_s=args.budget_s)
    results = {}
    with cpu_settings(args.threads), torch.inference_mode(False):
        for name in args.names.split(","):
            config = Config(stage="latency", name=name, mode="forward", batch=args.batch,
                            channels=args.channels, size=args.size, threads=args.threads)
            try:
                row = measure_latency(config, options=options)
                results[name] = {k: row[k] for k in ("median_ms", "ratio", "ci_rel", "n", "converged", "calls_per_sample")}
            except Exception as exc:  # noqa: BLE001
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    print("RESULT " + json.dumps(results), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    from suite.timing.timer import default_threads

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", default=",".join(SEED_DESIGNS), help="comma-separated registered names")
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=default_threads(), help="torch threads (default: all cores)")
    parser.add_argument("--budget-s", type=float, default=4.0, help="timer budget per module and process")
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--tolerance", type=float, default=0.03, help="largest allowed max/min - 1 of the medians")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)

    load_before = os.getloadavg()[0]
    runs: list[dict] = []
    for index in range(args.processes):
        command = [sys.executable, "-m", "benchmarks.latency_repeatability", "--child", "--names", args.names,
                   "--channels", str(args.channels), "--size", str(args.size), "--batch", str(args.batch),
                   "--threads", str(args.threads), "--budget-s", str(args.budget_s)]
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(f"process {index + 1} failed ({proc.returncode}):\n{proc.stderr[-2000:]}", file=sys.stderr)
            return 1
        runs.append(json.loads(lines[-1][len("RESULT "):]))
        print(f"process {index + 1}/{args.processes} done, load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    load_after = os.getloadavg()[0]

    print(f"forward, fp32, eval, no_grad; batch {args.batch}, C={args.channels}, {args.size}x{args.size}; "
          f"threads {args.threads}; budget {args.budget_s}s per module; {args.processes} processes")
    print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after; cpu count {os.cpu_count()}")
    header = ["name"] + [f"p{i + 1} ms" for i in range(args.processes)] + ["spread", "ratio spread", "ci_rel max", "ok"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    failed = False
    for name in args.names.split(","):
        cells = [run.get(name, {}) for run in runs]
        if any("error" in c or "median_ms" not in c for c in cells):
            print(f"| {name} | " + " | ".join(c.get("error", "missing")[:60] for c in cells) + " | | | | FAIL |")
            failed = True
            continue
        medians = [c["median_ms"] for c in cells]
        ratios = [c["ratio"] for c in cells]
        spread = max(medians) / min(medians) - 1
        ratio_spread = max(ratios) / min(ratios) - 1
        ok = spread <= args.tolerance
        failed |= not ok
        print(f"| {name} | " + " | ".join(f"{m:.4g}" for m in medians)
              + f" | {spread:.2%} | {ratio_spread:.2%} | {max(c['ci_rel'] for c in cells):.2%} | {'ok' if ok else 'FAIL'} |")
    print(f"criterion: spread of medians <= {args.tolerance:.0%} for every module: {'PASS' if not failed else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
