"""Failures isolated on the GPU path, on a machine without a GPU: an error that spoils a CUDA
context costs its configuration alone (the rest of the round goes to a fresh process), and the
worker server never forks once CUDA is initialised in it."""

from __future__ import annotations

import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from suite.timing import worker
from suite.timing.job import Job
from suite.timing.pool import RoundWorkers, worker_environment
from suite.timing.worker import (
    CUDA_ERROR_EXIT,
    FORK_REFUSED_EXIT,
    READY,
    ROUND,
    WorkerState,
    run_job,
)

TESTS = Path(__file__).resolve().parent
ILLEGAL_ADDRESS = "CUDA error: an illegal memory access was encountered"


def flaky(raw: dict, job: Job) -> tuple[str, object]:
    """A runner whose configuration ``b`` fails as a kernel with an illegal address does; the
    others are measured (their record names the process that measured them)."""

    def measure() -> dict:
        if raw["case"] == "b":
            raise RuntimeError(ILLEGAL_ADDRESS)
        return {"status": "ok"}

    return raw["case"], measure


@dataclass(frozen=True)
class Case:
    case: str

    def key(self) -> str:
        return self.case


def test_run_job_stops_after_reporting_a_cuda_error() -> None:
    job = Job(threads=1, runner=f"{__name__}:flaky").with_items([Case("a"), Case("b"), Case("c")])
    out = io.StringIO()
    threads = torch.get_num_threads()
    try:
        code = run_job(job, out, WorkerState())
    finally:
        torch.set_num_threads(threads)
    lines = [json.loads(line[len(ROUND):]) for line in out.getvalue().splitlines()]
    assert code == CUDA_ERROR_EXIT
    assert [(line["key"], line["status"]) for line in lines] == [("a", "ok"), ("b", "error")]
    assert ILLEGAL_ADDRESS in lines[1]["message"] and "fresh worker process" in lines[1]["message"]


@pytest.mark.slow
def test_a_cuda_error_costs_its_configuration_alone_and_the_rest_get_a_fresh_child() -> None:
    env = worker_environment(1, "inherited", {**os.environ, "PYTHONPATH": str(TESTS)})
    job = Job(threads=1, runner=f"{Path(__file__).stem}:flaky")
    results: dict[str, dict] = {}
    with RoundWorkers(isolation="fork", servers=1, env=env, timeout_s=120) as workers:
        workers.run([Case("a"), Case("b"), Case("c")], job, lambda item, fields: results.setdefault(item.key(), fields))
    assert {key: fields["status"] for key, fields in results.items()} == {"a": "ok", "b": "error", "c": "ok"}
    assert ILLEGAL_ADDRESS in results["b"]["message"]
    assert results["a"]["pid"] == results["b"]["pid"] != results["c"]["pid"]  # c: measured by a fresh child


def _serve(monkeypatch: pytest.MonkeyPatch, initialised: list[bool]) -> int:
    """The server's loop on one job line, CUDA reported initialised as ``initialised`` says (one
    answer per question, the last repeated); forking fails the test."""
    answers = iter(initialised)
    last = [initialised[-1]]

    def is_initialized() -> bool:
        last[0] = next(answers, last[0])
        return last[0]

    def fork() -> int:
        raise AssertionError("the server forked with CUDA initialised")

    monkeypatch.setattr(worker, "_preload", lambda: None)
    monkeypatch.setattr(torch.cuda, "is_initialized", is_initialized)
    monkeypatch.setattr(os, "fork", fork)
    monkeypatch.setattr(sys, "stdin", io.StringIO(Job(threads=1).to_line()))
    return worker.main(["--serve"])


def test_the_server_refuses_to_start_with_cuda_initialised(monkeypatch, capsys) -> None:
    assert _serve(monkeypatch, [True]) == FORK_REFUSED_EXIT
    out, err = capsys.readouterr()
    assert READY not in out and "initialised CUDA" in err and "--isolation spawn" in err


def test_the_server_refuses_to_fork_once_cuda_was_initialised(monkeypatch, capsys) -> None:
    assert _serve(monkeypatch, [False, True]) == FORK_REFUSED_EXIT  # clean at start, initialised later
    out, err = capsys.readouterr()
    assert READY in out and "--isolation spawn" in err
