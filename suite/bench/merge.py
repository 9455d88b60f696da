"""``python -m suite merge``: join the parts of a bench run with ``--shard K/N`` into one folder.

Each part (``OUT/shards/K-of-N``, written by ``python -m suite bench --shard K/N`` on any
machine) holds ``bench.json`` (the profile, the plan's id, the part) and ``raw/STAGE/``. The merge

1. checks the parts before it writes anything: each has a ``bench.json`` of one profile and one
   plan (``plan_id``: the same profile, overrides and stages) split into the same N parts, and
   parts 1..N are there once each; the accuracy records of every part have the same identity
   (:data:`suite.accuracy.identity.IDENTITY_FIELDS`: runs that differ in one, such as the thread
   count of two node types, would not be paired in the deltas). Anything else is a
   :class:`~suite.errors.UsageError` (exit 2) naming the folders, or the field and how to pin it;
2. joins each stage's raw files into ``OUT/raw/STAGE``: the ``.jsonl`` files (the stage's
   records, :attr:`suite.stages.StageSpec.records_file`, its ``environments.jsonl``, the
   accuracy stage's per-image results) line by line, an environment several parts name once;
   the other ``.json`` files (the accuracy stage's val manifest) once; the stage's CSV-only
   tables (:attr:`suite.stages.StageSpec.csv_only`, the accuracy stage's ``gate_scale.csv``),
   their rows once each (one row per ``attn``). A key of the stage's records that several parts
   measured (two invocations of one stage that plan the same configuration, cut differently
   into parts) keeps the records of the part whose invocation came first (each part's
   ``bench.json`` gives the records each invocation ended at, ``records_end``), as one unsharded
   run keeps the first invocation's and skips the key later. Tables, summaries and checkpoints
   are derived or private to a part and not copied. A stage folder already in OUT is moved to
   ``OUT/raw/STAGE.previous`` first (nothing measured is deleted);
3. writes each stage folder's bench state (:mod:`suite.bench.runner`): the parts' fingerprint
   and every invocation of the plan that finished in every part, under the id it has in a run of
   the whole plan, so a later ``python -m suite bench`` into OUT on a machine of that
   fingerprint skips them instead of moving the merged results aside;
4. rewrites each stage's tables from the joined records (the stage's ``--tables-only``),
   renders the report (:func:`suite.report.render_report`) and writes ``OUT/bench.json``
   naming the parts and their runs.

``--shards`` takes the parts' folders, or the folder holding them (``OUT/shards``); ``--out``
defaults to the folder above ``shards/``.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import json
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..options import Option, add_options, setting
from ..records import (
    ENVIRONMENTS_FILE,
    FolderLockedError,
    folder_lock,
    write_csv_atomic,
    write_text_atomic,
)
from ..shard import parse_shard
from ..stages import StageSpec, measuring_stages
from .state import STATE_FILE, complete_lines, new_state, run_key, without_shard, write_state

__all__ = ["MergeSettings", "SETTINGS", "add_arguments", "main", "find_parts", "check_parts",
           "check_accuracy_identity", "join_stage", "merged_state"]

PART_NAME = re.compile(r"^\d+-of-\d+$")
"""A part's folder under ``OUT/shards`` (``3-of-8``)."""
PRIVATE = (STATE_FILE,)
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

    def records_ends(self, stage: str) -> list[tuple[int, int]] | None:
        """The stage's invocations this part ran, as (index, ``records_end``) in the order they
        ran; None when an invocation does not say where its records ended."""
        runs = [r for r in self.summary.get("runs", []) if r.get("stage") == stage]
        if any("records_end" not in r for r in runs):
            return None
        return [(int(r["index"]), int(r["records_end"])) for r in runs]


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


IDENTITY_HINTS = {
    "threads": "pin the thread count in every part: bench --set accuracy.threads=N (python -m suite accuracy "
               "--threads N; torch's default is the machine's core count, which differs between node types)",
    "world_size": "start every part with the same number of processes (torchrun --nproc_per_node)",
    "precision": "train every part on the same kind of device (bf16 autocast on CUDA and on CPUs with native "
                 "bf16, fp32 elsewhere)",
    "data_id": "give every part the same data set (the same images in train/ and val/, the same --holdout)",
    "recipe": "run every part with the same profile values",
    "code_version": "run every part with the same commit",
}
"""How to make an accuracy identity field equal across parts."""


