"""Non-local block: timm parity, definition by einsum, identity at init, quadratic cost."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import modules
from modules.non_local import NonLocal


def _randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return module


def _copy_from_timm(ours: NonLocal, theirs: nn.Module) -> None:
    for mine, timm_name in (
        ("theta", "t"),
        ("phi", "p"),
        ("g", "g"),
        ("out_conv", "z"),
        ("bn", "norm"),
    ):
        getattr(ours, mine).load_state_dict(getattr(theirs, timm_name).state_dict())


@pytest.mark.parametrize("use_scale", [False, True])
@pytest.mark.parametrize(("channels", "shape_hw"), [(16, (5, 7)), (64, (6, 6)), (256, (3, 4))])
def test_non_local_matches_timm(use_scale: bool, channels: int, shape_hw: tuple) -> None:
    timm_layers = pytest.importorskip("timm.layers")
    theirs = timm_layers.NonLocalAttn(channels, rd_channels=channels // 2, use_scale=use_scale)
    _randomize(theirs).eval()
    ours = NonLocal(channels, scale=channels**-0.5 if use_scale else None).eval()
    _copy_from_timm(ours, theirs)
    x = torch.randn(2, channels, *shape_hw)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_non_local_matches_its_definition() -> None:
    m = _randomize(NonLocal(16)).eval()
    x = torch.randn(2, 16, 3, 4)
    with torch.no_grad():
        theta, phi, g = m.theta(x).flatten(2), m.phi(x).flatten(2), m.g(x).flatten(2)
        f = torch.einsum("nci,ncj->nij", theta, phi).softmax(dim=2)  # softmax over j
        y = torch.einsum("nij,ncj->nci", f, g).reshape(2, 8, 3, 4)
        torch.testing.assert_close(m(x), x + m.bn(m.out_conv(y)))


def test_non_local_starts_as_identity() -> None:
    m = NonLocal(32)
    assert torch.count_nonzero(m.bn.weight) == 0
    x = torch.randn(2, 32, 5, 4)
    torch.testing.assert_close(m.train()(x), x)
    torch.testing.assert_close(m.eval()(x), x)


def test_non_local_inner_width_is_half() -> None:
    for channels, inner in ((16, 8), (64, 32), (256, 128), (2048, 1024)):
        m = NonLocal(channels)
        assert m.inner == inner and m.theta.out_channels == inner
        assert m.formula_params() == sum(p.numel() for p in m.parameters())


def test_non_local_registration() -> None:
    info = modules.get_info("non_local")
    assert info.kind == "gate" and info.placement == "stage" and "(HW)^2" in info.placement_note


def test_non_local_formula_macs_hand_count() -> None:
    # N=1, C=16 (d=8), H=2, W=3 (HW=6, 96 elements).
    embed = 3 * 6 * 16 * 8
    affinity = 6 * 6 * 8
    softmax = 36
    aggregate = 8 * 6 * 6
    out = 6 * 8 * 16 + 2 * 96 + 96  # conv, BN, residual add
    expected = embed + affinity + softmax + aggregate + out
    assert NonLocal(16).formula_macs((1, 16, 2, 3)) == expected
    assert NonLocal(16, scale=0.25).formula_macs((1, 16, 2, 3)) == expected + 36


def test_non_local_cost_is_quadratic_in_positions() -> None:
    m = NonLocal(64)  # d = 32

    def quadratic(hw: int) -> int:  # two bmm's of hw*hw*d and the softmax over hw*hw
        return 2 * hw * hw * 32 + hw * hw

    small, large = m.formula_macs((1, 64, 14, 14)), m.formula_macs((1, 64, 28, 28))
    # Everything else is linear in the number of positions: 4x the positions, 4x the rest.
    assert large - quadratic(28 * 28) == 4 * (small - quadratic(14 * 14))


@pytest.mark.parametrize(
    ("kwargs", "word"), [({"scale": -1.0}, "scale"), ({"reduction": 0}, "reduction")]
)
def test_non_local_bad_arguments(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        NonLocal(32, **kwargs)
