"""GCT: identity at init, the official l2 form, gradients, closed forms, bad inputs."""

from __future__ import annotations

import pytest
import torch

import modules
from modules.gct import GatedChannelTransform


def _official_form(m: GatedChannelTransform, x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    embedding = (x.pow(2).sum((2, 3), keepdim=True) + eps).pow(0.5) * m.alpha
    norm = m.gamma / (embedding.pow(2).mean(dim=1, keepdim=True) + eps).pow(0.5)
    return x * (1.0 + torch.tanh(embedding * norm + m.beta))


def test_identity_at_init():
    m = GatedChannelTransform(32)
    assert torch.equal(m.alpha, torch.ones(1, 32, 1, 1))
    assert torch.count_nonzero(m.gamma) == 0 and torch.count_nonzero(m.beta) == 0
    x = torch.randn(2, 32, 6, 5)
    torch.testing.assert_close(m(x), x, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(2, 16, 9, 7), (3, 64, 16, 16), (1, 16, 1, 1)])
def test_matches_official_form(shape):
    m = GatedChannelTransform(shape[1])
    torch.manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    x = torch.randn(shape) * 2
    with torch.no_grad():
        torch.testing.assert_close(m(x), _official_form(m, x), rtol=1e-5, atol=1e-5)


def test_gradients_at_init():
    # gamma = beta = 0: beta and gamma get gradient; alpha's is a defined, exact zero
    m = GatedChannelTransform(16)
    x = torch.randn(2, 16, 4, 4)
    m(x).sum().backward()
    for name in ("alpha", "gamma", "beta"):
        grad = getattr(m, name).grad
        assert grad is not None and torch.isfinite(grad).all(), name
    assert m.beta.grad.abs().sum() > 0 and m.gamma.grad.abs().sum() > 0
    assert torch.count_nonzero(m.alpha.grad) == 0


def test_gradient_finite_on_zero_channel():
    m = GatedChannelTransform(16)
    with torch.no_grad():
        m.gamma.fill_(1.0)
    x = torch.randn(2, 16, 4, 4)
    x[:, 3] = 0.0
    x.requires_grad_(True)
    m(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_params_closed_form():
    for c in (16, 64, 256):
        m = GatedChannelTransform(c)
        assert m.formula_params() == sum(p.numel() for p in m.parameters()) == 3 * c


def test_formula_macs_hand_count():
    # (2, 16, 8, 8): 2048 elements, 32 channel maps, batch 2
    # per element: sum of squares 2 (as var), x * gate 1
    # per map: norm^2, +eps, sqrt, *alpha, s^2, mean over C (reads), gamma/., *norm, +beta, tanh, 1+ = 11
    # per sample: +eps, sqrt on the channel mean = 2
    expected = 3 * 2048 + 11 * 32 + 2 * 2
    assert expected == 6_500
    assert GatedChannelTransform(16).formula_macs((2, 16, 8, 8)) == expected


def test_bad_arguments():
    with pytest.raises(ValueError, match="eps"):
        GatedChannelTransform(16, eps=0.0)
    with pytest.raises(ValueError, match="channels"):
        GatedChannelTransform(0)


def test_bad_inputs():
    m = GatedChannelTransform(16)
    with pytest.raises(ValueError, match="4-D"):
        m(torch.randn(16, 4, 4))
    with pytest.raises(ValueError, match="channels=16"):
        m(torch.randn(1, 8, 4, 4))


def test_registered_as_gate():
    info = modules.get_info("gct")
    assert (info.kind, info.placement, info.family) == ("gate", "pre_conv", "gct")


@pytest.mark.parametrize(
    ("channels", "size"), [(3, 224), (64, 56), (256, 56), (128, 28), (512, 28), (1024, 14), (2048, 7)]
)
def test_matches_official_form_at_the_inputs_of_the_official_placement(channels, size):
    # before every conv of ResNet-50: the stem's 3 x 224 x 224 image, then each stage's conv inputs
    m = GatedChannelTransform(channels)
    torch.manual_seed(channels)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    x = torch.randn(1, channels, size, size)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _official_form(m, x), rtol=1e-5, atol=1e-5)
