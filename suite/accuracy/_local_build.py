"""TEMPORARY stand-in for modules.build_model (deleted when it lands on main)."""
from __future__ import annotations

from torch import nn
from torchvision.models import resnet as tv

import modules
from modules.small_resnet import small_resnet


def build_model(arch: str, attn: str | None = None, num_classes: int = 1000) -> nn.Module:
    model = small_resnet(num_classes) if arch == "resnet_small" else getattr(tv, arch)(num_classes=num_classes)
    if attn:
        for block in list(model.modules()):
            if isinstance(block, tv.BasicBlock):
                block.bn2 = nn.Sequential(block.bn2, modules.create(attn, block.bn2.num_features))
            elif isinstance(block, tv.Bottleneck):
                block.bn3 = nn.Sequential(block.bn3, modules.create(attn, block.bn3.num_features))
    return model
