"""Non-local block: timm parity, definition by einsum, identity at init, quadratic cost."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn
from zoo_fixtures import randomize

import modules
from modules.non_local import NonLocal

_randomize = partial(randomize, scale=0.2)
"""This file's weights: SD 0.2."""


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
    ours = NonLocal(channels, use_scale=False, scale=channels**-0.5 if use_scale else None).eval()
    _copy_from_timm(ours, theirs)
    x = torch.randn(2, channels, *shape_hw)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_non_local_matches_its_definition() -> None:
    m = _randomize(NonLocal(16)).eval()
    x = torch.randn(2, 16, 3, 4)
    with torch.no_grad():
        theta, phi, g = m.theta(x).flatten(2), m.phi(x).flatten(2), m.g(x).flatten(2)
        # official USE_SCALE: affinities times dim_inner ** -0.5 (d = 8) before the softmax over j
        f = (torch.einsum("nci,ncj->nij", theta, phi) * 8**-0.5).softmax(dim=2)
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
    assert info.kind == "gate" and info.placement == "after_block" and "(HW)^2" in info.placement_note


def test_non_local_formula_macs_hand_count() -> None:
    # N=1, C=16 (d=8), H=2, W=3 (HW=6, 96 elements).
    embed = 3 * 6 * 16 * 8
    affinity = 6 * 6 * 8
    softmax = 36
    aggregate = 8 * 6 * 6
    out = 6 * 8 * 16 + 2 * 96 + 96  # conv, BN, residual add
    expected = embed + affinity + softmax + aggregate + out
    assert NonLocal(16, use_scale=False).formula_macs((1, 16, 2, 3)) == expected
    # the default (official USE_SCALE) and an explicit factor both multiply the 36 affinities
    assert NonLocal(16).formula_macs((1, 16, 2, 3)) == expected + 36
    assert NonLocal(16, use_scale=False, scale=0.25).formula_macs((1, 16, 2, 3)) == expected + 36


def test_non_local_cost_is_quadratic_in_positions() -> None:
    m = NonLocal(64)  # d = 32

    def quadratic(hw: int) -> int:  # two bmm's of hw*hw*d, the d^-1/2 scale and the softmax
        return 2 * hw * hw * 32 + 2 * hw * hw

    small, large = m.formula_macs((1, 64, 14, 14)), m.formula_macs((1, 64, 28, 28))
    # Everything else is linear in the number of positions: 4x the positions, 4x the rest.
    assert large - quadratic(28 * 28) == 4 * (small - quadratic(14 * 14))


@pytest.mark.parametrize(
    ("kwargs", "word"), [({"scale": -1.0}, "scale"), ({"reduction": 0}, "reduction")]
)
def test_non_local_bad_arguments(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        NonLocal(32, **kwargs)


def _official_video_nonlocal(m: NonLocal, x: torch.Tensor) -> torch.Tensor:
    """The embedded-Gaussian unit of video-nonlocal-net's ``nonlocal_helper`` (2-D, no max-pool
    subsampling): theta^T phi, times dim_inner^-0.5, softmax, applied to g, 1x1 out conv, BN, add."""
    n, _, h, w = x.shape
    d = m.inner
    theta = torch.nn.functional.conv2d(x, m.theta.weight, m.theta.bias).reshape(n, d, h * w)
    phi = torch.nn.functional.conv2d(x, m.phi.weight, m.phi.bias).reshape(n, d, h * w)
    g = torch.nn.functional.conv2d(x, m.g.weight, m.g.bias).reshape(n, d, h * w)
    theta_phi = torch.matmul(theta.permute(0, 2, 1), phi) * d**-0.5
    p = torch.softmax(theta_phi, dim=-1)
    t = torch.matmul(g, p.permute(0, 2, 1)).reshape(n, d, h, w)
    return x + m.bn(torch.nn.functional.conv2d(t, m.out_conv.weight, m.out_conv.bias))


@pytest.mark.parametrize(("channels", "size"), [(256, 56), (512, 28), (1024, 14), (2048, 7)])
def test_default_scale_matches_the_official_unit_at_every_stage_size(channels: int, size: int) -> None:
    m = _randomize(NonLocal(channels)).eval()
    assert m.scale == pytest.approx(m.inner**-0.5)
    x = torch.randn(1, channels, size, size)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _official_video_nonlocal(m, x), rtol=1e-5, atol=1e-5)
