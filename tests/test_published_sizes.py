"""The published-sizes table of docs/zoo.md is what suite.cost.published generates now."""

from __future__ import annotations

from pathlib import Path

import pytest

from suite.cost import published
from suite.errors import UsageError
from suite.readme_blocks import SIZES_PAGE


@pytest.mark.slow
def test_the_zoo_page_table_is_current() -> None:
    pytest.importorskip("fvcore")
    expected = published.update_page(SIZES_PAGE, published.render())
    assert SIZES_PAGE.read_text(encoding="utf-8") == expected, (
        "docs/zoo.md's published-sizes table is out of date: run python -m suite.cost.published --write"
    )


@pytest.mark.slow
def test_every_row_with_a_published_parameter_figure_rounds_to_it_or_says_why() -> None:
    import modules

    for row in published.PUBLISHED:
        if not row.params_m.endswith("M"):
            continue
        model = modules.build_model(row.arch, row.attn, **row.kwargs)
        ours = sum(p.numel() for p in model.parameters()) / 1e6
        digits = len(row.params_m[:-1].split(".")[1])
        if "different network" not in row.note:
            assert f"{ours:.{digits}f}" == row.params_m[:-1], row.design


def test_update_page_refuses_a_page_without_markers(tmp_path: Path) -> None:
    path = tmp_path / "zoo.md"
    path.write_text("no block\n", encoding="utf-8")
    with pytest.raises(UsageError, match="published-sizes"):
        published.update_page(path, "| t |\n")
