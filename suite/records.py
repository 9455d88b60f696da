"""Raw records and tidy tables, written so that nothing measured is lost.

* :class:`RecordStore` keeps one JSON object per line (a raw record). Each record carries a
  ``key`` naming its configuration; a re-run skips the keys already present, so an interrupted
  sweep resumes. A line cut short by a kill is ignored on reading.
* The environment of a run (versions, CPU, commit, date...) is written once, to
  ``environments.jsonl`` beside the records (:data:`ENVIRONMENTS_FILE`), under an id; each
  record names it in ``env_id`` instead of copying it, and :meth:`RecordStore.read` puts the
  fields back, so readers see whole records (:func:`compact_record`, :func:`expand_record`).
* :func:`write_csv_atomic` / :func:`write_text_atomic` write to a temporary file in the same
  folder and ``os.replace`` it, so a reader never sees half a file.
* :func:`folder_lock` refuses a second writer of the same folder with a clear message.
* :data:`STATUSES` is the one vocabulary of the ``status`` every record and row carries.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd

__all__ = [
    "STATUSES",
    "STATUS_OK",
    "NOT_FAILURES",
    "FINAL_STATUSES",
    "ENVIRONMENTS_FILE",
    "RecordStore",
    "compact_record",
    "expand_record",
    "environment_id",
    "ENV_PREFIX",
    "environment_columns",
    "current_environment_names",
    "ENVIRONMENT_FIELDS",
    "environment_fields",
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
    "export_error": "latency under onnxruntime / openvino: torch.onnx.export failed with every exporter tried (the "
                    "message names the operator it stopped at where the exporter says)",
    "timeout": "its process ran longer than --timeout-s",
    "contended": "latency: too few rounds got the CPU they asked for, or on CUDA shared the GPU with another "
                 "process, so no numbers",
    "graph_error": "latency --cuda-graph on: the step could not be captured into a CUDA graph (a host sync, a CPU "
                   "tensor, a data-dependent shape, a non-capturable optimizer); the message says why",
    "refused": "build_model has no place for the design in this backbone, or the width-matched search has no "
               "width to match it with (a deliberate outcome, not a failure; the reason is given)",
    "closest": "accuracy --matched: no width on the 8-channel grid came within the tolerance of the design's "
               "training step; the closest measured is used and the reason says how close",
    "diverged": "accuracy: the training loss went non-finite; scored at chance level, so it counts against the design",
    "interrupted": "bench: the stage was interrupted; running the same command again resumes it",
}
"""Every status a record, a stage's row or a bench run can have, with its meaning."""

STATUS_OK = "ok"
NOT_FAILURES: tuple[str, ...] = ("refused",)
"""Statuses that record a deliberate outcome, not a failure."""

