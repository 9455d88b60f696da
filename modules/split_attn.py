"""Split-Attention convolution (ResNeSt's "Splat").

Zhang, Wu, Zhang, Zhu, Lin, Zhang, Sun, He, Mueller, Manmatha, Li, Smola, "ResNeSt:
Split-Attention Networks", arXiv:2004.08955.

With radix ``R`` and cardinality ``G``:

* ``V = ReLU(BN(conv(x)))``: one grouped conv ``C_in -> R * C_out`` (``groups = G * R``, no
  bias), split into ``R`` maps ``V_r`` of ``C_out`` channels;
* ``s = GAP(sum_r V_r)`` (``(N, C_out)``);
* ``a = rSoftmax(fc2(ReLU(BN(fc1(s)))))``: ``fc1: C_out -> A`` and ``fc2: A -> R * C_out``
  (1x1 convs with bias, ``groups = G``), softmax over the radix within each cardinal group
  (sigmoid when ``R = 1``);
* ``y = sum_r a_r * V_r``.

Defaults are the paper's and timm's ResNeSt setting: ``R = 2``, ``G = 1``,
``A = make_divisible(C_in * R / 4, 8)`` with a floor of 32 (the official code uses
``max(C_in * R // 4, 32)``, which is the same for every ResNeSt width; timm rounds to a multiple
of 8, and so do we, for parity). Weights load unchanged from timm's ``SplitAttn`` built with
``norm_layer=nn.BatchNorm2d`` (timm's bare ``SplitAttn`` default has no norm; its ResNeSt passes
BatchNorm, which is the paper's design).

Not offered: timm's ``padding``/``dilation``/``bias`` arguments and its drop-block hook (the conv
contract fixes padding to ``kernel_size // 2``).

Implementation notes (same maths, fewer passes over the big map): ``GAP(sum_r V_r)`` is computed
as the sum over ``r`` of the pooled ``(N, R * C_out)`` vector (the mean is linear), and the
weighted sum is one multiply and ``R - 1`` fused multiply-adds instead of a broadcast product
over a 5-D view followed by a reduction.

Placement: ``conv`` (replaces the block's 3x3 convolution). Like SK, it has no trailing norm;
timm's ResNeSt block sets its ``bn2``/``act2`` to identity after it, while a backbone that keeps
its own BN and ReLU after the replaced conv adds one BN (the ReLU is a no-op on the mixture of
non-negative maps).
"""

from __future__ import annotations

from torch import Tensor, nn

from ._base import (
    AttentionModule,
    ModuleFactory,
    Shape,
    check_divisible,
    check_positive_int,
    conv_macs,
    make_activation,
    make_divisible,
    numel,
    padded_output_size,
    weighted_sum,
)
from ._registry import register_attention

__all__ = ["SplitAttn"]


