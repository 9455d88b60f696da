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
from ..shard import Shard
from ..stages import command, measuring_stages, stage
from .profile import Profile, ProfileError, apply_overrides, list_profiles, load_profile
from .runner import (
    BenchError,
    StageRun,
    in_shard,
    plan_runs,
    run_bench,
    shard_folder,
    takes_shard,
    torchrun_rank,
)

__all__ = ["BenchSettings", "SETTINGS", "add_arguments", "finish_line", "latency_row_problems", "main"]


EPILOG = """\
Stages run in order {order}, each into OUT/raw/STAGE, then the
report renders OUT/{{{stages},summary}}.csv, OUT/figures/*.png and
OUT/README.md. Re-running resumes: finished stage invocations are skipped, an interrupted one
resumes from its records; results of another commit or environment are moved to
OUT/raw/STAGE.previous and measured afresh (as with --force). A failing stage is recorded in
OUT/bench.json and the bench goes on. Two benches on one folder: the second is refused.

Before any stage runs, a preflight checks what the plan needs (a C compiler and Python's
headers for compiled rows, the accuracy stage's data; --skip-preflight skips it). --dry-run
prints each stage invocation with its configurations and estimated minutes, and the estimated
total (suite/bench/estimate.py: the CPU model is calibrated on the committed cpu run, the CUDA
model on published figures and unverified until a GPU runs it).

A plan larger than one machine: --shard K/N runs part K of N into OUT/shards/K-of-N (no
report); run the parts anywhere (a Slurm array job: --shard $((SLURM_ARRAY_TASK_ID+1))/N), then
python -m suite merge --shards OUT/shards joins them into OUT with its tables and report.
Under torchrun, the accuracy stage runs first, on every rank; then rank 0 alone runs the other
stages and the report.

examples:
  python -m suite bench                                   # the cpu profile into reports/cpu
  python -m suite bench --profile smoke --attn 'se*'      # a few minutes
  python -m suite bench --set latency.batch=1,8 --stages cost,latency
  python -m suite bench --plugin mypkg.attn:MyGate        # your module beside the zoo
  python -m suite bench --profile gpu --dry-run           # what it runs and how long it takes
  python -m suite bench --profile gpu-full --shard 3/8    # part 3 of 8, into reports/gpu-full/shards/3-of-8
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
    shard: Shard | None = setting("--shard", None, default_text="the whole plan")
    skip_preflight: bool = setting(Option(
        "--skip-preflight", "run without first checking what the plan needs (a C compiler and Python's headers for "
        "compiled rows, the accuracy stage's data)", kind="switch", group="processes"), False)
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
        runs = plan_runs(profile, stages, plugin_names, progress=not settings.no_progress, shard=settings.shard)
    except (ProfileError, PluginError, BenchError) as exc:
        raise UsageError(str(exc)) from None
    out = settings.out or Path("reports") / profile.name
    if settings.shard is not None:
        out = shard_folder(out, settings.shard)
    active = [run for run in runs if in_shard(run, settings.shard)]
    if settings.dry_run:
        return dry_run(profile, runs, out, settings.shard, report=not settings.no_report and settings.shard is None)
    if not settings.skip_preflight:
        _preflight(active)
    print(f"bench: profile {profile.name} ({profile.description}; expected {profile.expected or 'not stated'}) "
          f"-> {out}; {len(active)} stage invocations{_shard_text(runs, settings.shard)}", file=sys.stderr)
    started = time.perf_counter()
    try:
        code = run_bench(profile, out, plugin_names=plugin_names, force=settings.force,
                         progress=not settings.no_progress, report=not settings.no_report, runs=runs,
                         shard=settings.shard)
    except FolderLockedError as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        print("bench: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    if settings.shard is not None:
        print(f"bench: part {settings.shard} done; once every part has run: python -m suite merge --shards "
              f"{out.parent}", file=sys.stderr)
    print(finish_line(time.perf_counter() - started, code, out), file=sys.stderr)
    return code


def latency_table(out: Path) -> Path:
    """The latency stage's table in the bench folder ``out`` (``raw/latency/latency.csv``)."""
    return out / "raw" / "latency" / stage("latency").files["latency"]