def check_accuracy_identity(parts: list[Part]) -> None:
    """Refuse parts whose accuracy records differ in an identity field
    (:data:`suite.accuracy.identity.IDENTITY_FIELDS`): the merged deltas pair only runs of one
    identity, so the others would drop out. The :class:`UsageError` names the field, each
    part's values and how to make them equal."""
    from ..accuracy.identity import ABSENT_FIELDS, IDENTITY_FIELDS

    records_file = str(measuring_stages()["accuracy"].records_file)
    seen: dict[str, dict[str, set[str]]] = {name: {} for name in IDENTITY_FIELDS}
    for part in parts:
        for line in complete_lines(part.folder / "raw" / "accuracy" / records_file):
            record = json.loads(line)
            for name in IDENTITY_FIELDS:
                value = record.get(name)
                value = ABSENT_FIELDS.get(name) if value is None else value
                seen[name].setdefault(part.summary["shard"], set()).add(str(value))
    for name, by_part in seen.items():
        if len(set().union(*by_part.values())) > 1:
            listing = "; ".join(f"part {shard}: {', '.join(sorted(values))}" for shard, values in by_part.items())
            raise UsageError(
                f"accuracy: the parts' runs differ in {name} ({listing}); merged, the runs of one value would not be "
                f"paired with the others' and would drop out of the deltas. To merge them, "
                f"{IDENTITY_HINTS.get(name, 'make it equal in every part')}, then run every part again with the same "
                f"flags and --force (it moves the runs of the other value aside)")


def default_out(parts: list[Part]) -> Path:
    """The folder above ``shards/`` when every part is in one ``OUT/shards``; a :class:`UsageError` otherwise."""
    parents = {p.folder.parent for p in parts}
    parent = parents.pop() if len(parents) == 1 else None
    if parent is None or parent.name != "shards":
        raise UsageError("--out is needed: the parts are not all in one OUT/shards folder")
    return parent.parent


def join_stage(sources: list[Path], target: Path, *, records_file: str | None = None,
               records_ends: Sequence[list[tuple[int, int]] | None] | None = None,
               csv_files: Sequence[str] = ()) -> list[str]:
    """Join the stage folders ``sources`` (one per part, in part order) into ``target``:
    ``.jsonl`` files line by line (environments once each), other ``.json`` files once, the
    ``csv_files`` with their rows once each (one per ``attn`` where the table has that column).
    Of ``records_file``, a key several parts recorded keeps the lines of the part whose
    invocation measured it first (``records_ends``: per source, its invocations as (index,
    ``records_end``) in the order they ran; None, or a source's None, where unknown: that
    source's lines count as its first invocation's). Returns warnings (a ``.json`` file that
    differs between parts keeps the first part's; records left out)."""
    warnings = []
    joined: dict[str, list[str]] = {}
    copied: dict[str, bytes] = {}
    for source in sources:
        for path in sorted(source.iterdir()):
            if not path.is_file() or path.name in PRIVATE:
                continue
            if path.suffix == ".jsonl" and path.name != records_file:
                joined.setdefault(path.name, []).extend(complete_lines(path))
            elif path.suffix == ".json":
                data = path.read_bytes()
                if path.name in copied and copied[path.name] != data:
                    warnings.append(f"{path} differs from the first part's; the first part's is kept")
                copied.setdefault(path.name, data)
    if ENVIRONMENTS_FILE in joined:
        by_id = {json.loads(line).get("env_id"): line for line in reversed(joined[ENVIRONMENTS_FILE])}
        joined[ENVIRONMENTS_FILE] = list(reversed(list(by_id.values())))
    if records_file is not None and any((source / records_file).is_file() for source in sources):
        ends = list(records_ends) if records_ends is not None else [None] * len(sources)
        joined[records_file], dropped = _earliest_records(
            [complete_lines(source / records_file) for source in sources], ends)
        if dropped:
            warnings.append(f"{records_file}: {dropped} record(s) of keys that an earlier invocation measured in "
                            f"another part left out (the earliest invocation's kept, as in one run)")
    target.mkdir(parents=True, exist_ok=True)
    for name, lines in joined.items():
        write_text_atomic(target / name, "".join(line + "\n" for line in lines))
    for name, data in copied.items():
        (target / name).write_bytes(data)
    for name in csv_files:
        _join_csv([source / name for source in sources], target / name)
    return warnings


