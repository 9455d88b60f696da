"""The instruction gate checked: N runs on unchanged code, each with a planted 5% slowdown beside it.

Each run is one ``python -m suite regress --counter instructions`` process against the
committed baseline, over the default case set plus ``se_plus5`` (:mod:`benchmarks.planted_se`:
SE with about 5% more instructions and the same output) held to SE's baseline. All cases of a
run are counted in the same valgrind process, so each run answers both questions: do the
unchanged cases pass (every verdict ``ok`` or ``faster``), and is the planted copy caught
(every one of its cases ``regression``)? The gate's own exit code is 1 in such a run, because
of the planted case; the unchanged cases' verdicts are what a run without it would exit on.

    python benchmarks/instruction_gate_check.py [-n 20] [--parallel 2] [--out DIR] [-- GATE_ARGS...]

Instruction counts do not depend on what else runs, so ``--parallel`` runs share the machine
(wall times are then not the gate's own: time one run alone for that). Writes the runs, the
counts and the environment to ``--out`` (default ``reports/regress/instruction_gate.json`` and
``.md``). Exits 1 unless every run passes its unchanged cases and catches the planted copy.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
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
from suite.regress.cases import DEFAULT_ATTN  # noqa: E402

PLANTED = "se_plus5"
PLANTED_PLUGIN = Path("benchmarks") / "planted_se.py"


def one_run(index: int, out: Path, gate_args: list[str]) -> dict[str, Any]:
    """One gate process; its verdicts split into the unchanged cases and the planted ones."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "suite", "regress", "--counter", "instructions",
               "--attn", ",".join([*DEFAULT_ATTN, PLANTED]), "--plugin", str(PLANTED_PLUGIN),
               "--baseline-name", f"{PLANTED}=se", "--out", str(out), *gate_args]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    row: dict[str, Any] = {"run": index, "exit": proc.returncode, "wall_s": round(time.perf_counter() - started, 1)}
    verdict_path = out / "verdict.json"
    if not verdict_path.exists():
        row.update(unchanged_pass=False, planted_caught=False, output=proc.stdout[-3000:] + proc.stderr[-1500:])
        return row
    results = json.loads(verdict_path.read_text())["results"]
    unchanged = [r for r in results if not r["case"].startswith(f"{PLANTED}|")]
    planted = [r for r in results if r["case"].startswith(f"{PLANTED}|")]
    row["unchanged_pass"] = bool(unchanged) and all(r["verdict"] in ("ok", "faster") for r in unchanged)
    row["planted_caught"] = bool(planted) and all(r["verdict"] == "regression" for r in planted)
    row["worst_unchanged_change"] = max((abs(r["change"]) for r in unchanged if r["change"] is not None),
                                        default=None)
    row["counts"] = {r["case"]: r["current"] for r in results}
    row["changes"] = {r["case"]: r["change"] for r in results}
    row["verdicts"] = {r["case"]: r["verdict"] for r in results}
    return row


def markdown(summary: dict[str, Any]) -> str:
    env = summary["environment"]
    first = summary["runs"][0]
    lines = [
        "# Instruction gate: unchanged runs and a planted 5% slowdown",
        "",
        f"Written by `python benchmarks/instruction_gate_check.py -n {summary['n']} --parallel {summary['parallel']}` "
        f"at commit `{env.get('commit')}` on {env.get('cpu')} ({env.get('cpu_count')} cores), torch "
        f"{env.get('torch_version')}, against `{summary['baseline']}`. Each run counts the default set and "
        f"`{PLANTED}` (SE plus redundant multiplies by 1.0, `benchmarks/planted_se.py`) held to SE's baseline, "
        "in one valgrind process.",
        "",
        f"**Unchanged cases passed in {summary['unchanged_passes']}/{summary['n']} runs; the planted copy was caught "
        f"in {summary['planted_caught']}/{summary['n']} runs.** Largest |change| of an unchanged case over all runs: "
        f"{summary['worst_unchanged_change']:.3%}. Wall time per run (with {summary['parallel']} runs at a time): "
        f"median {summary['wall_median_s']:.0f} s.",
        "",
        "Instructions per call, first run, and the change against the baseline:",
        "",
        "| case | instructions / call | change | verdict |",
        "| --- | --- | --- | --- |",
    ]
    for case, count in first.get("counts", {}).items():
        change = first["changes"][case]
        shown = f"{change:+.2%}" if change is not None else "-"
        lines.append(f"| {case} | {count:,.0f} | {shown} | {first['verdicts'][case]} |")
    lines += ["", "| run | exit | wall (s) | unchanged pass | worst unchanged change | planted caught |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in summary["runs"]:
        worst = f"{r['worst_unchanged_change']:.3%}" if r.get("worst_unchanged_change") is not None else "-"
        lines.append(f"| {r['run']} | {r['exit']} | {r['wall_s']:.0f} | {r['unchanged_pass']} | {worst} | "
                     f"{r['planted_caught']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20, help="gate runs (default: 20)")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time (default: 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "regress",
                        help="where instruction_gate.json and .md go (default: reports/regress)")
    parser.add_argument("gate_args", nargs="*", help="passed to the gate after --")
    args = parser.parse_args(argv)
    if args.n < 1 or args.parallel < 1:
        parser.error("-n and --parallel must be >= 1")
    with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
        futures = [pool.submit(one_run, i + 1, Path(tmp) / f"run-{i + 1}", args.gate_args) for i in range(args.n)]
        runs = []
        for future in concurrent.futures.as_completed(futures):
            row = future.result()
            runs.append(row)
            print(f"run {row['run']}: exit {row['exit']} in {row['wall_s']:.0f} s, unchanged pass "
                  f"{row['unchanged_pass']}, planted caught {row['planted_caught']}", file=sys.stderr)
    runs.sort(key=lambda r: r["run"])
    worst = [r["worst_unchanged_change"] for r in runs if r.get("worst_unchanged_change") is not None]
    summary = {
        "n": args.n,
        "parallel": args.parallel,
        "gate_args": args.gate_args,
        "baseline": "suite/regress/baselines/regress_instructions.json",
        "unchanged_passes": sum(r["unchanged_pass"] for r in runs),
        "planted_caught": sum(r["planted_caught"] for r in runs),
        "worst_unchanged_change": max(worst, default=float("nan")),
        "wall_median_s": statistics.median(r["wall_s"] for r in runs),
        "environment": collect_environment(),
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "instruction_gate.json", json.dumps(summary, indent=1) + "\n")
    write_text_atomic(args.out / "instruction_gate.md", markdown(summary))
    print(markdown(summary))
    return 0 if summary["unchanged_passes"] == summary["planted_caught"] == args.n else 1


if __name__ == "__main__":
    sys.exit(main())
