"""The output folder's lock: exclusive while held, and no ``.lock`` file left after a run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from suite.records import FolderLockedError, folder_lock

ROOT = Path(__file__).resolve().parent.parent


def test_the_lock_file_is_removed_on_release_and_the_folder_can_be_locked_again(tmp_path: Path) -> None:
    with folder_lock(tmp_path / "out") as folder:
        assert (folder / ".lock").read_text() == f"pid {os.getpid()}"
    assert not (tmp_path / "out" / ".lock").exists()
    with folder_lock(tmp_path / "out"):
        pass
    assert list((tmp_path / "out").iterdir()) == []


def test_the_lock_file_is_removed_when_the_body_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), folder_lock(tmp_path):
        raise RuntimeError("boom")
    assert not (tmp_path / ".lock").exists()


def test_a_folder_locked_by_another_process_is_refused_with_its_holder(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from suite.records import folder_lock
            with folder_lock({str(tmp_path)!r}):
                print("held", flush=True)
                sys.stdin.readline()
        """)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderLockedError, match=f"being written by pid {holder.pid}"), folder_lock(tmp_path):
            pass
        assert (tmp_path / ".lock").exists()  # a refused attempt leaves the holder's file alone
    finally:
        holder.communicate("\n", timeout=30)
    assert not (tmp_path / ".lock").exists()
