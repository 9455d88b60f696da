"""Fixtures of the accuracy tests (imported by them): the real Imagenette copy next to the
project, and a session-wide decode cache."""

from __future__ import annotations

import pytest

from suite.accuracy.data import DEFAULT_DATA


@pytest.fixture(scope="session")
def imagenette_root():
    root = DEFAULT_DATA.resolve()
    if not (root / "train").is_dir():
        pytest.skip(f"Imagenette not found at {root}")
    return root


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("attnbench-cache")
