"""``python -m suite bench``: every stage of a profile, then the report (what ``nox -s bench`` runs)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..options import Option, add_options, choice_list, setting
from ..records import FolderLockedError
from .profile import STAGE_ORDER, ProfileError, apply_overrides, list_profiles, load_profile
from .runner import BenchError, plan_runs, run_bench

__all__ = ["BenchSettings", "SETTINGS", "add_arguments", "main"]

EPILOG = """\
Stages run in order cost -> latency -> memory -> accuracy, each into OUT/raw/STAGE, then the
report renders OUT/{cost,latency,memory,accuracy,summary}.csv, OUT/figures/*.png and
OUT/README.md. Re-running resumes: finished stage invocations are skipped, an interrupted one
resumes from its records; results of another commit or environment are moved to
OUT/raw/STAGE.previous and measured afresh (as with --force). A failing stage is recorded in
OUT/bench.json and the bench goes on. Two benches on one folder: the second is refused.

examples:
  python -m suite bench                                   # the cpu profile into reports/cpu
  python -m suite bench --profile smoke --attn 'se*'      # a few minutes
  python -m suite bench --set latency.batch=1,8 --stages cost,latency
  python -m suite bench --plugin mypkg.attn:MyGate        # your module beside the zoo
"""


@dataclass
class BenchSettings:
    """The bench's settings (one flag per field; ``python -m suite bench --help``)."""

    profile: str = setting("--profile", "cpu", default_text=f"cpu; shipped: {', '.join(list_profiles())}")
    out: Path | None = setting("--out", None, default_text="reports/PROFILE under the current folder")
    attn: str | None = setting("--attn", None, default_text="the profile's")
    stages: tuple[str, ...] = setting(Option(
        "--stages", "the stages to run, comma-separated", parse=choice_list(STAGE_ORDER), metavar="STAGE[,STAGE...]",
        group="what to measure"), STAGE_ORDER)
    overrides: list[str] = setting(Option(
        "--set", "override a profile value, e.g. latency.batch=1,8 or accuracy.seeds=1 (repeatable; KEY is the "
        "stage's flag without dashes; checked with the whole plan before any stage runs)", kind="append",
        metavar="STAGE[.I].KEY=VALUE", group="what to measure"), [])
    plugins: list[str] = setting("--plugin", [])
    force: bool = setting("--force", False)
    no_report: bool = setting(Option("--no-report", "run the stages only", kind="switch", group="output"), False)
    dry_run: bool = setting("--dry-run", False)
    no_progress: bool = setting("--no-progress", False)


SETTINGS = BenchSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    add_options(parser, BenchSettings)


def main(args: argparse.Namespace) -> int:
    from ..plugins import PluginError, export_plugins, load_plugins, normalize_spec

    try:
        specs = [normalize_spec(spec) for spec in args.plugins]
        plugin_names = load_plugins(specs)
        export_plugins(specs)  # the memory stage's worker processes load them too
        profile = apply_overrides(load_profile(args.profile), args.overrides, attn=args.attn)
        runs = plan_runs(profile, list(args.stages), plugin_names, progress=not args.no_progress)
    except (ProfileError, PluginError, BenchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or Path("reports") / profile.name
    if args.dry_run:
        for run in runs:
            print(f"python -m suite {run.stage} {' '.join(run.argv)} --out {out / 'raw' / run.stage}")
        return 0
    print(f"bench: profile {profile.name} ({profile.description}) -> {out}; "
          f"{len(runs)} stage invocations", file=sys.stderr)
    started = time.perf_counter()
    try:
        code = run_bench(profile, out, plugin_names=plugin_names, force=args.force,
                         progress=not args.no_progress, report=not args.no_report, runs=runs)
    except FolderLockedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print(f"bench: finished in {time.perf_counter() - started:.0f} s "
          f"({'all stages ok' if code == 0 else 'some stages failed, see bench.json'}); "
          f"results in {out}", file=sys.stderr)
    return code
