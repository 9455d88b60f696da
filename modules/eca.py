"""Efficient Channel Attention (ECA) and its circular-padding variant.

Wang, Wu, Zhu, Li, Zuo, Hu, "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural
Networks", CVPR 2020, arXiv:1910.03151.

``s = sigmoid(conv1d_k(GAP(x)))``, ``y = x * s``: the pooled ``(N, C)`` vector is treated as a
one-channel sequence of length ``C`` and convolved with a single kernel of size ``k`` (no bias,
zero padding ``(k - 1) / 2``), so each channel's gate looks at its ``k`` neighbours. ``k``
parameters in all.

Kernel size. The paper's adaptive rule is ``k = |(log2(C) + b) / gamma|_odd`` with
``gamma = 2``, ``b = 1``, the odd rounding being that of the official code:
``t = int(abs((log2(C) + b) / gamma))``, ``k = t if t is odd else t + 1``. ResNet-50's
256/512/1024/2048 channels give 5/5/5/7. The released ECA-Net50 checkpoint
(BangguWu/ECANet: ``sotabench.py`` builds ``eca_resnet50(k_size=[3, 5, 5, 7])`` for it) uses
3/5/5/7, i.e. k = 3 in stage 1 where the formula gives 5; neither entry below reproduces that
mix exactly (``eca`` differs in stage 1 only: 3 blocks x 2 weights). The entries:

* ``eca``: the adaptive ``k`` above (the paper's design).
* ``eca_k3``: fixed ``k = 3``, the default of the official code (``k_size=3``) everywhere.
* ``eca_circular``: the adaptive ``k`` with *circular* padding of the channel sequence, so the
  first and last channels are neighbours (timm's ``CecaModule``, an addition by Chris Ha; not in
  the paper). Requires ``(k - 1) / 2 <= C``.

Deliberate differences:

* From timm: timm's ``EcaModule`` / ``CecaModule`` clamp the adaptive kernel to at least 3
  (``max(k, 3)``); we follow the paper and the official code, which give ``k = 1`` for
  ``C < 8`` (a per-channel scale). For ``C >= 8`` the two agree. timm computes ``log2`` as
  ``math.log(C, 2)``; we use ``math.log2``, identical for every ``C < 2**16`` (checked).
* Popular attention zoos often give the 1-D conv a bias or fix ``k = 3`` without saying so; the
  paper's ECA has no bias, and which ``k`` was used is part of each entry's name here.

Costs (``modules/_base.py``): ``N C H W`` (pool) + ``N C k`` (conv, as for any conv: output
length ``C``, one input channel, kernel ``k``) + ``N C`` (sigmoid) + ``N C H W`` (scale).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from ._base import (
    AttentionModule,
    ModuleFactory,
    Shape,
    check_odd_kernel,
    check_positive_int,
    numel,
)
from ._registry import register_attention

__all__ = ["EfficientChannelAttention", "adaptive_kernel_size"]


def adaptive_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """The paper's ``k = |(log2(C) + b) / gamma|_odd`` (``t = int(|.|)``, ``t + 1`` if even)."""
    t = int(abs((math.log2(channels) + beta) / gamma))
    return t if t % 2 else t + 1


class EfficientChannelAttention(AttentionModule):
    """ECA (arXiv:1910.03151): GAP -> 1-D conv over channels (k, no bias) -> sigmoid -> scale.

    Args:
        channels: input (and output) channels.
        kernel_size: odd size of the 1-D kernel; ``None`` picks the paper's adaptive ``k``
            from ``channels``, ``gamma`` and ``beta``.
        gamma: the paper's ``gamma`` of the adaptive rule.
        beta: the paper's ``b`` of the adaptive rule.
        circular: pad the channel sequence circularly (timm's ``CecaModule``) instead of
            with zeros (the paper).
        gate_layer: the gate's squashing function.
    """

    def __init__(
        self,
        channels: int,
        *,
        kernel_size: int | None = None,
        gamma: float = 2,
        beta: float = 1,
        circular: bool = False,
        gate_layer: ModuleFactory = nn.Sigmoid,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        if kernel_size is None:
            if not gamma > 0:
                raise ValueError(f"gamma must be > 0, got {gamma!r}")
            kernel_size = adaptive_kernel_size(channels, gamma, beta)
        check_odd_kernel(kernel_size, "or None for the adaptive size")
        padding = (kernel_size - 1) // 2
        if circular and padding > channels:
            raise ValueError(
                f"circular padding needs (kernel_size - 1) / 2 <= channels, got "
                f"kernel_size={kernel_size} for channels={channels}"
            )
        self.kernel_size = kernel_size
        self.circular = circular
        self.conv = nn.Conv1d(
            1,
            1,
            kernel_size,
            padding=padding,
            padding_mode="circular" if circular else "zeros",
            bias=False,
            device=device,
            dtype=dtype,
        )
        self.gate = gate_layer()

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        n, c = x.shape[:2]
        pooled = x.mean((2, 3)).view(n, 1, c)
        gate = self.gate(self.conv(pooled)).view(n, c, 1, 1)
        return x * gate

    def formula_params(self) -> int:
        return self.kernel_size

    def formula_macs(self, input_shape: Shape) -> int:
        n, c, _, _ = input_shape
        pool = numel(input_shape)
        conv = n * c * self.kernel_size
        gate = n * c
        scale = numel(input_shape)
        return pool + conv + gate + scale


_PAPER = "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks"
_OFFICIAL_SOURCE = (
    "https://github.com/BangguWu/ECANet models/eca_module.py, models/eca_resnet.py (eca_layer after "
    "bn3 of every ECABottleneck, bn2 of every ECABasicBlock, before the add)"
)
register_attention(
    "eca",
    EfficientChannelAttention,
    family="eca",
    paper=_PAPER,
    arxiv="1910.03151",
    kind="gate",
    official_source=_OFFICIAL_SOURCE,
    description="GAP -> 1-D conv over channels, adaptive k (gamma=2, b=1), no bias -> sigmoid -> scale",
)
register_attention(
    "eca_k3",
    EfficientChannelAttention,
    family="eca",
    paper=_PAPER,
    arxiv="1910.03151",
    kind="gate",
    official_source=_OFFICIAL_SOURCE,
    description="ECA with a fixed k=3 (the official code's default), no bias",
    kernel_size=3,
)
register_attention(
    "eca_circular",
    EfficientChannelAttention,
    family="eca",
    paper=_PAPER,
    arxiv="1910.03151",
    kind="gate",
    official_source=f"{_OFFICIAL_SOURCE}; the circular padding: "
    "https://github.com/huggingface/pytorch-image-models timm/layers/eca.py (CecaModule)",
    description="ECA with circular padding over channels, adaptive k (timm's CecaModule)",
    circular=True,
)
