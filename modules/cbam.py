"""Convolutional Block Attention Module (CBAM) and its two halves.

Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018, arXiv:1807.06521.

Channel gate (applied first)::

    Mc = sigmoid(MLP(AvgPool(x)) + MLP(MaxPool(x)))      MLP: C -> C/r (bias) -> ReLU -> C (bias)
    x' = x * Mc

with ONE MLP shared by the average- and the max-pooled vectors, ``r = 16``.

Spatial gate (applied to ``x'``)::

    Ms = sigmoid(BN(conv7x7([max_c(x'); mean_c(x')])))   conv: 2 -> 1 channel, no bias
    y  = x' * Ms

There is no residual inside the module: in a ResNet the block's own shortcut adds the input
back (the paper puts CBAM on the residual branch before the add).

Entries: ``cbam`` (both gates), ``cbam_channel`` (channel gate only), ``cbam_spatial`` (spatial
gate only). With ``r = 16`` on ResNet-50 this gives the paper's 28.09M parameters for
CBAM-ResNet-50: the shared MLP with biases (as SE), a 7x7 conv without bias and an affine BN.

Reduced width: ``C // r`` floored, at least ``min_channels`` (default 1), as the paper's
``C / r``. timm rounds instead (``make_divisible(C / r, 1, round_limit=0)``, i.e.
``round(C / r)``): the two agree whenever ``C`` is a multiple of ``r`` (all ResNet widths), not
in general (``C = 40``: 2 here, 3 in timm).

Differences from timm's ``CbamModule`` (``timm.layers.cbam``), which we do not follow:

* timm's spatial gate concatenates ``[mean, max]``; the paper (and we) use ``[max, mean]``.
  The maths is the same up to the order of the conv's two input channels: a timm checkpoint
  maps to ours with ``weight.flip(1)``.
* timm's shared MLP has no bias by default (``mlp_bias=False``); the paper's MLP (and its
  parameter count) has biases. ``CbamModule(..., mlp_bias=True)`` matches ours.
* timm's spatial conv + BN is the same (conv without bias, affine BN, padding 3).
* timm's ``LightCbamModule`` is a different design, not the paper's: it averages
  ``0.5 * (avg + max)`` *before* the MLP (so the ReLU sees the mixed vector and the biases
  count once), and its spatial gate convolves the single map ``0.5 * (mean + max)``. Only the
  spatial half can be reproduced exactly (our two conv input channels tied to half of timm's
  one); see ``tests/test_cbam.py``.

Costs (``modules/_base.py``, ``h = C // r``). Channel gate: ``2 N C H W`` (avg + max pool) +
``2 * 2 N C h`` (the shared MLP on two vectors) + ``2 N h`` (ReLU) + ``N C`` (add) + ``N C``
(sigmoid) + ``N C H W`` (scale). Spatial gate: ``2 N C H W`` (max and mean over C) +
``N H W * 2 * k * k`` (conv) + ``2 N H W`` (BN) + ``N H W`` (sigmoid) + ``N C H W`` (scale).
The cost formulas assume the default affine ``BatchNorm2d`` for ``norm_layer``.

Training details of the official code (Jongchan/attention-module ``MODELS/cbam.py`` and
``MODELS/model_resnet.py``), followed here: the spatial gate's BN has ``momentum=0.01``
(``BasicConv``), and its weight starts at zero (the official ResNet's ``init_weights`` sets
every ``SpatialGate`` BN weight to 0), so the spatial gate starts at ``sigmoid(0) = 0.5``
everywhere.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from ._base import (
    AttentionModule,
    ExciteMLP,
    ModuleFactory,
    Shape,
    check_odd_kernel,
    check_positive_int,
    numel,
    reduced_channels,
)
from ._registry import register_attention

__all__ = ["CbamChannelGate", "CbamSpatialGate", "Cbam", "cbam_batch_norm"]

cbam_batch_norm: ModuleFactory = partial(nn.BatchNorm2d, momentum=0.01)
"""The official spatial-gate BN: ``BatchNorm2d(eps=1e-5, momentum=0.01, affine=True)``."""


class CbamChannelGate(ExciteMLP, AttentionModule):
    """CBAM's channel gate: ``x * sigmoid(MLP(avg(x)) + MLP(max(x)))``, one shared MLP.

    Args:
        channels: input (and output) channels.
        reduction: the paper's ``r``; hidden width ``max(min_channels, channels // r)``.
        min_channels: smallest hidden width.
        act_layer: activation inside the MLP.
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
        self.build_excite(channels, self.hidden, channels, act_layer, device=device, dtype=dtype)
        self.gate = gate_layer()

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        # the shared MLP is called once per pooled vector: measured faster on the CPU than one
        # call on the two concatenated along the batch (the cat and the slices cost more)
        avg_logits = self.excite(x.mean((2, 3), keepdim=True))
        max_logits = self.excite(x.amax((2, 3), keepdim=True))
        return x * self.gate(avg_logits + max_logits)

    def formula_params(self) -> int:
        return self.excite_params()

    def formula_macs(self, input_shape: Shape) -> int:
        n, c, _, _ = input_shape
        pools = 2 * numel(input_shape)
        mlp = self.excite_macs(2 * n)
        add = n * c
        gate = n * c
        scale = numel(input_shape)
        return pools + mlp + add + gate + scale


