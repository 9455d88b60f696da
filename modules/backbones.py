"""Backbones with attention at its official place: ``build_model(arch, attn=None, ...)``.

The backbones are torchvision's ResNet-18/34/50/101 and MobileNetV2 (built without weights,
so nothing is downloaded), plus ``resnet_small``, a narrow ResNet for low-resolution inputs
(``modules.small_resnet``) that the accuracy runs use, and ``dsan``, the small DSAN network of a
Keras sketch in a blog post (no paper; ``modules.dsan.DSANet``: four 3x3 convs, its channel attention, a dense head;
it takes no ``attn``). ``build_model(arch)`` without attention returns exactly torchvision's
model for the torchvision names, so its parameter count and MACs are torchvision's.

Every registered entry goes in at its *official* place by default: the placement and block
selection its family registers (``modules._registry``), read from the design's official code,
which each family's docstring cites. ``build_model(arch, attn, placement="block")`` instead puts
a ``gate`` entry after the last BN of every block (the uniform rule, useful to compare designs
at one place); any other gate placement can be asked for the same way. An explicit placement
applies to every block (no block selection). Placements:

* ``block`` (SE, ECA, CBAM, SRM, FcaNet, Triplet, ...): on the residual branch after the last BN,
  before the add -- after ``bn2`` in a ``BasicBlock``, after ``bn3`` in a ``Bottleneck`` (SE
  paper, Fig. 3). In MobileNetV2, after the depthwise 3x3 conv (with its BN and ReLU6) of every
  inverted residual, before the projection, as the Coordinate Attention paper does. The BN is
  replaced by ``nn.Sequential(bn, attention)``, so its state_dict keys gain a ``.0``. The entry's
  :class:`~modules._registry.BlockSelector` may restrict it: GCNet to stages 2-4 (c3-c5), CA in
  MobileNetV2 to the blocks with expand ratio != 1.
* ``pre_conv`` (GCT): before every convolution -- the stem ``conv1``, each block's convolutions
  and its downsample conv; ``conv`` becomes ``nn.Sequential(attention, conv)``.
* ``after_conv2`` (SimAM): right after the block's 3x3 ``conv2``, before ``bn2`` (on the width
  of the 3x3 conv); ``conv2`` becomes ``nn.Sequential(conv2, attention)``.
* ``after_block`` (non-local): a unit of its own after the selected blocks' output (after the
  add and the ReLU); the block becomes ``nn.Sequential(block, attention)``.
  GSoP-Net1 (``gsop``) goes in the last block of each of the 4 stages, and ``build_model``
  builds the official GSoP-Net1 network, not torchvision's ResNet: ``layer4`` has stride 1
  (a 14 x 14 head at 224 px) and the stage-1 module reduces with stride 2. Ask for
  ``placement=...`` to keep torchvision's strides.
* ``stage``: one module appended to the end of each ResNet stage (after the last block's add).
* ``transition`` (BAM): one block after every stage but the last, at the bottlenecks where the
  map is downsampled (BAM paper, Fig. 1).
* ``head`` (global pooling variants): replaces the ResNet's ``avgpool``.
* ``conv`` (DyCAConv, SK, split attention): replaces the 3x3 ``conv2`` of every block, same
  in/out channels and stride; the block's BN and ReLU after it are kept, so the entry's
  ``backbone_kwargs`` (e.g. no trailing norm of its own) are applied. SK and split attention
  end in their own normalised, activated paths, so this keeps one BN (2 * C parameters) more per
  block than SKNet / ResNeSt do; we accept it to keep one rule for every conv entry.
* ``none`` (cross-channel pooling: it changes the channel count): refused, with the reason.

MobileNetV2 takes only ``block`` (torchvision delimits no stages there, pools with a function
call, and its 3x3 convolutions are depthwise); other placements are refused with the reason.
Entries with ``stage_kwargs`` (FcaNet's per-stage DCT grid, sized for 224 px inputs) get them in
the ImageNet ResNets only; ``resnet_small`` keeps the module defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torchvision.models import MobileNetV2, mobilenet_v2, resnet18, resnet34, resnet50, resnet101
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.models.resnet import BasicBlock, Bottleneck

from ._registry import ALL_BLOCKS, GATE_PLACEMENTS, AttentionInfo, BlockSelector, create, get_info

__all__ = ["ARCHS", "build_model", "list_archs"]


def _resnet_small(num_classes: int) -> nn.Module:
    from .small_resnet import small_resnet

    return small_resnet(num_classes=num_classes)


def _dsan(num_classes: int) -> nn.Module:
    from .dsan import dsan_net

    return dsan_net(num_classes)


ARCHS: dict[str, Callable[[int], nn.Module]] = {
    "resnet18": lambda n: resnet18(weights=None, num_classes=n),
    "resnet34": lambda n: resnet34(weights=None, num_classes=n),
    "resnet50": lambda n: resnet50(weights=None, num_classes=n),
    "resnet101": lambda n: resnet101(weights=None, num_classes=n),
    "mobilenet_v2": lambda n: mobilenet_v2(weights=None, num_classes=n),
    "resnet_small": _resnet_small,
    "dsan": _dsan,
}
"""Architecture name -> builder taking ``num_classes``."""


def list_archs() -> list[str]:
    """The architectures :func:`build_model` accepts."""
    return sorted(ARCHS)


def build_model(
    arch: str,
    attn: str | None = None,
    num_classes: int = 1000,
    *,
    placement: str | None = None,
    **attn_kwargs: Any,
) -> nn.Module:
    """Build ``arch`` with the registered attention type ``attn`` at its official place.

    Args:
        arch: one of :func:`list_archs`.
        attn: a registered attention name, or ``None`` for the plain backbone.
        num_classes: classifier outputs.
        placement: ``None`` (default): the entry's official placement and block selection.
            Given, it applies to every block of every stage (no block selection); a ``gate``
            entry accepts any of ``GATE_PLACEMENTS`` (e.g. ``"block"``: after the last BN of
            every block), other kinds only their own. Per-stage module settings
            (``stage_kwargs``, e.g. FcaNet's DCT grid) are kept: they configure the module,
            not its place.
        attn_kwargs: passed to every attention module built (e.g. ``reduction=8``).

    Raises:
        ValueError: unknown ``arch``, ``attn`` or ``placement``, or an entry that cannot go into
            ``arch`` (the message says why).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; accepted: {', '.join(list_archs())}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    model = ARCHS[arch](num_classes)
    if attn is None:
        return model
    if arch == "dsan":
        raise ValueError(
            f"'dsan' is a whole network with its own channel attention (modules.dsan.DSANet); "
            f"it takes no attn, got {attn!r}"
        )
    info = get_info(attn)
    kwargs = {**info.backbone_kwargs, **attn_kwargs}
    if info.placement == "none":
        raise ValueError(
            f"{attn!r} (kind {info.kind!r}) has no place in a backbone: {info.placement_note or 'refused'}"
        )
    where, selector, stage_kwargs = info.placement, info.blocks, info.stage_kwargs
    if placement is not None:
        allowed = placement == info.placement or (info.kind == "gate" and placement in GATE_PLACEMENTS)
        if not allowed:
            accepted = GATE_PLACEMENTS if info.kind == "gate" else (info.placement,)
            raise ValueError(
                f"placement {placement!r} is not available for {attn!r} (kind {info.kind!r}); "
                f"accepted: {', '.join(accepted)}"
            )
        where, selector = placement, ALL_BLOCKS
    if arch == "resnet_small":
        stage_kwargs = {}
    elif placement is None and info.last_stage_stride is not None and not isinstance(model, MobileNetV2):
        _set_last_stage_stride(model, info.last_stage_stride)
    if isinstance(model, MobileNetV2):
        _insert_mobilenet(model, info, where, selector, kwargs)
    else:
        _insert_resnet(model, info, where, selector, stage_kwargs, kwargs)
    return model


def _blocks(model: nn.Module) -> list[BasicBlock | Bottleneck]:
    return [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))]


