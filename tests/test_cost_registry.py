"""Every registered attention type: the counters agree with its closed form, or say why not.

A reduced grid (C in {64, 256}, H = W in {14, 7}) keeps this fast; ``python -m suite cost``
runs the full one. Each check is a function that returns the problems it found, so the same
checks are exercised on deliberately broken modules below (the tests can fail).
"""

from __future__ import annotations

from functools import cache

import pytest
import torch
from torch import nn

import modules
from modules import AttentionModule
from suite.cost import analyze, parse_ops
from suite.cost.grid import module_jobs, run_job
from suite.cost.op_rules import DATA_MOVEMENT, canonical_op

torch.set_num_threads(1)

CHANNELS = (64, 256)
SIZES = (14, 7)
TOLERANCE = 0.01


@cache
def _rows(name: str) -> tuple[dict, ...]:
    return tuple(run_job(job) for job in module_jobs([name], CHANNELS, SIZES, 1))


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1)


def formula_problems(row: dict) -> list[str]:
    """fvcore with our handles vs the closed form, within 1%."""
    if row.get("macs_formula") is None:
        return [f"{row['input_shape']}: no formula ({row.get('formula_error', 'missing')})"]
    if _rel(row["macs_fvcore"], row["macs_formula"]) > TOLERANCE:
        return [f"{row['input_shape']}: macs_fvcore={row['macs_fvcore']} vs macs_formula={row['macs_formula']}"]
    return []


def silent_zero_problems(row: dict) -> list[str]:
    """An op no counter accounts for: unsupported, ignored outside the allowlist, or unknown."""
    problems = []
    if row["uncounted_ops"]:
        problems.append(f"{row['input_shape']}: uncounted {row['uncounted_ops']}")
    for kind in parse_ops(row["fvcore_ignored"]):
        if canonical_op(kind) not in DATA_MOVEMENT:
            problems.append(f"{row['input_shape']}: fvcore ignored {kind}, not data movement")
    return problems


def explanation_problems(row: dict) -> list[str]:
    """thop + our custom ops == formula; shipped + the named gap == extended; torch's FLOPs
    plus the ops it names as missed == formula."""
    problems = []
    formula = row["macs_formula"]
    if _rel(row["macs_thop"], formula) > TOLERANCE:
        problems.append(f"{row['input_shape']}: macs_thop={row['macs_thop']} vs formula={formula}")
    thop_gap = sum(parse_ops(row["thop_shipped_gap"]).values())
    if row["macs_thop_shipped"] + thop_gap != row["macs_thop"]:
        problems.append(f"{row['input_shape']}: thop shipped + gap != thop ({row['thop_shipped_gap']})")
    fv_gap = sum(parse_ops(row["fvcore_shipped_gap"]).values())
    if row["macs_fvcore_shipped"] + fv_gap != row["macs_fvcore"]:
        problems.append(f"{row['input_shape']}: fvcore shipped + gap != fvcore ({row['fvcore_shipped_gap']})")
    missed = parse_ops(row["torch_missed"])
    if _rel(row["flops_torch"] / 2 + sum(missed.values()), formula) > TOLERANCE:
        problems.append(f"{row['input_shape']}: flops_torch/2 + missed {missed} != formula {formula}")
    if row["flops_torch"] != 2 * formula and not missed:
        problems.append(f"{row['input_shape']}: torch differs from the formula but names no missed op")
    return problems


def _ok_rows(name: str) -> list[dict]:
    rows = _rows(name)
    refused = [r for r in rows if r["status"] != "ok"]
    for row in refused:  # a module may refuse a shape, with a ValueError saying why
        assert row["message"].startswith("ValueError"), (name, row["input_shape"], row["message"])
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok, f"{name} refused every shape of the reduced grid: {[r['message'] for r in refused]}"
    return ok


NAMES = modules.list_attention()


@pytest.mark.parametrize("name", NAMES)
def test_fvcore_with_our_handles_matches_the_closed_form(name):
    problems = [p for row in _ok_rows(name) for p in formula_problems(row)]
    assert not problems, f"{name}: " + "; ".join(problems)


@pytest.mark.parametrize("name", NAMES)
def test_no_op_is_a_silent_zero(name):
    problems = [p for row in _ok_rows(name) for p in silent_zero_problems(row)]
    assert not problems, f"{name}: " + "; ".join(problems)


@pytest.mark.parametrize("name", NAMES)
def test_thop_and_torch_gaps_are_explained(name):
    problems = [p for row in _ok_rows(name) for p in explanation_problems(row)]
    assert not problems, f"{name}: " + "; ".join(problems)


# ------------------------------------------------------------- the checks can fail


class ForgetsTheGate(AttentionModule):
    """SE-like gate whose closed form forgets the sigmoid and the final multiply."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.fc = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))

    def formula_params(self) -> int:
        return self.channels * self.channels + self.channels

    def formula_macs(self, input_shape) -> int:
        n, c, h, w = input_shape
        return n * c * h * w + n * c * c


class UsesCumsumOfSquares(ForgetsTheGate):
    """Prices everything, but runs an op (``logcumsumexp``) no rule knows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return x * torch.logcumsumexp(x, 1)

    def formula_macs(self, input_shape) -> int:
        n, c, h, w = input_shape
        return n * c * h * w


def test_the_checks_catch_a_wrong_formula_and_an_unpriced_op():
    row = analyze(ForgetsTheGate(16), (1, 16, 7, 7))
    assert formula_problems(row) and explanation_problems(row)
    assert not silent_zero_problems(row)
    row = analyze(UsesCumsumOfSquares(16), (1, 16, 7, 7))
    assert silent_zero_problems(row)
