"""Coordinate family: CA (timm parity, MobileNetV2 + CA size, cost) and DyCAConv (+ max strips)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zoo_fixtures import randomize

import modules
from modules.coordinate import CoordAttention, DyCAConv, coordinate_mip

# ---------------------------------------------------------------------------- CA


@pytest.mark.parametrize(("channels", "mip"), [(16, 8), (256, 8), (512, 16), (2048, 64)])
def test_ca_bottleneck_width_follows_official_code(channels: int, mip: int) -> None:
    assert coordinate_mip(channels) == mip
    assert CoordAttention(channels).mip == mip


@pytest.mark.parametrize(("channels", "shape_hw"), [(16, (5, 7)), (64, (8, 8)), (256, (3, 11))])
def test_ca_matches_timm(channels: int, shape_hw: tuple[int, int]) -> None:
    coord_attn = pytest.importorskip("timm.layers.coord_attn")
    torch.manual_seed(0)
    ours = randomize(CoordAttention(channels)).eval()
    theirs = coord_attn.CoordAttn(channels, rd_channels=ours.mip, bias=True).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, channels, *shape_hw)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_ca_gates_are_separable() -> None:
    ca = randomize(CoordAttention(32)).eval()
    x = torch.randn(2, 32, 6, 4)
    with torch.no_grad():
        a_h, a_w, pooled_h = ca.gates(x)
        assert a_h.shape == (2, 32, 6, 1) and a_w.shape == (2, 32, 1, 4)
        torch.testing.assert_close(pooled_h, x.mean(3, keepdim=True))
        torch.testing.assert_close(ca(x), x * a_h * a_w)


def test_mobilenet_v2_with_ca_has_the_published_size() -> None:
    tv_models = pytest.importorskip("torchvision.models")
    net = tv_models.mobilenet_v2()
    base = sum(p.numel() for p in net.parameters())
    depthwise = [
        m.out_channels
        for m in net.modules()
        if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
    ]
    assert len(depthwise) == 17
    # mbv2_ca.py: no CoordAtt in the expand-ratio-1 block (the first depthwise conv, 32 wide)
    assert depthwise[0] == 32
    total = base + sum(CoordAttention(c).formula_params() for c in depthwise[1:])
    assert base == 3_504_872
    assert total == 3_950_648
    assert round(total / 1e6, 2) == 3.95  # CA paper, Table: MobileNetV2 + CA


def test_ca_formula_macs_hand_count() -> None:
    # N=1, C=16, H=2, W=3, mip=8: pools 2*96, conv1 5*16*8, BN 2*5*8, h_swish 5*8,
    # conv_h 2*8*16, conv_w 3*8*16, sigmoids 5*16, two gate multiplies 2*96.
    expected = 192 + 640 + 80 + 40 + 256 + 384 + 80 + 192
    assert CoordAttention(16).formula_macs((1, 16, 2, 3)) == expected


def test_ca_without_norm() -> None:
    ca = CoordAttention(64, norm_layer=None)
    assert isinstance(ca.bn1, nn.Identity)
    assert ca.formula_params() == sum(p.numel() for p in ca.parameters())
    assert CoordAttention(64).formula_params() - ca.formula_params() == 2 * ca.mip


@pytest.mark.parametrize("kwargs", [{"reduction": 0}, {"min_channels": 0}, {"reduction": 2.5}])
def test_ca_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        CoordAttention(32, **kwargs)


# ---------------------------------------------------------------------------- DyCAConv


def _dyca_reference(m: DyCAConv, x: torch.Tensor) -> torch.Tensor:
    """DyCAConv written out from its definition, with the module's weights."""
    ca = m.coord
    n, c, h, w = x.shape

    def bn(t: torch.Tensor, layer: nn.BatchNorm2d) -> torch.Tensor:
        return F.batch_norm(
            t,
            layer.running_mean,
            layer.running_var,
            layer.weight,
            layer.bias,
            False,
            0.0,
            layer.eps,
        )

    strips = torch.cat(
        [F.adaptive_avg_pool2d(x, (h, 1)), F.adaptive_avg_pool2d(x, (1, w)).permute(0, 1, 3, 2)], 2
    )
    if ca.add_maxpool:
        max_strips = torch.cat(
            [
                F.adaptive_max_pool2d(x, (h, 1)),
                F.adaptive_max_pool2d(x, (1, w)).permute(0, 1, 3, 2),
            ],
            2,
        )
        strips = torch.cat([strips, max_strips], 1)
    y = F.hardswish(bn(F.conv2d(strips, ca.conv1.weight, ca.conv1.bias), ca.bn1))
    y_h, y_w = y[:, :, :h], y[:, :, h:].permute(0, 1, 3, 2)
    a_h = torch.sigmoid(F.conv2d(y_h, ca.conv_h.weight, ca.conv_h.bias))
    a_w = torch.sigmoid(F.conv2d(y_w, ca.conv_w.weight, ca.conv_w.bias))
    weights = torch.softmax(
        F.linear(F.adaptive_avg_pool2d(x, 1).view(n, c), m.mix_fc.weight, m.mix_fc.bias), 1
    )
    mixed = x * (weights[:, 0].view(n, 1, 1, 1) * a_w + weights[:, 1].view(n, 1, 1, 1) * a_h)
    out = F.conv2d(mixed, m.conv.weight, m.conv.bias, stride=m.stride, padding=m.kernel_size // 2)
    return F.silu(bn(out, m.out_norm))


@pytest.mark.parametrize("name", ["dycaconv", "dycaconv_max"])
@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [({}, (2, 16, 7, 5)), ({"out_channels": 40, "stride": 2, "kernel_size": 5}, (3, 64, 9, 8))],
)
def test_dycaconv_matches_its_definition(name: str, kwargs: dict, shape: tuple) -> None:
    m = randomize(modules.create(name, shape[1], **kwargs)).eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _dyca_reference(m, x), rtol=1e-5, atol=1e-5)


