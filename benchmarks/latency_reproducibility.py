"""Do latency intervals hold across processes? The same configurations in two independent
invocations of the latency stage, compared row by row.

Each invocation is a separate ``python -m suite latency`` process (its own worker servers and
rounds), run one after the other. For each row the script prints both ratios to the 3x3 conv,
both 95% intervals, and whether the two ratios agree within their combined interval on the
log scale: ``|log r1 - log r2| <= sqrt(h1^2 + h2^2)`` with ``h`` each row's log half-width
(``log(1 + ratio_ci_rel)``). Then the coverage (rows that agree), the median half-width and the
median |change| of the ratio, and the same for ``passes`` (time / one copy of the input).

Run from the project root on an otherwise idle machine (it refuses to start when more than 0.3
cores are busy during the 3 s before it, unless ``--allow-busy``)::

    python -m benchmarks.latency_reproducibility --out reports/latency_reproducibility
    python -m benchmarks.latency_reproducibility --out reports/latency_reproducibility_rounds12 -- --rounds 12   # flags for the stage

Writes ``OUT/run1/``, ``OUT/run2/`` (the stage's outputs), ``OUT/comparison.csv`` and
``OUT/README.md`` (the printed table, the commands and the environment).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ATTN = "se,eca,ca,gsop,cbam,dycaconv,ccp_max,gap_mean,simam,non_local,bam"
STAGE_ARGS = ["--attn", ATTN, "--channels", "64,256", "--size", "28", "--batch", "8", "--mode", "forward"]
KEY = ["level", "arch", "attn", "channels", "size", "batch", "mode"]


def busy_cores(seconds: float = 3.0) -> float:
    """Cores' worth of CPU the machine used over the next ``seconds`` (from /proc/stat): what is
    running now, unlike the load average, which still shows a run that ended a minute ago."""
    from suite.timing.contention import read_proc_stat

    before, _ = read_proc_stat()
    time.sleep(seconds)
    after, _ = read_proc_stat()
    return (after - before) / seconds


def _combined_agreement(r1: float, h1: float, r2: float, h2: float) -> bool:
    """Whether two ratios agree within their combined interval on the log scale."""
    return abs(math.log(r1) - math.log(r2)) <= math.hypot(h1, h2)


def compare(run1, run2, quantity: str = "ratio"):
    """One row per configuration measured ok in both runs, with the agreement of ``quantity``."""
    import pandas as pd


    ok1 = _keyed(run1[run1["status"] == "ok"])
    ok2 = _keyed(run2[run2["status"] == "ok"])
    rows = []
    for key in ok1.index.intersection(ok2.index):
        a, b = ok1.loc[key], ok2.loc[key]
        r1, r2 = float(a[quantity]), float(b[quantity])
        h1 = math.log1p(float(a[f"{quantity}_ci_rel"]))
        h2 = math.log1p(float(b[f"{quantity}_ci_rel"]))
        rows.append({
            **dict(zip(KEY, key, strict=True)), f"{quantity}_1": r1, f"{quantity}_2": r2,
            "half_width_1": math.expm1(h1), "half_width_2": math.expm1(h2),
            "change": r2 / r1 - 1, "combined": math.expm1(math.hypot(h1, h2)),
            "agree": _combined_agreement(r1, h1, r2, h2),
        })
    return pd.DataFrame(rows)


def _keyed(frame):
    """``frame`` indexed by :data:`KEY` (a module-level row has no backbone: ``-``)."""
    frame = frame.copy()
    if "level" not in frame:
        frame["level"] = "module"
    frame["arch"] = frame["arch"].astype(object).fillna("-") if "arch" in frame else "-"
    return frame.set_index(KEY)


def summary_line(frame, quantity: str) -> str:
    if frame.empty:
        return f"{quantity}: no row measured ok in both runs"
    halves = list(frame["half_width_1"]) + list(frame["half_width_2"])
    return (f"{quantity}: {int(frame['agree'].sum())} of {len(frame)} rows agree within the combined 95% interval "
            f"({frame['agree'].mean():.0%}); median half-width {statistics.median(halves):.1%}; "
            f"median |change| {statistics.median(abs(frame['change'])):.1%}")


def _table(frame, quantity: str) -> str:
    lines = [f"| name | shape | {quantity} run 1 (95% CI) | {quantity} run 2 (95% CI) | change | combined | agree |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for _, r in frame.iterrows():
        shape = (f"{r['arch']} b{r['batch']} {r['size']}px" if r["level"] == "model"
                 else f"b{r['batch']} C{r['channels']} {r['size']}px {r['mode']}")
        lines.append(
            f"| {r['attn']} | {shape} | {r[f'{quantity}_1']:.4g} (+-{r['half_width_1']:.1%}) | "
            f"{r[f'{quantity}_2']:.4g} (+-{r['half_width_2']:.1%}) | {r['change']:+.1%} | +-{r['combined']:.1%} | "
            f"{'yes' if r['agree'] else 'NO'} |")
    return "\n".join(lines)


def _run_stage(out: Path, stage_args: list[str]) -> tuple[float, list[str]]:
    command = [sys.executable, "-m", "suite", "latency", *STAGE_ARGS, *stage_args, "--force", "--out", str(out)]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started, command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("reports") / "latency_reproducibility",
                        help="output folder (default: reports/latency_reproducibility)")
    parser.add_argument("--allow-busy", action="store_true",
                        help="start even when more than 0.3 cores are busy before the first run")
    parser.add_argument("--compare-only", action="store_true", help="compare OUT/run1 and OUT/run2 as they are")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("DIR1", "DIR2"), default=None,
                        help="compare the latency.csv of two existing folders (e.g. a bench's raw/latency and a "
                        "second run of the same invocations) and write the comparison into OUT")
    parser.add_argument("stage_args", nargs="*", help="extra flags for `python -m suite latency` (after --)")
    args = parser.parse_args(argv)
    import pandas as pd

    from suite.timing.sweep import TABLE_COLUMNS

    load = os.getloadavg()[0]
    args.compare_only = args.compare_only or args.compare is not None
    busy = busy_cores() if not args.compare_only else 0.0
    if busy > 0.3 and not args.allow_busy:
        print(f"error: {busy:.2f} cores busy: something else is running; timings would not mean anything "
              "(--allow-busy to run anyway)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    walls, commands = [], []
    if not args.compare_only:
        for index in (1, 2):
            wall, command = _run_stage(args.out / f"run{index}", args.stage_args)
            walls.append(wall)
            commands.append(command)
    folders = args.compare or [args.out / f"run{i}" for i in (1, 2)]
    runs = [pd.read_csv(Path(folder) / "latency.csv").rename(columns=TABLE_COLUMNS) for folder in folders]
    ratio = compare(*runs, "ratio")
    passes = compare(*runs, "passes")
    lines = [summary_line(ratio, "ratio"), summary_line(passes, "passes")]
    statuses = [{k: int(v) for k, v in r["status"].value_counts().items()} for r in runs]
    lines.append(f"statuses: run 1 {statuses[0]}, run 2 {statuses[1]}")
    if walls:
        lines.append(f"wall time: run 1 {walls[0]:.0f} s, run 2 {walls[1]:.0f} s; before: {busy:.2f} cores busy, "
                     f"load average {load:.2f}")
    print("\n".join(lines))
    print(_table(ratio, "ratio"))
    if len(ratio) and len(passes):
        ratio.merge(passes, on=KEY, suffixes=("", "_passes")).to_csv(args.out / "comparison.csv", index=False)
    else:
        ratio.to_csv(args.out / "comparison.csv", index=False)
    _write_readme(args.out, lines, ratio, passes, commands, runs[0], [str(f) for f in folders])
    return 0


def _write_readme(out: Path, lines: list[str], ratio, passes, commands: list[list[str]], run,
                  compared: list[str]) -> None:
    env = run.iloc[0] if len(run) else {}
    fields = ("env_commit", "env_date", "env_cpu", "env_cpu_count", "env_torch_version", "env_timer")
    environment = "\n".join(f"- {f[4:]}: {env[f]}" for f in fields if f in getattr(env, "index", []))
    shown = [" ".join(shlex.quote(Path(p).name if i == 0 else p) for i, p in enumerate(c)) for c in commands]
    text = "\n\n".join([
        "# Latency reproducibility: two independent invocations of the latency stage",
        "Written by `python -m benchmarks.latency_reproducibility`; each row is one configuration "
        "(fp32, 1 thread), measured ok in both runs. *agree*: the two ratios differ by "
        "less than their combined 95% interval on the log scale, sqrt(h1^2 + h2^2).",
        "\n".join(f"- {line}" for line in lines),
        "## Compared\n\n" + "\n".join(f"    {folder}" for folder in compared) if compared else "",
        "## Environment\n\n" + environment,
        "## Commands\n\n" + "\n".join(f"    {c}" for c in shown) if shown else "",
        "## Ratio to the 3x3 conv\n\n" + _table(ratio, "ratio"),
        "## Passes (time / one copy of the input)\n\n" + _table(passes, "passes"),
    ])
    (out / "README.md").write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
