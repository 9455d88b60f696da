"""Resume of round-based measurement: where each configuration's rounds stand, read from the records.

Round records carry the configuration's key, a ``generation`` and the round's number within it
(``round``: 0, 1, ... across resumed runs). A re-run continues the latest generation of every
key without a row; ``force`` (every key) and ``retry_failed`` (keys whose row is not ``ok``)
start a new generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..records import FINAL_STATUSES, STATUS_OK
from .grid import Config
from .round_stats import CONTENDED, RoundPlan, ratio_converged

__all__ = ["RoundProgress", "add_round", "progress_from_records"]


@dataclass
class RoundProgress:
    """The rounds of one configuration in its current generation: clean, contended, and the
    failed one that ended it (if any)."""

    generation: int
    clean: list[dict[str, Any]] = field(default_factory=list)
    contended: list[dict[str, Any]] = field(default_factory=list)
    failed: dict[str, Any] | None = None

    @property
    def attempts(self) -> int:
        """Rounds tried in this generation (clean and contended)."""
        return len(self.clean) + len(self.contended)

    def needs_round(self, plan: RoundPlan) -> bool:
        """Whether another round is due: fewer than ``plan.rounds`` clean ones, or a ratio interval
        still too wide below ``plan.max_rounds``; never after a failure or ``plan.max_attempts``."""
        if self.failed is not None or self.attempts >= plan.max_attempts:
            return False
        if len(self.clean) < plan.rounds:
            return True
        if len(self.clean) >= plan.max_rounds:
            return False
        return not ratio_converged(self.clean, plan)


@dataclass
class _Recorded:
    """What the records hold per key: its latest row, its round records and its newest generation."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    rounds: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    newest: dict[str, int] = field(default_factory=dict)

    @classmethod
    def read(cls, records: list[dict[str, Any]]) -> _Recorded:
        """Sort ``records`` (``latency`` rows and ``latency_round`` records) by key."""
        recorded = cls()
        for record in records:
            key = record.get("config_key") or record.get("key")
            kind = record.get("record", "latency")
            generation = int(record.get("generation", 0) or 0)
            if kind == "latency":
                recorded.rows[key] = record
            elif kind == "latency_round":
                recorded.rounds.setdefault(key, []).append(record)
            else:
                continue
            recorded.newest[key] = max(recorded.newest.get(key, -1), generation)
        return recorded


def progress_from_records(records: list[dict[str, Any]], configs: Sequence[Config], *, force: bool,
                          retry_failed: bool) -> dict[str, RoundProgress | None]:
    """Each key's rounds so far in the generation to continue, or None when its row is done."""
    recorded = _Recorded.read(records)
    state: dict[str, RoundProgress | None] = {}
    for config in configs:
        key = config.key()
        row = recorded.rows.get(key)
        latest = recorded.newest.get(key, -1)
        row_current = row is not None and int(row.get("generation", 0) or 0) >= latest
        restart = force or (retry_failed and row is not None and row.get("status") not in FINAL_STATUSES)
        if row_current and not restart:
            state[key] = None
            continue
        generation = latest + 1 if (force or row_current or latest < 0) else latest
        progress = RoundProgress(generation)
        for record in recorded.rounds.get(key, []):
            if int(record.get("generation", 0)) == generation:
                add_round(progress, record)
        state[key] = progress
    return state


def add_round(progress: RoundProgress, record: dict[str, Any]) -> None:
    """File ``record`` (a ``latency_round``) under its status: clean, contended or failed."""
    status = record.get("status")
    if status == STATUS_OK:
        progress.clean.append(record)
    elif status == CONTENDED:
        progress.contended.append(record)
    else:
        progress.failed = record
