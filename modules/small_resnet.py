"""A small residual network for low-resolution images, built from torchvision's ``BasicBlock``.

It is the backbone of the suite's ``cpu`` accuracy profile, where every attention type has to
be trained and evaluated on Imagenette in about a minute and a half on two CPU cores. For
scale: torchvision's ResNet-18 at 64 px costs about 149 M multiply-accumulates (MACs) per
image and about a minute per Imagenette epoch on that machine, three epochs' worth of the
whole per-run budget. This network keeps ResNet's structure and parts and drops what costs
most where it buys least at 32 px:

* **stem**: one 3x3 convolution, stride 1, BN, ReLU (``conv1``, ``bn1``, ``relu``) instead of
  the 7x7 stride-2 convolution and max-pool, which are there to bring 224 px down to 56 px and
  would leave a 32 px input 8 px wide before the first block;
* **stages** ``layer1..layerN``: ``nn.Sequential`` of ``torchvision.models.resnet.BasicBlock``
  (two 3x3 convolutions with BN, identity or 1x1-conv-BN shortcut), each stage halving the
  resolution and doubling the width. The first stage also halves it (``first_stride=2``), so
  the most expensive full-resolution work is the stem's single narrow convolution and the
  blocks run at 16, 8 and 4 px;
* **head**: ``avgpool`` (``nn.AdaptiveAvgPool2d(1)``), flatten, ``fc``, as in torchvision, so
  the same code that inserts attention into torchvision ResNets works here (after each block's
  last BN for gates, in place of ``avgpool`` for pooling heads, in place of ``conv2`` for conv
  entries).

With the defaults (stem 32, widths 64/128/256, one block per stage, 32 px input) the network
has 1.2 M parameters and about 45 M MACs per image, a third of ResNet-18 at 64 px, and it still
ends with a 4x4 map of 256 channels, so spatial attention (CBAM, coordinate attention) has
positions to weigh. Widths, depths, strides and the stem are arguments; the defaults are
sized for the ``cpu`` profile. ``zero_init_residual`` (off by default, as in torchvision) would
start every block's residual branch at zero; with one block per stage that leaves each stage a
lone 1x1 projection at the start, and in the ``cpu`` profile's five epochs it cost about four
points of top-1 (65.9% against 69.7% at seed 0), so it is not used.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from ._base import check_positive_int

__all__ = ["SmallResNet", "small_resnet"]


class SmallResNet(nn.Module):
    """A low-resolution ResNet of ``BasicBlock`` stages (see the module docstring).

    Args:
        num_classes: outputs of ``fc``.
        widths: output channels of each stage (``layer1``, ``layer2``, ...).
        blocks: ``BasicBlock`` count of each stage (same length as ``widths``).
        stem_width: channels of the stem convolution.
        stem_stride: stride of the stem convolution.
        first_stride: stride of ``layer1``'s first block (later stages always use 2).
        in_channels: image channels.
        zero_init_residual: set each block's ``bn2.weight`` to zero (blocks start as identity).
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        widths: Sequence[int] = (64, 128, 256),
        blocks: Sequence[int] = (1, 1, 1),
        stem_width: int = 32,
        stem_stride: int = 1,
        first_stride: int = 2,
        in_channels: int = 3,
        zero_init_residual: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("stem_width", stem_width)
        check_positive_int("stem_stride", stem_stride)
        check_positive_int("first_stride", first_stride)
        check_positive_int("in_channels", in_channels)
        if not widths or len(widths) != len(blocks):
            raise ValueError(
                f"widths and blocks must be non-empty and of equal length, got {tuple(widths)} and {tuple(blocks)}"
            )
        for w, b in zip(widths, blocks, strict=True):
            check_positive_int("widths[i]", w)
            check_positive_int("blocks[i]", b)
        self.num_stages = len(widths)
        self.conv1 = nn.Conv2d(in_channels, stem_width, 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        channels = stem_width
        for index, (width, count) in enumerate(zip(widths, blocks, strict=True), start=1):
            stride = first_stride if index == 1 else 2
            setattr(self, f"layer{index}", self._make_stage(channels, width, count, stride))
            channels = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self._init_weights(zero_init_residual)
        if device is not None or dtype is not None:  # BasicBlock takes no factory kwargs
            self.to(device=device, dtype=dtype)

    @staticmethod
    def _make_stage(in_ch: int, out_ch: int, count: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or in_ch != out_ch:
            downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )
        layers = [BasicBlock(in_ch, out_ch, stride, downsample)]
        layers += [BasicBlock(out_ch, out_ch) for _ in range(count - 1)]
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def stages(self) -> list[nn.Sequential]:
        """``[layer1, layer2, ...]``."""
        return [getattr(self, f"layer{i}") for i in range(1, self.num_stages + 1)]

    def forward(self, x: Tensor) -> Tensor:
        features = self.relu(self.bn1(self.conv1(x)))
        for stage in self.stages():
            features = stage(features)
        pooled = torch.flatten(self.avgpool(features), 1)
        return self.fc(pooled)


def small_resnet(num_classes: int = 10, **kwargs) -> nn.Module:
    """:class:`SmallResNet` with the ``cpu`` profile's defaults (keyword arguments override)."""
    return SmallResNet(num_classes, **kwargs)
