"""Non-local block, embedded-Gaussian version.

Wang, Girshick, Gupta, He, "Non-local Neural Networks", CVPR 2018, arXiv:1711.07971.
With ``theta, phi, g`` 1x1 convs C -> C/2 (bias) and positions ``i, j`` over H*W::

    f_ij = softmax_j(d^-1/2 theta(x)_i . phi(x)_j)     # (N, HW, HW) affinities, d = C/2
    y_i  = sum_j f_ij g(x)_j                           # (N, C/2, HW)
    z    = x + BN(W y)                                 # W: 1x1 conv C/2 -> C (bias)

The ``d^-1/2`` factor is the official code's ``USE_SCALE: True``, set in every released config
of facebookresearch/video-nonlocal-net (``lib/models/nonlocal_helper.py`` multiplies the
affinities by ``dim_inner ** -0.5``); the paper's text defines the plain softmax of dot
products, which ``use_scale=False`` gives. The BN's scale (gamma) starts at zero, as in the paper, so the block starts as the identity;
the convolutions start as in the official code (normal, std 0.01, zero bias).

Cost: the affinity matrix is HW x HW, so time and memory grow as ``O((H*W)^2)``: two bmm's of
``N * (HW)^2 * C/2`` MACs each plus an ``N * (HW)^2`` softmax, and an (N, HW, HW) tensor held
for backward (about 39 MB per image at 56x56 in fp32). That is why the paper inserts only a
few blocks. Official placement (``build_model``'s default): the paper's 5-block configuration,
a non-local unit after every other block of res3 and res4 (``layer2`` blocks 2 and 4,
``layer3`` blocks 2, 4 and 6 of ResNet-50; the official ``nonlocal_mod = 2`` puts one after
block ``i`` when ``i % 2 == 1``), after the block's add and ReLU, as its own residual unit.
The official configs also max-pool ``phi`` and ``g`` by 2 in space (``USE_MAXPOOL``); that
subsampling is not implemented here, so our affinity matrix is 4x larger than theirs (the
parameters are the same).

Differences from timm's ``NonLocalAttn``: timm reduces to ``make_divisible(C / 8, 8)`` channels
and scales the affinities by ``C ** -0.5`` (the input width, not ``d``); the paper and the
official code use ``d = C/2`` and ``d ** -0.5``. ``scale`` overrides the factor;
``NonLocalAttn(C, rd_channels=C // 2, use_scale=True)`` equals ours with ``scale=C ** -0.5``
(the tests copy weights and check it, and check the default against the official form). timm initialises the convs Kaiming fan-out.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._base import (
    AttentionModule,
    ModuleFactory,
    Shape,
    check_positive_int,
    conv_macs,
    numel,
    reduced_channels,
)
from ._registry import BlockSelector, register_attention

__all__ = ["NonLocal"]


class NonLocal(AttentionModule):
    """Embedded-Gaussian non-local block (arXiv:1711.07971): ``z = x + BN(W softmax(theta^T phi) g)``.

    Args:
        channels: input (and output) channels.
        reduction: inner width ``max(1, channels // reduction)`` (2 in the paper).
        use_scale: multiply the affinities by ``inner ** -0.5`` before the softmax (the official
            ``USE_SCALE: True``); ``False``: the plain softmax of the paper's text.
        scale: an explicit factor, overriding ``use_scale``.
        norm_layer: norm after the output conv (its weight is zero-initialised).
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 2,
        use_scale: bool = True,
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
        self.inner = reduced_channels(channels, reduction)
        if scale is not None:
            self.scale: float | None = float(scale)
        else:
            self.scale = self.inner**-0.5 if use_scale else None
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
    placement="after_block",
    blocks=BlockSelector(stages=(2, 3), every=2),
    placement_note="O((HW)^2) cost: the paper adds a few blocks (5 in res3/res4), never one per "
    "residual branch",
    official_source="https://github.com/facebookresearch/video-nonlocal-net lib/models/resnet_video.py "
    "(nonlocal_mod = 2 in res3 and res4: 2 + 3 units after blocks, USE_SCALE: True)",
    description="embedded Gaussian: theta, phi, g 1x1 C->C/2; softmax(theta^T phi) g -> 1x1 "
    "C/2->C -> BN (gamma 0) -> residual add",
)
