"""``python -m suite report``: re-render a profile's tables, figures and README from its raw
stage outputs, without measuring."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_arguments", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The report stage's options."""
    parser.add_argument(
        "--dir", type=Path, required=True, metavar="DIR",
        help="the profile folder, e.g. reports/cpu, holding raw/{cost,latency,memory,accuracy}/ "
        "(any of them may be missing); summary.csv, cost.csv, latency.csv, memory.csv, accuracy.csv, "
        "figures/*.png and README.md are (re)written there",
    )
    parser.add_argument("--profile", default=None, metavar="NAME",
                        help="profile name for titles and captions (default: the folder's name)")


def main(args: argparse.Namespace) -> int:
    from .render import render_report

    try:
        result = render_report(args.dir, args.profile)
    except FileNotFoundError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    drawn = [Path(p).name for p in result["figures"].values() if p]
    skipped = [k for k, p in result["figures"].items() if not p]
    states = ", ".join(f"{s} {state}" for s, state in result["stages"].items())
    print(f"report: {result['types']} attention types; stages: {states}; "
          f"{len(drawn)} figures ({', '.join(drawn) or 'none'})"
          + (f", not drawn: {', '.join(skipped)}" if skipped else "")
          + f"; wrote {result['readme']} in {result['seconds']:.1f} s")
    return 0
