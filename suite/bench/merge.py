"""``python -m suite merge``: join the parts of a bench run with ``--shard K/N`` into one folder.

Each part (``OUT/shards/K-of-N``, written by ``python -m suite bench --shard K/N`` on any
machine) holds ``bench.json`` (the profile, the plan's id, the part) and ``raw/STAGE/``. The merge

1. checks the parts before it writes anything: each has a ``bench.json`` of one profile and one
   plan (``plan_id``: the same profile, overrides and stages) split into the same N parts, and
   parts 1..N are there once each; anything else is a :class:`~suite.errors.UsageError` (exit 2)
   naming the folders;
2. joins each stage's raw files into ``OUT/raw/STAGE``: the ``.jsonl`` files (the stage's
   records, :attr:`suite.stages.StageSpec.records_file`, its ``environments.jsonl``, the
   accuracy stage's per-image results) line by line, an environment several parts name once;
   the other ``.json`` files (the accuracy stage's val manifest) once. Tables, summaries, the
   bench state and checkpoints are derived or private to a part and not copied. A stage folder
   already in OUT is moved to ``OUT/raw/STAGE.previous`` first (nothing measured is deleted);
3. rewrites each stage's tables from the joined records (the stage's ``--tables-only``),
   renders the report (:func:`suite.report.render_report`) and writes ``OUT/bench.json``
   naming the parts and their runs.

``--shards`` takes the parts' folders, or the folder holding them (``OUT/shards``); ``--out``
defaults to the folder above ``shards/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..options import Option, add_options, setting
from ..records import ENVIRONMENTS_FILE, FolderLockedError, folder_lock, write_text_atomic
from ..shard import parse_shard
from ..stages import measuring_stages

__all__ = ["MergeSettings", "SETTINGS", "add_arguments", "main", "find_parts", "check_parts", "join_stage"]

PART_NAME = re.compile(r"^\d+-of-\d+$")
"""A part's folder under ``OUT/shards`` (``3-of-8``)."""
PRIVATE = ("bench_state.json",)
"""Files of a part's stage folder that describe that part's run only."""


@dataclass
class MergeSettings:
    """The merge's settings (one flag per field; ``python -m suite merge --help``)."""

    shards: list[Path] = setting(Option(
        "--shards", "a part's folder written by bench --shard K/N (OUT/shards/K-of-N), or the folder holding the "
        "parts (OUT/shards) (repeatable)", parse=Path, kind="append", metavar="DIR", group="output"), [])
    out: Path | None = setting("--out", None, default_text="the folder above shards/ (OUT for OUT/shards/K-of-N)")


SETTINGS = MergeSettings


@dataclass
class Part:
    """One part of the plan: its folder and its ``bench.json``."""

    folder: Path
    summary: dict[str, Any]

    @property
    def index(self) -> int:
        return parse_shard(self.summary["shard"]).index

    @property
    def count(self) -> int:
        return parse_shard(self.summary["shard"]).count


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The merge's flags, from :class:`MergeSettings`, and an example."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = ("example (a Slurm array job of 8 parts, then the merge):\n"
                     "  sbatch --array=0-7 --gpus=1 --wrap 'python -m suite bench --profile gpu-full "
                     "--shard $((SLURM_ARRAY_TASK_ID+1))/8'\n"
                     "  python -m suite merge --shards reports/gpu-full/shards   # into reports/gpu-full")
    add_options(parser, MergeSettings)


def find_parts(paths: list[Path]) -> list[Path]:
    """The part folders of ``--shards``: a folder with a ``bench.json`` is one, a folder holding
    ``K-of-N`` folders gives those; anything else is a :class:`UsageError`."""
    if not paths:
        raise UsageError("--shards: name the parts' folders (OUT/shards/K-of-N) or the folder holding them")
    found: list[Path] = []
    for path in paths:
        children = sorted(p for p in path.iterdir() if p.is_dir() and PART_NAME.match(p.name)) if path.is_dir() else []
        if (path / "bench.json").is_file() or (path.is_dir() and PART_NAME.match(path.name)):
            found.append(path)
        elif children:
            found += children
        else:
            raise UsageError(f"--shards {path}: not a part of a bench run (no bench.json) and no K-of-N folders in it")
    return list(dict.fromkeys(p.resolve() for p in found))


