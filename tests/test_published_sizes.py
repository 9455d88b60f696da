"""The README's published-sizes table is what suite.cost.published generates now."""

from __future__ import annotations

from pathlib import Path

import pytest

from suite.cost import published

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_table_is_current() -> None:
    pytest.importorskip("fvcore")
    expected = published.update_readme(README, published.render())
    assert README.read_text(encoding="utf-8") == expected, (
        "README.md's published-sizes table is out of date: run python -m suite.cost.published --write"
    )


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


def test_update_readme_refuses_a_readme_without_markers(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    path.write_text("no block\n", encoding="utf-8")
    with pytest.raises(ValueError, match="published-sizes"):
        published.update_readme(path, "| t |\n")
