"""CBAM entries (modules/cbam.py): structure, timm parity with mapped weights, costs."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zoo_fixtures import randomize

import modules
from modules.cbam import Cbam, CbamChannelGate, CbamSpatialGate

RESNET50_WIDTHS = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
RESNET50_PARAMS = 25_557_032  # torchvision resnet50


pytestmark = pytest.mark.usefixtures("one_thread")


_randomize = partial(randomize, scale=0.5)
"""This file's weights: SD 0.5."""


def _reference(m: Cbam, x: torch.Tensor) -> torch.Tensor:
    """CBAM written out from the paper's equations with the module's weights (eval mode)."""
    ch, sp = m.channel, m.spatial

    def mlp(v):  # (N, C) -> (N, C), the ONE shared MLP
        w1, b1 = ch.fc1.weight.flatten(1), ch.fc1.bias
        w2, b2 = ch.fc2.weight.flatten(1), ch.fc2.bias
        return F.linear(F.relu(F.linear(v, w1, b1)), w2, b2)

    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    mc = torch.sigmoid(mlp(flat.mean(-1)) + mlp(flat.max(-1).values))
    x1 = x * mc[:, :, None, None]
    desc = torch.stack([x1.max(1).values, x1.mean(1)], dim=1)  # [max, mean]
    conv = F.conv2d(desc, sp.conv.weight, padding=sp.kernel_size // 2)
    bn = F.batch_norm(
        conv, sp.bn.running_mean, sp.bn.running_var, sp.bn.weight, sp.bn.bias, eps=sp.bn.eps
    )
    return x1 * torch.sigmoid(bn)  # no residual


def test_matches_the_paper_equations():
    torch.manual_seed(0)
    m = modules.create("cbam", 32).eval()
    _randomize(m)
    x = torch.randn(2, 32, 6, 5)
    torch.testing.assert_close(m(x), _reference(m, x))


def test_spatial_gate_puts_max_first():
    m = CbamSpatialGate(4, kernel_size=1).eval()
    with torch.no_grad():
        m.conv.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))  # only input channel 0
    x = torch.randn(1, 4, 3, 3)
    expected = x * torch.sigmoid(m.bn(x.amax(1, keepdim=True)))
    torch.testing.assert_close(m(x), expected)


def test_one_shared_mlp_with_bias():
    m = CbamChannelGate(64)
    assert m.hidden == 4
    assert m.fc1.bias is not None and m.fc2.bias is not None
    convs = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d)]
    assert len(convs) == 2  # not one MLP per pooled vector
    assert m.formula_params() == 64 * 4 + 4 + 4 * 64 + 64 == sum(p.numel() for p in m.parameters())


def test_reduced_width_floors_like_the_paper():
    assert CbamChannelGate(40).hidden == 2  # 40 / 16 = 2.5 -> 2
    assert CbamChannelGate(8).hidden == 1  # min 1
    assert CbamChannelGate(8, min_channels=4).hidden == 4


def test_spatial_conv_has_no_bias_and_bn_is_affine():
    m = CbamSpatialGate(16)
    assert m.conv.bias is None and m.conv.kernel_size == (7, 7)
    assert m.bn.affine
    assert m.formula_params() == 2 * 49 + 2 == sum(p.numel() for p in m.parameters())


def test_cbam_resnet50_parameter_count():
    # CBAM-ResNet-50: 28.09M in the paper (SE's 28.09M plus 16 x (98 + 2) spatial weights)
    extra = sum(modules.create("cbam", c).formula_params() for c in RESNET50_WIDTHS)
    assert extra == 2_532_592
    assert round((RESNET50_PARAMS + extra) / 1e6, 2) == 28.09


def test_formula_macs_hand_count():
    # (1, 32, 4, 4): h = 2, N*C*H*W = 512, N*H*W = 16
    channel = (
        2 * 512 + 2 * (32 * 2 * 2) + 2 * 2 + 32 + 32 + 512
    )  # pools, MLP x2, relu, add, sigmoid, scale
    spatial = 2 * 512 + 16 * 2 * 49 + 2 * 16 + 16 + 512  # pools, conv, BN, sigmoid, scale
    assert modules.create("cbam_channel", 32).formula_macs((1, 32, 4, 4)) == channel == 1860
    assert modules.create("cbam_spatial", 32).formula_macs((1, 32, 4, 4)) == spatial == 3152
    assert modules.create("cbam", 32).formula_macs((1, 32, 4, 4)) == 5012


def test_bad_arguments():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        CbamSpatialGate(16, kernel_size=6)
    with pytest.raises(ValueError, match="reduction must be"):
        Cbam(16, reduction=0)
    with pytest.raises(ValueError, match="min_channels"):
        CbamChannelGate(16, min_channels=0)


# --- timm parity --------------------------------------------------------------------------


def _load_from_timm_channel(ours: CbamChannelGate, theirs: nn.Module) -> None:
    with torch.no_grad():
        for name in ("fc1", "fc2"):
            getattr(ours, name).weight.copy_(getattr(theirs, name).weight)
            getattr(ours, name).bias.copy_(getattr(theirs, name).bias)


def _load_from_timm_spatial(ours: CbamSpatialGate, theirs: nn.Module) -> None:
    """timm concatenates [mean, max]; the paper (and we) [max, mean]: flip the input channels."""
    with torch.no_grad():
        ours.conv.weight.copy_(theirs.conv.conv.weight.flip(1))
        ours.bn.load_state_dict(theirs.conv.bn.state_dict())