def _read_part(folder: Path) -> Part:
    """The part in ``folder``; a :class:`UsageError` when its ``bench.json`` is missing or names no part."""
    try:
        summary = json.loads((folder / "bench.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise UsageError(f"{folder}: no readable bench.json; the part did not finish: run its bench "
                         f"--shard K/N again (it resumes)") from None
    if not summary.get("shard"):
        raise UsageError(f"{folder}: bench.json names no part (a bench run without --shard K/N)")
    return Part(folder, summary)


def check_parts(folders: list[Path]) -> list[Part]:
    """The parts, in order, once checked: one profile, one plan, one N, parts 1..N once each;
    otherwise a :class:`UsageError` saying what differs or is missing."""
    parts = [_read_part(folder) for folder in folders]
    for key, what in (("profile", "profiles"), ("plan_id", "plans (profile values, --set, --stages, --attn)")):
        values = {str(p.summary.get(key)) for p in parts}
        if len(values) > 1:
            listing = "; ".join(f"{p.folder}: {p.summary.get(key)}" for p in parts)
            raise UsageError(f"the parts are of different {what}: {listing}")
    counts = {p.count for p in parts}
    if len(counts) > 1:
        listing = "; ".join(f"{p.folder}: {p.summary['shard']}" for p in parts)
        raise UsageError(f"the parts split the plan into different numbers of parts: {listing}")
    count = counts.pop()
    indices = [p.index for p in parts]
    duplicated = sorted({i for i in indices if indices.count(i) > 1})
    if duplicated:
        listing = "; ".join(str(p.folder) for p in parts if p.index in duplicated)
        raise UsageError(f"part(s) {', '.join(f'{i}/{count}' for i in duplicated)} given more than once: {listing}")
    missing = sorted(set(range(1, count + 1)) - set(indices))
    if missing:
        have = ", ".join(p.summary["shard"] for p in sorted(parts, key=lambda p: p.index))
        raise UsageError(f"part(s) {', '.join(f'{i}/{count}' for i in missing)} missing (have {have}); "
                         f"run them with bench --shard K/{count} and name their folders")
    return sorted(parts, key=lambda p: p.index)


def default_out(parts: list[Part]) -> Path:
    """The folder above ``shards/`` when every part is in one ``OUT/shards``; a :class:`UsageError` otherwise."""
    parents = {p.folder.parent for p in parts}
    parent = parents.pop() if len(parents) == 1 else None
    if parent is None or parent.name != "shards":
        raise UsageError("--out is needed: the parts are not all in one OUT/shards folder")
    return parent.parent


def _jsonl_lines(path: Path) -> list[str]:
    """The complete JSON lines of ``path`` (a torn last line of an interrupted write is left out)."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            json.loads(line)
        except json.JSONDecodeError:
            continue
        lines.append(line)
    return lines


def join_stage(sources: list[Path], target: Path) -> list[str]:
    """Join the stage folders ``sources`` (one per part) into ``target``: ``.jsonl`` files line by
    line (environments once each), other ``.json`` files once; returns warnings (a ``.json``
    file that differs between parts keeps the first part's)."""
    warnings = []
    joined: dict[str, list[str]] = {}
    copied: dict[str, bytes] = {}
    for source in sources:
        for path in sorted(source.iterdir()):
            if not path.is_file() or path.name in PRIVATE:
                continue
            if path.suffix == ".jsonl":
                joined.setdefault(path.name, []).extend(_jsonl_lines(path))
            elif path.suffix == ".json":
                data = path.read_bytes()
                if path.name in copied and copied[path.name] != data:
                    warnings.append(f"{path} differs from the first part's; the first part's is kept")
                copied.setdefault(path.name, data)
    if ENVIRONMENTS_FILE in joined:
        by_id = {json.loads(line).get("env_id"): line for line in reversed(joined[ENVIRONMENTS_FILE])}
        joined[ENVIRONMENTS_FILE] = list(reversed(list(by_id.values())))
    target.mkdir(parents=True, exist_ok=True)
    for name, lines in joined.items():
        write_text_atomic(target / name, "".join(line + "\n" for line in lines))
    for name, data in copied.items():
        (target / name).write_bytes(data)
    return warnings


def _set_aside(folder: Path) -> None:
    """Move an existing ``folder`` to ``folder.previous`` (replacing an older one)."""
    if folder.exists():
        previous = folder.with_name(folder.name + ".previous")
        shutil.rmtree(previous, ignore_errors=True)
        folder.rename(previous)
        print(f"merge: earlier {folder.name} moved to {previous}", file=sys.stderr)


def _rewrite_tables(stage: str, folder: Path) -> str:
    """Rewrite the stage's tables in ``folder`` from its records (its ``--tables-only``); the status."""
    module = measuring_stages()[stage].command_module()
    try:
        code = module.main(dataclasses.replace(module.SETTINGS(), out=folder, tables_only=True))
    except Exception as exc:  # noqa: BLE001 - one stage's failure is reported, the others go on
        return f"error: {type(exc).__name__}: {exc}"
    return "ok" if not code else f"error: exit code {code}"


def merge(parts: list[Part], out: Path) -> dict[str, Any]:
    """Join ``parts`` into ``out`` (module docstring); return the merged ``bench.json``."""
    from ..report import render_report

    started = time.perf_counter()
    first = parts[0].summary
    summary: dict[str, Any] = {
        "profile": first["profile"], "profile_file": first.get("profile_file"), "plan_id": first.get("plan_id"),
        "merged_from": [{"shard": p.summary["shard"], "folder": str(p.folder), "fingerprint": p.summary.get("fingerprint"),
                         "runs": p.summary.get("runs", [])} for p in parts],
        "tables": {}, "warnings": []}
    stages = [s for s in measuring_stages() if any((p.folder / "raw" / s).is_dir() for p in parts)]
    for stage in stages:
        target = out / "raw" / stage
        _set_aside(target)
        sources = [p.folder / "raw" / stage for p in parts if (p.folder / "raw" / stage).is_dir()]
        summary["warnings"] += join_stage(sources, target)
        summary["tables"][stage] = _rewrite_tables(stage, target)
    try:
        render_report(out, first["profile"])
        summary["report"] = {"status": "ok"}
    except Exception as exc:  # noqa: BLE001 - reported in bench.json and the exit status
        summary["report"] = {"status": "error", "message": f"{type(exc).__name__}: {exc}"}
    summary["wall_s"] = round(time.perf_counter() - started, 2)
    write_text_atomic(out / "bench.json", json.dumps(summary, indent=2, default=str))
    return summary


def _notes(parts: list[Part]) -> list[str]:
    """Lines about the parts worth knowing: runs that did not succeed, parts of other commits."""
    lines = [f"{p.summary['shard']}: {r['stage']} #{r['index']} {r.get('status')}: {r.get('message', '')[:200]}"
             for p in parts for r in p.summary.get("runs", []) if r.get("status") != "ok"]
    commits = {str((p.summary.get("fingerprint") or {}).get("commit")) for p in parts}
    if len(commits) > 1:
        lines.append(f"the parts were measured with different code: commits {', '.join(sorted(commits))}")
    return lines


def main(settings: MergeSettings) -> int:
    """Check the parts, join them into ``--out``, rewrite the tables and render the report; 0 when
    every table and the report were written, 1 otherwise, 2 for parts that do not make one plan."""
    parts = check_parts(find_parts(list(settings.shards)))
    out = settings.out or default_out(parts)
    for line in _notes(parts):
        print(f"merge: warning: {line}", file=sys.stderr)
    try:
        with folder_lock(out):
            summary = merge(parts, out)
    except FolderLockedError as exc:
        raise UsageError(str(exc)) from None
    for line in summary["warnings"]:
        print(f"merge: warning: {line}", file=sys.stderr)
    failed = {s: status for s, status in summary["tables"].items() if status != "ok"}
    print(f"merge: {len(parts)} parts of {summary['profile']} into {out}: stages "
          f"{', '.join(summary['tables']) or 'none'}; report {summary['report']['status']}"
          + (f"; tables failed: {failed}" if failed else ""), file=sys.stderr)
    return 0 if not failed and summary["report"]["status"] == "ok" else 1