def latency_row_problems(out: Path) -> tuple[int, dict[str, int]]:
    """The rows of ``out``'s latency table and, by status, those that carry no numbers
    (``contended``, a failure: not ``ok`` and not in :data:`suite.records.NOT_FAILURES`), most
    first; ``(0, {})`` without a table."""
    import csv

    from ..records import NOT_FAILURES, STATUS_OK

    try:
        with latency_table(out).open(encoding="utf-8", newline="") as handle:
            statuses = [row.get("status") or "" for row in csv.DictReader(handle)]
    except OSError:
        return 0, {}
    problems: dict[str, int] = {}
    for status in statuses:
        if status != STATUS_OK and status not in NOT_FAILURES:
            problems[status] = problems.get(status, 0) + 1
    return len(statuses), dict(sorted(problems.items(), key=lambda item: (-item[1], item[0])))


def finish_line(seconds: float, code: int, out: Path) -> str:
    """The bench's last line: how long it took, whether every stage ran, and, where latency rows
    came out without numbers (``contended`` on a busy machine, or failed), how many and where."""
    stages = "stages ok" if code == 0 else "some stages failed, see bench.json"
    total, problems = latency_row_problems(out)
    if problems:
        (first, n), *rest = problems.items()
        counts = ", ".join([f"{n} of {total} latency rows {first}", *(f"{m} {status}" for status, m in rest)])
        state = f"{stages}; partial: {counts}, see {latency_table(out)}"
    else:
        state = "all stages ok" if code == 0 else stages
    return f"bench: finished in {seconds:.0f} s ({state}); results in {out}"


def _preflight(runs: list[StageRun]) -> None:
    """Check what the plan needs before any stage runs (:func:`suite.preflight.require`; under
    ``torchrun`` a rank other than the first checks the stages it runs); print the notes."""
    from ..preflight import require

    rank, _ = torchrun_rank()
    mine = runs if rank == 0 else [run for run in runs if command(run.stage).distributed]
    for note in require(mine):
        print(f"bench: preflight: {note}", file=sys.stderr)


def _shard_text(runs: list[StageRun], shard: Shard | None) -> str:
    """What part ``shard`` of the plan runs, for the bench's first line ('' for the whole plan)."""
    if shard is None:
        return ""
    whole = list(dict.fromkeys(run.stage for run in runs if not takes_shard(run.stage)))
    text = f", part {shard} of the plan"
    if whole:
        text += f" ({', '.join(whole)}: no --shard, run whole in part 1)"
    return text


def dry_run(profile: Profile, runs: list[StageRun], out: Path, shard: Shard | None, report: bool) -> int:
    """Print each stage invocation this part of the plan runs, its configurations and estimated
    minutes, the report's, the total, and what the preflight finds (nothing is downloaded);
    return 0. Counting touches no device, so a CUDA plan is planned on any machine."""
    from ..preflight import check_plan
    from .estimate import estimate_line, estimate_runs, report_estimate, total_line

    active = [run for run in runs if in_shard(run, shard)]
    print(f"# profile {profile.name}: {profile.description}; expected {profile.expected or 'not stated'}"
          f"{_shard_text(runs, shard)}")
    estimates = estimate_runs(active)
    for run, estimate in zip(active, estimates, strict=True):
        print(" ".join(["python -m suite", run.stage, *run.argv, "--out", str(out / "raw" / run.stage)]))
        print(estimate_line(estimate))
    if report:
        estimates.append(report_estimate())
        print(f"# report into {out}")
        print(estimate_line(estimates[-1]))
    print(f"# {total_line(estimates)}")
    problems, notes = check_plan(active, download=False)
    for line in [*notes, *(f"would stop the bench: {p}" for p in problems)]:
        print(f"# preflight: {line}")
    return 0
