"""Split attention (ResNeSt): timm parity, radix softmax, closed forms, bad inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import modules
from modules.split_attn import SplitAttn


def _randomise(module: nn.Module, seed: int = 0) -> None:
    """Random weights and BN statistics, so parity is not checked at a trivial point."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


@pytest.mark.parametrize(
    ("kwargs", "cin", "cout", "stride", "kernel_size"),
    [
        ({}, 32, 32, 1, 3),
        ({}, 64, 128, 2, 3),
        ({"radix": 4, "groups": 2}, 64, 64, 1, 3),
        ({"radix": 1}, 32, 48, 1, 3),
        ({"radix": 2, "groups": 4}, 64, 64, 2, 5),
        ({"rd_channels": 8}, 32, 32, 1, 3),
    ],
)
def test_timm_parity(kwargs, cin, cout, stride, kernel_size):
    timm_layers = pytest.importorskip("timm.layers")
    ref = timm_layers.SplitAttn(
        cin, cout, kernel_size=kernel_size, stride=stride, norm_layer=nn.BatchNorm2d, **kwargs
    ).eval()
    _randomise(ref)
    ours = SplitAttn(
        cin, out_channels=cout, kernel_size=kernel_size, stride=stride, **kwargs
    ).eval()
    ours.load_state_dict(ref.state_dict())  # strict: same names and shapes
    x = torch.randn(2, cin, 9, 7)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert got.shape == expected.shape == ours.output_shape(tuple(x.shape))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("channels", "attn"), [(16, 32), (64, 32), (128, 64), (256, 128), (2048, 1024)]
)
def test_attention_width(channels, attn):
    # max(C * R / 4, 32) rounded to 8, R = 2
    assert SplitAttn(channels).attn_channels == attn


def test_radix_softmax_sums_to_one_per_channel():
    m = SplitAttn(32, radix=4, groups=2)
    logits = torch.randn(3, 4 * 32, 1, 1)
    weights = m._radix_softmax(logits)
    assert weights.shape == (3, 4, 32, 1, 1)
    torch.testing.assert_close(weights.sum(1), torch.ones(3, 32, 1, 1))


def test_radix_one_is_a_sigmoid_gate():
    m = SplitAttn(16, radix=1)
    logits = torch.randn(2, 16, 1, 1)
    torch.testing.assert_close(m._radix_softmax(logits).view(2, 16, 1, 1), logits.sigmoid())


def test_output_shape_with_stride():
    m = modules.create("split_attn", 16, out_channels=32, stride=2).eval()
    assert (m.in_channels, m.out_channels) == (16, 32)
    for shape, expected in (((1, 16, 9, 7), (1, 32, 5, 4)), ((2, 16, 1, 1), (2, 32, 1, 1))):
        assert m.output_shape(shape) == expected
        assert tuple(m(torch.randn(shape)).shape) == expected


def test_formula_params_matches_count():
    for kwargs in (
        {},
        {"radix": 4, "groups": 2},
        {"radix": 1, "out_channels": 48},
        {"kernel_size": 5},
    ):
        m = SplitAttn(64, **kwargs)
        assert m.formula_params() == sum(p.numel() for p in m.parameters())


def test_formula_macs_hand_count():
    # (2, 32, 8, 8), defaults: conv 32 -> 64 (groups 2, 3x3), A = 32, out map 2 x 32 x 8 x 8 = 4096
    conv = 2 * 64 * 64 * 16 * 9  # 1_179_648
    bn_relu = 3 * 2 * 4096  # over the 64-channel map: 24_576
    gap = 2 * 4096 + 2 * 2 * 32  # mean of the 64-channel map, sum over radix reads (2, 2, 32)
    attn = 2 * 32 * 32 + 2 * 2 * 32 + 2 * 32 + 2 * 32 * 64  # fc1, bn1, ReLU, fc2: 6_336
    softmax = 2 * 64
    select = 3 * 4096
    expected = conv + bn_relu + gap + attn + softmax + select
    assert expected == 1_231_296
    assert SplitAttn(32).formula_macs((2, 32, 8, 8)) == expected


@pytest.mark.parametrize(
    ("channels", "kwargs", "match"),
    [
        (15, {}, "groups \\* radix"),
        (32, {"groups": 3}, "groups"),
        (32, {"radix": 0}, "radix"),
        (32, {"stride": 0}, "stride"),
        (32, {"rd_ratio": -1.0}, "rd_ratio"),
        (0, {}, "channels"),
    ],
)
def test_bad_arguments(channels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        SplitAttn(channels, **kwargs)


def test_bad_inputs():
    m = SplitAttn(16)
    with pytest.raises(ValueError, match="4-D"):
        m(torch.randn(16, 8, 8))
    with pytest.raises(ValueError, match="channels=16"):
        m(torch.randn(1, 8, 8, 8))


def test_registered_as_conv():
    info = modules.get_info("split_attn")
    assert (info.kind, info.placement, info.family) == ("conv", "conv", "split_attn")
