"""Triplet attention: equality with the rotate-and-gate form, closed forms, bad inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import modules
from modules.triplet import TripletAttention


def _randomise(module: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def _rotated_reference(m: TripletAttention, x: torch.Tensor) -> torch.Tensor:
    """The paper's form: rotate x, Z-pool over dim 1, gate, rotate back, average the branches."""

    def branch(gate_module, t):
        zpool = torch.cat((t.max(dim=1, keepdim=True).values, t.mean(dim=1, keepdim=True)), dim=1)
        return t * torch.sigmoid(gate_module.bn(gate_module.conv(zpool)))

    out_cw = branch(m.cw, x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)  # (N, H, C, W)
    out_hc = branch(m.hc, x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)  # (N, W, H, C)
    if m.hw is None:
        return (out_cw + out_hc) / 2
    return (out_cw + out_hc + branch(m.hw, x)) / 3


@pytest.mark.parametrize("no_spatial", [False, True])
@pytest.mark.parametrize("shape", [(2, 16, 9, 7), (1, 16, 1, 1), (3, 16, 5, 12)])
def test_matches_rotated_form(no_spatial, shape):
    m = TripletAttention(16, no_spatial=no_spatial).eval()
    _randomise(m)
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _rotated_reference(m, x), rtol=0, atol=1e-5)


def test_gradients_match_rotated_form():
    m = TripletAttention(16).train()
    _randomise(m)
    x = torch.randn(2, 16, 6, 5)
    grads = []
    for fn in (m, lambda t: _rotated_reference(m, t)):
        m.zero_grad()
        fn(x).square().sum().backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for ours, ref in zip(*grads, strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("channels", [16, 64, 256])
def test_params_independent_of_channels(channels):
    m = TripletAttention(channels)
    assert m.formula_params() == sum(p.numel() for p in m.parameters()) == 300
    assert TripletAttention(channels, no_spatial=True).formula_params() == 200


def test_official_bn_settings():
    bn = TripletAttention(16).cw.bn
    assert (bn.eps, bn.momentum) == (1e-5, 0.01)


def test_formula_macs_hand_count():
    # (2, 16, 8, 6): x has 1536 elements; gate planes C*W = 96, H*C = 128, H*W = 48 per sample
    zpool = 3 * 2 * 1536  # max and mean, each over one axis of the full map, per branch
    planes = 2 * (96 + 128 + 48)  # 544 gate elements over the batch
    conv = planes * 2 * 49  # 2 -> 1 channels, 7 x 7
    tail = planes * (2 + 1 + 1)  # BN, sigmoid, 1/3
    combine = 2 * 1536 + 1536  # two broadcast adds, x * gate
    expected = zpool + conv + tail + combine
    assert expected == 69_312
    assert TripletAttention(16).formula_macs((2, 16, 8, 6)) == expected


def test_formula_macs_no_spatial():
    # drops the H-W branch: 2 Z-pools, planes C*W and H*C, one broadcast add
    n, c, h, w = 2, 16, 8, 6
    full = n * c * h * w
    planes = n * (c * w + h * c)
    expected = 2 * 2 * full + planes * (98 + 4) + full + full
    assert TripletAttention(16, no_spatial=True).formula_macs((n, c, h, w)) == expected


def test_bad_arguments():
    with pytest.raises(ValueError, match="kernel_size"):
        TripletAttention(16, kernel_size=6)
    with pytest.raises(ValueError, match="channels"):
        TripletAttention(0)


def test_bad_inputs():
    m = TripletAttention(16)
    with pytest.raises(ValueError, match="4-D"):
        m(torch.randn(2, 16, 8))
    with pytest.raises(ValueError, match="channels=16"):
        m(torch.randn(1, 17, 8, 8))


def test_registered_as_gate():
    info = modules.get_info("triplet")
    assert (info.kind, info.placement, info.family) == ("gate", "block", "triplet")
