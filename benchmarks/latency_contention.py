"""Does the latency stage notice when it does not get the CPU? A clean run, then the same run with
a bounded CPU burner beside it, compared row by row.

The burner is one busy process per core (``os.cpu_count()``), each spinning for ``--burn-s``
seconds and then stopping by itself; it starts together with the second run. Every ``ok`` row
of the burner run should be a clean re-measurement and rows that could not be measured cleanly
must say ``contended``. The script prints, for the burner run: rows ok / contended, the rounds
discarded as contended, how the rounds that ended during the burn were classified, and the ok
rows whose ratio lies outside the two runs' combined 95% interval (the test that matters: two
honest measurements differ by both their noises) and outside the clean run's own interval (a
stricter count: a second honest run falls outside the first run's 95% interval of the mean
about 17% of the time, not 5%).

    python -m benchmarks.latency_contention --out reports/latency_contention
    python -m benchmarks.latency_contention --burn-s 90 -- --rounds 8   # flags for the stage

Writes ``OUT/clean/``, ``OUT/burner/`` (the stage's outputs), ``OUT/comparison.csv`` and
``OUT/README.md``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from .latency_reproducibility import KEY, STAGE_ARGS, _keyed, busy_cores, compare

BURNER = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


def start_burners(seconds: float, count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` processes that each keep one core busy for ``seconds`` and then exit."""
    return [subprocess.Popen([sys.executable, "-c", BURNER.format(seconds=seconds)]) for _ in range(count)]


def _stage(out: Path, stage_args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "suite", "latency", *STAGE_ARGS, *stage_args, "--force",
                    "--no-progress", "--out", str(out)], check=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("reports") / "latency_contention",
                        help="output folder (default: reports/latency_contention)")
    parser.add_argument("--burn-s", type=float, default=60.0, help="how long each burner spins (default: 60)")
    parser.add_argument("--compare-only", action="store_true", help="compare OUT/clean and OUT/burner as they are")
    parser.add_argument("stage_args", nargs="*", help="extra flags for `python -m suite latency` (after --)")
    args = parser.parse_args(argv)
    import pandas as pd

    from suite.timing.sweep import TABLE_COLUMNS

    walls: dict[str, float] = {}
    if not args.compare_only:
        busy = busy_cores()
        if busy > 0.3:
            print(f"error: {busy:.2f} cores busy before the clean run: something else is running", file=sys.stderr)
            return 2
        walls["clean"] = _stage(args.out / "clean", args.stage_args)
        burn_start = time.time()
        burners = start_burners(args.burn_s, os.cpu_count() or 1)
        try:
            walls["burner"] = _stage(args.out / "burner", args.stage_args)
        finally:
            for burner in burners:
                burner.wait()
        (args.out / "burner" / "burn_window.txt").write_text(f"{burn_start:.3f} {burn_start + args.burn_s:.3f}\n")
    clean = pd.read_csv(args.out / "clean" / "latency.csv").rename(columns=TABLE_COLUMNS)
    burner = pd.read_csv(args.out / "burner" / "latency.csv").rename(columns=TABLE_COLUMNS)
    frame = compare(clean, burner, "ratio")
    clean_ok = _keyed(clean[clean["status"] == "ok"])
    outside = []
    for row in frame.itertuples():
        key = tuple(getattr(row, k) for k in KEY)
        low, high = clean_ok.loc[key, "ratio_ci_low"], clean_ok.loc[key, "ratio_ci_high"]
        outside.append(not (low <= row.ratio_2 <= high))
    frame["outside_clean_interval"] = outside
    frame.to_csv(args.out / "comparison.csv", index=False)
    statuses = {k: int(v) for k, v in burner["status"].value_counts().items()}
    lines = [
        f"burner: {os.cpu_count()} processes x {args.burn_s:.0f} s, started with the second run",
        f"burner run statuses: {statuses}; rounds discarded as contended: {int(burner['rounds_contended'].sum())} "
        f"(clean run: {int(clean['rounds_contended'].sum())})",
        f"ok rows of the burner run outside the clean run's 95% interval: {int(frame['outside_clean_interval'].sum())} "
        f"of {len(frame)}; outside the combined interval: {int((~frame['agree']).sum())} of {len(frame)}",
    ]
    window = args.out / "burner" / "burn_window.txt"
    if window.is_file():
        lines.append(_rounds_in_window(args.out / "burner" / "records.jsonl", *map(float, window.read_text().split())))
    if walls:
        lines.append(f"wall time: clean {walls['clean']:.0f} s, with burner {walls['burner']:.0f} s")
    if len(frame):
        worst = frame.assign(abs_change=frame["change"].abs()).sort_values("abs_change").iloc[-1]
        lines.append(f"largest |change| of an ok row: {worst['attn']} C={worst['channels']} {worst['change']:+.1%} "
                     f"(combined interval +-{worst['combined']:.1%})")
    print("\n".join(lines))
    table = frame[[*KEY, "ratio_1", "half_width_1", "ratio_2", "half_width_2", "change", "agree",
                   "outside_clean_interval"]]
    text = ["# Latency under a CPU burner", "Written by `python -m benchmarks.latency_contention`.", "",
            *[f"- {line}" for line in lines], "", table.to_markdown(index=False, floatfmt=".4g") if _has_tabulate()
            else table.to_string(index=False)]
    contended = burner[burner["status"] == "contended"]
    if len(contended):
        text += ["", "Contended rows of the burner run:", ""]
        text += [f"- {r['attn']} C={r['channels']}: {r['message'][:160]}" for _, r in contended.iterrows()]
    (args.out / "README.md").write_text("\n".join(text) + "\n", encoding="utf-8")
    return 0


def _rounds_in_window(records: Path, start: float, end: float) -> str:
    """How the rounds that ended while the burners ran were classified."""
    from suite.records import RecordStore

    rounds = [r for r in RecordStore(records).read() if r.get("record") == "latency_round" and "measured_at" in r]
    during = [r for r in rounds if start <= r["measured_at"] <= end]
    clean = sum(r["status"] == "ok" for r in during)
    return (f"rounds that ended while the burners ran: {len(during)}, of them {len(during) - clean} contended and "
            f"{clean} ok (a window is only taken as clean when the check passed for that window)")


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