def test_dycaconv_mixing_weights_select_a_gate() -> None:
    m = randomize(DyCAConv(16, out_norm_layer=None, out_act_layer=None)).eval()
    x = torch.randn(2, 16, 6, 5)
    with torch.no_grad():
        a_h, a_w, _ = m.coord.gates(x)
        m.mix_fc.weight.zero_()
        m.mix_fc.bias.copy_(torch.tensor([40.0, -40.0]))  # w0 = 1: width gate only
        torch.testing.assert_close(m(x), m.conv(x * a_w))
        m.mix_fc.bias.copy_(torch.tensor([-40.0, 40.0]))  # w1 = 1: height gate only
        torch.testing.assert_close(m(x), m.conv(x * a_h))


def test_dycaconv_shapes_and_conv_contract() -> None:
    m = DyCAConv(32, out_channels=48, kernel_size=3, stride=2)
    assert m.in_channels == 32 and m.out_channels == 48
    assert m.output_shape((2, 32, 9, 8)) == (2, 48, 5, 4)
    assert m(torch.randn(2, 32, 9, 8)).shape == (2, 48, 5, 4)
    assert DyCAConv(32).out_channels == 32
    assert m.conv.bias is None  # followed by a BN (its own or the block's)
    biased = DyCAConv(32, out_channels=48, conv_bias=True)
    assert biased.formula_params() - DyCAConv(32, out_channels=48).formula_params() == 48
    assert biased.formula_params() == sum(p.numel() for p in biased.parameters())


def test_dycaconv_backbone_kwargs_drop_the_trailing_norm_and_act() -> None:
    for name in ("dycaconv", "dycaconv_max"):
        info = modules.get_info(name)
        assert info.kind == "conv" and info.placement == "conv"
        assert info.backbone_kwargs == {"out_norm_layer": None, "out_act_layer": None}
        bare = modules.create(name, 32, out_channels=64, **info.backbone_kwargs)
        assert isinstance(bare.out_norm, nn.Identity) and isinstance(bare.out_act, nn.Identity)
        assert not any(isinstance(mod, nn.SiLU) for mod in bare.modules())
        assert bare.formula_params() == sum(p.numel() for p in bare.parameters())
        full = modules.create(name, 32, out_channels=64)
        assert full.formula_params() - bare.formula_params() == 2 * 64
        shape = (2, 32, 8, 8)
        assert full.formula_macs(shape) - bare.formula_macs(shape) == 3 * 2 * 64 * 8 * 8


