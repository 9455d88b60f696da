"""Backbones with attention at its canonical place: ``build_model(arch, attn=None, ...)``.

The backbones are torchvision's ResNet-18/34/50/101 and MobileNetV2 (built without weights,
so nothing is downloaded), plus ``resnet_small``, a narrow ResNet for low-resolution inputs
(``modules.small_resnet``) that the accuracy runs use. ``build_model(arch)`` without attention
returns exactly torchvision's model, so its parameter count and MACs are torchvision's.

Insertion rules, by the registered entry's ``placement`` (see ``modules._registry``):

* ``block`` (gates: SE, ECA, CBAM, CA, ...): on the residual branch after the last BN, before
  the add -- after ``bn2`` in a ``BasicBlock``, after ``bn3`` in a ``Bottleneck`` (SE paper,
  Fig. 3). In MobileNetV2, after the depthwise 3x3 conv (with its BN and ReLU6) of every
  inverted residual, before the projection, as the Coordinate Attention paper does. The BN is
  replaced by ``nn.Sequential(bn, attention)``, so its state_dict keys gain a ``.0``.
* ``stage`` (GSoP): one block at the end of each ResNet stage (GSoP-Net1), appended to
  ``layer1..layer4``. Refused for MobileNetV2, whose stages are not delimited in torchvision.
* ``transition`` (BAM): one block after every stage but the last, at the bottlenecks where the
  map is downsampled (BAM paper, Fig. 1). Refused for MobileNetV2 like ``stage``.
* ``head`` (global pooling variants): replaces the ResNet's ``avgpool``. Refused for
  MobileNetV2, which pools with a function call inside ``forward``.
* ``conv`` (DyCAConv, SK, split attention): replaces the 3x3 ``conv2`` of every block, same
  in/out channels and stride; the block's BN and ReLU after it are kept, so the entry's
  ``backbone_kwargs`` (e.g. no trailing norm of its own) are applied. SK and split attention
  end in their own normalised, activated paths, so this keeps one BN (2 * C parameters) more per
  block than SKNet / ResNeSt do; we accept it to keep one rule for every conv entry. Refused for MobileNetV2,
  whose 3x3 convolutions are depthwise.
* ``none`` (cross-channel pooling: it changes the channel count): refused, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torchvision.models import MobileNetV2, mobilenet_v2, resnet18, resnet34, resnet50, resnet101
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.models.resnet import BasicBlock, Bottleneck

from ._registry import AttentionInfo, create, get_info

__all__ = ["ARCHS", "build_model", "list_archs"]


def _resnet_small(num_classes: int) -> nn.Module:
    from .small_resnet import small_resnet

    return small_resnet(num_classes=num_classes)


ARCHS: dict[str, Callable[[int], nn.Module]] = {
    "resnet18": lambda n: resnet18(weights=None, num_classes=n),
    "resnet34": lambda n: resnet34(weights=None, num_classes=n),
    "resnet50": lambda n: resnet50(weights=None, num_classes=n),
    "resnet101": lambda n: resnet101(weights=None, num_classes=n),
    "mobilenet_v2": lambda n: mobilenet_v2(weights=None, num_classes=n),
    "resnet_small": _resnet_small,
}
"""Architecture name -> builder taking ``num_classes``."""


def list_archs() -> list[str]:
    """The architectures :func:`build_model` accepts."""
    return sorted(ARCHS)


def build_model(
    arch: str, attn: str | None = None, num_classes: int = 1000, **attn_kwargs: Any
) -> nn.Module:
    """Build ``arch`` with the registered attention type ``attn`` at its canonical place.

    Args:
        arch: one of :func:`list_archs`.
        attn: a registered attention name, or ``None`` for the plain backbone.
        num_classes: classifier outputs.
        attn_kwargs: passed to every attention module built (e.g. ``reduction=8``).

    Raises:
        ValueError: unknown ``arch`` or ``attn``, or an entry that cannot go into ``arch``
            (the message says why).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; accepted: {', '.join(list_archs())}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    model = ARCHS[arch](num_classes)
    if attn is None:
        return model
    info = get_info(attn)
    kwargs = {**info.backbone_kwargs, **attn_kwargs}
    if info.placement == "none":
        raise ValueError(
            f"{attn!r} (kind {info.kind!r}) has no place in a backbone: {info.placement_note or 'refused'}"
        )
    if isinstance(model, MobileNetV2):
        _insert_mobilenet(model, info, kwargs)
    else:
        _insert_resnet(model, info, kwargs)
    return model


