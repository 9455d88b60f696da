"""Paths and tracebacks as results store them: without the absolute paths of the machine.

Committed results travel between machines, so nothing the harness writes names the folders of
the machine that made it. A path is shown relative to the current folder (or its parent, where
``../shared`` lives); code paths in tracebacks are shown relative to the installed package
(``suite/timing/worker.py``) or to the environment (``<site-packages>/torch/...``,
``<python>/...``); anything else under the home folder becomes ``~/...``.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
import traceback
from pathlib import Path

__all__ = ["shown_path", "portable_text", "format_traceback", "make_portable", "ABSOLUTE_PATH"]

PACKAGE_PARENT = Path(__file__).resolve().parent.parent
"""The folder holding ``suite/`` and ``modules/`` (a checkout or ``site-packages``)."""

ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~<>-])/(?:home|root|work|tmp|Users|opt|usr|var|mnt|srv|private|data)/[\w.+-]")
"""A POSIX absolute path under a folder that names a machine's layout (``/home/...``,
``/work/...``); the check behind the committed-results test."""


_PATH_END = r"""[^\s"'\\,;:)\]]*"""
"""The rest of a path in a text: up to a quote, an escape, a separator or a space."""
_TEXT_SUFFIXES = (".jsonl", ".json", ".csv", ".md", ".txt")


def _prefixes() -> list[tuple[str, str]]:
    """(absolute prefix, shown prefix), longest first so the most specific wins."""
    pairs: dict[str, str] = {}
    for key in ("purelib", "platlib"):
        pairs[sysconfig.get_paths()[key]] = "<site-packages>"
    for key in ("stdlib", "platstdlib"):
        pairs[sysconfig.get_paths()[key]] = "<python>"
    pairs[str(PACKAGE_PARENT)] = ""
    pairs[sys.prefix] = "<env>"
    pairs[str(Path.home())] = "~"
    resolved = {str(Path(p).resolve()): shown for p, shown in pairs.items() if p}
    pairs.update(resolved)
    return sorted(pairs.items(), key=lambda item: len(item[0]), reverse=True)


def portable_text(text: str) -> str:
    """``text`` with the machine's code and home prefixes replaced (see the module docstring)."""
    for prefix, shown in _prefixes():
        if prefix in ("", "/"):
            continue
        text = text.replace(prefix + os.sep, f"{shown}/" if shown else "")
    return text


def shown_path(path: str | os.PathLike[str]) -> str:
    """``path`` as results store it: a file of the package relative to the package's folder
    (``suite/profiles/cpu.toml``); else relative to the current folder when it lies under it or
    under its parent (``../shared/datasets/imagenette``), ``~/...`` under the home folder,
    otherwise ``.../<name>``."""
    resolved = Path(path).expanduser().resolve()
    for package in ("suite", "modules"):
        if resolved == PACKAGE_PARENT / package or PACKAGE_PARENT / package in resolved.parents:
            return resolved.relative_to(PACKAGE_PARENT).as_posix()
    here = Path.cwd().resolve()
    # the parent only when it is not the root: "../home/bob" would still name the machine's layout
    for base in (here, here.parent) if len(here.parent.parts) > 1 else (here,):
        if resolved == base or base in resolved.parents:
            return os.path.relpath(resolved, here)
    home = Path.home().resolve()
    if home in resolved.parents and home != Path("/"):
        return "~/" + resolved.relative_to(home).as_posix()
    return f".../{resolved.name}"


def format_traceback(exc: BaseException, limit_chars: int = 4000) -> str:
    """The traceback of ``exc`` with portable paths, its last ``limit_chars`` characters."""
    return portable_text("".join(traceback.format_exception(exc)))[-limit_chars:]


def _portable_path(path: str) -> str:
    """A path found in a text: a file of this package (in any checkout or environment) relative
    to the package's folder, code of this environment as :func:`portable_text` shows it, any
    other path as :func:`shown_path` does."""
    for package in ("/suite/", "/modules/"):
        tail = path[path.rfind(package) + 1:] if package in path else ""
        if tail and (PACKAGE_PARENT / tail).is_file():
            return tail
    code = portable_text(path)
    return code if code != path and not ABSOLUTE_PATH.search(code) else shown_path(path)


def _path_token() -> re.Pattern[str]:
    """A whole absolute path in a text: one under a folder :data:`ABSOLUTE_PATH` names, or under
    one of this machine's own prefixes (the package's folder, the environment, the home folder),
    wherever those are (a checkout in ``/check/...`` is still this machine's layout)."""
    roots = ABSOLUTE_PATH.pattern[:-len(r"[\w.+-]")]
    own = [re.escape(prefix + os.sep) for prefix, _ in _prefixes() if prefix not in ("", "/")]
    return re.compile(rf"(?:{roots}|(?<![\w.:/~<>-])(?:{'|'.join(own)})){_PATH_END}")


def make_portable(folder: str | os.PathLike[str]) -> dict[str, int]:
    """Rewrite the absolute paths in the text files of a results folder (records, tables, the
    README) as results now store them (code paths as in :func:`portable_text`, any other path as
    :func:`shown_path` from the current folder). For folders written before paths were stored this way; nothing
    measured changes. Returns ``{file relative to folder: paths rewritten}`` for changed files."""
    from .records import write_text_atomic

    root = Path(folder)
    token = _path_token()
    changed: dict[str, int] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix not in _TEXT_SUFFIXES:
            continue
        text = path.read_text()
        new, count = token.subn(lambda match: _portable_path(match.group(0)), text)
        if count:
            write_text_atomic(path, new)
            changed[path.relative_to(root).as_posix()] = count
    return changed