def _block_out_channels(block: BasicBlock | Bottleneck) -> int:
    last_bn = block.bn3 if isinstance(block, Bottleneck) else block.bn2
    return int(last_bn.num_features)


def _selected(
    model: nn.Module, selector: BlockSelector
) -> list[tuple[int, nn.Sequential, int, BasicBlock | Bottleneck]]:
    """``(stage, stage module, index, block)`` of every block ``selector`` picks (1-based stages)."""
    chosen = []
    for stage_number, stage in enumerate(_stages(model), start=1):
        blocks = [b for b in stage if isinstance(b, (BasicBlock, Bottleneck))]
        for index, block in enumerate(blocks):
            if selector.selects(stage_number, index, len(blocks)):
                chosen.append((stage_number, stage, index, block))
    return chosen


def _insert_resnet(
    model: nn.Module,
    info: AttentionInfo,
    where: str,
    selector: BlockSelector,
    stage_kwargs: dict[int, dict[str, Any]],
    kwargs: dict[str, Any],
) -> None:
    if not _blocks(model):
        raise ValueError(f"no ResNet blocks found in {type(model).__name__}")

    def make(channels: int, stage: int) -> nn.Module:
        return create(info.name, channels, **{**stage_kwargs.get(stage, {}), **kwargs})

    if where == "block":
        for stage, _, _, block in _selected(model, selector):
            channels = _block_out_channels(block)
            if isinstance(block, Bottleneck):
                block.bn3 = nn.Sequential(block.bn3, make(channels, stage))
            else:
                block.bn2 = nn.Sequential(block.bn2, make(channels, stage))
    elif where == "pre_conv":
        stem = model.conv1
        model.conv1 = nn.Sequential(make(stem.in_channels, 0), stem)
        for stage, _, _, block in _selected(model, selector):
            names = ("conv1", "conv2", "conv3") if isinstance(block, Bottleneck) else ("conv1", "conv2")
            for name in names:
                conv = getattr(block, name)
                setattr(block, name, nn.Sequential(make(conv.in_channels, stage), conv))
            if block.downsample is not None:
                conv = block.downsample[0]
                block.downsample[0] = nn.Sequential(make(conv.in_channels, stage), conv)
    elif where == "after_conv2":
        for stage, _, _, block in _selected(model, selector):
            block.conv2 = nn.Sequential(block.conv2, make(block.conv2.out_channels, stage))
    elif where == "after_block":
        for stage, stage_module, index, block in _selected(model, selector):
            stage_module[index] = nn.Sequential(block, make(_block_out_channels(block), stage))
    elif where in ("stage", "transition"):
        stages = _stages(model)
        if where == "transition":
            stages = stages[:-1]
        for stage_number, stage in enumerate(stages, start=1):
            stage.append(make(_block_out_channels(stage[-1]), stage_number))
    elif where == "head":
        if not isinstance(getattr(model, "avgpool", None), nn.Module):
            raise ValueError(f"{type(model).__name__} has no avgpool module to replace with {info.name!r}")
        model.avgpool = create(info.name, int(model.fc.in_features), **kwargs)
    elif where == "conv":
        for block in _blocks(model):
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
        raise ValueError(f"unknown placement {where!r}")


