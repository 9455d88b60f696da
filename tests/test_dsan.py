"""DSAN-style channel attention (modules/dsan.py): reference maths, widths, costs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import modules
from modules.dsan import DsanChannelAttention

pytestmark = pytest.mark.usefixtures("one_thread")


def _reference(m: DsanChannelAttention, x: torch.Tensor) -> torch.Tensor:
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    desc = torch.cat([flat.mean(-1), flat.max(-1).values], dim=1)  # (N, 2C): [avg; max]
    hidden = F.relu(F.linear(desc, m.fc1.weight.flatten(1), m.fc1.bias))
    gate = torch.sigmoid(F.linear(hidden, m.fc2.weight.flatten(1), m.fc2.bias))
    return x * gate[:, :, None, None]


@pytest.mark.parametrize("shape", [(2, 32, 5, 3), (1, 16, 1, 1)])
def test_matches_the_definition(shape):
    torch.manual_seed(0)
    m = modules.create("dsan_channel", shape[1]).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(shape)
    torch.testing.assert_close(m(x), _reference(m, x))


def test_average_comes_first_in_the_concatenation():
    m = DsanChannelAttention(4, reduction=1).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.fc1.weight[:, :4] = torch.eye(4)[:, :, None, None]  # hidden = avg only
        m.fc2.weight.copy_(torch.eye(4)[:, :, None, None])
    x = torch.zeros(1, 4, 2, 2)
    x[0, :, 0, 0] = 4.0  # avg 1, max 4
    gate = m(x)[0, :, 0, 0] / 4.0
    torch.testing.assert_close(gate, torch.sigmoid(torch.ones(4)))


def test_widths_and_params():
    m = modules.create("dsan_channel", 64)
    assert m.hidden == 4
    assert m.fc1.in_channels == 128 and m.fc1.bias is not None and m.fc2.bias is not None
    assert (
        m.formula_params() == 2 * 64 * 4 + 4 + 4 * 64 + 64 == sum(p.numel() for p in m.parameters())
    )
    assert DsanChannelAttention(64, reduction=1).hidden == 64  # the seed sketch's Dense(64)
    assert DsanChannelAttention(8).hidden == 1  # floor, min 1


def test_formula_macs_hand_count():
    # (2, 32, 3, 3): h = 2, N*C*H*W = 576
    expected = (
        2 * 576 + 2 * 64 * 2 + 2 * 2 * 32 + 2 * 2 + 2 * 32 + 576
    )  # pools, fc1, fc2, relu, sigmoid, scale
    assert modules.create("dsan_channel", 32).formula_macs((2, 32, 3, 3)) == expected == 2180


def test_registry_metadata_says_there_is_no_paper():
    info = modules.get_info("dsan_channel")
    assert (info.family, info.kind, info.placement, info.arxiv) == ("dsan", "gate", "block", None)
    assert "no paper" in info.paper and "blog post" in info.paper


def test_bad_arguments():
    with pytest.raises(ValueError, match="reduction must be"):
        DsanChannelAttention(16, reduction=0)
    with pytest.raises(ValueError, match="min_channels"):
        DsanChannelAttention(16, min_channels=-2)
    with pytest.raises(ValueError, match="channels=16"):
        DsanChannelAttention(16)(torch.randn(1, 8, 2, 2))


def test_dsan_network_is_the_seed_sketch() -> None:
    from torch import nn

    from modules.dsan import DSANet

    model = modules.build_model("dsan", num_classes=10).eval()
    assert isinstance(model, DSANet)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in convs] == [(1, 1), (2, 2), (2, 2), (2, 2)]
    assert all(c.out_channels == 64 and c.kernel_size == (3, 3) and c.bias is not None for c in convs)
    assert isinstance(model.attention, DsanChannelAttention) and model.attention.hidden == 64
    assert model.fc1.in_features == 4 * 4 * 64 and model.fc1.out_features == 256
    # convs 1792 + 3 * 36928, attention 128*64+64 + 64*64+64, dense 1024*256+256, 256*10+10
    assert sum(p.numel() for p in model.parameters()) == 389_962
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        h = x
        for layer in model.features:
            h = layer(h)
        a = _reference(model.attention, h)  # concat[avg, max] -> Dense relu -> Dense sigmoid
        expected = model.fc(F.relu(model.fc1(a.flatten(1))))
    torch.testing.assert_close(out, expected)
    assert out.shape == (2, 10)
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 10)  # pooled to the 4x4 grid
    with pytest.raises(ValueError, match="takes no attn"):
        modules.build_model("dsan", "se")
