"""Run every stage of a profile into ``reports/<profile>/raw/<stage>/``, then the report.

What makes a bench resumable and safe:

* The bench folder is locked (:func:`suite.records.folder_lock`): a second bench writing the
  same folder is refused with a clear message, never interleaved.
* Each stage folder carries ``bench_state.json``: the fingerprint of the code and environment
  it was measured with (git commit, Python, torch/torchvision, CPU, GPU, core count) and the
  stage invocations that completed. A completed invocation is skipped; an interrupted one is
  run again and the stage itself resumes from its raw records, so no configuration is
  measured twice and no row is duplicated. When the fingerprint changed (a new commit, a new
  machine) or ``--force`` is given, the old folder is moved to ``raw/<stage>.previous/``
  (nothing measured is deleted) and the stage starts afresh. A tree with uncommitted changes
  has the commit ``<sha>-dirty``: all dirty states of one commit count as the same code.
* A stage that fails (a non-zero exit, an exception) is recorded in ``bench.json`` with its
  status and message, and the bench goes on with the next stage; the exit code is non-zero.

Parts of a plan (``--shard K/N``): each stage whose settings take ``--shard`` measures its part
K of N; a stage that does not runs its whole plan in part 1 and is skipped in the others, so
every configuration is measured once. ``bench.json`` names the part and the plan (``plan_id``,
the same in every part), which ``python -m suite merge`` checks before it joins the parts.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the stages that train across ranks
(:attr:`suite.stages.StageSpec.distributed`, the accuracy stage) run first, on every rank
together; only then does the first rank run the other stages and the report, while the other
ranks have left. The other order would keep the other ranks waiting at the process group's
rendezvous (bounded by the accuracy stage's ``--dist-timeout``) for as long as the first rank
measures cost, latency and memory, hours for a large plan, and the job would end in their
timeout. The other ranks skip an invocation the first rank's state records as done. When a
distributed invocation fails, the rank ends the bench at once with exit status 1 (the other
ranks cannot go on without it; ``torchrun`` stops them), after the first rank has written
``bench.json``.

Each invocation's outcome also records ``records_end``, the number of complete lines of the
stage's records file once it finished: which records each invocation wrote, which
``python -m suite merge`` uses to keep, for a key measured in two parts, the record of the
earliest invocation (as one unsharded run keeps it).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..env import collect_environment
from ..errors import UsageError
from ..options import SettingsError, from_mapping, to_argv
from ..portable import portable_text, shown_path
from ..records import folder_lock, write_text_atomic
from ..shard import Shard
from ..stages import command, measuring_stages
from .profile import Profile
from .state import STATE_FILE, complete_lines, new_state, run_key, without_shard, write_state

__all__ = ["BenchError", "StageRun", "fingerprint", "resolve_attn", "plan_runs", "run_bench", "takes_shard",
           "in_shard", "plan_id", "shard_folder", "torchrun_rank", "run_order"]

log = logging.getLogger(__name__)

FINGERPRINT_KEYS = ("commit", "python", "torch_version", "torchvision_version", "cpu", "cpu_count", "gpu")
IDENTITY_FREE = ("--shard", "--no-progress")
"""Flags that do not change what a plan measures (left out of :func:`plan_id`)."""


class BenchError(ValueError):
    """Bad bench input (an attention pattern that matches nothing, an unknown stage)."""


@dataclass
class StageRun:
    """One invocation of a stage: its index within the stage, its checked settings, and the flags
    that reproduce it on the command line (``python -m suite STAGE ARGV``)."""

    stage: str
    index: int
    settings: Any
    outcome: dict[str, Any] = field(default_factory=dict)

    @property
    def argv(self) -> list[str]:
        return to_argv(self.settings)

    @property
    def run_id(self) -> str:
        return run_key(self.stage, self.index, self.argv)


def fingerprint() -> dict[str, Any]:
    """What must match for stored results to be reused: code commit and environment."""
    environment = collect_environment()
    return {key: environment.get(key) for key in FINGERPRINT_KEYS}


def stage_module(stage: str) -> Any:
    """The module of ``python -m suite STAGE`` (its ``SETTINGS`` and ``main``)."""
    return command(stage).command_module()


def resolve_attn(stage: str, pattern: str, extra: list[str]) -> str:
    """Check ``pattern`` the way the stage will (an unknown pattern is a :class:`BenchError`
    before anything is measured; the baseline's name is the accuracy stage's baseline and, at
    model level, the latency and ops stages' A/A control, which they check themselves); return
    it with the plugin names ``extra`` appended (when the pattern does not already match them)."""
    import modules

    parts = [p.strip() for p in pattern.split(",") if p.strip()]
    checked = [p for p in parts if not (stage in ("accuracy", "latency", "ops") and p == modules.BASELINE)]
    if checked:
        try:
            modules.list_attention(checked, strict=True)
        except ValueError as exc:
            raise BenchError(f"{stage}: --attn: {exc}") from None
    for name in extra:
        if not any(fnmatch.fnmatchcase(name, part) for part in parts):
            parts.append(name)
    return ",".join(parts)


def takes_shard(stage: str) -> bool:
    """Whether the stage's settings take ``--shard`` (measure part K of N of its plan)."""
    return "shard" in {f.name for f in dataclasses.fields(stage_module(stage).SETTINGS)}


def in_shard(run: StageRun, shard: Shard | None) -> bool:
    """Whether part ``shard`` of the bench runs ``run``: every part runs a stage that takes
    ``--shard`` (its own part); a stage that does not runs whole in part 1 only."""
    return shard is None or shard.index == 1 or takes_shard(run.stage)


def shard_folder(out: Path, shard: Shard) -> Path:
    """Where part ``shard`` of a bench into ``out`` writes: ``out/shards/K-of-N``."""
    return out / "shards" / f"{shard.index}-of-{shard.count}"


def plan_id(profile: Profile, runs: list[StageRun]) -> str:
    """A short hash of what the plan measures (the profile's name and every invocation's flags
    but :data:`IDENTITY_FREE`): the same in every part of a plan run with ``--shard``."""
    def identity(argv: list[str]) -> list[str]:
        return [arg for arg in without_shard(argv) if arg not in IDENTITY_FREE]

    blob = json.dumps([profile.name, [[run.stage, run.index, identity(run.argv)] for run in runs]])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def torchrun_rank() -> tuple[int, int]:
    """This process's rank and the job's world size under ``torchrun`` (0 and 1 outside one)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def stage_settings(profile: Profile, stage: str, index: int, table: dict[str, Any], plugin_names: list[str],
                   progress: bool, shard: Shard | None = None) -> Any:
    """The stage's settings object for one table of the profile, every key and value checked
    (:func:`suite.options.from_mapping`), with the bench's ``shard`` where the stage takes one;
    a :class:`BenchError` names the table and the key."""
    where = f"profile {profile.name}: [[{stage}]] #{index}"
    for key, flag in (("out", "--out"), ("shard", "--shard")):
        if key in table:
            raise BenchError(f"{where}: {key!r} is set by the bench; use bench {flag}")
    table = {**table, "attn": resolve_attn(stage, str(table.get("attn", profile.attn)), plugin_names)}
    if not progress:
        table["no-progress"] = True
    if shard is not None and takes_shard(stage):
        table["shard"] = str(shard)
    try:
        return from_mapping(stage_module(stage).SETTINGS, table, where)
    except SettingsError as exc:
        raise BenchError(str(exc)) from None
    except ValueError as exc:  # a check across fields
        raise BenchError(f"{where}: {exc}") from None


def plan_runs(profile: Profile, stages: list[str], plugin_names: list[str], progress: bool,
              shard: Shard | None = None) -> list[StageRun]:
    """Every stage invocation of the profile, in stage order, with its settings checked (and
    part ``shard`` of each stage that takes ``--shard``): bad input is a :class:`BenchError`
    before anything runs."""
    order = list(measuring_stages())
    unknown = [s for s in stages if s not in order]
    if unknown:  # the CLI's --stages parser refuses them first
        raise BenchError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(order)}")
    return [StageRun(stage=stage, index=index,
                     settings=stage_settings(profile, stage, index, table, plugin_names, progress, shard))
            for stage in order if stage in stages
            for index, table in enumerate(profile.stages.get(stage, []))]


def _read_state(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _done_earlier(state: dict[str, Any] | None, run: StageRun) -> bool:
    """Whether ``state`` (a stage folder's) records ``run`` as finished."""
    return bool(state) and state["completed"].get(run.run_id, {}).get("status") == "ok"


def _prepare_stage_folder(folder: Path, current: dict[str, Any], force: bool) -> dict[str, Any]:
    """The stage folder's state, moving stale results aside first."""
    state = _read_state(folder)
    stale = state is not None and state.get("fingerprint") != current
    has_results = folder.exists() and any(p.name != ".lock" for p in folder.iterdir())
    if has_results and (force or stale or state is None):
        previous = folder.with_name(folder.name + ".previous")
        shutil.rmtree(previous, ignore_errors=True)
        folder.rename(previous)
        reason = "--force" if force else ("measured with another commit/environment" if stale else "no bench state")
        print(f"bench: {folder.name}: earlier results moved to {previous} ({reason})", file=sys.stderr)
        state = None
    state = state or new_state(current)
    folder.mkdir(parents=True, exist_ok=True)
    write_state(folder, state)
    return state


def _invoke(run: StageRun, folder: Path) -> tuple[str, str]:
    """Run the stage's ``main`` on the run's settings with ``--out folder``, in this process;
    return (status, message). A ``SystemExit`` with a message (a failed rank of a ``torchrun`` job,
    :class:`suite.accuracy.sweep.RankFailed`) is an error with that message. torch's thread count
    is restored afterwards: a stage that sets it (cost counts with one thread) must not leave the
    next stage (accuracy trains with torch's default) on it."""
    import torch

    threads = torch.get_num_threads()
    try:
        code = stage_module(run.stage).main(dataclasses.replace(run.settings, out=folder))
    except SystemExit as exc:
        if isinstance(exc.code, str):
            return "error", exc.code
        code = exc.code
    except UsageError as exc:
        return "error", f"usage error: {exc}"
    except Exception as exc:  # noqa: BLE001 - a failing stage becomes a status, the bench goes on
        return "error", f"{type(exc).__name__}: {exc}\n{portable_text(traceback.format_exc(limit=5))}"
    finally:
        torch.set_num_threads(threads)
    if not code:
        return "ok", ""
    return ("interrupted" if code == 130 else "error"), f"exit code {code}"


def run_bench(
    profile: Profile,
    out: Path,
    *,
    stages: list[str] | None = None,
    plugin_names: list[str] | None = None,
    force: bool = False,
    progress: bool = True,
    report: bool = True,
    runs: list[StageRun] | None = None,
    shard: Shard | None = None,
) -> int:
    """Run the profile's stages into ``out/raw/<stage>``, write ``out/bench.json`` and render
    the report (not for a part of a plan: ``shard``; :func:`in_shard` says which invocations a
    part runs). ``runs``: the plan already made by :func:`plan_runs` (made here otherwise).
    Under ``torchrun`` the distributed stages run first on every rank (:func:`run_order`), then
    the first rank runs the others and the report, and the other ranks leave
    (:func:`_run_other_rank`); a failed distributed invocation ends the bench at once. Returns 0
    when every stage succeeded, 1 otherwise; bad input raises :class:`BenchError`."""
    if runs is None:
        runs = plan_runs(profile, list(stages or measuring_stages()), plugin_names or [], progress, shard)
    rank, world = torchrun_rank()
    planned, runs = plan_id(profile, runs), run_order(runs, world)
    if rank != 0:
        return _run_other_rank(runs, out, force, rank, world)
    current = fingerprint()
    started = time.perf_counter()
    summary: dict[str, Any] = {"profile": profile.name, "profile_file": shown_path(profile.path),
                               "plan_id": planned, "shard": str(shard) if shard else None,
                               "fingerprint": current, "plugins": plugin_names or [], "runs": []}
    report = report and shard is None
    with folder_lock(out):
        states: dict[str, dict[str, Any]] = {}
        for stage in dict.fromkeys(run.stage for run in runs if in_shard(run, shard)):
            states[stage] = _prepare_stage_folder(out / "raw" / stage, current, force)
        if world > 1:
            print(f"bench: rank 0 of {world}: {', '.join(_distributed(runs)) or 'no stage'} first with every "
                  f"rank, then the other stages and the report on this rank alone", file=sys.stderr)
        for position, run in enumerate(runs, start=1):
            label = f"[{position}/{len(runs)}] {run.stage} #{run.index}"
            run.outcome = _run_one(run, label, out / "raw" / run.stage, states.get(run.stage), shard)
            summary["runs"].append({"stage": run.stage, "index": run.index, "argv": run.argv, **run.outcome})
            if _ends_job(run, world):
                print(f"bench: {label} failed on rank 0 of {world}: the bench ends here (the other ranks cannot "
                      f"go on without this one); {len(runs) - position} invocation(s) and the report not run",
                      file=sys.stderr)
                report = False
                break
        summary["stages_wall_s"] = round(time.perf_counter() - started, 2)
        if report:
            summary["report"] = _render(out, profile.name)
        summary["wall_s"] = round(time.perf_counter() - started, 2)
        write_text_atomic(out / "bench.json", json.dumps(summary, indent=2, default=str))
    failed = [r for r in summary["runs"] if r.get("status") != "ok"]
    if summary.get("report", {}).get("status") not in (None, "ok"):
        failed.append(summary["report"])
    return 1 if failed else 0


def run_order(runs: list[StageRun], world: int) -> list[StageRun]:
    """The order the bench runs ``runs`` in: the plan's, but under ``torchrun`` (``world`` > 1)
    the distributed invocations first, so that no rank waits for the first one at the process
    group's rendezvous while it measures the other stages."""
    if world <= 1:
        return list(runs)
    return sorted(runs, key=lambda run: not command(run.stage).distributed)


def _ends_job(run: StageRun, world: int) -> bool:
    """Whether ``run``'s outcome ends the bench: a distributed invocation that failed under ``torchrun``."""
    return world > 1 and command(run.stage).distributed and run.outcome.get("status") != "ok"


def _run_one(run: StageRun, label: str, folder: Path, state: dict[str, Any] | None,
             shard: Shard | None) -> dict[str, Any]:
    """Run one invocation into ``folder`` unless this part of the plan leaves it to part 1 or
    ``state`` records it as done; record it in ``state``; return its outcome (``KeyboardInterrupt``
    when the stage was interrupted)."""
    if shard is not None and not in_shard(run, shard):
        print(f"bench: {label}: the stage takes no --shard; it runs whole in part 1/{shard.count}", file=sys.stderr)
        return {"status": "ok", "skipped": True, "message": f"run whole in part 1/{shard.count}"}
    if state is None:
        raise BenchError(f"{label}: no prepared folder")  # run_bench prepares every folder it runs
    if _done_earlier(state, run):
        print(f"bench: {label}: done earlier, skipped", file=sys.stderr)
        return {**state["completed"][run.run_id], "skipped": True}
    print(f"bench: {label}: python -m suite {run.stage} {' '.join(run.argv)} --out {folder}", file=sys.stderr)
    t0 = time.perf_counter()
    status, message = _invoke(run, folder)
    outcome = {"status": status, "message": message, "wall_s": round(time.perf_counter() - t0, 2),
               "records_end": len(complete_lines(folder / str(command(run.stage).records_file)))}
    state["completed"][run.run_id] = outcome
    write_state(folder, state)
    print(f"bench: {label}: {status} in {outcome['wall_s']:.1f} s", file=sys.stderr)
    if status == "interrupted":
        raise KeyboardInterrupt
    return outcome


def _distributed(runs: list[StageRun]) -> list[str]:
    """The stages of ``runs`` that train across the ranks of a ``torchrun`` job."""
    return list(dict.fromkeys(run.stage for run in runs if command(run.stage).distributed))


def _run_other_rank(runs: list[StageRun], out: Path, force: bool, rank: int, world: int) -> int:
    """A rank other than the first under ``torchrun``: one line naming what it skips, then each
    distributed stage invocation (the first rank holds the folders, their state and the
    report); an invocation the first rank's state records as done is skipped, as there. A failed
    invocation ends this rank at once. Returns 0 when each one it ran succeeded, 1 otherwise."""
    skipped = [stage for stage in dict.fromkeys(run.stage for run in runs) if not command(stage).distributed]
    print(f"bench: rank {rank} of {world}: {', '.join([*skipped, 'report'])} run on rank 0 only, after "
          f"{', '.join(_distributed(runs)) or 'no stage'}, which this rank joins first", file=sys.stderr)
    current = fingerprint()
    for run in runs:
        if not command(run.stage).distributed:
            continue
        folder = out / "raw" / run.stage
        state = _read_state(folder)
        if not force and state is not None and state.get("fingerprint") == current and _done_earlier(state, run):
            print(f"bench: rank {rank}: {run.stage} #{run.index}: done earlier, skipped", file=sys.stderr)
            continue
        status, message = _invoke(run, folder)
        print(f"bench: rank {rank}: {run.stage} #{run.index}: {status}{': ' + message if message else ''}",
              file=sys.stderr)
        if status != "ok":
            print(f"bench: rank {rank}: the bench ends here (the other ranks cannot go on without this one)",
                  file=sys.stderr)
            return 1
    return 0


def _render(out: Path, profile: str) -> dict[str, Any]:
    """Render the report from the raw records; a failure is a status, not a crash."""
    t0 = time.perf_counter()
    try:
        from ..report import render_report

        render_report(out, profile)
    except Exception as exc:  # noqa: BLE001
        return {"stage": "report", "status": "error", "message": f"{type(exc).__name__}: {exc}",
                "wall_s": round(time.perf_counter() - t0, 2)}
    return {"stage": "report", "status": "ok", "wall_s": round(time.perf_counter() - t0, 2)}
