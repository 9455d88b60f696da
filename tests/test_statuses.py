"""One status vocabulary: every status the code writes and every status in the committed
records is one of ``suite.records.STATUSES``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from suite.records import STATUSES

ROOT = Path(__file__).resolve().parents[1]
WRITTEN = re.compile(r"""["']status["']\s*:\s*["'](\w+)["']|\bstatus\s*=\s*["'](\w+)["']|\bstatus\s*,\s*\w+\s*=\s*["'](\w+)["']|StageError\(\s*["'](\w+)["']|"""
                     r"""return\s+["'](\w+)["']\s*,\s*(?:f?["']|message|"")|^\s+return\s+["'](oom|unsupported|compile_error|error)["']$""",
                     re.M)


def test_every_status_the_code_writes_is_in_the_vocabulary() -> None:
    found: dict[str, str] = {}
    for path in (ROOT / "suite").rglob("*.py"):
        for match in WRITTEN.finditer(path.read_text(encoding="utf-8")):
            status = next(group for group in match.groups() if group)
            found.setdefault(status, f"{path.relative_to(ROOT)}")
    assert {"ok", "error", "oom", "build_error", "timeout", "contended", "refused", "diverged"} <= set(found), sorted(found)
    unknown = {status: where for status, where in found.items() if status not in STATUSES}
    assert not unknown, f"statuses outside suite.records.STATUSES: {unknown}"


def test_every_status_in_the_committed_records_is_in_the_vocabulary() -> None:
    raw = ROOT / "reports" / "cpu" / "raw"
    if not raw.is_dir():
        pytest.skip("no committed reports/cpu/raw")
    seen: set[str] = set()
    for path in raw.rglob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if '"status"' in line:
                status = json.loads(line).get("status")
                if isinstance(status, str):
                    seen.add(status)
    assert "ok" in seen and seen <= set(STATUSES), sorted(seen - set(STATUSES))


def test_the_harness_page_names_every_status() -> None:
    text = (ROOT / "docs" / "harness.md").read_text(encoding="utf-8")
    assert all(f"`{status}`" in text for status in STATUSES), [s for s in STATUSES if f"`{s}`" not in text]
