"""Compare the tables of two bench folders: do they agree apart from what is measured?

    python -m benchmarks.compare_bench_tables BEFORE AFTER

For a refactor that must not change behaviour: run the same profile with the old and the new
code (``python -m suite bench --profile smoke --out BEFORE``, then again at the new commit into
AFTER) and compare. Every CSV of BEFORE (the report's tables and the stages' tables under
``raw/``) must exist in AFTER with the same columns and rows; a column may differ only if it
holds a measurement (times, ratios, intervals, RSS, the machine's peaks, load averages, the
messages that quote a measured interval) or the identity of the run (date, commit, the code
hashes in the accuracy keys). BEFORE's columns are first renamed as the tables name them now
(``suite.timing.sweep.TABLE_COLUMNS``: ``name`` is ``attn``; :data:`RENAMED`; an environment
field without the ``env_`` prefix that AFTER names with it: :func:`_environment_renamed`), so a
folder written before that vocabulary compares, and AFTER may add measured columns (named in the
line). Prints one line per table; exit 1 when anything else differs.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

from suite.records import ENV_PREFIX, ENVIRONMENT_FIELDS
from suite.timing.sweep import TABLE_COLUMNS

MEASURED = re.compile(
    r"(_ms|_s|_seconds|_GBps|_GMACps|_rel)$|^(ratio|passes|ref_|n$|calls_per_sample|converged|bound|"
    r"roofline_fraction|cpu_share_min|other_cores_max|loadavg|step_peak_bytes|step_rss_bytes|peak_rss_bytes|"
    r"rss_before_bytes|message$|value$)|latency_|^key$|date$|commit$|^started$|code_version$"
)
"""Columns that hold a measurement or the identity of the run (``key`` of the accuracy runs
contains the code hash, of the machine records the date)."""


RENAMED = {"ratio_to_ref": "ratio", "wall_seconds": "wall_s", "note": "message"}
"""Columns renamed to the stages' names: the report's latency ratio is ``ratio``; in every stage
a record's wall time is ``wall_s`` (the cost stage's was ``wall_seconds`` before it ran on
``suite.stage``) and why a row is not ok is its ``message`` (the accuracy stage's ``note``)."""


def _environment_renamed(before: pd.DataFrame, after: pd.DataFrame) -> dict[str, str]:
    """BEFORE's environment columns written without the prefix (the cost and accuracy stages did)
    by the name AFTER gives them (:data:`suite.records.ENV_PREFIX`)."""
    return {c: ENV_PREFIX + c for c in before.columns
            if c in ENVIRONMENT_FIELDS and ENV_PREFIX + c in after.columns and ENV_PREFIX + c not in before.columns}


def _same(x: pd.Series, y: pd.Series) -> bool:
    """Equal values, missing where the other is missing; ``36.0`` equals ``36`` (a CSV read
    back gives floats where a column had gaps)."""
    missing = x.isna() & y.isna()
    try:
        return bool(((x == y) | missing).all())
    except TypeError:
        return x.astype(str).equals(y.astype(str))


def compare(before: Path, after: Path) -> list[str]:
    """One line per table of ``before``; lines starting with ``DIFFERS`` are failures."""
    lines = []
    for path in sorted(before.rglob("*.csv")):
        rel = path.relative_to(before)
        other = after / rel
        if not other.exists():
            lines.append(f"DIFFERS {rel}: missing in {after}")
            continue
        a, b = pd.read_csv(path).rename(columns={**TABLE_COLUMNS, **RENAMED}), pd.read_csv(other)
        renamed = _environment_renamed(a, b)
        if renamed:  # the environment is env_* now; a column AFTER also has plainly (an accuracy
            # run's own threads, which BEFORE stored as the environment's) stays as well
            kept = [c for c in renamed if c not in b.columns]
            a = pd.concat([a.drop(columns=kept), a[list(renamed)].rename(columns=renamed)], axis=1)
            a = a[[c for c in b.columns if c in a.columns] + [c for c in a.columns if c not in b.columns]]
        # a measured column only AFTER has (the load average the runner adds to every record) is fine
        added = [c for c in b.columns if c not in a.columns and MEASURED.search(c)]
        b = b.drop(columns=added)
        if list(a.columns) != list(b.columns) or a.shape != b.shape:
            lines.append(f"DIFFERS {rel}: columns or shape {a.shape} vs {b.shape}, "
                         f"columns only on one side: {sorted(set(a.columns) ^ set(b.columns))}")
            continue
        changed = [c for c in a.columns if not _same(a[c], b[c])]
        unexpected = [c for c in changed if not MEASURED.search(c)]
        head = "DIFFERS" if unexpected else "same"
        lines.append(f"{head} {rel} {a.shape}: measured columns that differ: {len(changed) - len(unexpected)}"
                     + (f"; measured columns only in AFTER: {added}" if added else "")
                     + (f"; other columns that differ: {unexpected}" if unexpected else ""))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare_bench_tables", description=__doc__.split("\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    lines = compare(args.before, args.after)
    print("\n".join(lines))
    return 1 if any(line.startswith("DIFFERS") for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
