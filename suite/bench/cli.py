"""``python -m suite bench``: every stage of a profile, then the report (what ``nox -s bench`` runs)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..options import Option, add_options, comma_list, setting
from ..records import FolderLockedError
from ..stages import measuring_stages
from .profile import ProfileError, apply_overrides, list_profiles, load_profile
from .runner import BenchError, plan_runs, run_bench

__all__ = ["BenchSettings", "SETTINGS", "add_arguments", "main"]


EPILOG = """\
Stages run in order {order}, each into OUT/raw/STAGE, then the
report renders OUT/{{{stages},summary}}.csv, OUT/figures/*.png and
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
    stages: tuple[str, ...] | None = setting(Option(
        "--stages", "the stages to run, comma-separated (checked against the registry, suite/stages.py, before "
        "anything runs)", parse=comma_list, metavar="STAGE[,STAGE...]", group="what to measure"), None,
        default_text=f"every stage: {','.join(measuring_stages())}")
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
    """The bench's flags, from :class:`BenchSettings`, and the examples."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG.format(order=" -> ".join(measuring_stages()), stages=",".join(measuring_stages()))
    add_options(parser, BenchSettings)


def main(settings: BenchSettings) -> int:
    """Plan every stage invocation of the profile (all input checked first), then run them and
    the report; 0 when every stage succeeded, 1 otherwise, 130 when interrupted."""
    from ..plugins import PluginError, export_plugins, load_plugins, normalize_spec

    try:
        specs = [normalize_spec(spec) for spec in settings.plugins]
        plugin_names = load_plugins(specs)
        export_plugins(specs)  # the memory stage's worker processes load them too
        profile = apply_overrides(load_profile(settings.profile), settings.overrides, attn=settings.attn)
        stages = list(settings.stages or measuring_stages())
        runs = plan_runs(profile, stages, plugin_names, progress=not settings.no_progress)
    except (ProfileError, PluginError, BenchError) as exc:
        raise UsageError(str(exc)) from None
    out = settings.out or Path("reports") / profile.name
    if settings.dry_run:
        for run in runs:
            print(f"python -m suite {run.stage} {' '.join(run.argv)} --out {out / 'raw' / run.stage}")
        return 0
    print(f"bench: profile {profile.name} ({profile.description}) -> {out}; "
          f"{len(runs)} stage invocations", file=sys.stderr)
    started = time.perf_counter()
    try:
        code = run_bench(profile, out, plugin_names=plugin_names, force=settings.force,
                         progress=not settings.no_progress, report=not settings.no_report, runs=runs)
    except FolderLockedError as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        print("bench: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print(f"bench: finished in {time.perf_counter() - started:.0f} s "
          f"({'all stages ok' if code == 0 else 'some stages failed, see bench.json'}); "
          f"results in {out}", file=sys.stderr)
    return code
