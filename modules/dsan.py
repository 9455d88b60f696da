"""DSAN-style channel attention (a gate fed by the global average and the global max) and the
small DSAN network of the same source.

Source: no paper. A CSDN blog post on cross-channel pooling ("cross channel pooling 的原理与代码实现")
ends with a Keras sketch of a "DSAN" model whose "channel
attention module" concatenates ``GlobalAveragePooling2D`` and ``GlobalMaxPooling2D`` of a
64-channel map, applies ``Dense(64, relu)`` then ``Dense(64, sigmoid)`` and multiplies the map by
the result. The sketch names no paper and gives no reduction ratio; it is registered with
``arxiv=None``. We keep its design and give it SE's bottleneck::

    s = sigmoid(W2 ReLU(W1 [GAP(x); GMP(x)] + b1) + b2)      W1: 2C -> C/r, W2: C/r -> C
    y = x * s

Differences from the sketch, deliberate:

* Reduction ``r = 16`` (hidden width ``C // r``, floor, at least ``min_channels``) where the
  sketch's hidden layer has as many units as the map has channels (``r = 1`` on its 64-channel
  map); pass ``reduction=1`` for that.
* The ``(N, 2C)`` vector is the concatenation ``[avg; max]`` in that order, as in the sketch.

Unlike CBAM's channel gate (one MLP shared by the two pooled vectors, outputs summed), the two
descriptors here are mixed by the first FC, which has ``2C * C/r`` weights: twice CBAM's first
layer.

Costs (``modules/_base.py``, ``h = C // r``): ``2 N C H W`` (average and max pool) +
``N 2C h`` (fc1) + ``N h`` (ReLU) + ``N h C`` (fc2) + ``N C`` (sigmoid) + ``N C H W`` (scale).

The network (:class:`DSANet`, ``build_model("dsan")``). What the Keras sketch builds::

    x1 = Conv2D(64, 3x3, stride 1, "same", relu)(inputs)
    x2, x3, x4 = Conv2D(64, 3x3, stride 2, "same", relu) three times   # /8 in space
    a  = Dense(64, sigmoid)(Dense(64, relu)(concat[GAP(x4), GMP(x4)]))  # channel attention
    x5 = x4 * a
    logits = Dense(classes)(Dense(256, relu)(Flatten(x5)))              # softmax in the sketch

(the sketch calls the four convolutions a "spatial attention module"; they compute no
attention, so the network has none). Ours is that network, with these changes:

* the channel attention is :class:`DsanChannelAttention` with ``reduction=1`` (hidden width 64
  on the 64-channel map, as the sketch's ``Dense(64)``);
* no final softmax: the network returns logits, as every ``build_model`` network does (the
  loss applies the log-softmax);
* Keras' ``padding="same"`` with stride 2 pads an even map by 0 before and 1 after; PyTorch's
  ``padding=1`` pads 1 on each side. The map sizes agree (``ceil(s / 2)``), the sampling grid is
  shifted by one pixel;
* ``Flatten`` is sized for ``input_size`` (32 px by default: a 4 x 4 x 64 map, 1024 inputs to the
  256-unit layer). At another input size the map is first average-pooled to that grid
  (skipped at the design size, where the network is the sketch's), so the same network runs at
  224 px for cost counts instead of failing; Keras flattens channels-last, we flatten NCHW (a
  fixed permutation of the dense weights, the same function class);
* PyTorch's default initialisation, not Keras' Glorot-uniform; the sketch's Adam(1e-3) and
  categorical cross-entropy are training choices left to the recipe.

At 32 px with 10 classes it has 389,962 parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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
from ._registry import NO_OFFICIAL_CODE, register_attention

__all__ = ["DsanChannelAttention", "DSANet", "dsan_net"]


class DsanChannelAttention(ExciteMLP, AttentionModule):
    """``x * sigmoid(FC(ReLU(FC([GAP(x); GMP(x)]))))`` with FCs ``2C -> C/r -> C`` (bias).

    Args:
        channels: input (and output) channels.
        reduction: hidden width is ``max(min_channels, channels // reduction)``.
        min_channels: smallest hidden width.
        act_layer: activation between the two FCs.
        gate_layer: the gate's squashing function.
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: float = 16,
        min_channels: int = 1,
        act_layer: ModuleFactory = nn.ReLU,
        gate_layer: ModuleFactory = nn.Sigmoid,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.hidden = reduced_channels(channels, reduction, min_channels)
        self.build_excite(2 * channels, self.hidden, channels, act_layer, device=device, dtype=dtype)
        self.gate = gate_layer()

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        pooled = torch.cat([x.mean((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)], dim=1)
        return x * self.gate(self.excite(pooled))

    def formula_params(self) -> int:
        return self.excite_params()

    def formula_macs(self, input_shape: Shape) -> int:
        n, c, _, _ = input_shape
        pools, gate, scale = 2 * numel(input_shape), n * c, numel(input_shape)
        return pools + self.excite_macs(n) + gate + scale


register_attention(
    "dsan_channel",
    DsanChannelAttention,
    family="dsan",
    paper="DSAN channel attention (Keras sketch in a CSDN blog post on cross-channel pooling; no paper)",
    arxiv=None,
    kind="gate",
    official_source=f"{NO_OFFICIAL_CODE}: a Keras sketch in a CSDN blog post on cross-channel "
    "pooling (the user's seed 000), no paper, which applies it once to its small network's last "
    "map; the ResNet placement is our choice, SE's rule (after the last BN of every block, before "
    "the add)",
    description="cat[GAP, GMP] (2C) -> FC C/r -> ReLU -> FC C -> sigmoid -> scale (r=16)",
)


class DSANet(nn.Module):
    """The small DSAN network of the Keras sketch (see the module docstring for what it changes).

    Args:
        num_classes: outputs of the last dense layer (logits).
        in_channels: image channels.
        width: channels of the four 3x3 convolutions (64 in the sketch).
        hidden: units of the dense layer before the classifier (256 in the sketch).
        input_size: the square input size the ``Flatten`` is sized for (32 px).
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        in_channels: int = 3,
        width: int = 64,
        hidden: int = 256,
        input_size: int = 32,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("num_classes", num_classes), ("in_channels", in_channels), ("width", width),
            ("hidden", hidden), ("input_size", input_size),
        ):
            check_positive_int(name, value)
        factory = {"device": device, "dtype": dtype}
        layers: list[nn.Module] = []
        channels = in_channels
        for stride in (1, 2, 2, 2):
            layers += [nn.Conv2d(channels, width, 3, stride=stride, padding=1, **factory), nn.ReLU()]
            channels = width
        self.features = nn.Sequential(*layers)
        self.attention = DsanChannelAttention(width, reduction=1, **factory)
        self.grid = math.ceil(math.ceil(math.ceil(input_size / 2) / 2) / 2)
        self.fc1 = nn.Linear(width * self.grid * self.grid, hidden, **factory)
        self.act = nn.ReLU()
        self.fc = nn.Linear(hidden, num_classes, **factory)

    def forward(self, x: Tensor) -> Tensor:
        mapped = self.attention(self.features(x))
        if mapped.shape[2:] != (self.grid, self.grid):
            mapped = F.adaptive_avg_pool2d(mapped, (self.grid, self.grid))
        return self.fc(self.act(self.fc1(mapped.flatten(1))))


def dsan_net(num_classes: int = 10) -> DSANet:
    """:class:`DSANet` at its design size (32 px), for :func:`modules.build_model`."""
    return DSANet(num_classes)
