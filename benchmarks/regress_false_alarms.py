"""False alarms of the latency regression gate: run it N times on unchanged code.

Each run is a separate ``python -m suite regress`` process (which itself runs the benchmarks in
a pytest subprocess) against the committed baseline, one after the other; the script prints
each run's verdict, wall time and worst change, then the pass count.

    python benchmarks/regress_false_alarms.py [-n 20] [-- GATE_ARGS...]

Exits 1 when fewer than ``--need`` runs (default: all but one in twenty) pass.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20, help="gate runs (default: 20)")
    parser.add_argument("--need", type=int, default=None, help="passes required (default: ceil(0.95 n))")
    parser.add_argument("gate_args", nargs="*", help="arguments after -- go to the gate")
    args = parser.parse_args(argv)
    need = args.need if args.need is not None else math.ceil(0.95 * args.n)
    passes, walls = 0, []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.n):
            out = Path(tmp) / f"run-{i + 1}"
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "suite", "regress", "--out", str(out), *args.gate_args],
                                  cwd=ROOT, capture_output=True, text=True)
            wall = time.perf_counter() - started
            walls.append(wall)
            worst = ""
            verdict_path = out / "verdict.json"
            if verdict_path.exists():
                results = json.loads(verdict_path.read_text())["results"]
                changes = [(r["change"], r["case"]) for r in results if r["change"] is not None]
                if changes:
                    change, case = max(changes)
                    worst = f"worst change {change:+.1%} ({case})"
                rechecked = [r["case"] for r in results if len(r["ratios"]) > 1]
                if rechecked:  # a first-run regression that the fresh-process confirmation judged
                    worst += f"; re-measured: {', '.join(rechecked)}"
            passes += proc.returncode == 0
            status = "pass" if proc.returncode == 0 else f"FAIL (exit {proc.returncode})"
            print(f"run {i + 1:2d}/{args.n}: {status:16s} {wall:5.1f} s  {worst}", flush=True)
            if proc.returncode != 0:
                print(proc.stdout[-3000:], proc.stderr[-1500:], sep="\n", flush=True)
    print(f"{passes}/{args.n} runs passed (need {need}); gate wall time median "
          f"{sorted(walls)[len(walls) // 2]:.1f} s, max {max(walls):.1f} s")
    return 0 if passes >= need else 1


if __name__ == "__main__":
    sys.exit(main())
