"""Gated Channel Transformation (GCT).

Yang, Zhu, Wu, Yang, "Gated Channel Transformation for Visual Recognition", CVPR 2020,
arXiv:1909.11519.

With per-channel parameters ``alpha``, ``gamma``, ``beta`` (each ``(1, C, 1, 1)``), in the
paper's l2 mode:

* global context embedding: ``s_c = alpha_c * sqrt(sum_HW(x_c^2) + eps)``;
* channel normalisation: ``s_hat_c = sqrt(C) * s_c / ||s||_2``, written as the official code
  does: ``s_c * gamma_c / sqrt(mean_C(s^2) + eps)``;
* gating adaptation: ``y = x * (1 + tanh(s_hat_c + beta_c))`` (``gamma`` folded into ``s_hat``).

``eps = 1e-5``. Initialisation as the paper recommends: ``alpha = 1``, ``gamma = 0``,
``beta = 0``, so the module is the identity at initialisation; all three are declared exempt
from weight decay (:meth:`GatedChannelTransform.no_weight_decay`), as the official recipe does, (gate ``1 + tanh(0) = 1``).
Gradients still reach ``gamma`` and ``beta`` from the first step; ``alpha``'s gradient is exactly
zero while ``gamma = 0`` (it only acts through ``gamma``), but it is a defined zero tensor.

Placement (``build_model``'s default, ``placement="pre_conv"``): a GCT before every
convolution -- the stem conv, each block's conv1, conv2, conv3 and its downsample conv -- as
z-x-yang/GCT ``PyTorch/resnet.py`` does; its README calls this the paper's default setting (53
modules in ResNet-50, 3 parameters per input channel of each conv). The official ResNet puts
the stride in the first 1x1 conv; torchvision's (used here) puts it in the 3x3, which changes
no parameter count. ``placement="block"`` gives the uniform one-per-block rule (the README's
cheaper variant puts one before conv3 instead).

Differences from the paper and its code: only the l2 embedding is offered (the paper's
ablation also tries l1, and the official code has an ``l1`` mode). The sum of squares is
computed as ``vector_norm(x)^2`` (one fused pass, no squared copy of ``x``; it differs from
``sum(x^2)`` by rounding only, and its gradient at an all-zero channel is 0 as in the official
form).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._base import AttentionModule, Shape, check_positive_int, numel
from ._registry import register_attention

__all__ = ["GatedChannelTransform"]


class GatedChannelTransform(AttentionModule):
    """GCT (arXiv:1909.11519), l2 mode: ``y = x * (1 + tanh(gamma * s / ||s||_rms + beta))``.

    Args:
        channels: input (and output) channels.
        eps: added inside both square roots.
    """

    def __init__(self, channels: int, *, eps: float = 1e-5, device=None, dtype=None) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        if not eps > 0:
            raise ValueError(f"eps must be > 0 (it keeps the normalisation finite), got {eps!r}")
        self.eps = float(eps)
        factory = {"device": device, "dtype": dtype}
        self.alpha = nn.Parameter(torch.ones(1, channels, 1, 1, **factory))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1, **factory))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1, **factory))

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        sum_sq = torch.linalg.vector_norm(x, dim=(2, 3), keepdim=True).square()
        embedding = (sum_sq + self.eps).sqrt() * self.alpha
        norm = self.gamma / (embedding.square().mean(dim=1, keepdim=True) + self.eps).sqrt()
        gate = 1.0 + torch.tanh(embedding * norm + self.beta)
        return x * gate

    def formula_params(self) -> int:
        return 3 * self.channels

    def no_weight_decay(self) -> set[str]:
        """``alpha``, ``gamma`` and ``beta``: the official recipe decays none of them (its README
        warns that decaying the gating bias ``beta`` lowers accuracy)."""
        return {"alpha", "gamma", "beta"}

    def formula_macs(self, input_shape: Shape) -> int:
        n, c, _, _ = input_shape
        full = numel(input_shape)
        sum_sq = 2 * full + n * c  # vector_norm (2 per element read, as var), then its square
        embedding = 3 * n * c  # + eps, sqrt, * alpha
        norm = (
            n * c + n * c + 2 * n + n * c
        )  # square, mean over C, + eps and sqrt on (N,), gamma / .
        gate = 4 * n * c  # * norm, + beta, tanh, 1 +
        scale = full
        return sum_sq + embedding + norm + gate + scale

    def extra_repr(self) -> str:
        return f"channels={self.channels}, eps={self.eps}"


register_attention(
    "gct",
    GatedChannelTransform,
    family="gct",
    paper="Gated Channel Transformation for Visual Recognition",
    arxiv="1909.11519",
    kind="gate",
    placement="pre_conv",
    official_source="https://github.com/z-x-yang/GCT PyTorch/resnet.py (a GCT before the stem conv, conv1, conv2, "
    "conv3 and the downsample conv)",
    description="alpha * l2 norm over HW -> gamma / rms over C -> 1 + tanh(. + beta) -> scale (3C params)",
)
