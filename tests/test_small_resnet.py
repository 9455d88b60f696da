"""The small low-resolution ResNet of the cpu accuracy profile."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from modules.small_resnet import SmallResNet, small_resnet


def test_structure_matches_the_backbone_contract():
    model = small_resnet(num_classes=7)
    for name in ("conv1", "bn1", "relu", "layer1", "layer2", "layer3", "avgpool", "fc"):
        assert hasattr(model, name), name
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d)
    assert model.conv1.kernel_size == (3, 3)
    assert all(isinstance(stage, nn.Sequential) for stage in model.stages())
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 3
    assert model.fc.out_features == 7 and model.fc.in_features == 256


@pytest.mark.parametrize("size, final", [(32, 4), (64, 8), (48, 6)])
def test_shapes_and_final_map(size, final):
    model = small_resnet().eval()
    seen = {}
    model.layer3.register_forward_hook(lambda m, i, o: seen.update(map=o.shape))
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 10)
    assert seen["map"] == (2, 256, final, final)


def test_default_size_is_what_the_docstring_says():
    model = small_resnet()
    params = sum(p.numel() for p in model.parameters())
    assert params == 1_210_410
    macs = []

    def count(module, inputs, output):
        macs.append(output.numel() * module.weight[0].numel())

    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(count)
    model.eval()(torch.randn(1, 3, 32, 32))
    assert 44e6 < sum(macs) < 46e6  # "about 45 M MACs per image" at 32 px (convolutions)


def test_zero_init_residual_is_off_by_default_and_available():
    model = small_resnet()
    assert all(torch.all(m.bn2.weight == 1) for m in model.modules() if isinstance(m, BasicBlock))
    model = SmallResNet(zero_init_residual=True)
    for module in model.modules():
        if isinstance(module, BasicBlock):
            assert torch.count_nonzero(module.bn2.weight) == 0


def test_widths_blocks_and_strides_are_arguments():
    model = SmallResNet(5, widths=(16, 32), blocks=(2, 1), stem_width=8, first_stride=1)
    assert [len(s) for s in model.stages()] == [2, 1]
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 5)
    assert not hasattr(model, "layer3")


def test_meta_device_and_bad_arguments():
    assert next(small_resnet(device="meta").parameters()).device.type == "meta"
    with pytest.raises(ValueError, match="widths and blocks"):
        SmallResNet(widths=(16, 32), blocks=(1,))
    with pytest.raises(ValueError, match="num_classes"):
        SmallResNet(0)
    with pytest.raises(ValueError, match="widths"):
        SmallResNet(widths=(16, 0), blocks=(1, 1))