def _set_last_stage_stride(model: nn.Module, stride: int) -> None:
    """Give the last stage's first block ``stride`` (its strided conv and its downsample conv)."""
    first = _stages(model)[-1][0]
    convs = [m for m in first.modules() if isinstance(m, nn.Conv2d) and m.stride != (1, 1)]
    for conv in convs:
        conv.stride = (stride, stride)


def _stages(model: nn.Module) -> list[nn.Sequential]:
    stages = [
        child for name, child in model.named_children()
        if name.startswith("layer") and isinstance(child, nn.Sequential)
    ]
    if not stages:
        raise ValueError(f"{type(model).__name__} has no layer1..layerN stages")
    return stages


_MOBILENET_REFUSALS = {
    "pre_conv": "this entry's official place is before every convolution of a ResNet; "
    "pass placement='block' for the depthwise-conv place",
    "after_conv2": "this entry's official place is after a ResNet block's 3x3 conv; "
    "pass placement='block' for the depthwise-conv place",
    "after_block": "this entry's official place is after selected ResNet blocks; "
    "pass placement='block' for the depthwise-conv place",
    "stage": "torchvision's MobileNetV2 has no stage modules to append to",
    "transition": "torchvision's MobileNetV2 has no stage modules to append to",
    "head": "MobileNetV2 pools with a function call inside forward, not with a module",
    "conv": "MobileNetV2's 3x3 convolutions are depthwise; this entry replaces dense ones",
}


def _insert_mobilenet(
    model: nn.Module, info: AttentionInfo, where: str, selector: BlockSelector, kwargs: dict[str, Any]
) -> None:
    if where != "block":
        raise ValueError(
            f"{info.name!r} (placement {where!r}) is refused for mobilenet_v2: {_MOBILENET_REFUSALS[where]}"
        )
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
        if selector.skip_unexpanded and depthwise_index == 0:  # expand ratio 1: no expansion conv
            continue
        channels = layers[depthwise_index][0].out_channels
        layers.insert(depthwise_index + 1, create(info.name, channels, **kwargs))
        block.conv = nn.Sequential(*layers)
