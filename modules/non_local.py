"""Non-local block, embedded-Gaussian version.

Wang, Girshick, Gupta, He, "Non-local Neural Networks", CVPR 2018, arXiv:1711.07971.
With ``theta, phi, g`` 1x1 convs C -> C/2 (bias) and positions ``i, j`` over H*W::

    f_ij = softmax_j(theta(x)_i . phi(x)_j)            # (N, HW, HW) affinities
    y_i  = sum_j f_ij g(x)_j                           # (N, C/2, HW)
    z    = x + BN(W y)                                 # W: 1x1 conv C/2 -> C (bias)

The BN's scale (gamma) starts at zero, as in the paper, so the block starts as the identity;
the convolutions start as in the official code (normal, std 0.01, zero bias).

Cost: the affinity matrix is HW x HW, so time and memory grow as ``O((H*W)^2)``: two bmm's of
``N * (HW)^2 * C/2`` MACs each plus an ``N * (HW)^2`` softmax, and an (N, HW, HW) tensor held
for backward (about 39 MB per image at 56x56 in fp32). That is why the paper inserts only a
few blocks (5 in res3/res4 for video, 1 in res4 for COCO), and why it is registered with
``placement="stage"`` rather than on every residual branch. The paper's optional max-pool
subsampling of ``phi`` and ``g`` is not implemented.

Differences from timm's ``NonLocalAttn``: timm reduces to ``make_divisible(C / 8, 8)`` channels
and scales the affinities by ``C ** -0.5`` by default; the paper uses C/2 and no scaling (its
embedded-Gaussian definition is the plain softmax of dot products). ``scale`` exposes the
factor; ``NonLocalAttn(C, rd_channels=C // 2, use_scale=False)`` computes the same function as
ours (the tests copy weights and check it). timm initialises the convs Kaiming fan-out.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._base import AttentionModule, ModuleFactory, Shape, check_positive_int, conv_macs, numel
from ._registry import register_attention

__all__ = ["NonLocal"]


class NonLocal(AttentionModule):
    """Embedded-Gaussian non-local block (arXiv:1711.07971): ``z = x + BN(W softmax(theta^T phi) g)``.

    Args:
        channels: input (and output) channels.
        reduction: inner width ``max(1, channels // reduction)`` (2 in the paper).
        scale: multiply the affinities by this before the softmax; ``None`` (the paper) skips
            the multiply.
        norm_layer: norm after the output conv (its weight is zero-initialised).
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 2,
        scale: float | None = None,
        norm_layer: ModuleFactory = nn.BatchNorm2d,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        check_positive_int("reduction", reduction)
        if scale is not None and not (isinstance(scale, (int, float)) and scale > 0):
            raise ValueError(f"scale must be None or a positive number, got {scale!r}")
        self.inner = max(1, channels // reduction)
        self.scale = None if scale is None else float(scale)
        factory = {"device": device, "dtype": dtype}
        d = self.inner
        self.theta = nn.Conv2d(channels, d, 1, bias=True, **factory)
        self.phi = nn.Conv2d(channels, d, 1, bias=True, **factory)
        self.g = nn.Conv2d(channels, d, 1, bias=True, **factory)
        self.out_conv = nn.Conv2d(d, channels, 1, bias=True, **factory)
        self.bn = norm_layer(channels, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official initialisation: convs normal(0, 0.01) with zero bias; BN gamma = 0."""
        for conv in (self.theta, self.phi, self.g, self.out_conv):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        if getattr(self.bn, "weight", None) is not None:
            nn.init.zeros_(self.bn.weight)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        n, _, h, w = x.shape
        theta = self.theta(x).flatten(2)  # (N, d, HW)
        phi = self.phi(x).flatten(2)
        g = self.g(x).flatten(2)
        affinity = torch.bmm(theta.transpose(1, 2), phi)  # (N, HW, HW)
        if self.scale is not None:
            affinity = affinity * self.scale
        attn = affinity.softmax(dim=2)
        y = torch.bmm(g, attn.transpose(1, 2))  # (N, d, HW): y_i = sum_j f_ij g_j
        return x + self.bn(self.out_conv(y.view(n, self.inner, h, w)))

    def formula_params(self) -> int:
        c, d = self.channels, self.inner
        return 3 * (c * d + d) + d * c + c + 2 * c

    def formula_macs(self, input_shape: Shape) -> int:
        n, c, h, w = input_shape
        d, hw = self.inner, h * w
        embed = 3 * conv_macs(n, c, d, (h, w))
        affinity = n * hw * hw * d + (n * hw * hw if self.scale is not None else 0)
        softmax = n * hw * hw
        aggregate = n * d * hw * hw
        out = conv_macs(n, d, c, (h, w)) + 2 * numel(input_shape) + numel(input_shape)
        return embed + affinity + softmax + aggregate + out


register_attention(
    "non_local",
    NonLocal,
    family="non_local",
    paper="Non-local Neural Networks",
    arxiv="1711.07971",
    kind="gate",
    placement="stage",
    placement_note="O((HW)^2) cost: the paper adds a few blocks (5 in res3/res4 for video, "
    "1 in res4 for COCO), never one per residual branch; one at the end of each stage here",
    description="embedded Gaussian: theta, phi, g 1x1 C->C/2; softmax(theta^T phi) g -> 1x1 "
    "C/2->C -> BN (gamma 0) -> residual add",
)
