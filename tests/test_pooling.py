"""Global average / max pooling entries and cross-channel pooling (modules/pooling.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import modules
from modules.pooling import CrossChannelPool, GlobalAvgPool, GlobalMaxPool

GAP = ["gap_adaptive", "gap_kernel", "gap_mean"]
GMP = ["gmp_adaptive", "gmp_kernel", "gmp_amax"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_registered_kind_and_placement():
    for name in GAP + GMP:
        info = modules.get_info(name)
        assert (info.family, info.kind, info.placement) == ("pooling", "pool", "head")
    for name in ("ccp_max", "ccp_mean"):
        info = modules.get_info(name)
        assert (info.family, info.kind, info.placement) == ("pooling", "pool", "none")
        assert "channel" in info.placement_note


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 1, 1), (3, 2, 6, 2)])
def test_global_pools_match_the_definition(shape, dtype):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=dtype)
    n, c = shape[:2]
    flat = x.reshape(n, c, -1)
    expected_avg = flat.sum(-1) / flat.shape[-1]
    expected_max = flat.max(-1).values
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    for name in GAP:
        y = modules.create(name, c)(x)
        assert y.shape == (n, c, 1, 1) and y.dtype == dtype
        torch.testing.assert_close(y.view(n, c), expected_avg, rtol=tol, atol=tol)
    for name in GMP:
        y = modules.create(name, c)(x)
        assert y.shape == (n, c, 1, 1)
        assert torch.equal(y.view(n, c), expected_max)


def test_gap_and_gmp_differ_where_expected():
    # one bright pixel: GMP sees it fully, GAP dilutes it over H*W
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 2] = 16.0
    assert modules.create("gmp_amax", 1)(x).item() == 16.0
    assert modules.create("gap_mean", 1)(x).item() == 1.0


def test_gmp_gradient_goes_to_the_argmax_only_gap_everywhere():
    x = torch.tensor([[[[1.0, 5.0], [2.0, 3.0]]]], requires_grad=True)
    modules.create("gmp_kernel", 1)(x).sum().backward()
    assert torch.equal(x.grad, torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]]))
    x.grad = None
    modules.create("gap_kernel", 1)(x).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 0.25))


@pytest.mark.parametrize("name", GAP + GMP)
def test_global_pools_refuse_integer_input(name):
    # F.avg_pool2d on integers floors (a blog post's example); the suite works in floating point
    x = torch.tensor([[[[8, 6], [1, 6]]]])
    with pytest.raises(ValueError, match="floating-point"):
        modules.create(name, 1)(x)


def test_global_pool_impl_is_validated():
    with pytest.raises(ValueError, match="impl must be one of"):
        GlobalAvgPool(4, impl="amax")
    with pytest.raises(ValueError, match="impl must be one of"):
        GlobalMaxPool(4, impl="mean")


def test_global_pool_costs():
    for name in GAP + GMP:
        m = modules.create(name, 8)
        assert m.formula_params() == 0
        assert m.output_shape((2, 8, 3, 5)) == (2, 8, 1, 1)
        assert m.formula_macs((2, 8, 3, 5)) == 240  # one read per input element


def _seed_cross_channel_max(x: torch.Tensor, k: int) -> torch.Tensor:
    """Seed 000's formulation, written from its description."""
    return F.max_pool2d(x.transpose(1, 3), (1, k), (1, k)).transpose(1, 3).contiguous()


def _loop_cross_channel(x: torch.Tensor, k: int, reduce) -> torch.Tensor:
    groups = [reduce(x[:, g * k : (g + 1) * k]) for g in range(x.shape[1] // k)]
    return torch.stack(groups, dim=1)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_ccp_max_matches_seed_and_loop(k):
    torch.manual_seed(k)
    x = torch.randn(2, 12, 5, 3)
    y = modules.create("ccp_max", 12, k=k)(x)
    assert y.shape == (2, 12 // k, 5, 3)
    assert torch.equal(y, _seed_cross_channel_max(x, k))
    assert torch.equal(y, _loop_cross_channel(x, k, lambda t: t.amax(1)))


@pytest.mark.parametrize("k", [2, 4])
def test_ccp_mean_matches_loop(k):
    torch.manual_seed(k)
    x = torch.randn(2, 8, 3, 4)
    y = modules.create("ccp_mean", 8, k=k)(x)
    torch.testing.assert_close(y, _loop_cross_channel(x, k, lambda t: t.mean(1)))


def test_ccp_seed_example_groups_consecutive_channels():
    # the cross-channel pooling post's example: two 4x4 channels, max over them: top-left 0.2 vs 0.1 -> 0.2, bottom-right 0.4 vs 0.1
    a = torch.full((4, 4), 0.3)
    b = torch.full((4, 4), 0.3)
    a[0, 0], b[0, 0] = 0.2, 0.1
    a[3, 3], b[3, 3] = 0.4, 0.1
    other = torch.full((4, 4), 9.0)  # channels 2, 3: a different group
    x = torch.stack([a, b, other, other])[None]
    y = modules.create("ccp_max", 4)(x)
    assert y.shape == (1, 2, 4, 4)
    assert y[0, 0, 0, 0].item() == pytest.approx(0.2)
    assert y[0, 0, 3, 3].item() == pytest.approx(0.4)
    assert torch.equal(y[0, 1], other)


def test_ccp_shapes_and_costs():
    m = modules.create("ccp_max", 12, k=3)
    assert (m.in_channels, m.out_channels) == (12, 4)
    assert m.output_shape((2, 12, 5, 7)) == (2, 4, 5, 7)
    assert m.formula_params() == 0 == sum(p.numel() for p in m.parameters())
    assert m.formula_macs((2, 12, 5, 7)) == 2 * 12 * 5 * 7


def test_ccp_k_must_divide_channels():
    with pytest.raises(ValueError, match=r"channels=6.*k=4"):
        modules.create("ccp_max", 6, k=4)
    with pytest.raises(ValueError, match="k must be a positive int"):
        CrossChannelPool(6, k=0)
    with pytest.raises(ValueError, match="mode must be"):
        CrossChannelPool(6, mode="min")


def test_ccp_refuses_wrong_channel_count():
    with pytest.raises(ValueError, match="channels=8"):
        modules.create("ccp_mean", 8)(torch.randn(1, 6, 2, 2))
