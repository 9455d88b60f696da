"""The A/B regression gate checked: unchanged code passes, planted slowdowns are caught, run after run.

    python benchmarks/ab_gate_check.py --counter ratio -n 20 [--levels 1,2,4] [--default-runs 3]
    python benchmarks/ab_gate_check.py --counter instructions -n 20 [--levels 1]

Nothing here touches this repository's tree, index or branches. The script clones the repository
(its committed ``HEAD``) into a temporary folder and makes two scratch commits there:

* **base**: adds ``benchmarks/planted_ab.py``, a plugin that registers ``se_slowM`` for each level
  ``M`` as an exact copy of SE (:class:`modules.squeeze_excite.SqueezeExcite`);
* **head**: the same file, where ``se_slowM`` multiplies SE's gate by 1.0 ``M`` more times in
  a forward (twice that in a training step, whose backward runs each multiply too): the same
  output bit for bit, and more work, as a careless edit would add.

Each run is one ``python -m suite regress --against BASE`` in the clone, over ``se`` (unchanged:
both sides run the same SE) and every ``se_slowM``, forward and training step. A run
**passes the unchanged cases** when every ``se`` verdict is ``ok`` or ``faster``; each planted case
(a level in one mode: a forward and a training step slow down by different fractions) is
**caught** in a run whose verdict for it is ``regression``. A case's measured slowdown is the
median over the runs of the gate's own estimate. ``--default-runs K`` then times K gate
runs on the default case set against the clone's own ``HEAD`` (unchanged code).

Writes ``--out/ab_gate_COUNTER.json`` and ``.md`` (default ``reports/regress``). Run it on a quiet
machine for the ratio counter (it times); instruction counts do not depend on the neighbours,
but the wall times do. Exits 1 unless the unchanged cases pass in every run and the largest
level is caught in every run, in both modes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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

PLUGIN = Path("benchmarks") / "planted_ab.py"
PLUGIN_TEMPLATE = '''"""Planted slowdowns for the A/B gate check (written by benchmarks/ab_gate_check.py)."""

from torch import Tensor

import modules
from modules.squeeze_excite import SqueezeExcite

EXTRA = {extra!r}
"""Per level, the redundant multiplies of the gate by 1.0 in a forward (0 in the base commit)."""


def planted(level: int, extra: int) -> type:
    class Planted(SqueezeExcite):
        def forward(self, x: Tensor) -> Tensor:
            self.check_input(x)
            gate = self.gate(self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True)))))
            for _ in range(extra):
                gate = gate.mul(1.0)
            return x * gate

    Planted.__name__ = f"SqueezeExciteSlow{{level}}"
    return Planted


for level, extra in EXTRA.items():
    if f"se_slow{{level}}" not in modules.list_attention():
        modules.register_attention(f"se_slow{{level}}", planted(level, extra), family="test",
                                   paper="planted slowdown (A/B gate check)", arxiv=None, kind="gate")
'''


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def scratch_clone(tmp: Path, levels: list[int]) -> tuple[Path, str, str]:
    """The clone with its base and head commits planted; ``(clone, base sha, head sha)``."""
    clone = tmp / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], check=True)
    for key, value in (("user.name", "ab-gate-check"), ("user.email", "ab-gate-check@localhost")):
        git(clone, "config", key, value)
    commits = []
    for extra_per_level, message in (({level: 0 for level in levels}, "base: planted types equal to SE"),
                                     ({level: level for level in levels}, "head: planted slowdowns")):
        (clone / PLUGIN).write_text(PLUGIN_TEMPLATE.format(extra=extra_per_level))
        git(clone, "add", str(PLUGIN))
        git(clone, "commit", "--quiet", "-m", message)
        commits.append(git(clone, "rev-parse", "HEAD"))
    return clone, commits[0], commits[1]


def gate(clone: Path, out: Path, args: list[str]) -> tuple[int, float, dict[str, Any] | None, str]:
    """One gate process in the clone; ``(exit code, wall seconds, verdict.json or None, output tail)``."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "suite", "regress", "--out", str(out), *args],
                          cwd=clone, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(clone)})
    wall = time.perf_counter() - started
    verdict_path = out / "verdict.json"
    verdict = json.loads(verdict_path.read_text()) if verdict_path.exists() else None
    return proc.returncode, wall, verdict, (proc.stdout[-3000:] + proc.stderr[-1500:])


