"""Wall time of the default module-level latency sweep over the whole registry.

Runs ``python -m suite latency`` with its defaults (cpu profile, every registered type) into a
fresh temporary folder, and reports the wall time, the number of rows by status, how many
medians converged, and the load average. Exits 1 when it takes longer than ``--limit-s``
(the issue's 10 minutes) or when the run itself fails.

    python -m benchmarks.latency_sweep_time [--limit-s 600] [--keep DIR] [-- extra suite flags]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit-s", type=float, default=600.0)
    parser.add_argument("--keep", type=Path, default=None, help="write the run here instead of a temporary folder")
    parser.add_argument("extra", nargs="*", help="extra flags for 'python -m suite latency' (after --)")
    args = parser.parse_args(argv)

    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "latency"
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "suite", "latency", "--out", str(out), "--no-progress", *args.extra], cwd=ROOT)
        wall = time.perf_counter() - started
        load_after = os.getloadavg()[0]
        if proc.returncode:
            print(f"suite latency exited with {proc.returncode}", file=sys.stderr)
            return 1
        table = pd.read_csv(out / "latency.csv")
    ok = table[table["status"] == "ok"]
    print(f"default sweep: {len(table)} configurations ({table['attn'].nunique()} attention types) in {wall:.0f} s "
          f"(limit {args.limit_s:.0f} s); threads {int(table['threads'].iloc[0])}; "
          f"load average {load_before:.2f} before, {load_after:.2f} after, cpu count {os.cpu_count()}")
    print("status counts: " + ", ".join(f"{k}={v}" for k, v in table["status"].value_counts().items()))
    if len(ok):
        print(f"converged medians: {int(ok['converged'].sum())}/{len(ok)}; median ci_rel {ok['ci_rel'].median():.2%}; "
              f"slowest configurations (wall s): "
              + ", ".join(f"{r.attn}/{r.mode}/c{r.channels}={r.wall_s:.1f}" for r in table.nlargest(5, "wall_s").itertuples()))
    passed = wall <= args.limit_s
    print(f"criterion: wall time <= {args.limit_s:.0f} s: {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
