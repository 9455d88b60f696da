"""The README is a short front door, every page it and ``docs/`` link to exists (headings of
anchors included), and the generated blocks' commands print, write and check their pages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from suite.readme_blocks import DOCS, README, block_command, markdown_pages

MAX_README_LINES = 200

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
"""A Markdown link or image; group 1 is its target."""

FENCE = re.compile(r"^```.*?^```", re.M | re.S)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.M)


def _prose(page: Path) -> str:
    """``page``'s text without its fenced code blocks."""
    return FENCE.sub("", page.read_text(encoding="utf-8"))


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_anchor(heading) for heading in HEADING.findall(_prose(page))}


def _relative_links(page: Path) -> list[str]:
    return [target for target in LINK.findall(_prose(page)) if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def _broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file, or heading in a Markdown file, does not exist."""
    broken = []
    for target in _relative_links(page):
        path_part, _, fragment = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            broken.append(target)
        elif fragment and linked.suffix == ".md" and fragment not in _anchors(linked):
            broken.append(target)
    return broken


def test_the_readme_is_a_short_front_door() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; at most {MAX_README_LINES}"


@pytest.mark.parametrize("page", markdown_pages(), ids=lambda page: page.name)
def test_every_relative_link_resolves(page: Path) -> None:
    assert page.is_file()
    assert not _broken_links(page), f"{page.name}: links to nothing: {_broken_links(page)}"


def test_the_readme_links_every_docs_page() -> None:
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in _relative_links(README)}
    pages = sorted(DOCS.glob("*.md"))
    assert pages, "docs/ has no pages"
    assert not [page.name for page in pages if page.resolve() not in linked]


def test_the_anchor_of_a_heading_follows_github() -> None:
    assert _anchor("Environments and the `attnbench` command") == "environments-and-the-attnbench-command"
    assert _anchor("In this repository's CI") == "in-this-repositorys-ci"


BEGIN, END = "<!-- t:begin -->", "<!-- t:end -->"


def _run(page: Path, *argv: str) -> int:
    return block_command(list(argv), "gen", "a test block", page, BEGIN, END, lambda: "| new |\n")


def test_a_block_command_writes_then_finds_its_block_current(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"# t\n\n{BEGIN}\n| old |\n{END}\n\ntail\n", encoding="utf-8")
    assert _run(page, "--check") == 1
    assert "run gen --write" in capsys.readouterr().err
    assert _run(page, "--write") == 0
    assert page.read_text(encoding="utf-8") == f"# t\n\n{BEGIN}\n| new |\n{END}\n\ntail\n"
    assert _run(page, "--check") == 0
    assert _run(page) == 0 and capsys.readouterr().out.endswith("| new |\n")


def test_a_block_command_refuses_a_page_without_its_markers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "page.md"
    page.write_text("no block\n", encoding="utf-8")
    assert _run(page, "--write") == 2
    assert _run(tmp_path / "absent.md", "--check") == 2
    err = capsys.readouterr().err
    assert "error:" in err and "t:begin" in err and "absent.md is not a file" in err
    assert page.read_text(encoding="utf-8") == "no block\n"