@pytest.mark.parametrize("channels", [16, 64, 256])
def test_timm_parity_cbam(channels):
    cbam = pytest.importorskip("timm.layers.cbam")
    torch.manual_seed(channels)
    theirs = cbam.CbamModule(channels, mlp_bias=True).eval()
    _randomize(theirs)
    ours = modules.create("cbam", channels).eval()
    assert theirs.channel.fc1.out_channels == ours.channel.hidden
    _load_from_timm_channel(ours.channel, theirs.channel)
    _load_from_timm_spatial(ours.spatial, theirs.spatial)
    x = torch.randn(2, channels, 7, 5)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_timm_parity_halves():
    cbam = pytest.importorskip("timm.layers.cbam")
    torch.manual_seed(1)
    x = torch.randn(2, 48, 6, 6)
    theirs_c = cbam.ChannelAttn(48, mlp_bias=True).eval()
    _randomize(theirs_c)
    ours_c = modules.create("cbam_channel", 48).eval()
    _load_from_timm_channel(ours_c, theirs_c)
    torch.testing.assert_close(ours_c(x), theirs_c(x), rtol=1e-5, atol=1e-5)

    theirs_s = cbam.SpatialAttn(7).eval()
    _randomize(theirs_s)
    ours_s = modules.create("cbam_spatial", 48).eval()
    _load_from_timm_spatial(ours_s, theirs_s)
    torch.testing.assert_close(ours_s(x), theirs_s(x), rtol=1e-5, atol=1e-5)
    # and the flip is needed: without it the outputs differ
    with torch.no_grad():
        ours_s.conv.weight.copy_(theirs_s.conv.conv.weight)
    assert not torch.allclose(ours_s(x), theirs_s(x), rtol=1e-5, atol=1e-5)


def test_timm_rounds_the_reduced_width_we_floor():
    cbam = pytest.importorskip("timm.layers.cbam")
    assert cbam.ChannelAttn(40).fc1.out_channels == 3
    assert CbamChannelGate(40).hidden == 2


def test_light_cbam_closest_configuration():
    """timm's LightCbamModule is not the paper's design; map it where the maths allows.

    Spatial: timm convolves 0.5 * (mean + max) with one kernel w; ours convolves [max, mean]
    with two kernels, equal to ours when both are w / 2. Channel: timm applies the MLP to
    0.5 * (avg + max); ours sums MLP(avg) + MLP(max). With an identity activation the two agree
    when timm's second FC is twice ours (weight and bias); with ReLU they cannot.
    """
    cbam = pytest.importorskip("timm.layers.cbam")
    torch.manual_seed(2)
    channels = 32
    x = torch.randn(2, channels, 6, 5)
    theirs = cbam.LightCbamModule(channels, mlp_bias=True, act_layer=nn.Identity).eval()
    _randomize(theirs)
    ours = Cbam(channels, act_layer=nn.Identity).eval()
    with torch.no_grad():
        ours.channel.fc1.load_state_dict(theirs.channel.fc1.state_dict())
        ours.channel.fc2.weight.copy_(theirs.channel.fc2.weight / 2)
        ours.channel.fc2.bias.copy_(theirs.channel.fc2.bias / 2)
        ours.spatial.conv.weight.copy_(theirs.spatial.conv.conv.weight.expand(1, 2, 7, 7) / 2)
        ours.spatial.bn.load_state_dict(theirs.spatial.conv.bn.state_dict())
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)

    # with the paper's ReLU the channel halves differ: parity is impossible
    theirs_relu = cbam.LightChannelAttn(channels, mlp_bias=True).eval()
    _randomize(theirs_relu)
    ours_relu = CbamChannelGate(channels).eval()
    with torch.no_grad():
        ours_relu.fc1.load_state_dict(theirs_relu.fc1.state_dict())
        ours_relu.fc2.weight.copy_(theirs_relu.fc2.weight / 2)
        ours_relu.fc2.bias.copy_(theirs_relu.fc2.bias / 2)
    assert not torch.allclose(ours_relu(x), theirs_relu(x), rtol=1e-3, atol=1e-3)


def test_official_training_details_bn_momentum_and_zero_spatial_weight():
    # Jongchan/attention-module: BasicConv's BN momentum 0.01; init_weights zeroes every
    # SpatialGate BN weight, so the spatial gate starts at sigmoid(0) = 0.5
    for m in (modules.create("cbam", 64).spatial, modules.create("cbam_spatial", 64)):
        assert m.bn.momentum == 0.01 and m.bn.eps == 1e-5 and m.bn.affine
        assert torch.count_nonzero(m.bn.weight) == 0 and torch.count_nonzero(m.bn.bias) == 0
        x = torch.randn(2, 64, 5, 6)
        torch.testing.assert_close(m.eval()(x), x * 0.5)


def test_cbam_scales_its_own_intermediate_in_place_only_without_autograd() -> None:
    from modules.cbam import Cbam

    torch.manual_seed(0)
    m = Cbam(32).eval()
    torch.nn.init.normal_(m.spatial.bn.weight)  # a non-trivial spatial gate
    x = torch.randn(2, 32, 9, 9)
    kept = x.clone()
    with torch.no_grad():
        fast = m(x)
        composed = m.spatial(m.channel(x))
    torch.testing.assert_close(fast, composed)
    assert torch.equal(x, kept)  # the input itself is never written
    xg = x.clone().requires_grad_()
    out = m(xg)
    torch.testing.assert_close(out, composed)
    out.square().sum().backward()
    xr = x.clone().requires_grad_()
    m.spatial(m.channel(xr)).square().sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad)
