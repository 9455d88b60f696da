"""FcaNet: DCT basis, frequency tables, the official form, pooling rule, closed forms, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import modules
from modules.fcanet import FrequencyChannelAttention, dct_basis, frequency_indices

TOP16 = (
    [0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2],
    [0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2],
)


def _basis_value(pos: int, freq: int, length: int) -> float:
    value = math.cos(math.pi * freq * (pos + 0.5) / length) / math.sqrt(length)
    return value if freq == 0 else value * math.sqrt(2)


def _official_form(m: FrequencyChannelAttention, x: torch.Tensor) -> torch.Tensor:
    """Loop-built filter and pooling rule of the official MultiSpectralAttentionLayer."""
    us, vs = frequency_indices(m.freq_sel_method)
    us = [u * (m.dct_h // 7) for u in us]
    vs = [v * (m.dct_w // 7) for v in vs]
    c = x.shape[1]
    part = c // len(us)
    weight = torch.zeros(c, m.dct_h, m.dct_w)
    for k, (u, v) in enumerate(zip(us, vs, strict=True)):
        for i in range(m.dct_h):
            for j in range(m.dct_w):
                weight[k * part : (k + 1) * part, i, j] = _basis_value(
                    i, u, m.dct_h
                ) * _basis_value(j, v, m.dct_w)
    pooled = (
        x if x.shape[2:] == (m.dct_h, m.dct_w) else F.adaptive_avg_pool2d(x, (m.dct_h, m.dct_w))
    )
    spectrum = (pooled * weight).sum((2, 3))
    gate = torch.sigmoid(m.fc2(torch.relu(m.fc1(spectrum))))
    return x * gate[:, :, None, None]


def test_top16_table():
    assert frequency_indices("top16") == TOP16
    assert frequency_indices("top32")[0][:16] == TOP16[0]
    assert len(frequency_indices("low4")[0]) == 4


def test_basis_is_orthonormal_dct():
    # all 49 frequencies of the 7x7 grid form an orthonormal basis
    us = [u for u in range(7) for _ in range(7)]
    vs = [v for _ in range(7) for v in range(7)]
    basis = dct_basis(49, 7, 7, us, vs).reshape(49, 49)
    torch.testing.assert_close(basis @ basis.T, torch.eye(49, dtype=torch.float64))
    # frequency (0, 0) is the sum / 7, i.e. 7 x the average
    torch.testing.assert_close(basis[0], torch.full((49,), 1 / 7, dtype=torch.float64))


@pytest.mark.parametrize(
    ("channels", "kwargs", "shape"),
    [
        (16, {}, (2, 16, 9, 7)),
        (64, {}, (3, 64, 7, 7)),
        (64, {}, (1, 64, 1, 1)),
        (32, {"dct_h": 14, "dct_w": 7}, (2, 32, 14, 7)),
        (32, {"freq_sel_method": "low8"}, (2, 32, 16, 16)),
    ],
)
def test_matches_official_form(channels, kwargs, shape):
    m = FrequencyChannelAttention(channels, **kwargs)
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _official_form(m, x), rtol=1e-5, atol=1e-5)


def test_channel_groups_get_their_frequency():
    m = FrequencyChannelAttention(32)
    # group k (2 channels each) holds frequency TOP16[k]; check group 2 = (6, 0)
    expected = torch.tensor(
        [[_basis_value(i, 6, 7) * _basis_value(j, 0, 7) for j in range(7)] for i in range(7)]
    )
    torch.testing.assert_close(m.dct_weight[4], expected)
    torch.testing.assert_close(m.dct_weight[5], expected)


def test_basis_buffer_is_non_persistent_and_round_trips():
    m = FrequencyChannelAttention(32)
    assert set(m.state_dict()) == {"fc1.weight", "fc2.weight"}
    assert "dct_weight" in dict(m.named_buffers())
    m2 = FrequencyChannelAttention(32)
    m2.load_state_dict(m.state_dict())
    x = torch.randn(2, 32, 10, 10)
    torch.testing.assert_close(m2(x), m(x), rtol=0, atol=0)


def test_params_closed_form():
    for c, r in ((16, 16), (64, 16), (256, 16), (256, 8)):
        m = FrequencyChannelAttention(c, reduction=r)
        assert m.formula_params() == sum(p.numel() for p in m.parameters()) == 2 * c * (c // r)


def test_formula_macs_hand_count():
    # (2, 16, 8, 8): pooled to 7x7 (reads 2048), basis product + sum over 2*16*49 = 1568 twice,
    # FCs 16 -> 1 -> 16 (2 * 2 * 16), ReLU on 2 * 1, sigmoid on 2 * 16, x * gate on 2048
    expected = 2048 + 2 * 1568 + 64 + 2 + 32 + 2048
    assert expected == 7_330
    m = FrequencyChannelAttention(16)
    assert m.formula_macs((2, 16, 8, 8)) == expected
    # a 7x7 map skips the pooling
    assert m.formula_macs((2, 16, 7, 7)) == 2 * 1568 + 64 + 2 + 32 + 1568 == 4_802


@pytest.mark.parametrize(
    ("channels", "kwargs", "match"),
    [
        (24, {}, "channels=24 must be divisible"),
        (8, {}, "channels"),
        (32, {"freq_sel_method": "top3"}, "freq_sel_method"),
        (32, {"freq_sel_method": "mid16"}, "freq_sel_method"),
        (32, {"dct_h": 5}, "dct_h"),
        (32, {"reduction": 64}, "reduction"),
        (32, {"reduction": 0}, "reduction"),
    ],
)
def test_bad_arguments(channels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        FrequencyChannelAttention(channels, **kwargs)


def test_bad_inputs():
    m = FrequencyChannelAttention(16)
    with pytest.raises(ValueError, match="4-D"):
        m(torch.randn(16, 7, 7))
    with pytest.raises(ValueError, match="channels=16"):
        m(torch.randn(1, 32, 7, 7))


def test_meta_device_construction():
    m = FrequencyChannelAttention(64, device="meta")
    assert m.dct_weight.device.type == "meta"
    assert m(torch.empty(2, 64, 9, 9, device="meta")).shape == (2, 64, 9, 9)


def test_registered_as_gate():
    info = modules.get_info("fca")
    assert (info.kind, info.placement, info.family) == ("gate", "block", "fcanet")


def _official_gate_at(m: FrequencyChannelAttention, x: torch.Tensor, size: int) -> torch.Tensor:
    """The official layer built with ``dct_h = dct_w = size`` (its c2wh entry), given m's FCs."""
    us, vs = frequency_indices(m.freq_sel_method)
    us, vs = [u * (size // 7) for u in us], [v * (size // 7) for v in vs]
    c = x.shape[1]
    part = c // len(us)
    rows = torch.tensor([[_basis_value(i, u, size) for i in range(size)] for u in us])
    cols = torch.tensor([[_basis_value(j, v, size) for j in range(size)] for v in vs])
    images = torch.einsum("ki,kj->kij", rows, cols).float().repeat_interleave(part, dim=0)
    pooled = x if x.shape[2:] == (size, size) else F.adaptive_avg_pool2d(x, (size, size))
    spectrum = (pooled * images).sum((2, 3))
    gate = torch.sigmoid(m.fc2(torch.relu(m.fc1(spectrum))))
    return x * gate[:, :, None, None]


@pytest.mark.parametrize(("stage", "channels", "size"), [(1, 256, 56), (2, 512, 28), (3, 1024, 14), (4, 2048, 7)])
def test_backbone_stage_setting_matches_the_official_layer_at_its_map_size(stage, channels, size):
    # cfzd/FcaNet model/fcanet.py: c2wh = {64: 56, 128: 28, 256: 14, 512: 7} (by planes)
    info = modules.get_info("fca")
    m = modules.create("fca", channels, **info.stage_kwargs[stage])
    assert (m.dct_h, m.dct_w) == (size, size)
    torch.manual_seed(stage)
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _official_gate_at(m, x, size), rtol=1e-5, atol=1e-5)


def test_the_7x7_default_is_a_different_gate_on_a_56x56_map():
    m = FrequencyChannelAttention(256)
    x = torch.randn(2, 256, 56, 56)
    with torch.no_grad():
        assert not torch.allclose(m(x), _official_gate_at(m, x, 56), atol=1e-5)