class CbamSpatialGate(AttentionModule):
    """CBAM's spatial gate: ``x * sigmoid(BN(conv_k([max_c(x); mean_c(x)])))``.

    Args:
        channels: input (and output) channels (the gate's weights do not depend on it).
        kernel_size: odd size of the square conv (the paper's 7).
        norm_layer: norm after the conv (one channel); the official BN (momentum 0.01) by
            default. Its weight, if any, starts at zero as in the official ResNet.
        gate_layer: the gate's squashing function.
    """

    def __init__(
        self,
        channels: int,
        *,
        kernel_size: int = 7,
        norm_layer: ModuleFactory = cbam_batch_norm,
        gate_layer: ModuleFactory = nn.Sigmoid,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.kernel_size = check_odd_kernel(kernel_size, "keeps the map size")
        factory = {"device": device, "dtype": dtype}
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False, **factory)
        self.bn = norm_layer(1, **factory)
        self.gate = gate_layer()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official ResNet's init of this gate's norm: weight 0 (bias stays 0)."""
        if getattr(self.bn, "weight", None) is not None:
            nn.init.zeros_(self.bn.weight)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return x * self.gate_map(x)

    def gate_map(self, x: Tensor) -> Tensor:
        """The ``(N, 1, H, W)`` gate ``sigmoid(BN(conv_k([max_c(x); mean_c(x)])))``."""
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], dim=1)
        return self.gate(self.bn(self.conv(pooled)))

    def formula_params(self) -> int:
        return 2 * self.kernel_size * self.kernel_size + 2

    def formula_macs(self, input_shape: Shape) -> int:
        n, c, h, w = input_shape
        pools = 2 * numel(input_shape)
        conv = n * h * w * 2 * self.kernel_size * self.kernel_size
        bn = 2 * n * h * w
        gate = n * h * w
        scale = numel(input_shape)
        return pools + conv + bn + gate + scale


class Cbam(AttentionModule):
    """CBAM (arXiv:1807.06521): channel gate, then spatial gate, no residual.

    Why CBAM costs more than its two halves on a CPU (``benchmarks/cbam_halves.py``, its outputs
    in ``reports/cbam_halves``): the halves alone each touch two input-sized tensors (the input
    and their output), CBAM three (the input, the channel-refined map and the output), read five
    times. While two fit the last-level cache and three do not, CBAM's reductions and multiplies
    run from memory instead of cache; and with glibc's default allocator each new input-sized
    output is mapped and faulted in afresh on every call. Without autograd the spatial gate
    scales the channel-refined map in place, which keeps the working set at two tensors; in
    training autograd needs that map for the spatial gate's gradient, so it stays a new tensor.
    Two consequences of the in-place path: a forward hook on ``self.channel`` that keeps its
    output under ``no_grad`` sees it overwritten by CBAM's output, and a ``torch.jit.trace``
    taken without autograd records the in-place multiply, so trace with gradients enabled for a
    graph meant for training.

    Args:
        channels: input (and output) channels.
        reduction: the channel MLP's ``r``.
        min_channels: smallest hidden width of the channel MLP.
        kernel_size: the spatial gate's conv size.
        act_layer: activation inside the channel MLP.
        norm_layer: norm after the spatial conv (official BN, momentum 0.01, weight 0).
        gate_layer: squashing function of both gates.
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: float = 16,
        min_channels: int = 1,
        kernel_size: int = 7,
        act_layer: ModuleFactory = nn.ReLU,
        norm_layer: ModuleFactory = cbam_batch_norm,
        gate_layer: ModuleFactory = nn.Sigmoid,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        factory = {"device": device, "dtype": dtype}
        self.channel = CbamChannelGate(
            channels,
            reduction=reduction,
            min_channels=min_channels,
            act_layer=act_layer,
            gate_layer=gate_layer,
            **factory,
        )
        self.spatial = CbamSpatialGate(
            channels,
            kernel_size=kernel_size,
            norm_layer=norm_layer,
            gate_layer=gate_layer,
            **factory,
        )

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        refined = self.channel(x)
        gate = self.spatial.gate_map(refined)
        # ``refined`` is this module's own intermediate: where autograd does not keep it (no_grad,
        # inference), the spatial gate scales it in place, the same values without a third
        # input-sized tensor (see the class docstring)
        return refined * gate if refined.requires_grad else refined.mul_(gate)

    def formula_params(self) -> int:
        return self.channel.formula_params() + self.spatial.formula_params()

    def formula_macs(self, input_shape: Shape) -> int:
        return self.channel.formula_macs(input_shape) + self.spatial.formula_macs(input_shape)


_PAPER = "CBAM: Convolutional Block Attention Module"
_OFFICIAL_SOURCE = (
    "https://github.com/Jongchan/attention-module MODELS/cbam.py, MODELS/model_resnet.py (CBAM after "
    "bn3 of every Bottleneck, bn2 of every BasicBlock, before the add)"
)
register_attention(
    "cbam",
    Cbam,
    family="cbam",
    paper=_PAPER,
    arxiv="1807.06521",
    kind="gate",
    official_source=_OFFICIAL_SOURCE,
    description="channel gate (shared MLP on avg+max, r=16) then spatial gate (7x7 conv+BN on [max,mean])",
)
register_attention(
    "cbam_channel",
    CbamChannelGate,
    family="cbam",
    paper=_PAPER,
    arxiv="1807.06521",
    kind="gate",
    official_source=f"{_OFFICIAL_SOURCE}; the channel gate alone is the code's CBAM(no_spatial=True)",
    description="CBAM's channel gate only: sigmoid(MLP(avg) + MLP(max)) -> scale, shared MLP, r=16",
)
register_attention(
    "cbam_spatial",
    CbamSpatialGate,
    family="cbam",
    paper=_PAPER,
    arxiv="1807.06521",
    kind="gate",
    official_source=f"{_OFFICIAL_SOURCE}; the spatial gate alone is the code's SpatialGate, which "
    "the code never uses without the channel gate (the placement is CBAM's)",
    description="CBAM's spatial gate only: sigmoid(BN(conv7x7([max_c, mean_c]))) -> scale",
)
