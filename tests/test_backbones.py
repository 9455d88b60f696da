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


def test_gsop_goes_once_at_the_end_of_each_stage() -> None:
    model = build_model("resnet50", "gsop")
    for stage, channels in zip(
        (model.layer1, model.layer2, model.layer3, model.layer4), (256, 512, 1024, 2048), strict=True
    ):
        assert stage[-1].channels == channels
    assert sum(isinstance(m, modules.AttentionModule) for m in model.modules()) == 4


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
