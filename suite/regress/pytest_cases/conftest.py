"""Options of the gate's pytest-benchmark cases: the settings the gate wrote, and where a case
that cannot be measured is recorded. By hand (the gate passes them)::

    python -m pytest -c suite/regress/pytest_cases/pytest.ini suite/regress/pytest_cases \
        --benchmark-json out.json
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("attnbench")
    group.addoption("--regress-settings", default=None, metavar="PATH",
                    help="JSON of suite.regress.cases.RegressSettings (written by `python -m suite regress`; "
                    "default: the built-in small set)")
    group.addoption("--regress-errors", default=None, metavar="PATH",
                    help="append a JSON line per case that could not be measured (its status and message) "
                    "to PATH; the case is then skipped instead of failing the run")
