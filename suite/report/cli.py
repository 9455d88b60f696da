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
    parser.add_argument("--portable", action="store_true",
                        help="first rewrite the absolute paths in DIR's raw records and files as results "
                        "now store them (relative to the current folder, code relative to the package), "
                        "for folders written before they were stored so; nothing measured changes")


def main(args: argparse.Namespace) -> int:
    from .render import render_report

    if args.portable:
        from ..portable import make_portable

        changed = make_portable(args.dir)
        print(f"report: rewrote {sum(changed.values())} absolute paths in {len(changed)} files"
              + (f" ({', '.join(f'{name} {n}' for name, n in changed.items())})" if changed else ""))
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
