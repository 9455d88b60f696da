"""GSoP: definition (official I_hat covariance form), widths, shapes, cost."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zoo_fixtures import randomize

import modules
from modules.second_order import GSoP

_randomize = partial(randomize, scale=0.2)
"""This file's weights: SD 0.2."""


def _bn(t: torch.Tensor, layer: nn.BatchNorm2d) -> torch.Tensor:
    return F.batch_norm(
        t, layer.running_mean, layer.running_var, layer.weight, layer.bias, False, 0.0, layer.eps
    )


def _gsop_reference(m: GSoP, x: torch.Tensor) -> torch.Tensor:
    """The official channel mode, with the covariance in its ``X I_hat X^T`` matrix form."""
    r = F.conv2d(F.relu(x), m.conv_reduce.weight, m.conv_reduce.bias, stride=m.dr_stride)
    r = F.relu(_bn(r, m.bn_reduce))
    n, d, h, w = r.shape
    big_m = h * w
    i_hat = (torch.eye(big_m) - torch.full((big_m, big_m), 1.0 / big_m)) / big_m
    flat = r.reshape(n, d, big_m)
    cov = flat @ i_hat @ flat.transpose(1, 2)  # (N, d, d)
    rows = _bn(cov.unsqueeze(3), m.row_bn)
    rows = F.conv2d(rows, m.row_conv.weight, m.row_conv.bias, groups=d)  # no activation after
    gate = torch.sigmoid(F.conv2d(rows, m.fc.weight, m.fc.bias))
    return x * gate


@pytest.mark.parametrize(
    ("channels", "shape_hw", "kwargs"),
    [(16, (5, 7), {}), (64, (6, 6), {}), (256, (7, 5), {}), (256, (7, 5), {"dr_stride": 2})],
)
def test_gsop_matches_the_official_definition(channels: int, shape_hw: tuple, kwargs: dict) -> None:
    m = _randomize(GSoP(channels, **kwargs)).eval()
    x = torch.randn(2, channels, *shape_hw)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _gsop_reference(m, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("channels", "dim"), [(16, 16), (64, 64), (128, 128), (256, 128), (2048, 128)]
)
def test_gsop_width_is_min_of_dim_and_channels(channels: int, dim: int) -> None:
    m = GSoP(channels)
    assert m.dim == dim
    assert m.row_conv.out_channels == 4 * dim and m.row_conv.groups == dim
    assert m.row_conv.kernel_size == (dim, 1)
    assert m.fc.out_channels == channels
    assert m.formula_params() == sum(p.numel() for p in m.parameters())


def test_gsop_2048_channels_keeps_the_input_channels() -> None:
    m = GSoP(2048).eval()
    x = torch.randn(2, 2048, 2, 3)
    with torch.no_grad():
        y = m(x)
    assert y.shape == x.shape


def test_gsop_gate_scales_the_input_not_its_relu() -> None:
    m = _randomize(GSoP(32)).eval()
    x = torch.randn(2, 32, 5, 5)
    with torch.no_grad():
        y = m(x)
    ratio = y / x
    assert (ratio > 0).all() and (ratio <= 1).all()  # a sigmoid gate of the signed input
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio), atol=1e-5)  # per channel


def test_gsop_registration() -> None:
    info = modules.get_info("gsop")
    assert info.kind == "gate" and info.placement == "block" and info.arxiv == "1811.12006"
    assert info.blocks.last_only and info.last_stage_stride == 1


def test_gsop_formula_macs_hand_count() -> None:
    # N=1, C=16 (d=16, 4d=64), H=2, W=3 (M=6).
    n_in = 96
    reduced = 16 * 6
    expected = (
        n_in  # input ReLU
        + 16 * 6 * 16  # reducing conv
        + 3 * reduced  # BN (2 per element) + ReLU
        + 2 * reduced + 16  # mean over M (a sum, then 16 divisions) + centring subtract
        + 16 * 16 * 6  # bmm
        + 16 * 16  # divide by M
        + 2 * 16 * 16  # BN on the covariance rows
        + 64 * 16  # row-wise grouped conv: 64 outputs, each a dot over one 16-long row
        + 16 * 64  # fc 4d -> C
        + 16  # sigmoid
        + n_in  # scale
    )
    assert GSoP(16).formula_macs((1, 16, 2, 3)) == expected


def test_gsop_dr_stride_shrinks_the_covariance_cost() -> None:
    full, strided = GSoP(256), GSoP(256, dr_stride=2)
    shape = (1, 256, 56, 56)
    d = 128
    saved_bmm = d * d * (56 * 56 - 28 * 28)
    assert full.formula_macs(shape) - strided.formula_macs(shape) > saved_bmm
    assert strided(torch.randn(2, 256, 7, 5)).shape == (2, 256, 7, 5)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [({"dim": 0}, "dim"), ({"row_expansion": 0}, "row_expansion"), ({"dr_stride": 0}, "dr_stride")],
)
def test_gsop_bad_arguments(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        GSoP(64, **kwargs)


def test_gsop_refuses_wrong_channel_count() -> None:
    with pytest.raises(ValueError, match="channels=256"):
        GSoP(256)(torch.randn(1, 128, 4, 4))


@pytest.mark.parametrize(
    ("stage", "channels", "size"), [(1, 256, 56), (2, 512, 28), (3, 1024, 14), (4, 2048, 14)]
)
def test_gsop_net1_modules_match_the_official_form_at_every_stage_size(
    stage: int, channels: int, size: int
) -> None:
    # GSoP-Net1 at 224 px: maps of 56/28/14/14 (stride-1 layer4), DR stride 2 in stage 1
    model = modules.build_model("resnet50", "gsop")
    m = getattr(model, f"layer{stage}")[-1].bn3[1]
    assert m.channels == channels and m.dr_stride == (2 if stage == 1 else 1)
    _randomize(m, seed=stage).eval()
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _gsop_reference(m, x), rtol=1e-5, atol=1e-5)