def _blocks(model: nn.Module) -> list[BasicBlock | Bottleneck]:
    return [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))]


def _block_out_channels(block: BasicBlock | Bottleneck) -> int:
    last_bn = block.bn3 if isinstance(block, Bottleneck) else block.bn2
    return int(last_bn.num_features)


def _insert_resnet(model: nn.Module, info: AttentionInfo, kwargs: dict[str, Any]) -> None:
    blocks = _blocks(model)
    if not blocks:
        raise ValueError(f"no ResNet blocks found in {type(model).__name__}")
    if info.placement == "block":
        for block in blocks:
            channels = _block_out_channels(block)
            if isinstance(block, Bottleneck):
                block.bn3 = nn.Sequential(block.bn3, create(info.name, channels, **kwargs))
            else:
                block.bn2 = nn.Sequential(block.bn2, create(info.name, channels, **kwargs))
    elif info.placement in ("stage", "transition"):
        stages = _stages(model)
        if info.placement == "transition":
            stages = stages[:-1]
        for stage in stages:
            channels = _block_out_channels(stage[-1])
            stage.append(create(info.name, channels, **kwargs))
    elif info.placement == "head":
        if not isinstance(getattr(model, "avgpool", None), nn.Module):
            raise ValueError(f"{type(model).__name__} has no avgpool module to replace with {info.name!r}")
        model.avgpool = create(info.name, int(model.fc.in_features), **kwargs)
    elif info.placement == "conv":
        for block in blocks:
            conv = block.conv2
            if conv.groups != 1 or conv.dilation != (1, 1):
                raise ValueError(
                    f"{info.name!r} replaces plain 3x3 convolutions; this block's conv2 has "
                    f"groups={conv.groups}, dilation={conv.dilation}"
                )
            block.conv2 = create(
                info.name,
                conv.in_channels,
                out_channels=conv.out_channels,
                kernel_size=conv.kernel_size[0],
                stride=conv.stride[0],
                **kwargs,
            )
    else:  # pragma: no cover - the registry refuses other placements
        raise ValueError(f"unknown placement {info.placement!r}")


def _stages(model: nn.Module) -> list[nn.Sequential]:
    stages = [
        child for name, child in model.named_children()
        if name.startswith("layer") and isinstance(child, nn.Sequential)
    ]
    if not stages:
        raise ValueError(f"{type(model).__name__} has no layer1..layerN stages")
    return stages


def _insert_mobilenet(model: nn.Module, info: AttentionInfo, kwargs: dict[str, Any]) -> None:
    if info.placement != "block":
        reasons = {
            "stage": "torchvision's MobileNetV2 has no stage modules to append to",
            "transition": "torchvision's MobileNetV2 has no stage modules to append to",
            "head": "MobileNetV2 pools with a function call inside forward, not with a module",
            "conv": "MobileNetV2's 3x3 convolutions are depthwise; this entry replaces dense ones",
        }
        raise ValueError(f"{info.name!r} (placement {info.placement!r}) is refused for mobilenet_v2: {reasons[info.placement]}")
    for block in model.modules():
        if not isinstance(block, InvertedResidual):
            continue
        layers = list(block.conv)
        depthwise_index = next(
            i for i, layer in enumerate(layers)
            if isinstance(layer, nn.Sequential)
            and isinstance(layer[0], nn.Conv2d)
            and layer[0].groups == layer[0].in_channels > 1
        )
        channels = layers[depthwise_index][0].out_channels
        layers.insert(depthwise_index + 1, create(info.name, channels, **kwargs))
        block.conv = nn.Sequential(*layers)