FINAL_STATUSES: tuple[str, ...] = ("ok", "refused", "diverged")
"""Statuses a re-run never repeats, even when it retries failures: a measurement, a deliberate
refusal, a training run that diverged (its result, scored at chance level)."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (tuple, set)):
        return list(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    return value


ENVIRONMENT_FIELDS: tuple[str, ...] = (
    "date", "commit", "python", "platform", "cpu", "cpu_count", "threads", "interop_threads",
    "torch_version", "torchvision_version", "fvcore_version", "thop_version", "numpy_version",
    "pandas_version", "timm_version", "gpu", "gpu_driver", "cuda",
    "gpu_index", "gpu_uuid", "compute_capability", "gpu_sms", "gpu_memory_bytes", "gpu_l2_bytes", "cudnn",
)
"""The fields of :func:`suite.env.collect_environment`; every stage's records name them with
:data:`ENV_PREFIX` before (:func:`environment_columns`), beside the configuration's own fields
(a row's ``threads`` is what it ran with, ``env_threads`` torch's setting when the run began). The GPU
fields after ``cuda`` are recorded on a CUDA device only (:func:`suite.env.gpu_environment`)."""

ENV_PREFIX = "env_"
"""What every environment field of a record or table starts with (a stage's own environment
settings, the latency stage's ``env_timer`` for instance, too)."""


def environment_columns(environment: dict[str, Any]) -> dict[str, Any]:
    """``environment`` as every stage's records and tables name it: :data:`ENV_PREFIX` before each field."""
    return {f"{ENV_PREFIX}{k}": v for k, v in environment.items()}


def current_environment_names(environment: dict[str, Any]) -> dict[str, Any]:
    """An environment as stored by an older version (the cost and accuracy stages wrote
    :data:`ENVIRONMENT_FIELDS` without the prefix) under the names every stage uses now; an
    environment already named so is returned as it is. Applied when records are read, so
    committed and users' older folders read as new ones."""
    if not any(k in ENVIRONMENT_FIELDS for k in environment):
        return environment
    return {(f"{ENV_PREFIX}{k}" if k in ENVIRONMENT_FIELDS else k): v for k, v in environment.items()}

ENVIRONMENTS_FILE = "environments.jsonl"
"""The file, beside a folder's records, that holds each environment its records name in ``env_id``."""

ENV_ID = "env_id"


def _normalized(mapping: dict[str, Any]) -> dict[str, Any]:
    """``mapping`` as it reads back from JSON (tuples as lists, NaN as null, numpy scalars as numbers)."""
    return json.loads(json.dumps({k: _jsonable(v) for k, v in mapping.items()}))


def environment_id(environment: dict[str, Any]) -> str:
    """A short content hash naming ``environment`` (the same fields give the same id)."""
    text = json.dumps(_normalized(environment), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def expand_record(record: dict[str, Any], environments: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``record`` with its environment's fields in place of ``env_id`` (a field the record has
    itself keeps the record's position and value); unchanged without ``env_id`` or when the id is
    not in ``environments``."""
    environment = environments.get(record.get(ENV_ID, ""))
    if environment is None:
        return record
    whole: dict[str, Any] = {}
    for key, value in record.items():
        if key == ENV_ID:
            whole.update({k: v for k, v in environment.items() if k not in record})
        else:
            whole[key] = value
    return whole


def _inline_environment_renamed(record: dict[str, Any]) -> dict[str, Any]:
    """A record that carries its environment inline, as the cost and accuracy stages wrote them
    before environments were stored beside the records (unprefixed, with ``commit`` and
    ``date``), under the current names; any other record as it is."""
    if any(k.startswith(ENV_PREFIX) for k in record) or not {"commit", "date"} <= record.keys():
        return record
    return current_environment_names(record)


def compact_record(record: dict[str, Any], environment: dict[str, Any], env_id: str) -> dict[str, Any]:
    """``record`` (normalised as JSON) with the fields equal to ``environment``'s replaced by
    ``env_id``, at the place of the first of them; the whole record when that would not read
    back exactly (same fields, values and order) through :func:`expand_record`."""
    whole = _normalized(record)
    environment = _normalized(environment)
    shared = {k for k, v in whole.items() if k in environment and v == environment[k]}
    if not shared or ENV_ID in whole:
        return whole
    compact: dict[str, Any] = {}
    for key, value in whole.items():
        if key in shared:
            compact.setdefault(ENV_ID, env_id)
        else:
            compact[key] = value
    back = expand_record(compact, {env_id: environment})
    return compact if list(back.items()) == list(whole.items()) else whole


class RecordStore:
    """An append-only JSON-lines file of raw records, keyed by configuration.

    Args:
        path: the ``.jsonl`` file (its folder is created). The environments its records name
            are in :data:`ENVIRONMENTS_FILE` in the same folder.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.environments_path = self.path.with_name(ENVIRONMENTS_FILE)
        self._written_environments: set[str] | None = None  # ids in the file, read at the first append

    def read(self) -> list[dict[str, Any]]:
        """All complete records, in the order written, each with its environment's fields under
        their current names (:func:`current_environment_names`; a torn line, or one that is not a
        JSON object, is skipped)."""
        environments = {env_id: current_environment_names(fields) for env_id, fields in self.environments().items()}
        return [expand_record(record, environments) if ENV_ID in record else _inline_environment_renamed(record)
                for record in _read_lines(self.path)]

    def environments(self) -> dict[str, dict[str, Any]]:
        """Every environment written beside these records, by id."""
        return {line[ENV_ID]: line["fields"] for line in _read_lines(self.environments_path)
                if isinstance(line.get(ENV_ID), str) and isinstance(line.get("fields"), dict)}

    def add_environment(self, environment: dict[str, Any]) -> str:
        """Write ``environment`` (the fields as the records name them) once; return its id."""
        env_id = environment_id(environment)
        if self._written_environments is None:
            self._written_environments = set(self.environments())
        if env_id not in self._written_environments:
            _append_line(self.environments_path, {ENV_ID: env_id, "fields": _normalized(environment)})
            self._written_environments.add(env_id)
        return env_id

    def done_keys(self, statuses: Iterable[str] | None = None) -> set[str]:
        """Keys of the records already present (only those with a status in ``statuses``)."""
        wanted = None if statuses is None else set(statuses)
        return {
            r["key"] for r in self.read()
            if "key" in r and (wanted is None or r.get("status") in wanted)
        }

    def append(self, record: dict[str, Any], environment: dict[str, Any] | None = None) -> None:
        """Append one record and flush it to disk before returning. With ``environment`` (fields
        named as in ``record``), those fields are written once beside the records and the
        record names them by id (:func:`compact_record`)."""
        if environment:
            record = compact_record(record, environment, self.add_environment(environment))
        _append_line(self.path, record)

    def latest_by_key(self) -> list[dict[str, Any]]:
        """One record per key, the last one written winning (a re-measured key replaces the old)."""
        latest: dict[str, dict[str, Any]] = {}
        for record in self.read():
            latest[record.get("key", str(len(latest)))] = record
        return list(latest.values())

    def compact(self, environment_fields: Callable[[dict[str, Any]], dict[str, Any]]) -> tuple[int, int]:
        """Rewrite the file (atomically) with each record's environment, as
        ``environment_fields(record)`` names it, written once beside the records; what
        :meth:`read` returns stays the same. Returns the file's size in bytes before and after."""
        before = self.path.stat().st_size if self.path.exists() else 0
        records = self.read()
        lines = []
        for record in records:
            environment = environment_fields(record)
            lines.append(compact_record(record, environment, self.add_environment(environment))
                         if environment else _normalized(record))
        environments = self.environments()
        if [list(expand_record(line, environments).items()) for line in lines] != [list(r.items()) for r in records]:
            raise RuntimeError(f"{self.path}: the compacted records would not read back as before; left as it is")
        write_text_atomic(self.path, "".join(json.dumps(line) + "\n" for line in lines))
        return before, self.path.stat().st_size


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, skipping a torn line or one that is not an object."""
    if not path.exists():
        return []
    lines = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                lines.append(value)
    return lines


def _append_line(path: Path, value: dict[str, Any]) -> None:
    """Append ``value`` as one JSON line, after ending a line a kill left torn; fsync."""
    line = json.dumps({k: _jsonable(v) for k, v in value.items()}, sort_keys=False)
    _repair_torn_tail(path)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _repair_torn_tail(path: Path) -> None:
    """End the file with a newline if a kill left a partial last line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as handle:
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


def environment_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``record`` that describe its environment, in the record's order: those named
    with :data:`ENV_PREFIX`, else (a record inlined by an older version of the cost or accuracy
    stage) those of :data:`ENVIRONMENT_FIELDS`."""
    prefixed = {k: v for k, v in record.items() if k.startswith(ENV_PREFIX) and k != ENV_ID}
    return prefixed or {k: v for k, v in record.items() if k in ENVIRONMENT_FIELDS}


def main(argv: list[str] | None = None) -> int:
    """``python -m suite.records compact FILE...``: rewrite record files written with the
    environment in every record so that each environment is written once beside them
    (:meth:`RecordStore.compact`); what the files read back as does not change."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m suite.records", description=main.__doc__)
    parser.add_argument("command", choices=("compact",))
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="a records .jsonl file")
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    for path in args.files:
        with folder_lock(path.parent):
            before, after = RecordStore(path).compact(environment_fields)
        print(f"{path}: {before:,} -> {after:,} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
