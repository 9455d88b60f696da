"""SRM: the official style pooling and integration, the 1x1 case, closed forms, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import modules
from modules.srm import SRM


def _randomise(m: SRM, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
        m.bn.running_mean.copy_(torch.randn(m.channels, generator=gen) * 0.1)
        m.bn.running_var.copy_(torch.rand(m.channels, generator=gen) + 0.5)


def _official_form(m: SRM, x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    style = torch.stack(
        (flat.mean(2), (flat.var(2, unbiased=True) + eps).sqrt()), dim=2
    )  # (N, C, 2)
    z = (style * m.cfc[None]).sum(2)[:, :, None, None]
    return x * torch.sigmoid(m.bn(z))


@pytest.mark.parametrize("shape", [(2, 16, 9, 7), (3, 64, 16, 16), (1, 16, 1, 6)])
def test_matches_official_form(shape):
    m = SRM(shape[1]).eval()
    _randomise(m)
    x = torch.randn(shape) * 2 + 1
    with torch.no_grad():
        torch.testing.assert_close(m(x), _official_form(m, x), rtol=1e-5, atol=1e-5)


def test_zero_init_gives_half_gate_and_gradients_reach_cfc():
    m = SRM(16)
    assert torch.count_nonzero(m.cfc) == 0
    x = torch.randn(4, 16, 5, 5)
    torch.testing.assert_close(m.eval()(x), x * 0.5)
    m.train()
    m(x).square().sum().backward()
    assert m.cfc.grad is not None and m.cfc.grad.abs().sum() > 0


def test_one_by_one_map_is_finite():
    # unbiased variance of one value is 0/0; the divisor is clamped to 1, so sigma = sqrt(eps)
    m = SRM(16).eval()
    _randomise(m)
    x = torch.randn(2, 16, 1, 1, requires_grad=True)
    y = m(x)
    assert torch.isfinite(y).all()
    z = x * m.cfc[:, 0].view(1, 16, 1, 1) + math.sqrt(1e-5) * m.cfc[:, 1].view(1, 16, 1, 1)
    torch.testing.assert_close(y, x * torch.sigmoid(m.bn(z)))
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_params_closed_form():
    for c in (16, 64, 256):
        m = SRM(c)
        assert m.formula_params() == sum(p.numel() for p in m.parameters()) == 4 * c


def test_state_dict_names_match_official():
    assert set(SRM(16).state_dict()) >= {
        "cfc",
        "bn.weight",
        "bn.bias",
        "bn.running_mean",
        "bn.running_var",
    }


def test_formula_macs_hand_count():
    # (2, 16, 8, 8): 2048 elements, 32 channel maps
    # mean 1, x - mean 1, vector_norm 2 (as var), x * gate 1 per element;
    # per map: norm^2, /(n-1), +eps, sqrt, w0*mu + w1*sigma (3), BN (2), sigmoid = 10
    expected = 5 * 2048 + 10 * 32
    assert expected == 10_560
    assert SRM(16).formula_macs((2, 16, 8, 8)) == expected


def test_bad_arguments():
    with pytest.raises(ValueError, match="eps"):
        SRM(16, eps=-1.0)
    with pytest.raises(ValueError, match="channels"):
        SRM(0)


def test_bad_inputs():
    m = SRM(16)
    with pytest.raises(ValueError, match="4-D"):
        m(torch.randn(16, 4, 4))
    with pytest.raises(ValueError, match="channels=16"):
        m(torch.randn(1, 8, 4, 4))


def test_norm_layer_is_pluggable():
    m = SRM(16, norm_layer=lambda c, **kw: nn.GroupNorm(1, c, **kw))
    assert isinstance(m.bn, nn.GroupNorm)


def test_registered_as_gate():
    info = modules.get_info("srm")
    assert (info.kind, info.placement, info.family) == ("gate", "block", "srm")
