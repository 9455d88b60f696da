"""Selective Kernel: timm parity, path configuration, closed forms, bad inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import modules
from modules.selective_kernel import SelectiveKernel


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
    ("timm_kwargs", "our_kwargs", "cin", "cout", "stride"),
    [
        ({}, {}, 32, 32, 1),
        ({}, {}, 64, 128, 2),
        ({"kernel_size": [3, 5, 7]}, {"num_paths": 3}, 48, 64, 1),
        ({"keep_3x3": False}, {"keep_3x3": False}, 32, 32, 2),
        ({"split_input": False, "groups": 4}, {"split_input": False, "groups": 4}, 32, 64, 1),
        ({"rd_channels": 24}, {"rd_channels": 24}, 16, 16, 1),
    ],
)
def test_timm_parity(timm_kwargs, our_kwargs, cin, cout, stride):
    timm_layers = pytest.importorskip("timm.layers")
    torch.manual_seed(0)
    ref = timm_layers.SelectiveKernel(cin, cout, stride=stride, **timm_kwargs).eval()
    _randomise(ref)
    ours = SelectiveKernel(cin, out_channels=cout, stride=stride, **our_kwargs).eval()
    ours.load_state_dict(ref.state_dict())  # strict: same names and shapes
    x = torch.randn(2, cin, 9, 7)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert got.shape == expected.shape == ours.output_shape(tuple(x.shape))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_default_paths_are_3x3_with_dilation_1_and_2():
    m = SelectiveKernel(64)
    convs = [path.conv for path in m.paths]
    assert [c.kernel_size for c in convs] == [(3, 3), (3, 3)]
    assert [c.dilation for c in convs] == [(1, 1), (2, 2)]
    assert [c.padding for c in convs] == [(1, 1), (2, 2)]
    assert [c.in_channels for c in convs] == [32, 32]  # split_input
    assert m.attn.fc_select.out_channels == 2 * 64


@pytest.mark.parametrize(
    ("out_channels", "rd"), [(64, 8), (128, 8), (256, 16), (512, 32), (2048, 128)]
)
def test_reduced_width_is_timm_make_divisible(out_channels, rd):
    assert SelectiveKernel(16, out_channels=out_channels).rd_channels == rd


def test_weights_sum_to_one_over_paths():
    m = SelectiveKernel(32).eval()
    _randomise(m)
    pooled = torch.randn(3, 32, 1, 1)
    with torch.no_grad():
        weights = m.attn(pooled)
    assert weights.shape == (3, 2, 32, 1, 1)
    torch.testing.assert_close(weights.sum(1), torch.ones(3, 32, 1, 1))


@pytest.mark.parametrize(
    ("shape", "stride", "expected"),
    [((1, 16, 9, 7), 2, (1, 24, 5, 4)), ((2, 16, 1, 1), 2, (2, 24, 1, 1))],
)
def test_output_shape_with_stride(shape, stride, expected):
    m = modules.create("sk", 16, out_channels=24, stride=stride).eval()
    assert m.out_channels == 24 and m.in_channels == 16
    assert m.output_shape(shape) == expected
    assert tuple(m(torch.randn(shape)).shape) == expected


def test_formula_params_matches_count():
    for kwargs in (
        {},
        {"out_channels": 96, "num_paths": 3},
        {"groups": 8, "split_input": False},
        {"keep_3x3": False},
    ):
        m = SelectiveKernel(48, **kwargs)
        assert m.formula_params() == sum(p.numel() for p in m.parameters())


def test_formula_macs_hand_count():
    # (2, 32, 8, 8), defaults: two paths 16 -> 32 (3x3), d = 8, out map 2 x 32 x 8 x 8 = 4096
    convs = 2 * (2 * 32 * 64 * 16 * 9)  # 1_179_648
    path_bn_relu = 2 * 3 * 4096  # 24_576
    fuse = 2 * 4096 + 2 * 32  # GAP per path + adding the two pooled vectors: 8_256
    attn = 2 * 32 * 8 + 2 * 2 * 8 + 2 * 8 + 2 * 8 * 64  # fc_reduce, BN, ReLU, fc_select: 1_584
    softmax = 2 * 64
    select = 3 * 4096  # two multiplies, one add per output element
    expected = convs + path_bn_relu + fuse + attn + softmax + select
    assert expected == 1_226_480
    assert SelectiveKernel(32).formula_macs((2, 32, 8, 8)) == expected


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": 15}, "num_paths"),
        ({"channels": 16, "kernel_size": 4}, "kernel_size"),
        ({"channels": 16, "kernel_size": 1}, "kernel_size"),
        ({"channels": 16, "num_paths": 1}, "num_paths"),
        ({"channels": 16, "groups": 3}, "groups"),
        ({"channels": 16, "stride": 0}, "stride"),
        ({"channels": 16, "rd_ratio": 0}, "rd_ratio"),
        ({"channels": 0}, "channels"),
    ],
)
def test_bad_arguments(kwargs, match):
    channels = kwargs.pop("channels")
    with pytest.raises(ValueError, match=match):
        SelectiveKernel(channels, **kwargs)


def test_bad_inputs():
    m = SelectiveKernel(16)
    with pytest.raises(ValueError, match="4-D"):
        m(torch.randn(16, 8, 8))
    with pytest.raises(ValueError, match="channels=16"):
        m(torch.randn(1, 32, 8, 8))


def test_registered_as_conv():
    info = modules.get_info("sk")
    assert (info.kind, info.placement, info.family) == ("conv", "conv", "selective_kernel")