def test_dycaconv_max_uses_the_max_strips() -> None:
    avg = randomize(DyCAConv(16), seed=1).eval()
    mx = randomize(DyCAConv(16, add_maxpool=True), seed=2).eval()
    assert mx.coord.conv1.in_channels == 32 and avg.coord.conv1.in_channels == 16
    state = {k: v for k, v in avg.state_dict().items() if k != "coord.conv1.weight"}
    mx.load_state_dict(state, strict=False)
    x = torch.randn(2, 16, 6, 7)
    with torch.no_grad():
        mx.coord.conv1.weight[:, :16].copy_(avg.coord.conv1.weight)
        mx.coord.conv1.weight[:, 16:].zero_()  # max half off: same as the average-only block
        torch.testing.assert_close(mx(x), avg(x))
        mx.coord.conv1.weight[:, 16:].normal_()
        assert not torch.allclose(mx(x), avg(x), atol=1e-4)


def test_dycaconv_formula_macs_hand_count() -> None:
    # N=1, C=16 -> C_out=16, H=2, W=3, k=3, s=1, mip=8.
    ca_gates = 192 + 640 + 80 + 40 + 256 + 384 + 80  # as in the CA hand count, no multiplies
    mean = 16 * 2  # mean over H of the (1, 16, 2, 1) strip
    mix = 16 * 2 + 2  # FC C -> 2 and its softmax
    weighting = 16 * 3 + 16 * 2 + 96  # w0*a_w, w1*a_h, their sum
    scale = 96
    conv = 16 * 6 * 16 * 9
    out = 2 * 96 + 96  # BN + SiLU
    expected = ca_gates + mean + mix + weighting + scale + conv + out
    assert DyCAConv(16).formula_macs((1, 16, 2, 3)) == expected


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"kernel_size": 4}, "kernel_size"),
        ({"stride": 0}, "stride"),
        ({"out_channels": 0}, "out_channels"),
    ],
)
def test_dycaconv_bad_arguments(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        DyCAConv(16, **kwargs)


def test_dycaconv_refuses_wrong_input() -> None:
    m = DyCAConv(16, out_channels=32)
    with pytest.raises(ValueError, match="channels=16"):
        m(torch.randn(1, 32, 4, 4))


def _official_ca(m: CoordAttention, x: torch.Tensor) -> torch.Tensor:
    """houqb/CoordAttention CoordAtt.forward: strip means, concat along H, conv1 -> BN ->
    h_swish, split, conv_h / conv_w -> sigmoid, identity * a_w * a_h."""
    n, c, h, w = x.shape
    x_h = x.mean(dim=3, keepdim=True)  # pool_h: (N, C, H, 1)
    x_w = x.mean(dim=2, keepdim=True).permute(0, 1, 3, 2)  # pool_w, permuted: (N, C, W, 1)
    y = F.conv2d(torch.cat([x_h, x_w], dim=2), m.conv1.weight, m.conv1.bias)
    y = F.batch_norm(y, m.bn1.running_mean, m.bn1.running_var, m.bn1.weight, m.bn1.bias, False, 0.0, m.bn1.eps)
    y = y * F.relu6(y + 3) / 6
    y_h, y_w = torch.split(y, [h, w], dim=2)
    a_h = torch.sigmoid(F.conv2d(y_h, m.conv_h.weight, m.conv_h.bias))
    a_w = torch.sigmoid(F.conv2d(y_w.permute(0, 1, 3, 2), m.conv_w.weight, m.conv_w.bias))
    return x * a_w * a_h


@pytest.mark.parametrize(("channels", "size"), [(96, 112), (144, 56), (192, 28), (384, 14), (960, 7)])
def test_ca_matches_the_official_module_at_mobilenet_v2_sizes(channels: int, size: int) -> None:
    # the widths and maps the official placement sees in MobileNetV2 at 224 px
    m = randomize(CoordAttention(channels)).eval()
    x = torch.randn(1, channels, size, size)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _official_ca(m, x), rtol=1e-5, atol=1e-5)
