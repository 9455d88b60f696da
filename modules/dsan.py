"""DSAN-style channel attention: a gate fed by both the global average and the global max.

Source: no paper. The user's seed 000 (a CSDN blog post on cross-channel pooling, see
``/work/shared/seeds/000_*``) ends with a Keras sketch of a "DSAN" model whose "channel
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
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._base import AttentionModule, ModuleFactory, Shape, check_positive_int, numel
from ._registry import register_attention

__all__ = ["DsanChannelAttention"]


class DsanChannelAttention(AttentionModule):
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
        if (
            isinstance(reduction, bool)
            or not isinstance(reduction, (int, float))
            or not reduction > 0
        ):
            raise ValueError(f"reduction must be a number > 0, got {reduction!r}")
        check_positive_int("min_channels", min_channels)
        self.hidden = max(min_channels, int(channels // reduction))
        factory = {"device": device, "dtype": dtype}
        self.fc1 = nn.Conv2d(2 * channels, self.hidden, 1, bias=True, **factory)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(self.hidden, channels, 1, bias=True, **factory)
        self.gate = gate_layer()

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        pooled = torch.cat([x.mean((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)], dim=1)
        gate = self.gate(self.fc2(self.act(self.fc1(pooled))))
        return x * gate

    def formula_params(self) -> int:
        c, h = self.channels, self.hidden
        return 2 * c * h + h + h * c + c

    def formula_macs(self, input_shape: Shape) -> int:
        n, c, _, _ = input_shape
        h = self.hidden
        pools = 2 * numel(input_shape)
        fcs = n * 2 * c * h + n * h * c
        act = n * h
        gate = n * c
        scale = numel(input_shape)
        return pools + fcs + act + gate + scale


register_attention(
    "dsan_channel",
    DsanChannelAttention,
    family="dsan",
    paper="DSAN channel attention (Keras sketch in a CSDN blog post, user's seed 000; no paper)",
    arxiv=None,
    kind="gate",
    description="cat[GAP, GMP] (2C) -> FC C/r -> ReLU -> FC C -> sigmoid -> scale (r=16)",
)
