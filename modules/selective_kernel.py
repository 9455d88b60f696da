"""Selective Kernel convolution (SK).

Li, Wang, Hu, Yang, "Selective Kernel Networks", CVPR 2019, arXiv:1903.06586.

``M`` paths look at the input with growing receptive fields; a channel attention picks, per
channel, a soft mixture of the paths:

* split: ``U_m = ReLU(BN(conv_m(x)))`` for ``m = 0..M-1``;
* fuse: ``s = GAP(sum_m U_m)`` (``(N, C)``), ``z = ReLU(BN(W_reduce s))`` (``(N, d)``);
* select: ``a = softmax_m(W_select z)`` (``(N, M, C)``, softmax over the paths),
  ``y = sum_m a_m * U_m``.

Configuration follows timm's ``SelectiveKernel`` defaults (weights load from it unchanged):
two paths, both 3x3 convolutions, the second with dilation 2 (a "5x5" receptive field; the
paper itself makes the same substitution "for further efficiency"); ``W_reduce`` and
``W_select`` are bias-free 1x1 convolutions; ``d = make_divisible(C_out / 16, 8)``.

Differences from the paper (all inherited from timm, chosen for parity):

* ``split_input=True``: each path sees only its own ``C_in / M`` slice of the input
  channels (a grouping by path), so each path's conv is ``C_in / M -> C_out``; the paper
  feeds the whole input to every path. Pass ``split_input=False`` for the paper's form.
* ``groups=1``: the paper's SKNet-50 uses grouped paths with ``G = 32`` (it is built on
  ResNeXt); pass ``groups=32`` for that.
* ``d = make_divisible(C_out / 16, 8)`` (at least 8); the paper uses ``d = max(C / r, L)``
  with ``r = 16`` and ``L = 32``. Pass ``rd_channels`` to fix ``d``.
* Path ``m`` has receptive field ``kernel_size + 2m`` (3 and 5 by default), realised as a 3x3
  conv with dilation ``(kernel_size + 2m - 1) / 2`` when ``keep_3x3`` (default) and as a plain
  ``(kernel_size + 2m)``-sized conv otherwise. timm takes a list of kernel sizes instead; the
  zoo's conv contract has one ``kernel_size``, so ``num_paths`` sets the list's length.
* timm's anti-aliasing and drop-block hooks (``aa_layer``, ``drop_layer``) and module-level
  ``dilation`` are not offered.

Implementation notes (same maths, fewer passes over the big maps): ``GAP(sum_m U_m)`` is
computed as ``sum_m GAP(U_m)`` (the mean is linear), so the paths are never stacked; the
weighted sum is one multiply and ``M - 1`` fused multiply-adds instead of timm's broadcast
product over a stacked 5-D tensor followed by a reduction.

Placement: ``conv`` (replaces the block's 3x3 convolution). The module ends in the weighted
sum of ReLU outputs, with no trailing norm; timm's SKNet puts no BN after it either, while a
backbone that keeps its own BN and ReLU after the replaced conv adds one BN (the ReLU is then
a no-op on the non-negative mixture).
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

__all__ = ["SelectiveKernel"]


class _ConvNormAct(nn.Module):
    """One SK path: conv (no bias) -> norm -> activation. Attribute names follow timm."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int,
        dilation: int,
        groups: int,
        norm_layer: ModuleFactory,
        act_layer: ModuleFactory,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=dilation * (kernel_size - 1) // 2,
            dilation=dilation,
            groups=groups,
            bias=False,
            **factory,
        )
        self.bn = norm_layer(out_channels, **factory)
        self.act = make_activation(act_layer)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class _SelectAttn(nn.Module):
    """Fuse and select: pooled ``(N, C, 1, 1)`` -> path weights ``(N, M, C, 1, 1)``."""

    def __init__(
        self,
        channels: int,
        num_paths: int,
        rd_channels: int,
        *,
        norm_layer: ModuleFactory,
        act_layer: ModuleFactory,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_paths = num_paths
        self.fc_reduce = nn.Conv2d(channels, rd_channels, 1, bias=False, **factory)
        self.bn = norm_layer(rd_channels, **factory)
        self.act = make_activation(act_layer)
        self.fc_select = nn.Conv2d(rd_channels, channels * num_paths, 1, bias=False, **factory)

    def forward(self, pooled: Tensor) -> Tensor:
        z = self.act(self.bn(self.fc_reduce(pooled)))
        logits = self.fc_select(z)
        n = logits.shape[0]
        return logits.view(n, self.num_paths, -1, 1, 1).softmax(dim=1)


class SelectiveKernel(AttentionModule):
    """Selective Kernel convolution (arXiv:1903.06586), timm's configuration.

    Args:
        channels: input channels.
        out_channels: output channels (``None``: ``channels``).
        kernel_size: receptive field of the first path (odd, >= 3); path ``m`` sees
            ``kernel_size + 2m``.
        stride: stride of every path.
        num_paths: the paper's ``M``.
        groups: groups of each path's conv (the paper's ``G``; timm's default 1).
        rd_ratio: ``d = make_divisible(out_channels * rd_ratio, rd_divisor)``.
        rd_channels: fix ``d`` instead.
        rd_divisor: rounding of ``d``.
        keep_3x3: realise every path as a dilated 3x3 conv (timm's and the paper's choice).
        split_input: give each path its own ``channels / num_paths`` input slice (timm).
        act_layer: activation of the paths and of the attention's bottleneck.
        norm_layer: norm of the paths and of the attention's bottleneck.
    """

    def __init__(
        self,
        channels: int,
        *,
        out_channels: int | None = None,
        kernel_size: int = 3,
        stride: int = 1,
        num_paths: int = 2,
        groups: int = 1,
        rd_ratio: float = 1.0 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 8,
        keep_3x3: bool = True,
        split_input: bool = True,
        act_layer: ModuleFactory = nn.ReLU,
        norm_layer: ModuleFactory = nn.BatchNorm2d,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        out_channels = channels if out_channels is None else out_channels
        self._out_channels = check_positive_int("out_channels", out_channels)
        check_positive_int("kernel_size", kernel_size)
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd int >= 3, got {kernel_size!r}")
        self.kernel_size = kernel_size
        self.stride = check_positive_int("stride", stride)
        self.num_paths = check_positive_int("num_paths", num_paths)
        if num_paths < 2:
            raise ValueError(
                f"num_paths must be >= 2 (the attention selects between paths), got {num_paths}"
            )
        check_positive_int("groups", groups)
        check_positive_int("rd_divisor", rd_divisor)
        if not rd_ratio > 0:
            raise ValueError(f"rd_ratio must be > 0, got {rd_ratio!r}")
        self.split_input = bool(split_input)
        if self.split_input:
            check_divisible("channels", channels, num_paths, "num_paths (split_input=True)")
        self.path_in_channels = channels // num_paths if self.split_input else channels
        self.groups = min(out_channels, groups)
        check_divisible("input channels per path", self.path_in_channels, self.groups, "groups")
        check_divisible("out_channels", out_channels, self.groups, "groups")
        if rd_channels is None:
            rd_channels = make_divisible(out_channels * rd_ratio, rd_divisor)
        self.rd_channels = check_positive_int("rd_channels", rd_channels)

        fields = [kernel_size + 2 * m for m in range(num_paths)]
        if keep_3x3:
            self.path_kernels = [3] * num_paths
            self.path_dilations = [(k - 1) // 2 for k in fields]
        else:
            self.path_kernels = fields
            self.path_dilations = [1] * num_paths

        factory = {"device": device, "dtype": dtype}
        self.paths = nn.ModuleList(
            _ConvNormAct(
                self.path_in_channels,
                out_channels,
                k,
                stride=stride,
                dilation=d,
                groups=self.groups,
                norm_layer=norm_layer,
                act_layer=act_layer,
                **factory,
            )
            for k, d in zip(self.path_kernels, self.path_dilations, strict=True)
        )
        self.attn = _SelectAttn(
            out_channels,
            num_paths,
            self.rd_channels,
            norm_layer=norm_layer,
            act_layer=act_layer,
            **factory,
        )

    @property
    def out_channels(self) -> int:
        return self._out_channels

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        if self.split_input:
            inputs = x.split(self.path_in_channels, dim=1)
        else:
            inputs = (x,) * self.num_paths
        features = [path(inp) for path, inp in zip(self.paths, inputs, strict=True)]
        pooled = features[0].mean((2, 3), keepdim=True)
        for feature in features[1:]:
            pooled = pooled + feature.mean((2, 3), keepdim=True)
        weights = self.attn(pooled).unbind(dim=1)
        return weighted_sum(features, weights)

    def output_shape(self, input_shape: Shape) -> Shape:
        n, _, h, w = input_shape
        size = (padded_output_size(h, self.kernel_size, self.stride), padded_output_size(w, self.kernel_size, self.stride))
        return (n, self.out_channels, *size)

    def formula_params(self) -> int:
        c_out, d, m = self.out_channels, self.rd_channels, self.num_paths
        convs = sum(
            c_out * (self.path_in_channels // self.groups) * k * k for k in self.path_kernels
        )
        path_norms = m * 2 * c_out
        attn = c_out * d + 2 * d + d * m * c_out
        return convs + path_norms + attn

    def formula_macs(self, input_shape: Shape) -> int:
        n = input_shape[0]
        out_shape = self.output_shape(input_shape)
        out_hw = (out_shape[2], out_shape[3])
        c_out, d, m = self.out_channels, self.rd_channels, self.num_paths
        out_el = numel(out_shape)
        convs = sum(
            conv_macs(n, self.path_in_channels, c_out, out_hw, (k, k), self.groups)
            for k in self.path_kernels
        )
        path_norm_act = m * (2 * out_el + out_el)  # BN (2/element) + ReLU per path
        fuse = m * out_el + (m - 1) * n * c_out  # one GAP per path + summing the pooled vectors
        attn = (
            n * c_out * d + 2 * n * d + n * d + n * d * m * c_out
        )  # fc_reduce, BN, ReLU, fc_select
        softmax = n * m * c_out
        select = (2 * m - 1) * out_el  # m multiplies + (m - 1) adds per output element
        return convs + path_norm_act + fuse + attn + softmax + select


register_attention(
    "sk",
    SelectiveKernel,
    family="selective_kernel",
    paper="Selective Kernel Networks",
    arxiv="1903.06586",
    kind="conv",
    placement="conv",
    official_source="https://github.com/implus/SKNet models/sknet50.prototxt (Caffe: an SK unit in "
    "place of the 3x3 grouped conv of every ResNeXt bottleneck); the configuration registered "
    "here: https://github.com/huggingface/pytorch-image-models timm/layers/selective_kernel.py "
    "(SelectiveKernel defaults)",
    description=(
        "Selective Kernel conv (timm config): 3x3 and 3x3-dilation-2 paths on split input, each "
        "conv-BN-ReLU; GAP of their sum -> FC d (BN, ReLU) -> FC 2C -> softmax over paths -> weighted sum"
    ),
)
