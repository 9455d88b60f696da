"""Triplet attention.

Misra, Nalamada, Arasanipalai, Hou, "Rotate to Attend: Convolutional Triplet Attention Module",
WACV 2021, arXiv:2010.03045.

Three branches, each a spatial-attention gate applied to a rotated view of ``x`` (N, C, H, W):

* ``Z-pool(t) = cat[max_1(t), mean_1(t)]`` (reduce dim 1 of the view to 2 channels);
* ``gate(t) = sigmoid(BN(conv_7x7(Z-pool(t))))`` (conv 2 -> 1, no bias);
* branch C-W on the view (N, H, C, W) (pools over H), branch H-C on (N, W, H, C) (pools over
  W), branch H-W on x itself (pools over C);
* ``y = (x * g_cw + x * g_hc + x * g_hw) / 3``, each gate rotated back to x's layout.

Implementation: rotating x and back (the official code permutes, copies, multiplies and
permutes again per branch) is not needed. Each Z-pool reduces the right axis of x directly,
each gate is broadcast in x's layout (``(N, C, 1, W)``, ``(N, C, H, 1)``, ``(N, 1, H, W)``), and
the average is taken over the gates: ``y = x * (g_cw / 3 + g_hc / 3 + g_hw / 3)``. This is the
same function with one product over the full map instead of three, and no copies of x.

As in the official code: ZPool order ``[max, mean]``, BN ``eps=1e-5, momentum=0.01``
(``norm_layer`` default), kernel 7, and ``no_spatial=True`` drops the H-W branch (then the
average is over two branches). Parameters: ``3 * (2 * 7 * 7 + 2) = 300``, independent of C.
"""

from __future__ import annotations

from functools import partial

import torch
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

__all__ = ["TripletAttention"]

_OFFICIAL_BN: ModuleFactory = partial(nn.BatchNorm2d, eps=1e-5, momentum=0.01)
"""The official code's norm: BN with ``momentum=0.01``."""


class _ZPoolGate(nn.Module):
    """conv k x k (2 -> 1, no bias) -> norm -> gate on a Z-pooled ``(N, 2, A, B)`` map."""

    def __init__(
        self,
        kernel_size: int,
        *,
        norm_layer: ModuleFactory,
        gate_layer: ModuleFactory,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False, **factory)
        self.bn = norm_layer(1, **factory)
        self.gate = gate_layer()

    def forward(self, pooled: Tensor) -> Tensor:
        return self.gate(self.bn(self.conv(pooled)))


def _zpool(x: Tensor, dim: int) -> Tensor:
    """``[max, mean]`` of ``x`` over ``dim``, stacked as 2 channels at dim 1."""
    return torch.stack((x.amax(dim), x.mean(dim)), dim=1)


class TripletAttention(AttentionModule):
    """Triplet attention (arXiv:2010.03045).

    Args:
        channels: input (and output) channels (any positive int: the parameters do not depend
            on it).
        kernel_size: the branches' conv kernel (odd).
        no_spatial: drop the H-W branch (the official ``no_spatial`` switch).
        norm_layer: norm after each branch's conv (BN with momentum 0.01 as the official code).
        gate_layer: the branches' squashing function.
    """

    def __init__(
        self,
        channels: int,
        *,
        kernel_size: int = 7,
        no_spatial: bool = False,
        norm_layer: ModuleFactory = _OFFICIAL_BN,
        gate_layer: ModuleFactory = nn.Sigmoid,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.kernel_size = check_odd_kernel(kernel_size, "same-size padding")
        self.no_spatial = bool(no_spatial)
        branch = partial(
            _ZPoolGate,
            kernel_size,
            norm_layer=norm_layer,
            gate_layer=gate_layer,
            device=device,
            dtype=dtype,
        )
        self.cw = branch()
        self.hc = branch()
        self.hw = None if self.no_spatial else branch()
        self.num_branches = 2 if self.no_spatial else 3

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        third = 1.0 / self.num_branches
        # C-W branch, view (N, H, C, W): pool over H, conv over (C, W), gate back to (N, C, 1, W)
        gate_cw = self.cw(_zpool(x, 2)).mul(third).transpose(1, 2)
        # H-C branch, view (N, W, H, C): pool over W, conv over (H, C), gate back to (N, C, H, 1)
        pooled_hc = _zpool(x, 3).transpose(2, 3)
        gate_hc = self.hc(pooled_hc).mul(third).transpose(1, 3)
        gate = gate_cw + gate_hc  # (N, C, 1, W) + (N, C, H, 1) -> (N, C, H, W)
        if self.hw is not None:
            gate_hw = self.hw(_zpool(x, 1)).mul(third)  # x itself: pool C, conv over (H, W)
            gate = gate.add_(gate_hw)
        return x * gate

    def formula_params(self) -> int:
        per_branch = 2 * self.kernel_size * self.kernel_size + 2  # conv + BN affine
        return self.num_branches * per_branch

    def formula_macs(self, input_shape: Shape) -> int:
        n, c, h, w = input_shape
        full = numel(input_shape)
        planes = [c * w, h * c] + ([] if self.no_spatial else [h * w])  # each branch's gate size
        k2 = self.kernel_size * self.kernel_size
        zpool = len(planes) * 2 * full  # max and mean, each reads every element once
        conv = sum(n * p * 2 * k2 for p in planes)
        branch_tail = sum(n * p * (2 + 1 + 1) for p in planes)  # BN (2), sigmoid, / num_branches
        combine = (len(planes) - 1) * full + full  # adds of the broadcast gates, x * gate
        return zpool + conv + branch_tail + combine


register_attention(
    "triplet",
    TripletAttention,
    family="triplet",
    paper="Rotate to Attend: Convolutional Triplet Attention Module",
    arxiv="2010.03045",
    kind="gate",
    official_source="https://github.com/landskape-ai/triplet-attention MODELS/triplet_attention.py, "
    "MODELS/resnet.py (TripletAttention after bn3 of every Bottleneck, bn2 of every BasicBlock, "
    "before the add)",
    description=(
        "Three Z-pool (max, mean) -> 7x7 conv -> BN -> sigmoid gates on the (C,W), (H,C) and (H,W) "
        "planes, averaged"
    ),
)
