"""The bench state of a stage folder (``bench_state.json``) and the record lines it points at:
what :mod:`suite.bench.runner` writes after each stage invocation and ``python -m suite merge``
(:mod:`suite.bench.merge`) writes for a merged folder.

A state is ``{"fingerprint": ..., "completed": {run id: outcome}}``: the code and environment the
folder's results were measured with (:func:`suite.bench.runner.fingerprint`) and the invocations
that finished, each under :func:`run_key` of its stage, index and flags.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..records import write_text_atomic

__all__ = ["STATE_FILE", "run_key", "without_shard", "new_state", "write_state", "complete_lines"]

STATE_FILE = "bench_state.json"
"""A stage folder's bench state."""


def run_key(stage: str, index: int, argv: list[str]) -> str:
    """The id under which a stage folder's state records an invocation: ``STAGE-INDEX-HASH`` of its flags."""
    digest = hashlib.sha256(json.dumps([stage, argv]).encode()).hexdigest()[:12]
    return f"{stage}-{index}-{digest}"


def without_shard(argv: list[str]) -> list[str]:
    """``argv`` without ``--shard K/N``: the flags of the same invocation in a run of the whole plan."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--shard":
            skip = True
        elif not arg.startswith("--shard="):
            kept.append(arg)
    return kept


def new_state(current: dict[str, Any], completed: dict[str, Any] | None = None) -> dict[str, Any]:
    """A stage folder's state: the fingerprint its results were measured with and the invocations
    that completed (run id -> outcome)."""
    return {"fingerprint": current, "completed": dict(completed or {})}


def write_state(folder: Path, state: dict[str, Any]) -> None:
    """Write ``state`` as the stage folder's :data:`STATE_FILE`."""
    write_text_atomic(folder / STATE_FILE, json.dumps(state, indent=2))


def complete_lines(path: Path) -> list[str]:
    """The complete JSON lines of ``path`` (a torn line of an interrupted write is left out; no
    file: none)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = []
    for line in text.splitlines():
        try:
            json.loads(line)
        except json.JSONDecodeError:
            continue
        lines.append(line)
    return lines
