"""Generated blocks of the project's Markdown pages (``README.md`` and ``docs/*.md``): text between a
begin and an end marker, rewritten by the code that generates it and checked by a test.

The blocks and their pages:

* the flags table, in :data:`FLAGS_PAGE` (``python -m suite.options --write``,
  ``tests/test_options.py``);
* the published network sizes, in :data:`SIZES_PAGE` (``python -m suite.cost.published --write``,
  ``tests/test_published_sizes.py``).

Each generator's command runs :func:`block_command`: it prints the block, writes it into its page
(``--write``), or exits 1 when the page's block is out of date (``--check``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from .errors import USAGE_EXIT, UsageError

__all__ = ["CHECKOUT", "README", "DOCS", "FLAGS_PAGE", "SIZES_PAGE", "markdown_pages", "replace_block", "block_command"]

CHECKOUT = Path(__file__).resolve().parent.parent
"""The checkout's root (its pages are absent in an installed package; the generators take a path)."""

README = CHECKOUT / "README.md"
"""The project's front door."""

DOCS = CHECKOUT / "docs"
"""The reference pages."""

FLAGS_PAGE = DOCS / "flags.md"
"""The page holding the generated table of every flag."""

SIZES_PAGE = DOCS / "zoo.md"
"""The page holding the generated table of published network sizes next to ours."""


def markdown_pages() -> list[Path]:
    """The README and every page under ``docs/``, in that order."""
    return [README, *sorted(DOCS.glob("*.md"))]


def replace_block(page: Path, begin: str, end: str, body: str) -> str:
    """``page``'s text with the block between the markers ``begin`` and ``end`` set to ``body``
    (:class:`UsageError` naming the page and the markers when there is no such page or block)."""
    if not page.is_file():
        raise UsageError(f"{page} is not a file; accepted: a Markdown page holding the block's markers")
    text = page.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        raise UsageError(f"{page} has no {begin!r} ... {end!r} block to fill; accepted: a page holding both markers")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}{end}{tail}"


def block_command(argv: list[str] | None, prog: str, description: str, page: Path, begin: str, end: str,
                  render: Callable[[], str]) -> int:
    """``prog [--write | --check] [--page PAGE]``: print the block ``render`` makes, write it between
    ``begin`` and ``end`` in ``page`` (``--write``), or compare it with the page's block
    (``--check``: exit 1 with the command that updates it when they differ). A missing page or
    markers is a usage error: ``error: <message>``, exit 2."""
    args = _block_parser(prog, description, page).parse_args(argv)
    body = render()
    if not (args.write or args.check):
        sys.stdout.write(body)
        return 0
    try:
        expected = replace_block(args.page, begin, end, body)
    except UsageError as refused:
        sys.stderr.write(f"error: {refused}\n")
        return USAGE_EXIT
    if args.write:
        args.page.write_text(expected, encoding="utf-8")
        return 0
    return _report_check(args.page, expected, prog)


def _block_parser(prog: str, description: str, page: Path) -> argparse.ArgumentParser:
    """The command line of a block generator: ``--write`` or ``--check``, and ``--page``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help=f"update the block in the page ({page.name})")
    action.add_argument("--check", action="store_true", help="exit 1 when the page's block is out of date")
    parser.add_argument("--page", type=Path, default=page, help=f"the page holding the block (default: {page})")
    return parser


def _report_check(page: Path, expected: str, prog: str) -> int:
    """0 with a line saying ``page`` is current when its text is ``expected``, else 1 with the
    command that updates it."""
    if page.read_text(encoding="utf-8") != expected:
        sys.stderr.write(f"{page}: the block is out of date; run {prog} --write\n")
        return 1
    sys.stdout.write(f"{page}: the block is current\n")
    return 0
