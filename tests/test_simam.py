"""SimAM: the paper's formula, the 1x1 case, closed forms, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

import modules
from modules.simam import SimAM


def _paper_form(x: torch.Tensor, e_lambda: float = 1e-4) -> torch.Tensor:
    n = x.shape[2] * x.shape[3] - 1
    d = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2)
    v = d.sum(dim=(2, 3), keepdim=True) / n
    return x * torch.sigmoid(d / (4 * (v + e_lambda)) + 0.5)


@pytest.mark.parametrize("shape", [(2, 16, 9, 7), (1, 64, 16, 16), (3, 16, 1, 5)])
def test_matches_paper_formula(shape):
    x = torch.randn(shape) * 2 + 0.5
    torch.testing.assert_close(SimAM(shape[1])(x), _paper_form(x), rtol=1e-5, atol=1e-5)


def test_lambda_is_used():
    x = torch.randn(2, 16, 4, 4) * 1e-2
    torch.testing.assert_close(SimAM(16, e_lambda=1e-2)(x), _paper_form(x, 1e-2))
    assert not torch.allclose(SimAM(16, e_lambda=1e-2)(x), SimAM(16)(x))


def test_one_by_one_map_is_finite():
    # n = H*W - 1 = 0 is clamped to 1: v = 0, d = 0, e_inv = 0.5
    x = torch.randn(2, 16, 1, 1, requires_grad=True)
    y = SimAM(16)(x)
    torch.testing.assert_close(y, x * (1 / (1 + math.exp(-0.5))))
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_constant_map_scales_by_sigmoid_half():
    x = torch.full((1, 16, 4, 4), 3.0)
    torch.testing.assert_close(SimAM(16)(x), x * torch.sigmoid(torch.tensor(0.5)))


def test_no_parameters_and_closed_form():
    m = SimAM(64)
    assert m.formula_params() == 0 == sum(p.numel() for p in m.parameters())


def test_formula_macs_hand_count():
    # (2, 16, 8, 8): 2048 elements, 32 channel maps
    # mean, sub, square, sum, div, +0.5, sigmoid, x*gate = 8 per element; *(4/n), +4lambda per map
    expected = 8 * 2048 + 2 * 32
    assert expected == 16_448
    assert SimAM(16).formula_macs((2, 16, 8, 8)) == expected


def test_bad_arguments():
    with pytest.raises(ValueError, match="e_lambda"):
        SimAM(16, e_lambda=0.0)
    with pytest.raises(ValueError, match="channels"):
        SimAM(-1)


def test_bad_inputs():
    m = SimAM(16)
    with pytest.raises(ValueError, match="4-D"):
        m(torch.randn(16, 4, 4))
    with pytest.raises(ValueError, match="channels=16"):
        m(torch.randn(1, 8, 4, 4))


def test_registered_as_gate():
    info = modules.get_info("simam")
    assert (info.kind, info.placement, info.family) == ("gate", "after_conv2", "simam")


@pytest.mark.parametrize(("channels", "size"), [(64, 56), (128, 28), (256, 14), (512, 7)])
def test_matches_the_official_module_at_every_stage_size(channels, size):
    # the official placement (after each block's 3x3 conv) sees these widths and map sizes
    x = torch.randn(2, channels, size, size) * 3
    with torch.no_grad():
        torch.testing.assert_close(SimAM(channels)(x), _paper_form(x), rtol=1e-5, atol=1e-5)
