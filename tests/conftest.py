"""Test-suite options.

``tests/benchmarks`` holds pytest-benchmark cases for the latency regression gate. They take
minutes and their numbers only mean something to the gate, so a plain ``python -m pytest``
does not collect them; ``--run-benchmarks`` does (``python -m suite regress`` passes it)::

    python -m pytest tests/benchmarks --run-benchmarks --benchmark-json out.json
"""

from __future__ import annotations

from pathlib import Path

import pytest

BENCHMARKS_DIR = Path(__file__).resolve().parent / "benchmarks"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("attnbench")
    group.addoption("--run-benchmarks", action="store_true", default=False,
                    help="collect the latency regression benchmarks in tests/benchmarks (off by default)")
    group.addoption("--regress-settings", default=None, metavar="PATH",
                    help="JSON of suite.regress.cases.RegressSettings for tests/benchmarks "
                    "(written by `python -m suite regress`; default: the built-in small set)")
    group.addoption("--regress-errors", default=None, metavar="PATH",
                    help="append a JSON line per case that could not be measured (its status and message) "
                    "to PATH; the case is then skipped instead of failing the run")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if config.getoption("--run-benchmarks"):
        return None
    if collection_path == BENCHMARKS_DIR or BENCHMARKS_DIR in collection_path.parents:
        return True
    return None


def pytest_report_header(config: pytest.Config) -> str | None:
    if config.getoption("--run-benchmarks"):
        return None
    return "attnbench: tests/benchmarks not collected (pass --run-benchmarks, or run `python -m suite regress`)"


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
