"""False alarms of the latency regression gate: run it N times on unchanged code.

Each run is a separate ``python -m suite regress`` process (which itself runs the benchmarks in
a pytest subprocess) against the committed baseline, one after the other; the script prints
each run's verdict, wall time and worst change, then the pass count, and writes them with the
environment to ``--out`` (default ``reports/regress/false_alarms.json`` and ``.md``).

    python benchmarks/regress_false_alarms.py [-n 20] [--out DIR] [-- GATE_ARGS...]

Exits 1 when fewer than ``--need`` runs (default: all but one in twenty) pass.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from suite.env import collect_environment  # noqa: E402
from suite.records import write_text_atomic  # noqa: E402


def one_run(index: int, out: Path, gate_args: list[str]) -> dict[str, Any]:
    """One gate process; its exit code, wall time, worst change and re-measured cases."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "suite", "regress", "--out", str(out), *gate_args],
                          cwd=ROOT, capture_output=True, text=True)
    row: dict[str, Any] = {"run": index, "exit": proc.returncode, "wall_s": round(time.perf_counter() - started, 1),
                           "worst_change": None, "worst_case": None, "rechecked": [], "cases": 0}
    verdict_path = out / "verdict.json"
    if verdict_path.exists():
        results = json.loads(verdict_path.read_text())["results"]
        row["cases"] = len(results)
        changes = [(r["change"], r["case"]) for r in results if r["change"] is not None]
        if changes:
            row["worst_change"], row["worst_case"] = max(changes)
        # a first-run regression that the fresh-process confirmation judged
        row["rechecked"] = [r["case"] for r in results if len(r["values"]) > 1]
    if proc.returncode != 0:
        row["output"] = proc.stdout[-3000:] + proc.stderr[-1500:]
    return row


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        "# Latency gate: false alarms on unchanged code",
        "",
        f"Written by `python benchmarks/regress_false_alarms.py -n {summary['n']}` "
        f"(gate arguments: `{' '.join(summary['gate_args']) or 'defaults'}`) at commit "
        f"`{summary['environment'].get('commit')}` on {summary['environment'].get('cpu')} "
        f"({summary['environment'].get('cpu_count')} cores), torch {summary['environment'].get('torch_version')}.",
        "",
        f"**{summary['passes']}/{summary['n']} runs passed** (needed {summary['need']}); gate wall time "
        f"median {summary['wall_median_s']:.1f} s, max {summary['wall_max_s']:.1f} s.",
        "",
        "| run | exit | wall (s) | cases | worst change | worst case | re-measured in a fresh process |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary["runs"]:
        worst = f"{r['worst_change']:+.1%}" if r["worst_change"] is not None else "-"
        lines.append(f"| {r['run']} | {r['exit']} | {r['wall_s']:.1f} | {r['cases']} | {worst} | "
                     f"{r['worst_case'] or '-'} | {', '.join(r['rechecked']) or '-'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20, help="gate runs (default: 20)")
    parser.add_argument("--need", type=int, default=None, help="passes required (default: ceil(0.95 n))")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "regress",
                        help="folder for false_alarms.json and false_alarms.md (default: reports/regress)")
    parser.add_argument("gate_args", nargs="*", help="arguments after -- go to the gate")
    args = parser.parse_args(argv)
    need = args.need if args.need is not None else math.ceil(0.95 * args.n)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(1, args.n + 1):
            row = one_run(i, Path(tmp) / f"run-{i}", args.gate_args)
            runs.append(row)
            worst = f"worst change {row['worst_change']:+.1%} ({row['worst_case']})" if row["worst_case"] else ""
            if row["rechecked"]:
                worst += f"; re-measured: {', '.join(row['rechecked'])}"
            status = "pass" if row["exit"] == 0 else f"FAIL (exit {row['exit']})"
            print(f"run {i:2d}/{args.n}: {status:16s} {row['wall_s']:5.1f} s  {worst}", flush=True)
            if row["exit"] != 0:
                print(row["output"], flush=True)
    walls = [r["wall_s"] for r in runs]
    summary = {"n": args.n, "need": need, "passes": sum(r["exit"] == 0 for r in runs),
               "gate_args": args.gate_args, "wall_median_s": statistics.median(walls), "wall_max_s": max(walls),
               "environment": collect_environment(), "runs": runs}
    write_text_atomic(args.out / "false_alarms.json", json.dumps(summary, indent=1) + "\n")
    write_text_atomic(args.out / "false_alarms.md", markdown(summary))
    print(f"{summary['passes']}/{args.n} runs passed (need {need}); gate wall time median "
          f"{summary['wall_median_s']:.1f} s, max {summary['wall_max_s']:.1f} s; wrote {args.out}/false_alarms.md")
    return 0 if summary["passes"] >= need else 1


if __name__ == "__main__":
    sys.exit(main())
