"""Generated blocks of the project README: text between a begin and an end marker, rewritten by
the code that generates it and checked by a test (the published sizes, the flags table)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["README", "replace_block"]

README = Path(__file__).resolve().parent.parent / "README.md"
"""The checkout's README (absent in an installed package; the generators take a path)."""


def replace_block(readme: Path, begin: str, end: str, body: str) -> str:
    """``readme``'s text with the block between the markers ``begin`` and ``end`` set to ``body``
    (``ValueError`` naming the markers when the README has no such block)."""
    text = readme.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        raise ValueError(f"{readme} has no {begin!r} ... {end!r} block to fill")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}{end}{tail}"