def judge_run(index: int, code: int, wall: float, verdict: dict[str, Any] | None, tail: str) -> dict[str, Any]:
    """One run: does every unchanged ``se`` case pass, and each planted case's verdict."""
    row: dict[str, Any] = {"run": index, "exit": code, "wall_s": round(wall, 1)}
    if verdict is None:
        return {**row, "unchanged_pass": False, "cases": {}, "output": tail}
    results = verdict["results"]
    unchanged = [r for r in results if r["case"].startswith("se|")]
    row["unchanged_pass"] = bool(unchanged) and all(r["verdict"] in ("ok", "faster") for r in unchanged)
    row["cases"] = {r["case"]: {k: r[k] for k in ("change", "change_low", "change_high", "verdict")} for r in results}
    return row


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per case over the runs: the median and range of the estimated change, and how many runs
    called it a regression."""
    per_case: dict[str, dict[str, Any]] = {}
    for run in runs:
        for case, result in run.get("cases", {}).items():
            entry = per_case.setdefault(case, {"changes": [], "regression": 0})
            if result["change"] is not None:
                entry["changes"].append(result["change"])
            entry["regression"] += result["verdict"] == "regression"
    cases = {case: {"change_median": statistics.median(e["changes"]) if e["changes"] else None,
                    "change_min": min(e["changes"], default=None), "change_max": max(e["changes"], default=None),
                    "regression_runs": e["regression"]} for case, e in per_case.items()}
    return {"runs": len(runs), "unchanged_passed": sum(run["unchanged_pass"] for run in runs), "cases": cases,
            "wall_s_median": statistics.median(run["wall_s"] for run in runs)}


def smallest_caught(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The planted case with the smallest measured change that every run called a regression."""
    caught = [(e["change_median"], case) for case, e in summary["cases"].items()
              if not case.startswith("se|") and e["regression_runs"] == summary["runs"] and e["change_median"]]
    if not caught:
        return None
    change, case = min(caught)
    return {"case": case, "change_median": change}


