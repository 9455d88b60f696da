"""BAM (modules/bam.py): structure against a functional reference, residual form, costs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zoo_fixtures import randomize

import modules
from modules.bam import Bam

pytestmark = pytest.mark.usefixtures("one_thread")


def _bn(t, bn):
    return F.batch_norm(t, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps)


def _reference(m: Bam, x: torch.Tensor) -> torch.Tensor:
    """BAM from the paper's equations with the module's weights (eval mode)."""
    fc1, bn1, _, fc2, *out_c = m.channel_gate
    v = x.mean((2, 3))  # (N, C)
    hidden = F.linear(v, fc1.weight.flatten(1), fc1.bias)
    hidden = F.relu(_bn(hidden[:, :, None, None], bn1)).flatten(1)
    mc = F.linear(hidden, fc2.weight.flatten(1), fc2.bias)[:, :, None, None]
    if out_c:
        mc = _bn(mc, out_c[0])
    s = m.spatial_gate
    t = F.relu(_bn(F.conv2d(x, s[0].weight, s[0].bias), s[1]))
    for i in (3, 6):  # two 3x3 convs dilated by 4
        t = F.relu(_bn(F.conv2d(t, s[i].weight, s[i].bias, padding=4, dilation=4), s[i + 1]))
    ms = F.conv2d(t, s[9].weight, s[9].bias)  # (N, 1, H, W)
    if len(s) > 10:
        ms = _bn(ms, s[10])
    attention = torch.sigmoid(mc + ms)  # the paper's sum (the official code multiplies)
    return x + x * attention  # the paper's residual form


@pytest.mark.parametrize("output_norm", [False, True])
@pytest.mark.parametrize("shape", [(2, 32, 9, 7), (1, 64, 1, 1)])
def test_matches_the_paper_equations(shape, output_norm):
    torch.manual_seed(0)
    m = Bam(shape[1], output_norm=output_norm).eval()
    randomize(m)
    x = torch.randn(shape)
    y = m(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, _reference(m, x), rtol=1e-5, atol=1e-5)


def test_residual_form_keeps_x_when_the_gate_is_zero():
    class Zero(nn.Module):
        def forward(self, t):
            return torch.zeros_like(t)

    x = torch.randn(2, 16, 4, 4)
    m = Bam(16, gate_layer=Zero).eval()
    torch.testing.assert_close(m(x), x)  # y = x + x * 0


def test_structure():
    m = modules.create("bam", 256)
    assert m.hidden == 16 and m.dilation == 4
    dilated = [
        mod for mod in m.spatial_gate if isinstance(mod, nn.Conv2d) and mod.kernel_size == (3, 3)
    ]
    assert len(dilated) == 2 and all(d.dilation == (4, 4) and d.padding == (4, 4) for d in dilated)
    assert m.spatial_gate[-1].out_channels == 1
    assert m.channel_gate[-1].out_channels == 256


def test_params_closed_form():
    for c, output_norm in [(16, False), (64, True), (256, False), (1024, True)]:
        m = Bam(c, output_norm=output_norm)
        assert m.formula_params() == sum(p.numel() for p in m.parameters())
    # C = 64, h = 4 by hand: channel 256+4 + 8 + 256+64; spatial 256+4 + 8 + 2*(144+4+8) + 5
    assert Bam(64).formula_params() == 588 + 585


def test_formula_macs_hand_count():
    # (1, 32, 4, 4): h = 2, N*C*H*W = 512, N*H*W = 16
    channel = 512 + 32 * 2 + 2 * 2 + 2 + 2 * 32  # pool, fc1, BN, ReLU, fc2
    spatial = (
        2 * 16 * 32 + 2 * (2 * 16 * 2 * 9) + 3 * 3 * 2 * 16 + 16 * 2
    )  # reduce, 2 dilated, BN+ReLU x3, final
    combine = 4 * 512  # broadcast add, sigmoid, multiply, residual add
    assert channel == 646 and spatial == 2496
    assert modules.create("bam", 32).formula_macs((1, 32, 4, 4)) == channel + spatial + combine
    assert (
        Bam(32, output_norm=True).formula_macs((1, 32, 4, 4))
        == channel + spatial + combine + 2 * 32 + 2 * 16
    )


def test_registered_at_stage_transitions():
    info = modules.get_info("bam")
    assert (info.family, info.kind, info.placement) == ("bam", "gate", "transition")
    assert info.arxiv == "1807.06514"


def test_bad_arguments():
    with pytest.raises(ValueError, match="dilation must be a positive int"):
        Bam(16, dilation=0)
    with pytest.raises(ValueError, match="reduction must be"):
        Bam(16, reduction=-1)
    with pytest.raises(ValueError, match="min_channels"):
        Bam(16, min_channels=0)


def test_training_with_a_batch_of_one_is_refused_by_batchnorm():
    # documented: the channel branch's BN sees one (N, C/r) vector per sample
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        Bam(16).train()(torch.randn(1, 16, 4, 4))


def test_bam_resnet50_parameter_count():
    # one BAM after each of ResNet-50's stages 1-3, as the paper places it on ImageNet
    extra = sum(Bam(c).formula_params() for c in (256, 512, 1024))
    assert extra == 358_067
    assert round((25_557_032 + extra) / 1e6, 2) == 25.92