class SplitAttn(AttentionModule):
    """Split-Attention conv (arXiv:2004.08955), timm's parameter names.

    Args:
        channels: input channels.
        out_channels: output channels (``None``: ``channels``).
        kernel_size: kernel of the grouped conv (padding ``kernel_size // 2``).
        stride: stride of the grouped conv.
        radix: the paper's ``R`` (splits per cardinal group).
        groups: the paper's cardinality ``G``.
        rd_ratio: ``A = make_divisible(channels * radix * rd_ratio, rd_divisor)``, at least
            ``min_rd_channels``.
        rd_channels: fix the attention width per radix instead (``A = rd_channels * radix``,
            timm's convention).
        rd_divisor: rounding of ``A``.
        min_rd_channels: floor of ``A`` (32 in the paper's code and timm).
        act_layer: activation after the conv and inside the attention.
        norm_layer: norm after the conv and inside the attention.
    """

    def __init__(
        self,
        channels: int,
        *,
        out_channels: int | None = None,
        kernel_size: int = 3,
        stride: int = 1,
        radix: int = 2,
        groups: int = 1,
        rd_ratio: float = 0.25,
        rd_channels: int | None = None,
        rd_divisor: int = 8,
        min_rd_channels: int = 32,
        act_layer: ModuleFactory = nn.ReLU,
        norm_layer: ModuleFactory = nn.BatchNorm2d,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        out_channels = channels if out_channels is None else out_channels
        self._out_channels = check_positive_int("out_channels", out_channels)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.stride = check_positive_int("stride", stride)
        self.radix = check_positive_int("radix", radix)
        self.groups = check_positive_int("groups", groups)
        check_positive_int("rd_divisor", rd_divisor)
        check_positive_int("min_rd_channels", min_rd_channels)
        if not rd_ratio > 0:
            raise ValueError(f"rd_ratio must be > 0, got {rd_ratio!r}")
        check_divisible("channels", channels, groups * radix, "groups * radix")
        check_divisible("out_channels", out_channels, groups, "groups")
        if rd_channels is None:
            attn_channels = make_divisible(
                channels * radix * rd_ratio, rd_divisor, min_value=min_rd_channels
            )
        else:
            attn_channels = check_positive_int("rd_channels", rd_channels) * radix
        check_divisible("attention channels", attn_channels, groups, "groups")
        self.attn_channels = attn_channels

        factory = {"device": device, "dtype": dtype}
        mid = out_channels * radix
        self.conv = nn.Conv2d(
            channels,
            mid,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups * radix,
            bias=False,
            **factory,
        )
        self.bn0 = norm_layer(mid, **factory)
        self.act0 = make_activation(act_layer)
        self.fc1 = nn.Conv2d(out_channels, attn_channels, 1, groups=groups, **factory)
        self.bn1 = norm_layer(attn_channels, **factory)
        self.act1 = make_activation(act_layer)
        self.fc2 = nn.Conv2d(attn_channels, mid, 1, groups=groups, **factory)

    @property
    def out_channels(self) -> int:
        return self._out_channels

    def _radix_softmax(self, logits: Tensor) -> Tensor:
        """``(N, R * C, 1, 1)`` logits in (group, radix, channel-in-group) order -> weights
        ``(N, R, C, 1, 1)`` with ``C`` in the conv's channel order."""
        n, r, c = logits.shape[0], self.radix, self.out_channels
        if r == 1:
            return logits.sigmoid().view(n, 1, c, 1, 1)
        grouped = logits.view(n, self.groups, r, c // self.groups).softmax(dim=2)
        return grouped.transpose(1, 2).reshape(n, r, c, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        features = self.act0(self.bn0(self.conv(x)))
        n, _, h, w = features.shape
        splits = features.view(n, self.radix, self.out_channels, h, w).unbind(dim=1)
        pooled = features.mean((2, 3))
        if self.radix > 1:
            pooled = pooled.view(n, self.radix, self.out_channels).sum(dim=1)
        hidden = self.act1(self.bn1(self.fc1(pooled.view(n, self.out_channels, 1, 1))))
        weights = self._radix_softmax(self.fc2(hidden)).unbind(dim=1)
        return weighted_sum(splits, weights)

    def output_shape(self, input_shape: Shape) -> Shape:
        n, _, h, w = input_shape
        size = (padded_output_size(h, self.kernel_size, self.stride), padded_output_size(w, self.kernel_size, self.stride))
        return (n, self.out_channels, *size)

    def formula_params(self) -> int:
        c_in, c_out, r, g, a, k = (
            self.channels,
            self.out_channels,
            self.radix,
            self.groups,
            self.attn_channels,
            self.kernel_size,
        )
        conv = r * c_out * (c_in // (g * r)) * k * k
        bn0 = 2 * r * c_out
        fc1 = a * (c_out // g) + a
        bn1 = 2 * a
        fc2 = r * c_out * (a // g) + r * c_out
        return conv + bn0 + fc1 + bn1 + fc2

    def formula_macs(self, input_shape: Shape) -> int:
        n = input_shape[0]
        out_shape = self.output_shape(input_shape)
        out_hw = (out_shape[2], out_shape[3])
        c_out, r, g, a = self.out_channels, self.radix, self.groups, self.attn_channels
        out_el = numel(out_shape)
        conv = conv_macs(
            n, self.channels, r * c_out, out_hw, (self.kernel_size, self.kernel_size), g * r
        )
        norm_act = r * (2 * out_el + out_el)  # bn0 (2/element) + ReLU over the R * C_out map
        radix_sum = r * n * c_out if r > 1 else 0  # sum over radix reads the (N, R, C_out) means
        gap = r * out_el + radix_sum  # mean over the R * C_out maps first
        attn = (
            n * c_out * a // g + 2 * n * a + n * a + n * a * r * c_out // g
        )  # fc1, bn1, ReLU, fc2
        gate = n * r * c_out  # softmax over radix (sigmoid when R = 1)
        select = (2 * r - 1) * out_el  # R multiplies + (R - 1) adds per output element
        return conv + norm_act + gap + attn + gate + select


register_attention(
    "split_attn",
    SplitAttn,
    family="split_attn",
    paper="ResNeSt: Split-Attention Networks",
    arxiv="2004.08955",
    kind="conv",
    placement="conv",
    official_source="https://github.com/zhanghang1989/ResNeSt resnest/torch/models/splat.py, "
    "resnest/torch/models/resnet.py (SplAtConv2d as conv2, the 3x3 conv, of every Bottleneck)",
    description=(
        "Split attention (radix 2, cardinality 1): grouped conv to 2C, BN, ReLU; GAP of the split sum "
        "-> FC (BN, ReLU) -> FC 2C -> softmax over radix -> weighted sum of splits"
    ),
)
