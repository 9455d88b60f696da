"""pytest-benchmark cases of the latency regression gate (run by `python -m suite regress`).

One case per attention type and mode at the gate's small shape. Each case measures the
module's ratio to the same-process reference conv (:func:`suite.regress.cases.measure_case`,
the quantity the gate compares), then lets pytest-benchmark time the module's step for the
record. ``benchmark.extra_info`` carries what the gate reads: the case id, the ratio and its
per-repeat values, the reference time, and the facts of the case.

A case that cannot be built or run (a plugin that refuses the shape, an exception in forward)
is written with its status to ``--regress-errors`` and skipped, so the other cases are still
measured; the gate reports it as a row with verdict ``error``.
"""

from __future__ import annotations

import pytest

from suite.plugins import load_plugins
from suite.records import RecordStore
from suite.regress.cases import case_id, config_for, load_settings, measure_case
from suite.timing.sweep import failure_row
from suite.timing.timer import cpu_settings
from suite.timing.workloads import classify_error


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    settings = load_settings(metafunc.config.getoption("--regress-settings"))
    load_plugins(settings.plugins)
    cases = settings.cases()
    metafunc.parametrize("case", cases, ids=[case_id(n, m, settings) for n, m in cases])


@pytest.fixture(scope="module")
def settings(request: pytest.FixtureRequest):
    return load_settings(request.config.getoption("--regress-settings"))


def _record_error(config: pytest.Config, row: dict) -> None:
    path = config.getoption("--regress-errors")
    if path is not None:
        RecordStore(path).append(row)


def test_latency(benchmark, case: tuple[str, str], settings, request: pytest.FixtureRequest) -> None:
    name, mode = case
    with cpu_settings(settings.threads):
        try:
            facts, workload = measure_case(name, mode, settings)
        except Exception as exc:  # noqa: BLE001 - becomes the case's status, the others go on
            failure = failure_row(config_for(name, mode, settings), exc, classify_error(exc))
            _record_error(request.config, {"case": case_id(name, mode, settings), "attn": name, "mode": mode,
                                           **failure})
            if request.config.getoption("--regress-errors") is None:
                raise
            pytest.skip(f"{failure['status']}: {failure['message']}")
        # the record: pytest-benchmark's own timing of the same step, kept short
        iterations = max(1, round(1e-3 / max(facts["module_ms"] * 1e-3, 1e-7)))
        benchmark.pedantic(workload.step, rounds=10, iterations=iterations, warmup_rounds=1)
    benchmark.extra_info.update(facts)
    benchmark.extra_info["shape"] = "x".join(map(str, facts["shape"]))
    assert facts["ratio"] > 0