def _invocations(count: int, ends: list[tuple[int, int]] | None) -> list[int]:
    """The invocation index of each of a part's ``count`` record lines, from its invocations'
    (index, ``records_end``) in run order; lines past the last end belong to none known (after all)."""
    if not ends:
        return [0] * count
    bounds = [end for _, end in ends]
    after = max(index for index, _ in ends) + 1
    return [ends[i][0] if (i := bisect.bisect_right(bounds, line)) < len(ends) else after for line in range(count)]


def _earliest_records(parts: list[list[str]], ends: list[list[tuple[int, int]] | None]) -> tuple[list[str], int]:
    """The record lines of every part, a key found in several parts kept from the part whose
    invocation recorded it first (the lower part on a tie); every line of that part for the key is
    kept. Returns the lines and how many were left out."""
    keyed = [[json.loads(line).get("key") for line in lines] for lines in parts]
    first: dict[str, tuple[int, int]] = {}
    for position, keys in enumerate(keyed):
        for key, invocation in zip(keys, _invocations(len(keys), ends[position]), strict=True):
            if key is not None:
                first[key] = min(first.get(key, (invocation, position)), (invocation, position))
    kept = [line for position, lines in enumerate(parts) for line, key in zip(lines, keyed[position], strict=True)
            if key is None or first[key][1] == position]
    return kept, sum(map(len, parts)) - len(kept)


def _join_csv(paths: list[Path], target: Path) -> None:
    """The rows of the CSV files ``paths`` (those that exist), once each (one per ``attn``), into ``target``."""
    import pandas as pd

    frames = [pd.read_csv(path) for path in paths if path.is_file()]
    if not frames:
        return
    frame = pd.concat(frames, ignore_index=True)
    frame = frame.drop_duplicates(subset=["attn"] if "attn" in frame else None, keep="first")
    write_csv_atomic(target, frame)


def merged_state(parts: list[Part], stage: str) -> tuple[dict[str, Any], list[str]]:
    """The bench state of the merged stage folder: the parts' fingerprint (the first part's when
    they differ, with a warning) and each invocation of the stage under its id in a run of the
    whole plan (:func:`suite.bench.runner.without_shard`), ``ok`` when it finished in every part."""
    fingerprints = [p.summary.get("fingerprint") for p in parts]
    warnings = []
    if any(f != fingerprints[0] for f in fingerprints):
        warnings.append(f"{stage}: the parts were measured with different code or machines; the merged folder "
                        f"keeps part {parts[0].summary['shard']}'s fingerprint, and a bench into it elsewhere "
                        f"moves it aside")
    outcomes: dict[str, list[dict[str, Any]]] = {}
    for part in parts:
        for run in part.summary.get("runs", []):
            if run.get("stage") == stage:
                outcomes.setdefault(run_key(stage, int(run["index"]), without_shard(list(run["argv"]))), []).append(run)
    completed = {}
    for run_id, runs in outcomes.items():
        ok = len(runs) == len(parts) and all(r.get("status") == "ok" for r in runs)
        completed[run_id] = {"status": "ok" if ok else "error",
                             "message": f"merged from {len(runs)} of {len(parts)} parts"
                                        + ("" if ok else "; not finished in every part"),
                             "wall_s": round(sum(float(r.get("wall_s") or 0) for r in runs), 2), "merged": True}
    return new_state(fingerprints[0], completed), warnings


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


def _merge_stage(stage: str, spec: StageSpec, holding: list[Part], parts: list[Part], target: Path) -> list[str]:
    """Join the stage folders of the parts ``holding`` one into ``target`` (set aside first) and
    write its bench state; return the warnings."""
    _set_aside(target)
    warnings = join_stage([p.folder / "raw" / stage for p in holding], target, records_file=spec.records_file,
                          records_ends=[p.records_ends(stage) for p in holding],
                          csv_files=[spec.files[name] for name in spec.csv_only])
    state, more = merged_state(parts, stage)
    write_state(target, state)
    return warnings + more


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
    for stage, spec in measuring_stages().items():
        holding = [p for p in parts if (p.folder / "raw" / stage).is_dir()]
        if holding:
            summary["warnings"] += _merge_stage(stage, spec, holding, parts, out / "raw" / stage)
            summary["tables"][stage] = _rewrite_tables(stage, out / "raw" / stage)
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
    check_accuracy_identity(parts)
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
