"""Gather-Excite, the parameter-free gather with an MLP excite (timm's default configuration).

Hu, Shen, Albanie, Sun, Vedaldi, "Gather-Excite: Exploiting Feature Context in Convolutional
Neural Networks", NeurIPS 2018, arXiv:1810.12348.

The paper's gather ``xi_G`` pools each channel over a window of extent ``e`` (global when the
extent covers the whole map); its excite ``xi_E`` resizes the gathered map back to H x W
(nearest neighbour) and gates ``y = x * sigmoid(interp(g))``. GE-theta^- is parameter free;
GE-theta adds depthwise convolutions to the gather; GE-theta^+ adds an SE-style MLP to that.

``ge`` is what timm's ``GatherExcite`` builds by default (``extent=0``, ``extra_params=False``,
``use_mlp=True``): the parameter-free *global* gather followed by an MLP excite::

    g = W2 relu(W1 GAP(x) + b1) + b2          # 1x1 convs C -> C/16 -> C (bias)
    y = x * sigmoid(g)

This pairs GE-theta^-'s parameter-free gather with GE-theta^+'s MLP excite, so it is none of
the paper's three named variants exactly. At global extent it is the same maths as SE (timm's
own note says so); it is kept as its own entry because it is how timm exposes GE, and
``extent`` gives the local variants:

* ``extent=e`` (even, >= 2): gather = average pooling with kernel ``2e - 1``, stride ``e``,
  padding ``e - 1`` and ``count_include_pad=False`` (timm's parameter-free gather), the MLP
  applied at every pooled position, then nearest-neighbour resizing to H x W;
* ``use_mlp=False``: no MLP (GE-theta^-).

Parameterisation as timm's: fc1/fc2 are 1x1 convs with bias, and the hidden width is timm's
``max(min_channels, round(C / reduction))`` (``rd_divisor`` = ``divisor`` = 1), which differs
from our SE's floor for C not a multiple of 16 (C = 24 gives 2; SE gives 1).

Differences from timm, numerically neutral: the sigmoid is applied *before* the
nearest-neighbour resize (the two commute exactly, and the sigmoid then runs on the small
map). timm's ``extra_params=True`` gathers (depthwise convs, GE-theta) are not implemented.
Note: timm 1.0.31's ``GatherExcite`` cannot be built with ``use_mlp=True`` (it passes ``*dd``
where it means ``**dd`` to ``ConvMlp``); the parity tests attach the ``ConvMlp`` it meant.

Cost convention: the nearest-neighbour resize is a copy (data movement) and counts 0; the
local average pooling counts one MAC per input element each window reads.
"""

from __future__ import annotations

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
from ._registry import register_attention

__all__ = ["GatherExcite"]


def _window_reads(size: int, kernel: int, stride: int, pad: int) -> tuple[int, int]:
    """Output length along one axis and the number of in-bounds elements all windows read."""
    out = (size + 2 * pad - kernel) // stride + 1
    reads = 0
    for o in range(out):
        start = o * stride - pad
        reads += min(start + kernel, size) - max(start, 0)
    return out, reads


class GatherExcite(ExciteMLP, AttentionModule):
    """Gather-Excite (arXiv:1810.12348): parameter-free gather, optional MLP, sigmoid gate.

    Args:
        channels: input (and output) channels.
        extent: 0 for the global gather; an even ``e >= 2`` for a local gather of extent ``e``.
        use_mlp: excite through the MLP ``C -> hidden -> C`` (as theta^+ does) or not
            (theta^-).
        reduction: ``hidden = round(C / reduction)`` (timm's ``1 / rd_ratio``).
        min_channels: smallest hidden width.
        divisor: round the hidden width to a multiple of this (timm's ``rd_divisor``).
        act_layer: activation inside the MLP.
        gate_layer: the gate's squashing function.
    """

    def __init__(
        self,
        channels: int,
        *,
        extent: int = 0,
        use_mlp: bool = True,
        reduction: float = 16,
        min_channels: int = 1,
        divisor: int = 1,
        act_layer: ModuleFactory = nn.ReLU,
        gate_layer: ModuleFactory = nn.Sigmoid,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        if isinstance(extent, bool) or not isinstance(extent, int) or extent < 0 or extent % 2:
            raise ValueError(f"extent must be 0 (global) or an even int >= 2, got {extent!r}")
        self.extent = extent
        self.use_mlp = bool(use_mlp)
        # timm's make_divisible(C / r, divisor, round_limit=0)
        self.hidden = reduced_channels(channels, reduction, min_channels, divisor, nearest=True)
        if self.use_mlp:
            self.build_excite(channels, self.hidden, channels, act_layer, device=device, dtype=dtype)
        self.gate = gate_layer()

    def _excite(self, gathered: Tensor) -> Tensor:
        return self.gate(self.excite(gathered) if self.use_mlp else gathered)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        if self.extent == 0:
            return x * self._excite(x.mean((2, 3), keepdim=True))
        e = self.extent
        gathered = F.avg_pool2d(x, 2 * e - 1, stride=e, padding=e - 1, count_include_pad=False)
        gate = self._excite(gathered)
        if gate.shape[-2:] != x.shape[-2:]:
            gate = F.interpolate(gate, size=x.shape[-2:])
        return x * gate

    def _gathered_shape(self, input_shape: Shape) -> tuple[tuple[int, int], int]:
        """Pooled (h, w) and the MACs of the gather."""
        n, c, h, w = input_shape
        if self.extent == 0:
            return (1, 1), numel(input_shape)
        e = self.extent
        ho, reads_h = _window_reads(h, 2 * e - 1, e, e - 1)
        wo, reads_w = _window_reads(w, 2 * e - 1, e, e - 1)
        return (ho, wo), n * c * reads_h * reads_w

    def formula_params(self) -> int:
        return self.excite_params() if self.use_mlp else 0

    def formula_macs(self, input_shape: Shape) -> int:
        n, c, _, _ = input_shape
        (ho, wo), gather = self._gathered_shape(input_shape)
        positions = n * ho * wo
        mlp = self.excite_macs(positions) if self.use_mlp else 0
        sigmoid = positions * c
        scale = numel(input_shape)
        return gather + mlp + sigmoid + scale


register_attention(
    "ge",
    GatherExcite,
    family="gather_excite",
    paper="Gather-Excite: Exploiting Feature Context in Convolutional Neural Networks",
    arxiv="1810.12348",
    kind="gate",
    official_source="https://github.com/hujie-frank/GENet models/RN50-GEP.prototxt, "
    "models/RN50-GEPF.prototxt, models/RN50-GEPP.prototxt (Caffe: GE after the last BN of every "
    "block, joined to the shortcut by an Axpy layer, i.e. before the add); the configuration "
    "registered here: https://github.com/huggingface/pytorch-image-models "
    "timm/layers/gather_excite.py (GatherExcite defaults)",
    description="timm's default GatherExcite: global parameter-free gather (GAP) -> "
    "MLP C->C/16->C -> sigmoid -> scale",
)
