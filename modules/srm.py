"""Style-based Recalibration Module (SRM).

Lee, Kim, Nam, "SRM: A Style-based Recalibration Module for Convolutional Neural Networks",
ICCV 2019, arXiv:1903.10829.

* style pooling: per channel, ``mu = mean_HW(x)`` and ``sigma = sqrt(var_HW(x) + eps)``
  (unbiased variance, ``eps = 1e-5``), giving ``t`` of shape ``(N, C, 2)``;
* style integration: a channel-wise fully connected layer, ``z_c = w_c0 * mu_c + w_c1 * sigma_c``
  (``C x 2`` weights, no bias), then BN and a sigmoid: ``g = sigmoid(BN(z))``;
* ``y = x * g``.

Parameters: ``cfc`` ``(C, 2)`` (zero-initialised, as the official code; the gate then starts at
``sigmoid(0) = 0.5``) and the BN's affine pair: ``4C`` in all. The names (``cfc``, ``bn``) match the
official code, so its state dicts load. ``cfc`` is declared exempt from weight decay
(:meth:`SRM.no_weight_decay`), as the official training does.

Implementation: ``torch.var`` over the spatial dims measured several times slower on CPU than
a mean followed by ``vector_norm(x - mu)``; the latter is the exact two-pass variance
(``||x - mu||^2 / (H W - 1)``), so it is used.

1x1 maps: the unbiased variance of one value is ``0 / 0`` (NaN in the official code). The
divisor ``H W - 1`` is clamped to at least 1, so a single position gives ``var = 0`` and
``sigma = sqrt(eps)``: finite, and what any constant map gives.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._base import AttentionModule, ModuleFactory, Shape, check_positive_int, numel
from ._registry import register_attention

__all__ = ["SRM"]


class SRM(AttentionModule):
    """SRM (arXiv:1903.10829): style pooling (mean, std) -> channel-wise FC -> BN -> sigmoid -> scale.

    Args:
        channels: input (and output) channels.
        eps: added to the variance before the square root.
        norm_layer: the norm after the channel-wise FC (built for ``channels``, applied to
            ``(N, C, 1, 1)``).
        gate_layer: the gate's squashing function.
    """

    def __init__(
        self,
        channels: int,
        *,
        eps: float = 1e-5,
        norm_layer: ModuleFactory = nn.BatchNorm2d,
        gate_layer: ModuleFactory = nn.Sigmoid,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        self.eps = float(eps)
        factory = {"device": device, "dtype": dtype}
        self.cfc = nn.Parameter(torch.zeros(channels, 2, **factory))
        self.bn = norm_layer(channels, **factory)
        self.gate = gate_layer()

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        c = x.shape[1]
        divisor = max(x.shape[2] * x.shape[3] - 1, 1)  # unbiased; 1 on a single position
        mean = x.mean((2, 3), keepdim=True)
        sq_dev_sum = torch.linalg.vector_norm(x - mean, dim=(2, 3), keepdim=True).square()
        std = sq_dev_sum.mul(1.0 / divisor).add_(self.eps).sqrt()
        weight = self.cfc.view(1, c, 2, 1, 1)
        style = torch.addcmul(mean * weight[:, :, 0], std, weight[:, :, 1])  # (N, C, 1, 1)
        gate = self.gate(self.bn(style))
        return x * gate

    def formula_params(self) -> int:
        return 2 * self.channels + 2 * self.channels

    def no_weight_decay(self) -> set[str]:
        """``cfc``, the style-integration weights: the official recipe does not decay them
        (its ``(C, 2)`` shape would otherwise put it with the decayed conv and linear weights)."""
        return {"cfc"}

    def formula_macs(self, input_shape: Shape) -> int:
        n, c, _, _ = input_shape
        full = numel(input_shape)
        mean = full
        centred = full  # x - mean
        sq_norm = 2 * full  # vector_norm: square + accumulate per element read (as var)
        std = 4 * n * c  # square the norm, / (HW - 1), + eps, sqrt
        integrate = 3 * n * c  # w0 * mean + w1 * std
        norm_gate = 2 * n * c + n * c  # BN (2/element), sigmoid
        scale = full
        return mean + centred + sq_norm + std + integrate + norm_gate + scale


register_attention(
    "srm",
    SRM,
    family="srm",
    paper="SRM: A Style-based Recalibration Module for Convolutional Neural Networks",
    arxiv="1903.10829",
    kind="gate",
    official_source="https://github.com/hyunjaelee410/style-based-recalibration-module "
    "models/recalibration_modules.py, models/resnet.py (SRMLayer after bn3 of every Bottleneck, "
    "bn2 of every BasicBlock, before the add)",
    description="Style pooling (channel mean, std) -> channel-wise FC (2 weights/channel) -> BN -> sigmoid -> scale",
)
