"""``python -m suite report``: re-render a profile's tables, figures and README from its raw
stage outputs, without measuring."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..options import Option, add_options, setting

__all__ = ["ReportSettings", "SETTINGS", "add_arguments", "main"]


@dataclass
class ReportSettings:
    """The report's settings (one flag per field; ``python -m suite report --help``)."""

    out: Path = setting("--out", Path("reports/cpu"), default_text=(
        "reports/cpu; the profile folder holding raw/{cost,latency,memory,accuracy}/ (any may be missing), where "
        "summary.csv, the stage tables, figures/*.png and README.md are (re)written"))
    profile: str | None = setting("--profile", None, default_text="the folder's name")
    portable: bool = setting(Option(
        "--portable", "first rewrite the absolute paths in the folder's raw records and files as results now store "
        "them (relative to the current folder, code relative to the package), for folders written before they were "
        "stored so; nothing measured changes", kind="switch", group="output"), False)


SETTINGS = ReportSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The report's flags, from :class:`ReportSettings`."""
    add_options(parser, ReportSettings)


def main(settings: ReportSettings) -> int:
    """Render the report of ``settings.out`` (refused before any file is written when it is not
    a profile folder: :func:`suite.report.render.check_profile_folder`)."""
    from .render import check_profile_folder, render_report

    check_profile_folder(settings.out)
    if settings.portable:
        from ..portable import make_portable

        changed = make_portable(settings.out)
        print(f"report: rewrote {sum(changed.values())} absolute paths in {len(changed)} files"
              + (f" ({', '.join(f'{name} {n}' for name, n in changed.items())})" if changed else ""))
    result = render_report(settings.out, settings.profile)
    drawn = [Path(p).name for p in result["figures"].values() if p]
    skipped = [k for k, p in result["figures"].items() if not p]
    states = ", ".join(f"{s} {state}" for s, state in result["stages"].items())
    print(f"report: {result['types']} attention types; stages: {states}; "
          f"{len(drawn)} figures ({', '.join(drawn) or 'none'})"
          + (f", not drawn: {', '.join(skipped)}" if skipped else "")
          + f"; wrote {result['readme']} in {result['seconds']:.1f} s")
    return 0