def markdown(report: dict[str, Any]) -> str:
    s, counter, levels = report["summary"], report["counter"], report["levels"]
    n = s["runs"]
    lines = [f"# A/B gate check: {counter} counter", "",
             f"Written by `{report['command']}` at commit `{report['commit']}` on {report['machine']}, "
             f"torch {report['torch']}. Each run is `python -m suite regress --counter {counter} --against BASE "
             f"--attn se,{','.join(f'se_slow{m}' for m in levels)} --plugin {PLUGIN}` in a scratch clone whose "
             "head commit plants the slowdowns: `se_slowM` multiplies SE's gate by 1.0 M more times per forward "
             "(`benchmarks/ab_gate_check.py`). Rule: "
             f"{report['rule']}.", "",
             f"**Unchanged code (`se`, forward and training step) passed in {s['unchanged_passed']}/{n} runs.**", "",
             "| case | measured change (median) | range over the runs | judged a regression |",
             "| --- | --- | --- | --- |"]
    for case, e in s["cases"].items():
        shown = case.replace("|", "\\|")  # a table cell
        if e["change_median"] is None:
            lines.append(f"| {shown} | - | - | {e['regression_runs']}/{n} |")
            continue
        lines.append(f"| {shown} | {e['change_median']:+.1%} | {e['change_min']:+.1%} .. {e['change_max']:+.1%} | "
                     f"{e['regression_runs']}/{n} |")
    lines += ["", "Measured change: the gate's estimate of head / base - 1 (for `se`, both sides run the same code)."]
    smallest = report.get("smallest_caught_everywhere")
    lines += ["", f"**Smallest planted slowdown caught in {n}/{n} runs: {smallest['change_median']:+.1%} "
              f"(`{smallest['case']}`).**" if smallest else "No planted case was caught in every run."]
    lines += ["", f"Wall time of one check run ({len(levels) + 1} types, both modes): median {s['wall_s_median']:.0f} s."]
    if report.get("default_runs"):
        walls = [r["wall_s"] for r in report["default_runs"]]
        verdicts = ", ".join(f"exit {r['exit']}" for r in report["default_runs"])
        lines.append(f"Wall time of one gate run on the default case set (unchanged, against `HEAD`): "
                     f"{', '.join(f'{w:.0f}' for w in walls)} s ({verdicts}).")
    lines += ["", "| run | exit | wall (s) | unchanged pass | regressions |", "| --- | --- | --- | --- | --- |"]
    for run in report["runs"]:
        flagged = [case.split("|b")[0].replace("|", " ") for case, r in run.get("cases", {}).items() if r["verdict"] == "regression"]
        lines.append(f"| {run['run']} | {run['exit']} | {run['wall_s']} | {run['unchanged_pass']} | "
                     f"{', '.join(flagged) or '-'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counter", choices=("ratio", "instructions"), default="ratio")
    parser.add_argument("-n", type=int, default=20, help="gate runs (default: 20)")
    parser.add_argument("--levels", default="1,2,4",
                        help="planted levels: extra multiplies of the gate per forward, comma-separated (default: 1,2,4)")
    parser.add_argument("--default-runs", type=int, default=0,
                        help="then time this many gate runs on the default case set (default: 0)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "regress")
    args = parser.parse_args(argv)
    levels = sorted({int(v) for v in args.levels.split(",") if v.strip()})
    if not levels or min(levels) < 1 or args.n < 1:
        parser.error("--levels needs positive integers and -n at least 1")
    environment = collect_environment()
    runs: list[dict[str, Any]] = []
    default_runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="attnbench-ab-check-") as tmp:
        clone, base, head = scratch_clone(Path(tmp), levels)
        attn = ",".join(["se", *(f"se_slow{m}" for m in levels)])
        for index in range(1, args.n + 1):
            code, wall, verdict, tail = gate(clone, Path(tmp) / f"run-{index}", [
                "--counter", args.counter, "--against", base, "--attn", attn, "--plugin", str(PLUGIN)])
            runs.append(judge_run(index, code, wall, verdict, tail))
            rule = (verdict or {}).get("rule", "")
            flagged = [case for case, r in runs[-1]["cases"].items() if r["verdict"] == "regression"]
            print(f"run {index}/{args.n}: exit {code}, {wall:.0f} s, unchanged pass {runs[-1]['unchanged_pass']}, "
                  f"regressions: {', '.join(flagged) or '-'}", file=sys.stderr, flush=True)
        for index in range(1, args.default_runs + 1):
            code, wall, verdict, tail = gate(clone, Path(tmp) / f"default-{index}",
                                             ["--counter", args.counter, "--against", "HEAD"])
            default_runs.append({"run": index, "exit": code, "wall_s": round(wall, 1),
                                 "verdicts": [r["verdict"] for r in (verdict or {}).get("results", [])]})
            print(f"default set {index}/{args.default_runs}: exit {code}, {wall:.0f} s", file=sys.stderr, flush=True)
    summary = summarise(runs)
    smallest = smallest_caught(summary)
    report = {
        "command": "python benchmarks/ab_gate_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "counter": args.counter, "levels": levels, "commit": environment.get("commit"),
        "machine": f"{environment.get('cpu')} ({os.cpu_count()} cores, {platform.machine()})",
        "torch": environment.get("torch_version"), "rule": rule, "base_commit": base, "head_commit": head,
        "environment": environment, "summary": summary, "smallest_caught_everywhere": smallest,
        "runs": runs, "default_runs": default_runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / f"ab_gate_{args.counter}.json", json.dumps(report, indent=1) + "\n")
    write_text_atomic(args.out / f"ab_gate_{args.counter}.md", markdown(report))
    print(markdown(report))
    largest = [e for case, e in summary["cases"].items() if case.startswith(f"se_slow{levels[-1]}|")]
    ok = summary["unchanged_passed"] == len(runs) and all(e["regression_runs"] == len(runs) for e in largest)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
