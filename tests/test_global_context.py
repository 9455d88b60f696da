"""Global Context block: timm parity (add and scale fusion), official init, pooling, cost."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zoo_fixtures import randomize

import modules
from modules.global_context import GlobalContext


def _copy_from_timm(ours: GlobalContext, theirs: nn.Module) -> None:
    mlp = theirs.mlp_add if ours.fusion == "add" else theirs.mlp_scale
    ours.conv_attn.load_state_dict(theirs.conv_attn.state_dict())
    ours.fc1.load_state_dict(mlp.fc1.state_dict())
    ours.norm.load_state_dict(mlp.norm.state_dict())
    ours.fc2.load_state_dict(mlp.fc2.state_dict())


@pytest.mark.parametrize("fusion", ["add", "scale"])
@pytest.mark.parametrize(("channels", "shape_hw"), [(16, (5, 7)), (64, (8, 8)), (256, (3, 9))])
def test_gc_matches_timm(fusion: str, channels: int, shape_hw: tuple) -> None:
    timm_layers = pytest.importorskip("timm.layers")
    ours = GlobalContext(channels, fusion=fusion).eval()
    theirs = timm_layers.GlobalContext(
        channels,
        fuse_add=fusion == "add",
        fuse_scale=fusion == "scale",
        rd_channels=ours.hidden,
    )
    randomize(theirs).eval()
    mlp = theirs.mlp_add if fusion == "add" else theirs.mlp_scale
    mlp.norm.eps = ours.norm.eps  # timm's LayerNorm2d uses 1e-6, the official GCNet 1e-5
    _copy_from_timm(ours, theirs)
    x = torch.randn(2, channels, *shape_hw)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_registered_fusions() -> None:
    for name, fusion in (("gc_add", "add"), ("gc_scale", "scale")):
        info = modules.get_info(name)
        assert info.kind == "gate" and info.placement == "block" and info.family == "global_context"
        assert modules.create(name, 64).fusion == fusion


@pytest.mark.parametrize(("channels", "hidden"), [(16, 1), (64, 4), (256, 16), (2048, 128)])
def test_gc_ratio_is_one_sixteenth(channels: int, hidden: int) -> None:
    m = GlobalContext(channels)
    assert m.hidden == hidden and m.fc1.out_channels == hidden
    assert m.formula_params() == sum(p.numel() for p in m.parameters())


def test_gc_official_initialisation() -> None:
    x = torch.randn(2, 32, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(GlobalContext(32, fusion="add").eval()(x), x)
        torch.testing.assert_close(GlobalContext(32, fusion="scale").eval()(x), 0.5 * x)


def test_gc_uniform_attention_is_average_pooling() -> None:
    m = randomize(GlobalContext(32, fusion="add")).eval()
    x = torch.randn(2, 32, 4, 6)
    with torch.no_grad():
        m.conv_attn.weight.zero_()  # equal logits: softmax weights 1/HW
        expected = x + m.fc2(m.act(m.norm(m.fc1(x.mean((2, 3), keepdim=True)))))
        torch.testing.assert_close(m(x), expected)


def test_gc_context_is_softmax_weighted_sum() -> None:
    m = randomize(GlobalContext(16, fusion="add")).eval()
    x = torch.randn(1, 16, 3, 4)
    with torch.no_grad():
        weights = m.conv_attn(x).flatten(1).softmax(1)  # (1, 12)
        context = (x.flatten(2) * weights[:, None, :]).sum(2).view(1, 16, 1, 1)
        expected = x + m.fc2(m.act(m.norm(m.fc1(context))))
        torch.testing.assert_close(m(x), expected)


def test_gc_layer_norm_normalises_the_hidden_channels() -> None:
    m = GlobalContext(64)
    t = torch.randn(3, m.hidden, 1, 1) * 5 + 2
    with torch.no_grad():
        out = m.norm(t)
    torch.testing.assert_close(out.mean(1), torch.zeros(3, 1, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(1, unbiased=False), torch.ones(3, 1, 1), atol=1e-3, rtol=0)


def test_gc_formula_macs_hand_count() -> None:
    # N=1, C=32, H=2, W=3 (HW=6, 192 elements), hidden=2.
    attn = 6 * 32 + 6  # conv C -> 1 and softmax over HW
    context = 32 * 6  # bmm (1, 32, 6) x (1, 6, 1)
    transform = 32 * 2 + 5 * 2 + 2 + 2 * 32  # fc1, LN, ReLU, fc2
    add = 192
    assert (
        GlobalContext(32, fusion="add").formula_macs((1, 32, 2, 3))
        == attn + context + transform + add
    )
    scale = 32 + 192  # sigmoid + multiply
    assert (
        GlobalContext(32, fusion="scale").formula_macs((1, 32, 2, 3))
        == attn + context + transform + scale
    )


@pytest.mark.parametrize(
    ("kwargs", "word"), [({"fusion": "mul"}, "fusion"), ({"reduction": 0}, "reduction")]
)
def test_gc_bad_arguments(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        GlobalContext(32, **kwargs)


def _official_gc(m: GlobalContext, x: torch.Tensor) -> torch.Tensor:
    """xvjiarui/GCNet ContextBlock (pooling_type 'att'): softmax over HW of the 1x1 mask conv,
    context = x weighted by it, then conv -> LayerNorm([C/r, 1, 1]) -> ReLU -> conv."""
    n, c, h, w = x.shape
    mask = F.conv2d(x, m.conv_attn.weight, m.conv_attn.bias).view(n, 1, h * w).softmax(dim=2)
    context = torch.matmul(x.view(n, 1, c, h * w), mask.unsqueeze(-1)).view(n, c, 1, 1)
    t = F.conv2d(context, m.fc1.weight, m.fc1.bias)
    t = F.layer_norm(t, [m.hidden, 1, 1], m.norm.weight.view(-1, 1, 1), m.norm.bias.view(-1, 1, 1), 1e-5)
    t = F.conv2d(F.relu(t), m.fc2.weight, m.fc2.bias)
    return x + t if m.fusion == "add" else x * torch.sigmoid(t)


@pytest.mark.parametrize("fusion", ["add", "scale"])
@pytest.mark.parametrize(("channels", "size"), [(512, 28), (1024, 14), (2048, 7)])
def test_gc_matches_the_official_block_at_the_official_stage_sizes(fusion: str, channels: int, size: int) -> None:
    # the official placement: every block of stages 2-4 of ResNet-50 at 224 px
    m = randomize(GlobalContext(channels, fusion=fusion)).eval()
    x = torch.randn(1, channels, size, size)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _official_gc(m, x), rtol=1e-5, atol=1e-5)
