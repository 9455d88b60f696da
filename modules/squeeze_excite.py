"""Squeeze-and-Excitation and Effective Squeeze-and-Excitation.

* SE: Hu, Shen, Albanie, Sun, Wu, "Squeeze-and-Excitation Networks", CVPR 2018,
  arXiv:1709.01507. ``s = sigmoid(W2 relu(W1 GAP(x) + b1) + b2)``, ``y = x * s``, with
  ``W1: C -> C/r``, ``W2: C/r -> C`` (both with bias) and ``r = 16``.
* Effective SE: Lee, Park, "CenterMask: Real-Time Anchor-Free Instance Segmentation",
  CVPR 2020, arXiv:1911.06667. One FC ``C -> C`` (bias) without reduction, then a
  hard sigmoid: ``y = x * hsigmoid(W GAP(x) + b)``.

The FC layers are 1x1 convolutions on the pooled ``(N, C, 1, 1)`` map, as in timm and the
official Caffe model; this is the same maths as ``nn.Linear`` and keeps the parameter names
aligned with timm for weight copying.

Reduced width: ``C // r`` floored at ``min_channels`` (default 1), as the paper does
(``C / r``). timm's ``SEModule`` rounds the width to a multiple of 8 instead
(``make_divisible(C / r, 8)``, never below 8), which gives the same width for the ResNet
channel counts 128..2048 with r = 16 but not at ``C = 64`` (ours 4, timm's 8: ResNet-18/34's
first stage) nor in general; pass ``divisor=8`` to get timm's rounding.
"""

from __future__ import annotations

from torch import Tensor, nn

from ._base import (
    AttentionModule,
    ExciteMLP,
    ModuleFactory,
    Shape,
    check_positive_int,
    numel,
    reduced_channels,
)
from ._registry import register_attention

__all__ = ["SqueezeExcite", "EffectiveSqueezeExcite"]


class SqueezeExcite(ExciteMLP, AttentionModule):
    """SE block (arXiv:1709.01507): GAP -> FC(C, C/r) -> ReLU -> FC(C/r, C) -> sigmoid -> scale.

    Args:
        channels: input (and output) channels.
        reduction: the paper's ``r``.
        min_channels: smallest allowed bottleneck width.
        divisor: round the bottleneck width to a multiple of this (1: the paper's floor).
        act_layer: activation between the two FCs.
        gate_layer: the gate's squashing function.
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: float = 16,
        min_channels: int = 1,
        divisor: int = 1,
        act_layer: ModuleFactory = nn.ReLU,
        gate_layer: ModuleFactory = nn.Sigmoid,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.hidden = reduced_channels(channels, reduction, min_channels, divisor)
        self.build_excite(channels, self.hidden, channels, act_layer, device=device, dtype=dtype)
        self.gate = gate_layer()

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return x * self.gate(self.excite(x.mean((2, 3), keepdim=True)))

    def formula_params(self) -> int:
        return self.excite_params()

    def formula_macs(self, input_shape: Shape) -> int:
        n, c, _, _ = input_shape
        pool, gate, scale = numel(input_shape), n * c, numel(input_shape)
        return pool + self.excite_macs(n) + gate + scale


class EffectiveSqueezeExcite(AttentionModule):
    """Effective SE (arXiv:1911.06667): GAP -> FC(C, C) -> hard sigmoid -> scale.

    timm's ``EffectiveSEModule`` uses the same maths; its hard sigmoid is
    ``relu6(x + 3) / 6`` which is ``nn.Hardsigmoid``.
    """

    def __init__(
        self,
        channels: int,
        *,
        gate_layer: ModuleFactory = nn.Hardsigmoid,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.fc = nn.Conv2d(channels, channels, 1, bias=True, device=device, dtype=dtype)
        self.gate = gate_layer()

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        pooled = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc(pooled))

    def formula_params(self) -> int:
        return self.channels * self.channels + self.channels

    def formula_macs(self, input_shape: Shape) -> int:
        n, c, _, _ = input_shape
        return numel(input_shape) + n * c * c + n * c + numel(input_shape)


register_attention(
    "se",
    SqueezeExcite,
    family="squeeze_excite",
    paper="Squeeze-and-Excitation Networks",
    arxiv="1709.01507",
    kind="gate",
    official_source="https://github.com/hujie-frank/SENet models/SE-ResNet-50.prototxt (Caffe: the "
    "SE unit on the residual branch after the last BN of every block, before the add)",
    description="GAP -> FC C/r -> ReLU -> FC C -> sigmoid -> scale (r=16)",
)
register_attention(
    "ese",
    EffectiveSqueezeExcite,
    family="squeeze_excite",
    paper="CenterMask: Real-Time Anchor-Free Instance Segmentation",
    arxiv="1911.06667",
    kind="gate",
    official_source="https://github.com/youngwanLEE/CenterMask "
    "maskrcnn_benchmark/modeling/backbone/vovnet.py (eSEModule at the end of every OSA module of "
    "VoVNetV2, after its concat 1x1 conv, before the identity add; it has no ResNet placement, so "
    "ResNets get SE's: after the last BN of every block, before the add)",
    description="Effective SE: GAP -> FC C -> hard sigmoid -> scale",
)
