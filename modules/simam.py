"""SimAM: a parameter-free attention from an energy function.

Yang, Zhang, Li, Xie, "SimAM: A Simple, Parameter-Free Attention Module for Convolutional
Neural Networks", ICML 2021 (PMLR 139:11863-11874; no arXiv version).

Per channel, with ``mu`` the mean over the ``H * W`` positions and ``n = H * W - 1``:

* ``d = (x - mu)^2``, ``v = sum_HW(d) / n``;
* ``e_inv = d / (4 * (v + lambda)) + 0.5`` (the inverse of the minimal energy);
* ``y = x * sigmoid(e_inv)``, with ``lambda = 1e-4``.

Placement (``build_model``'s default, ``placement="after_conv2"``): right after each block's
3x3 conv, before its BN, on the 3x3 conv's width, as ZjjConan/SimAM
``networks/imagenet/resnet.py`` does (``conv2 = Sequential(conv2, simam)``, for BasicBlock and
Bottleneck); ``placement="block"`` puts it after the last BN instead (4x the width in a
Bottleneck).

No parameters. The denominator is formed on the ``(N, C, 1, 1)`` sums as
``sum_HW(d) * (4 / n) + 4 * lambda`` (equal to ``4 * (v + lambda)``). ``torch.var_mean`` would
give ``mu`` and ``v`` in one call but measured slower on CPU than ``mean`` followed by a sum of
the ``d`` that the numerator needs anyway.

1x1 maps: the paper's ``n = H * W - 1`` is 0 and the official code returns NaN (``0 / 0``).
Here ``n`` is clamped to at least 1, so ``v = 0``,
``d = 0``, ``e_inv = 0.5`` and ``y = x * sigmoid(0.5)``: finite, and the same as the formula on
any map whose positions are all equal.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._base import AttentionModule, Shape, check_positive_int, numel
from ._registry import register_attention

__all__ = ["SimAM"]


class SimAM(AttentionModule):
    """SimAM (ICML 2021): ``y = x * sigmoid((x - mu)^2 / (4 (var + lambda)) + 0.5)``.

    Args:
        channels: input (and output) channels (any positive int: no parameters).
        e_lambda: the energy's regulariser ``lambda``.
    """

    def __init__(self, channels: int, *, e_lambda: float = 1e-4, device=None, dtype=None) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        if not e_lambda > 0:
            raise ValueError(
                f"e_lambda must be > 0 (it keeps the denominator positive), got {e_lambda!r}"
            )
        self.e_lambda = float(e_lambda)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        n = max(x.shape[2] * x.shape[3] - 1, 1)
        sq_dev = (x - x.mean((2, 3), keepdim=True)).square()
        denom = (
            sq_dev.sum((2, 3), keepdim=True).mul(4.0 / n).add_(4.0 * self.e_lambda)
        )  # 4 (v + lambda)
        energy_inv = (sq_dev / denom).add_(0.5)
        return x * torch.sigmoid(energy_inv)

    def formula_params(self) -> int:
        return 0

    def formula_macs(self, input_shape: Shape) -> int:
        n, c, _, _ = input_shape
        full = numel(input_shape)
        mean = full
        sq_dev = 2 * full  # subtract, square
        denom = full + 2 * n * c  # sum over HW, then * (4 / n) and + 4 lambda on (N, C)
        energy_inv = 2 * full  # divide, + 0.5
        gate = 2 * full  # sigmoid, x * gate
        return mean + sq_dev + denom + energy_inv + gate

    def extra_repr(self) -> str:
        return f"channels={self.channels}, e_lambda={self.e_lambda}"


register_attention(
    "simam",
    SimAM,
    family="simam",
    paper="SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural Networks",
    arxiv=None,
    kind="gate",
    placement="after_conv2",
    official_source="https://github.com/ZjjConan/SimAM networks/imagenet/resnet.py (conv2 -> SimAM -> bn2)",
    description="Parameter-free energy gate: x * sigmoid((x-mu)^2 / (4 (var + 1e-4)) + 0.5), per channel",
)
