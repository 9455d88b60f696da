"""build_model: plain backbones are torchvision's, published sizes are reproduced, every
registered type goes in at its documented place or is refused with a reason."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import modules
from modules import build_model


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def millions(model: nn.Module) -> float:
    return n_params(model) / 1e6


@pytest.mark.parametrize(
    ("arch", "published"),
    [("resnet18", 11_689_512), ("resnet50", 25_557_032), ("mobilenet_v2", 3_504_872)],
)
def test_plain_backbones_match_torchvision_published_counts(arch: str, published: int) -> None:
    assert n_params(build_model(arch)) == published


@pytest.mark.parametrize(("attn", "published_m"), [("se", 28.09), ("cbam", 28.09)])
def test_resnet50_with_se_or_cbam_has_published_size(attn: str, published_m: float) -> None:
    # published to two decimals: the real count must round to it
    assert round(millions(build_model("resnet50", attn)), 2) == published_m


def test_eca_resnet50_adds_fewer_than_100_weights() -> None:
    added = n_params(build_model("resnet50", "eca")) - n_params(build_model("resnet50"))
    # adaptive k: 3 blocks x 5 + 4 x 5 + 6 x 5 + 3 x 7 = 86
    assert 0 < added < 100
    assert added == 86


def test_mobilenet_v2_with_coordinate_attention_matches_ca_paper() -> None:
    assert millions(build_model("mobilenet_v2", "ca", reduction=32)) == pytest.approx(3.95, rel=0.005)


def test_gate_sits_after_last_bn_before_the_add() -> None:
    model = build_model("resnet50", "se")
    block = model.layer1[0]
    assert isinstance(block.bn3, nn.Sequential)
    assert isinstance(block.bn3[0], nn.BatchNorm2d)
    assert type(block.bn3[1]).__name__ == "SqueezeExcite"
    basic = build_model("resnet18", "se").layer2[1]
    assert type(basic.bn2[1]).__name__ == "SqueezeExcite"


def test_gsop_net1_is_the_official_network() -> None:
    # ZilinGao/Global-Second-order-Pooling-Convolutional-Networks torchvision/models/resnet.py:
    # chan_att after bn3 of the last Bottleneck of each stage, before the add; DR_stride 2 in
    # stage 1; layer4 stride 1 (14 x 14 head at 224 px)
    model = build_model("resnet50", "gsop").eval()
    gates = [m for m in model.modules() if isinstance(m, modules.AttentionModule)]
    assert len(gates) == 4
    for stage, channels in zip(
        (model.layer1, model.layer2, model.layer3, model.layer4), (256, 512, 1024, 2048), strict=True
    ):
        assert all(isinstance(b.bn3, nn.BatchNorm2d) for b in list(stage)[:-1])
        last = stage[-1]
        assert isinstance(last.bn3[0], nn.BatchNorm2d) and last.bn3[1].channels == channels
    assert [g.dr_stride for g in gates] == [2, 1, 1, 1]
    assert model.layer4[0].conv2.stride == (1, 1) and model.layer4[0].downsample[0].stride == (1, 1)
    # the gate multiplies bn3's output (before the add), not the block's output
    seen, bn_out = [], []
    model.layer1[-1].bn3[1].register_forward_hook(lambda m, args, out: seen.append(args[0]))
    model.layer1[-1].bn3[0].register_forward_hook(lambda m, args, out: bn_out.append(out))
    head = []
    model.layer4.register_forward_hook(lambda m, args, out: head.append(out.shape))
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    assert seen[0] is bn_out[0] and head == [(1, 2048, 14, 14)]
    assert n_params(model) == 25_557_032 + sum(g.formula_params() for g in gates) == 28_285_224
    # an explicit placement keeps torchvision's strides
    uniform = build_model("resnet50", "gsop", placement="block")
    assert uniform.layer4[0].conv2.stride == (2, 2)
    assert sum(isinstance(m, modules.AttentionModule) for m in uniform.modules()) == 16


def test_head_pooling_replaces_avgpool() -> None:
    model = build_model("resnet18", "gmp_amax").eval()
    assert isinstance(model.avgpool, modules.AttentionModule)
    x = torch.randn(2, 3, 8, 8)
    body = nn.Sequential(*list(model.children())[:-2])
    with torch.no_grad():
        expected = model.fc(body(x).amax((2, 3)))
        torch.testing.assert_close(model(x), expected)


def test_conv_kind_replaces_the_3x3_conv() -> None:
    model = build_model("resnet18", "dycaconv")
    assert type(model.layer2[0].conv2).__name__ == "DyCAConv"
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


def test_refusals_say_why() -> None:
    with pytest.raises(ValueError, match="channel count"):
        build_model("resnet18", "ccp_max")
    with pytest.raises(ValueError, match="unknown arch 'resnet9'.*resnet18"):
        build_model("resnet9")
    with pytest.raises(ValueError, match="depthwise"):
        build_model("mobilenet_v2", "dycaconv")
    with pytest.raises(ValueError, match="close matches"):
        build_model("resnet18", "sse")


@pytest.mark.parametrize("name", modules.list_attention())
def test_every_type_builds_into_resnet18_or_is_refused(name: str) -> None:
    info = modules.get_info(name)
    if info.placement == "none":
        with pytest.raises(ValueError, match="has no place"):
            build_model("resnet18", name, num_classes=10)
        return
    torch.manual_seed(0)
    model = build_model("resnet18", name, num_classes=10).eval()
    assert any(isinstance(m, modules.AttentionModule) for m in model.modules())
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 10) and torch.isfinite(out).all()


def test_bam_goes_after_every_stage_but_the_last() -> None:
    model = build_model("resnet50", "bam")
    placed = [stage[-1].channels for stage in (model.layer1, model.layer2, model.layer3)]
    assert placed == [256, 512, 1024]
    assert sum(isinstance(m, modules.AttentionModule) for m in model.modules()) == 3


# ------------------------------------------------------------ official placements (issue #13)

RESNET50 = 25_557_032


def _attention(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, modules.AttentionModule)]


def _stages(model: nn.Module) -> list[nn.Sequential]:
    return [model.layer1, model.layer2, model.layer3, model.layer4]


def test_gct_goes_before_every_convolution_as_the_official_resnet() -> None:
    # z-x-yang/GCT PyTorch/resnet.py: a GCT before the stem conv, conv1, conv2, conv3 and the
    # downsample conv of every Bottleneck, sized to that conv's input
    model = build_model("resnet50", "gct")
    plain_convs = [m for m in build_model("resnet50").modules() if isinstance(m, nn.Conv2d)]
    assert len(_attention(model)) == len(plain_convs) == 1 + 16 * 3 + 4 == 53
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential) and len(m) == 2]:
        if isinstance(seq[0], modules.AttentionModule):
            assert isinstance(seq[1], nn.Conv2d) and seq[0].channels == seq[1].in_channels
    assert model.conv1[0].channels == 3
    block = model.layer2[0]
    for name, channels in (("conv1", 256), ("conv2", 128), ("conv3", 128)):
        assert getattr(block, name)[0].channels == channels
    assert block.downsample[0][0].channels == 256
    # the official architecture: 3 parameters per input channel of every conv
    official = RESNET50 + 3 * sum(conv.in_channels for conv in plain_convs)
    assert n_params(model) == official == 25_624_625


def test_simam_goes_right_after_each_blocks_3x3_conv() -> None:
    # ZjjConan/SimAM networks/imagenet/resnet.py: conv2 -> SimAM -> bn2 (the 3x3 conv's width)
    model = build_model("resnet50", "simam")
    assert len(_attention(model)) == 16
    for stage, width in zip(_stages(model), (64, 128, 256, 512), strict=True):
        for block in stage:
            assert isinstance(block.conv2[0], nn.Conv2d) and block.conv2[0].kernel_size == (3, 3)
            assert type(block.conv2[1]).__name__ == "SimAM" and block.conv2[1].channels == width
            assert isinstance(block.bn3, nn.BatchNorm2d)
    assert n_params(model) == RESNET50  # parameter-free
    basic = build_model("resnet18", "simam").layer1[0]
    assert type(basic.conv2[1]).__name__ == "SimAM" and isinstance(basic.bn2, nn.BatchNorm2d)


@pytest.mark.parametrize("name", ["gc_add", "gc_scale"])
def test_global_context_goes_in_stages_2_to_4_only(name: str) -> None:
    # xvjiarui/GCNet: stage_with_gcb=(False, True, True, True), after the last BN of every block
    model = build_model("resnet50", name)
    assert not _attention(model.layer1)
    for stage, channels in zip(_stages(model)[1:], (512, 1024, 2048), strict=True):
        for block in stage:
            assert type(block.bn3[1]).__name__ == "GlobalContext" and block.bn3[1].channels == channels
    gates = _attention(model)
    assert len(gates) == 4 + 6 + 3
    assert n_params(model) == RESNET50 + sum(g.formula_params() for g in gates) == 28_078_773
    assert round(millions(model), 2) == 28.08  # GCNet paper, GC-ResNet-50 (r = 16)


def test_coordinate_attention_skips_the_expand_ratio_1_block() -> None:
    # houqb/CoordAttention mbv2_ca.py: CoordAtt only in inverted residuals with expand ratio != 1
    model = build_model("mobilenet_v2", "ca")
    first = model.features[1]  # t = 1: depthwise, projection, BN
    assert not _attention(first)
    gates = _attention(model)
    assert len(gates) == 16
    for block in list(model.features)[2:18]:
        layers = list(block.conv)
        assert type(layers[2]).__name__ == "CoordAttention"  # expansion, depthwise, CA, projection
        assert layers[2].channels == layers[1][0].out_channels
    assert n_params(model) == 3_504_872 + sum(g.formula_params() for g in gates) == 3_950_648
    assert round(millions(model), 2) == 3.95  # CA paper, MobileNetV2 + CA


def test_non_local_goes_after_every_other_block_of_res3_and_res4() -> None:
    # facebookresearch/video-nonlocal-net: nonlocal_mod = 2 in res3 and res4, after the block
    model = build_model("resnet50", "non_local")
    gates = _attention(model)
    assert len(gates) == 5
    positions = []
    for stage_number, stage in enumerate(_stages(model), start=1):
        for index, unit in enumerate(stage):
            if isinstance(unit, nn.Sequential):
                assert type(unit[0]).__name__ == "Bottleneck" and type(unit[1]).__name__ == "NonLocal"
                assert unit[1].channels == _block_channels(unit[0])
                positions.append((stage_number, index))
    assert positions == [(2, 1), (2, 3), (3, 1), (3, 3), (3, 5)]
    assert all(g.scale == pytest.approx(g.inner**-0.5) for g in gates)
    expected = RESNET50 + 2 * gates[0].formula_params() + 3 * gates[-1].formula_params()
    assert n_params(model) == expected
    # the unit sees the block's output (after the add and the ReLU)
    seen = []
    model.layer2[1][1].register_forward_hook(lambda m, args, out: seen.append(args[0]))
    block_out = []
    model.layer2[1][0].register_forward_hook(lambda m, args, out: block_out.append(out))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 64, 64))
    assert seen[0] is block_out[0]


def _block_channels(block: nn.Module) -> int:
    return block.bn3.num_features


def test_fcanet_gets_each_stages_map_size_and_never_pools_at_224() -> None:
    # cfzd/FcaNet: c2wh = {64: 56, 128: 28, 256: 14, 512: 7}
    model = build_model("resnet50", "fca").eval()
    gates = _attention(model)
    sizes = []
    for stage in _stages(model):
        sizes.append({(b.bn3[1].dct_h, b.bn3[1].dct_w) for b in stage})
    assert sizes == [{(56, 56)}, {(28, 28)}, {(14, 14)}, {(7, 7)}]
    seen = []
    for g in gates:
        g.register_forward_hook(lambda m, args, out: seen.append((m.dct_h, tuple(args[0].shape[2:]))))
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    assert len(seen) == 16 and all((h, h) == hw for h, hw in seen)
    assert n_params(model) == RESNET50 + sum(g.formula_params() for g in gates) == 28_071_976
    assert round(millions(model), 2) == 28.07  # FcaNet paper, FcaNet-50
    # resnet_small (low-resolution inputs) keeps the module default
    small = build_model("resnet_small", "fca", num_classes=10)
    assert {(g.dct_h, g.dct_w) for g in _attention(small)} == {(7, 7)}


@pytest.mark.parametrize("name", ["gct", "simam", "gc_add", "non_local"])
def test_uniform_block_placement_is_available_explicitly(name: str) -> None:
    model = build_model("resnet50", name, placement="block")
    gates = _attention(model)
    assert len(gates) == 16
    for stage in _stages(model):
        for block in stage:
            assert isinstance(block.bn3, nn.Sequential) and block.bn3[1] in gates
    ca = build_model("mobilenet_v2", "ca", placement="block")
    assert len(_attention(ca)) == 17  # the t = 1 block too


def test_explicit_placement_refusals_say_why() -> None:
    with pytest.raises(ValueError, match="accepted: head"):
        build_model("resnet18", "gmp_amax", placement="block")
    with pytest.raises(ValueError, match="accepted: block, pre_conv"):
        build_model("resnet18", "se", placement="everywhere")
    with pytest.raises(ValueError, match="placement='block'"):
        build_model("mobilenet_v2", "gct")
    assert len(_attention(build_model("mobilenet_v2", "gct", placement="block"))) == 17


def test_explicit_official_placement_is_the_default() -> None:
    a = build_model("resnet50", "gc_add", placement="block")
    b = build_model("resnet50", "gc_add")
    c = build_model("resnet50", "non_local", placement="after_block")  # every block
    assert len(_attention(a)) == 16 and len(_attention(b)) == 13 and len(_attention(c)) == 16
