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
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import logging
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..env import collect_environment
from ..errors import USAGE_EXIT, UsageError
from ..options import SettingsError, from_mapping, to_argv
from ..portable import portable_text, shown_path
from ..records import folder_lock, write_text_atomic
from ..stages import command, measuring_stages
from .profile import Profile

__all__ = ["BenchError", "StageRun", "fingerprint", "resolve_attn", "plan_runs", "run_bench"]

log = logging.getLogger(__name__)

FINGERPRINT_KEYS = ("commit", "python", "torch_version", "torchvision_version", "cpu", "cpu_count", "gpu")
STATE_FILE = "bench_state.json"


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
        digest = hashlib.sha256(json.dumps([self.stage, self.argv]).encode()).hexdigest()[:12]
        return f"{self.stage}-{self.index}-{digest}"


def fingerprint() -> dict[str, Any]:
    """What must match for stored results to be reused: code commit and environment."""
    environment = collect_environment()
    return {key: environment.get(key) for key in FINGERPRINT_KEYS}


def stage_module(stage: str) -> Any:
    """The module of ``python -m suite STAGE`` (its ``SETTINGS`` and ``main``)."""
    return command(stage).command_module()


def resolve_attn(stage: str, pattern: str, extra: list[str]) -> str:
    """Check ``pattern`` the way the stage will (an unknown pattern is a :class:`BenchError`
    before anything is measured; only the accuracy stage takes the baseline's name); return
    it with the plugin names ``extra`` appended (when the pattern does not already match them)."""
    import modules

    parts = [p.strip() for p in pattern.split(",") if p.strip()]
    checked = [p for p in parts if not (stage == "accuracy" and p == modules.BASELINE)]
    if checked:
        try:
            modules.list_attention(checked, strict=True)
        except ValueError as exc:
            raise BenchError(f"{stage}: --attn: {exc}") from None
    for name in extra:
        if not any(fnmatch.fnmatchcase(name, part) for part in parts):
            parts.append(name)
    return ",".join(parts)


def stage_settings(profile: Profile, stage: str, index: int, table: dict[str, Any], plugin_names: list[str],
                   progress: bool) -> Any:
    """The stage's settings object for one table of the profile, every key and value checked
    (:func:`suite.options.from_mapping`); a :class:`BenchError` names the table and the key."""
    where = f"profile {profile.name}: [[{stage}]] #{index}"
    if "out" in table:
        raise BenchError(f"{where}: 'out' is set by the bench (OUT/raw/{stage}); use bench --out")
    table = {**table, "attn": resolve_attn(stage, str(table.get("attn", profile.attn)), plugin_names)}
    if not progress:
        table["no-progress"] = True
    try:
        return from_mapping(stage_module(stage).SETTINGS, table, where)
    except SettingsError as exc:
        raise BenchError(str(exc)) from None
    except ValueError as exc:  # a check across fields
        raise BenchError(f"{where}: {exc}") from None


def plan_runs(profile: Profile, stages: list[str], plugin_names: list[str], progress: bool) -> list[StageRun]:
    """Every stage invocation of the profile, in stage order, with its settings checked: bad
    input is a :class:`BenchError` before anything runs."""
    order = list(measuring_stages())
    unknown = [s for s in stages if s not in order]
    if unknown:  # the CLI's --stages parser refuses them first
        raise BenchError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(order)}")
    return [StageRun(stage=stage, index=index,
                     settings=stage_settings(profile, stage, index, table, plugin_names, progress))
            for stage in order if stage in stages
            for index, table in enumerate(profile.stages.get(stage, []))]


def _read_state(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


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
    state = state or {"fingerprint": current, "completed": {}}
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / STATE_FILE, json.dumps(state, indent=2))
    return state


def _invoke(run: StageRun, folder: Path) -> tuple[str, str]:
    """Run the stage's ``main`` on the run's settings with ``--out folder``, in this process;
    return (status, message). torch's thread count is restored afterwards: a stage that sets it
    (cost counts with one thread) must not leave the next stage (accuracy trains with torch's
    default) on it."""
    import torch

    threads = torch.get_num_threads()
    try:
        code = stage_module(run.stage).main(dataclasses.replace(run.settings, out=folder))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else USAGE_EXIT
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
) -> int:
    """Run the profile's stages into ``out/raw/<stage>``, write ``out/bench.json`` and render
    the report. ``runs``: the plan already made by :func:`plan_runs` (made here otherwise).
    Returns 0 when every stage succeeded, 1 otherwise; bad input raises :class:`BenchError`."""
    if runs is None:
        runs = plan_runs(profile, list(stages or measuring_stages()), plugin_names or [], progress)
    current = fingerprint()
    started = time.perf_counter()
    summary: dict[str, Any] = {"profile": profile.name, "profile_file": shown_path(profile.path),
                               "fingerprint": current, "plugins": plugin_names or [], "runs": []}
    with folder_lock(out):
        states: dict[str, dict[str, Any]] = {}
        for stage in dict.fromkeys(run.stage for run in runs):
            states[stage] = _prepare_stage_folder(out / "raw" / stage, current, force)
        for position, run in enumerate(runs, start=1):
            folder = out / "raw" / run.stage
            state = states[run.stage]
            label = f"[{position}/{len(runs)}] {run.stage} #{run.index}"
            if state["completed"].get(run.run_id, {}).get("status") == "ok":
                print(f"bench: {label}: done earlier, skipped", file=sys.stderr)
                run.outcome = {**state["completed"][run.run_id], "skipped": True}
            else:
                print(f"bench: {label}: python -m suite {run.stage} {' '.join(run.argv)} --out {folder}",
                      file=sys.stderr)
                t0 = time.perf_counter()
                status, message = _invoke(run, folder)
                run.outcome = {"status": status, "message": message, "wall_s": round(time.perf_counter() - t0, 2)}
                state["completed"][run.run_id] = run.outcome
                write_text_atomic(folder / STATE_FILE, json.dumps(state, indent=2))
                print(f"bench: {label}: {status} in {run.outcome['wall_s']:.1f} s", file=sys.stderr)
                if status == "interrupted":
                    raise KeyboardInterrupt
            summary["runs"].append({"stage": run.stage, "index": run.index, "argv": run.argv, **run.outcome})
        summary["stages_wall_s"] = round(time.perf_counter() - started, 2)
        if report:
            summary["report"] = _render(out, profile.name)
        summary["wall_s"] = round(time.perf_counter() - started, 2)
        write_text_atomic(out / "bench.json", json.dumps(summary, indent=2, default=str))
    failed = [r for r in summary["runs"] if r.get("status") != "ok"]
    if summary.get("report", {}).get("status") not in (None, "ok"):
        failed.append(summary["report"])
    return 1 if failed else 0


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
