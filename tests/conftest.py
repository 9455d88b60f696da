"""Fixtures shared by the test suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def temporary_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The harness's cache folder in a temporary folder for the whole session, so that no test
    reads or writes the user's ``~/.cache/attnbench``: ``$ATTNBENCH_CACHE``, which
    ``suite.accuracy.data.default_cache_dir`` reads first; worker processes inherit it."""
    cache = tmp_path_factory.mktemp("attnbench-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ATTNBENCH_CACHE", str(cache))
        yield cache


@pytest.fixture()
def failing_entries(monkeypatch: pytest.MonkeyPatch):
    """The entries of ``tests/timing_plugins.py`` (failing on purpose), registered here and, through
    the plugin environment variable, in every worker process a stage starts."""
    from timing_plugins import ENTRIES

    import modules
    from suite.plugins import PLUGINS_ENV

    monkeypatch.setenv(PLUGINS_ENV, str(Path(__file__).resolve().parent / "timing_plugins.py"))
    for name, factory in ENTRIES.items():
        if name not in modules.list_attention():
            modules.register_attention(name, factory, family="test", paper="-", arxiv=None, kind="gate")
    yield sorted(ENTRIES)
    for name in ENTRIES:
        if name in modules.list_attention():
            modules.unregister_attention(name)


@pytest.fixture()
def one_thread():
    """torch on one intra-op thread for the test (the CI machine has 2 shared cores; one thread
    also makes reductions bitwise repeatable); the count is restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def drawn(monkeypatch: pytest.MonkeyPatch) -> Iterator[list]:
    """The figures the report's drawing functions save, kept open for the test to read."""
    import matplotlib.pyplot as plt

    kept: list = []

    def keep(fig: plt.Figure, path: Path) -> Path:
        kept.append(fig)
        return path

    from suite.report import figures

    monkeypatch.setattr(figures, "_save", keep)
    yield kept
    for fig in kept:
        plt.close(fig)
