"""ECA entries (modules/eca.py): adaptive kernel, circular padding, timm parity, costs."""

from __future__ import annotations

import pytest
import torch

import modules
from modules.eca import EfficientChannelAttention, adaptive_kernel_size

pytestmark = pytest.mark.usefixtures("one_thread")


def test_adaptive_kernel_matches_the_paper_for_resnet50_stages():
    assert [adaptive_kernel_size(c) for c in (256, 512, 1024, 2048)] == [5, 5, 5, 7]
    assert [modules.create("eca", c).kernel_size for c in (256, 512, 1024, 2048)] == [5, 5, 5, 7]
    assert [modules.create("eca_circular", c).kernel_size for c in (256, 512, 1024, 2048)] == [
        5,
        5,
        5,
        7,
    ]


def test_adaptive_kernel_odd_rounding():
    # t = int(|(log2 C + 1) / 2|), even t -> t + 1
    assert adaptive_kernel_size(64) == 3  # t = 3
    assert adaptive_kernel_size(128) == 5  # t = 4 -> 5
    assert adaptive_kernel_size(8) == 3  # t = 2 -> 3
    assert adaptive_kernel_size(4) == 1  # t = 1: the paper gives 1 (timm clamps to 3)
    assert adaptive_kernel_size(256, gamma=1, beta=0) == 9  # t = 8 -> 9


def test_eca_k3_is_fixed():
    assert [modules.create("eca_k3", c).kernel_size for c in (16, 256, 2048)] == [3, 3, 3]


@pytest.mark.parametrize("name", ["eca", "eca_k3", "eca_circular"])
def test_no_bias_and_k_params(name):
    m = modules.create(name, 512)
    assert m.conv.bias is None
    assert m.formula_params() == m.kernel_size == sum(p.numel() for p in m.parameters())


def test_matches_a_hand_written_reference():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 3, 5)
    m = modules.create("eca_k3", 16)
    w = m.conv.weight.detach().view(3)
    p = x.mean((2, 3))  # (N, C)
    padded = torch.nn.functional.pad(p, (1, 1))
    logits = w[0] * padded[:, :-2] + w[1] * padded[:, 1:-1] + w[2] * padded[:, 2:]
    expected = x * torch.sigmoid(logits)[:, :, None, None]
    torch.testing.assert_close(m(x), expected)


def test_circular_padding_wraps_the_channel_ends():
    torch.manual_seed(0)
    x = torch.randn(1, 8, 2, 2)
    zero = EfficientChannelAttention(8, kernel_size=3)
    circ = EfficientChannelAttention(8, kernel_size=3, circular=True)
    with torch.no_grad():
        for m in (zero, circ):
            m.conv.weight.copy_(torch.tensor([[[1.0, 0.0, 0.0]]]))  # channel i looks at i - 1
    pooled = x.mean((2, 3))[0]
    gate_zero = (zero(x) / x)[0, :, 0, 0]
    gate_circ = (circ(x) / x)[0, :, 0, 0]
    assert gate_zero[0].item() == pytest.approx(0.5)  # zero padding: sigmoid(0)
    assert gate_circ[0].item() == pytest.approx(torch.sigmoid(pooled[7]).item(), rel=1e-5)
    torch.testing.assert_close(gate_circ[1:], gate_zero[1:])


def test_formula_macs_hand_count():
    m = modules.create("eca", 256)  # k = 5
    # pool 2*256*16 + conv 2*256*5 + sigmoid 2*256 + scale 2*256*16
    assert m.formula_macs((2, 256, 4, 4)) == 8192 + 2560 + 512 + 8192


def test_bad_arguments():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        EfficientChannelAttention(16, kernel_size=4)
    with pytest.raises(ValueError, match="kernel_size must be a positive int"):
        EfficientChannelAttention(16, kernel_size=0)
    with pytest.raises(ValueError, match="circular padding"):
        EfficientChannelAttention(2, kernel_size=7, circular=True)
    with pytest.raises(ValueError, match="gamma"):
        EfficientChannelAttention(16, gamma=0)
    with pytest.raises(ValueError, match="channels must be a positive int"):
        EfficientChannelAttention(0)


def _copy_and_compare(ours, theirs, channels):
    torch.manual_seed(channels)
    with torch.no_grad():
        theirs.conv.weight.normal_()
        ours.conv.weight.copy_(theirs.conv.weight)
    ours.eval()
    theirs.eval()
    x = torch.randn(2, channels, 5, 4)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels", [8, 64, 256, 2048])
def test_timm_parity_eca(channels):
    timm_layers = pytest.importorskip("timm.layers")
    theirs = timm_layers.EcaModule(channels)
    ours = modules.create("eca", channels)
    assert theirs.conv.weight.shape == ours.conv.weight.shape
    _copy_and_compare(ours, theirs, channels)


@pytest.mark.parametrize("channels", [16, 256])
def test_timm_parity_eca_k3(channels):
    timm_layers = pytest.importorskip("timm.layers")
    theirs = timm_layers.EcaModule(None, kernel_size=3)
    _copy_and_compare(modules.create("eca_k3", channels), theirs, channels)


@pytest.mark.parametrize("channels", [8, 64, 2048])
def test_timm_parity_ceca(channels):
    timm_layers = pytest.importorskip("timm.layers")
    theirs = timm_layers.CecaModule(channels)
    ours = modules.create("eca_circular", channels)
    assert theirs.conv.weight.shape == ours.conv.weight.shape
    _copy_and_compare(ours, theirs, channels)


def test_timm_clamps_small_channel_counts_we_do_not():
    timm_layers = pytest.importorskip("timm.layers")
    assert timm_layers.EcaModule(4).conv.kernel_size == (3,)
    assert modules.create("eca", 4).kernel_size == 1
