"""Raw records and tidy tables, written so that nothing measured is lost.

* :class:`RecordStore` keeps one JSON object per line (a raw record). Each record carries a
  ``key`` naming its configuration; a re-run skips the keys already present, so an interrupted
  sweep resumes. A line cut short by a kill is ignored on reading.
* :func:`write_csv_atomic` / :func:`write_text_atomic` write to a temporary file in the same
  folder and ``os.replace`` it, so a reader never sees half a file.
* :func:`folder_lock` refuses a second writer of the same folder with a clear message.
* :data:`STATUSES` is the one vocabulary of the ``status`` every record and row carries.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd

__all__ = [
    "STATUSES",
    "STATUS_OK",
    "NOT_FAILURES",
    "RecordStore",
    "write_csv_atomic",
    "write_bytes_atomic",
    "write_text_atomic",
    "folder_lock",
    "FolderLockedError",
]


STATUSES: dict[str, str] = {
    "ok": "measured",
    "error": "an exception while building, running or training it (the message, and the traceback in "
             "the records, say which)",
    "build_error": "the module could not be built for this configuration (its constructor refused the "
                   "shape or the arguments)",
    "oom": "out of memory",
    "unsupported": "an operation is not implemented for this dtype or device",
    "compile_error": "torch.compile failed where the eager call ran",
    "timeout": "its process ran longer than --timeout-s",
    "contended": "latency: too few rounds got the CPU they asked for, so no numbers",
    "refused": "build_model has no place for the design in this backbone (a deliberate outcome, not a failure)",
    "diverged": "accuracy: the training loss went non-finite; scored at chance level, so it counts against the design",
    "interrupted": "bench: the stage was interrupted; running the same command again resumes it",
}
"""Every status a record, a stage's row or a bench run can have, with its meaning."""

STATUS_OK = "ok"
NOT_FAILURES: tuple[str, ...] = ("refused",)
"""Statuses that record a deliberate outcome, not a failure."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (tuple, set)):
        return list(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    return value


class RecordStore:
    """An append-only JSON-lines file of raw records, keyed by configuration.

    Args:
        path: the ``.jsonl`` file (its folder is created).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def read(self) -> list[dict[str, Any]]:
        """All complete records, in the order written (a torn line, or one that is not a JSON
        object, is skipped)."""
        if not self.path.exists():
            return []
        records = []
        with self.path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict):
                    records.append(record)
        return records

    def done_keys(self, statuses: Iterable[str] | None = None) -> set[str]:
        """Keys of the records already present (only those with a status in ``statuses``)."""
        wanted = None if statuses is None else set(statuses)
        return {
            r["key"] for r in self.read()
            if "key" in r and (wanted is None or r.get("status") in wanted)
        }

    def append(self, record: dict[str, Any]) -> None:
        """Append one record and flush it to disk before returning."""
        line = json.dumps({k: _jsonable(v) for k, v in record.items()}, sort_keys=False)
        self._repair_torn_tail()
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def latest_by_key(self) -> list[dict[str, Any]]:
        """One record per key, the last one written winning (a re-measured key replaces the old)."""
        latest: dict[str, dict[str, Any]] = {}
        for record in self.read():
            latest[record.get("key", str(len(latest)))] = record
        return list(latest.values())

    def _repair_torn_tail(self) -> None:
        """End the file with a newline if a kill left a partial last line."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with self.path.open("rb+") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; reports are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and an atomic rename."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_csv_atomic(path: str | os.PathLike[str], frame: pd.DataFrame) -> None:
    """Write ``frame`` as CSV (no index) to ``path`` atomically."""
    write_text_atomic(path, frame.to_csv(index=False))


class FolderLockedError(RuntimeError):
    """Another process holds the lock of an output folder."""


def _acquire(lock_path: Path, folder: Path) -> IO[str]:
    """Open and lock ``lock_path``; retry when the file was removed by its previous holder
    between our open and our lock (then we would hold a lock nobody else can see)."""
    while True:
        handle = lock_path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise FolderLockedError(
                f"{folder} is being written by {holder}; wait for it to finish or choose "
                f"another --out folder (two runs writing one folder would interleave their rows)"
            ) from None
        try:
            if os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino:
                return handle
        except FileNotFoundError:
            pass
        handle.close()  # the file we locked is gone: lock the one that is there now


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (``.lock`` inside it) or raise FolderLockedError.
    The ``.lock`` file is removed when the lock is released."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock_path = folder / ".lock"
    handle = _acquire(lock_path, folder)
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield folder
    finally:
        with contextlib.suppress(OSError):
            lock_path.unlink()  # while still locked, so nobody locks the file being removed
        with contextlib.suppress(OSError):
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()
