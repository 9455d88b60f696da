"""Coordinate Attention and the dynamic coordinate-attention convolution (DyCAConv).

* CA: Hou, Zhou, Feng, "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021,
  arXiv:2103.02907. With ``z_h = mean_W(x)`` (N, C, H, 1) and ``z_w = mean_H(x)`` (N, C, 1, W)::

      f        = h_swish(BN(W1 [z_h ; z_w^T]))        # shared 1x1 conv C -> mip (bias)
      f_h, f_w = split(f, [H, W])
      a_h      = sigmoid(W_h f_h)                     # 1x1 conv mip -> C (bias)
      a_w      = sigmoid(W_w f_w^T)                   # 1x1 conv mip -> C (bias)
      y        = x * a_w * a_h

  with ``mip = max(8, C // reduction)`` and ``reduction = 32``, as in the official code.
  ``h_swish`` is ``x * relu6(x + 3) / 6``, i.e. ``nn.Hardswish``. In MobileNetV2 the block
  follows the depthwise 3x3 (with its BN and ReLU6) of each inverted residual with expand
  ratio != 1, before the projection, as houqb/CoordAttention ``mbv2_ca.py`` does (16 modules;
  3,950,648 parameters, the published 3.95M). ``placement="block"`` also puts one in the
  t = 1 block (17 modules).

  Differences from timm's ``CoordAttn``: timm sizes the bottleneck as
  ``make_divisible(C / 16 * 2/3, 8)`` and builds its convolutions without bias; we follow the
  paper's official code (``max(8, C // 32)``, with bias), which is what the published
  MobileNetV2 + CA parameter count needs. ``CoordAttn(C, rd_channels=mip, bias=True)`` is the
  same module as ours (the tests check it).

* DyCAConv (no paper; a Q&A page explaining a dynamic-weight coordinate-attention snippet): CA's two gates mixed by input-dependent weights,
  then a convolution::

      (w0, w1) = softmax(FC(mean_HW(x)))              # FC C -> 2 (bias)
      y        = SiLU(BN(Conv_kxk,s(x * (w0 * a_w + w1 * a_h))))

  The page writes ReLU in its formula where its code uses h_swish; we use h_swish
  (``nn.Hardswish``), as CA does. The snippet builds a pooling module inside ``forward`` and
  prints; we do neither. The global mean fed to the FC is taken from the H strip that CA
  already computed (``mean_H(mean_W(x)) == mean_HW(x)``), which reads ``N*C*H`` values instead
  of the whole input. The snippet's convolution has a bias followed by BN; ours has no bias by
  default (a bias before a BN is a redundant parameter; in a backbone the block's BN follows
  the convolution, see ``backbone_kwargs`` below). ``conv_bias=True`` restores it.

* DyCAConv with max strips (``add_maxpool=True``): beside the
  average strips, adaptive *max* pooling over W and over H (``x.amax(3)``, ``x.amax(2)``; the
  snippet's ``nn.MaxPool2d((1, None))`` is not valid PyTorch). The max strips are concatenated with
  the average strips **along the channel axis**, so the shared conv W1 takes ``2C`` inputs::

      f = h_swish(BN(W1 [[z_h ; z_w^T] ; [m_h ; m_w^T]]))     # W1: 2C -> mip

  Why this combination: it keeps the average and the max statistics distinguishable to W1 (a
  plain sum before W1 would not), it costs only ``C * mip`` extra weights and one wider conv on
  ``H + W`` positions, and the BN, h_swish, W_h, W_w and sigmoids run once, as in CA. Running
  each strip kind through the shared W1/BN separately and summing the gates (CBAM style) would
  double that part of the work and make one BN track two differently scaled distributions.
  The mixing weights still come from the global *average*, as in the snippet.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._base import (
    AttentionModule,
    ModuleFactory,
    Shape,
    check_odd_kernel,
    check_positive_int,
    conv_macs,
    numel,
    padded_output_size,
    reduced_channels,
)
from ._registry import NO_OFFICIAL_CODE, BlockSelector, register_attention

__all__ = ["CoordAttention", "DyCAConv", "coordinate_mip"]


def coordinate_mip(channels: int, reduction: int = 32, min_channels: int = 8) -> int:
    """CA's bottleneck width: ``max(min_channels, channels // reduction)`` (official code)."""
    return reduced_channels(channels, reduction, min_channels)


class CoordAttention(AttentionModule):
    """Coordinate Attention (arXiv:2103.02907): ``y = x * a_w * a_h``.

    Args:
        channels: input (and output) channels.
        reduction: ``mip = max(min_channels, channels // reduction)``.
        min_channels: smallest bottleneck width (8 in the paper).
        add_maxpool: also feed max-pooled strips to the shared conv (``2C`` inputs); see the
            module docstring. ``False`` is the paper's CA.
        act_layer: activation after the shared conv and BN (h_swish).
        norm_layer: norm after the shared conv; ``None`` for none.
        gate_layer: squashing function of both gates.
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 32,
        min_channels: int = 8,
        add_maxpool: bool = False,
        act_layer: ModuleFactory = nn.Hardswish,
        norm_layer: ModuleFactory | None = nn.BatchNorm2d,
        gate_layer: ModuleFactory = nn.Sigmoid,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        check_positive_int("reduction", reduction)
        check_positive_int("min_channels", min_channels)
        self.mip = coordinate_mip(channels, reduction, min_channels)
        self.add_maxpool = bool(add_maxpool)
        self.has_norm = norm_layer is not None
        factory = {"device": device, "dtype": dtype}
        strip_channels = channels * (2 if self.add_maxpool else 1)
        self.conv1 = nn.Conv2d(strip_channels, self.mip, 1, bias=True, **factory)
        self.bn1 = norm_layer(self.mip, **factory) if norm_layer is not None else nn.Identity()
        self.act = act_layer()
        self.conv_h = nn.Conv2d(self.mip, channels, 1, bias=True, **factory)
        self.conv_w = nn.Conv2d(self.mip, channels, 1, bias=True, **factory)
        self.gate = gate_layer()

    def gates(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(a_h, a_w, z_h)``: the gates, shaped (N, C, H, 1) and (N, C, 1, W), and the
        average strip ``z_h = mean_W(x)`` (N, C, H, 1), which callers may reuse."""
        h, w = x.shape[-2:]
        pooled_h = x.mean(3, keepdim=True)
        pooled_w = x.mean(2, keepdim=True)
        strips = torch.cat([pooled_h, pooled_w.transpose(2, 3)], dim=2)
        if self.add_maxpool:
            max_h = x.amax(3, keepdim=True)
            max_w = x.amax(2, keepdim=True)
            max_strips = torch.cat([max_h, max_w.transpose(2, 3)], dim=2)
            strips = torch.cat([strips, max_strips], dim=1)
        hidden = self.act(self.bn1(self.conv1(strips)))
        hidden_h, hidden_w = torch.split(hidden, [h, w], dim=2)
        a_h = self.gate(self.conv_h(hidden_h))
        a_w = self.gate(self.conv_w(hidden_w.transpose(2, 3)))
        return a_h, a_w, pooled_h

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        a_h, a_w, _ = self.gates(x)
        return (x * a_w).mul_(a_h)  # x * a_w * a_h with one full-size buffer, not two

    def formula_params(self) -> int:
        c, m = self.channels, self.mip
        strip_channels = c * (2 if self.add_maxpool else 1)
        shared = strip_channels * m + m + (2 * m if self.has_norm else 0)
        heads = 2 * (m * c + c)
        return shared + heads

    def gate_macs(self, input_shape: Shape) -> int:
        """MACs of :meth:`gates` (everything but the final multiplies)."""
        n, c, h, w = input_shape
        m, positions = self.mip, n * (h + w)
        pools = (4 if self.add_maxpool else 2) * numel(input_shape)
        strip_channels = c * (2 if self.add_maxpool else 1)
        shared = conv_macs(n, strip_channels, m, (h + w, 1))
        norm = 2 * positions * m if self.has_norm else 0
        act = positions * m
        heads = conv_macs(n, m, c, (h, 1)) + conv_macs(n, m, c, (1, w))
        sigmoids = positions * c
        return pools + shared + norm + act + heads + sigmoids

    def formula_macs(self, input_shape: Shape) -> int:
        return self.gate_macs(input_shape) + 2 * numel(input_shape)


class DyCAConv(AttentionModule):
    """Dynamic coordinate-attention convolution (no paper; see the module docstring), ``channels -> out_channels``.

    ``y = out_act(out_norm(conv(x * (w0 * a_w + w1 * a_h))))`` with CA's gates ``a_h, a_w`` and
    ``(w0, w1) = softmax(FC(mean_HW(x)))``. The convolution has padding ``kernel_size // 2``.

    Args:
        channels: input channels.
        out_channels: output channels (``None``: ``channels``).
        kernel_size: odd kernel size of the convolution.
        stride: stride of the convolution.
        reduction: CA's ``mip = max(min_channels, channels // reduction)``.
        min_channels: smallest CA bottleneck width.
        add_maxpool: add max-pooled strips to CA's (the ``dycaconv_max`` variant).
        conv_bias: give the convolution a bias (the snippet does, before its BN).
        act_layer: CA's bottleneck activation (h_swish).
        norm_layer: CA's bottleneck norm; ``None`` for none.
        gate_layer: CA's gate function.
        out_norm_layer: norm after the convolution; ``None`` for none.
        out_act_layer: activation after it; ``None`` for none.
    """

    def __init__(
        self,
        channels: int,
        *,
        out_channels: int | None = None,
        kernel_size: int = 3,
        stride: int = 1,
        reduction: int = 32,
        min_channels: int = 8,
        add_maxpool: bool = False,
        conv_bias: bool = False,
        act_layer: ModuleFactory = nn.Hardswish,
        norm_layer: ModuleFactory | None = nn.BatchNorm2d,
        gate_layer: ModuleFactory = nn.Sigmoid,
        out_norm_layer: ModuleFactory | None = nn.BatchNorm2d,
        out_act_layer: ModuleFactory | None = nn.SiLU,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self._out_channels = check_positive_int(
            "out_channels", channels if out_channels is None else out_channels
        )
        self.kernel_size = check_odd_kernel(kernel_size)
        self.stride = check_positive_int("stride", stride)
        self.conv_bias = bool(conv_bias)
        self.has_out_norm = out_norm_layer is not None
        factory = {"device": device, "dtype": dtype}
        self.coord = CoordAttention(
            channels,
            reduction=reduction,
            min_channels=min_channels,
            add_maxpool=add_maxpool,
            act_layer=act_layer,
            norm_layer=norm_layer,
            gate_layer=gate_layer,
            **factory,
        )
        self.mix_fc = nn.Linear(channels, 2, bias=True, **factory)
        self.conv = nn.Conv2d(
            channels,
            self._out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            bias=self.conv_bias,
            **factory,
        )
        self.out_norm = (
            out_norm_layer(self._out_channels, **factory)
            if out_norm_layer is not None
            else nn.Identity()
        )
        self.out_act = out_act_layer() if out_act_layer is not None else nn.Identity()
        self.has_out_act = out_act_layer is not None

    @property
    def out_channels(self) -> int:
        return self._out_channels

    def output_shape(self, input_shape: Shape) -> Shape:
        n, _, h, w = input_shape
        return (n, self._out_channels, self._out_size(h), self._out_size(w))

    def _out_size(self, size: int) -> int:
        return padded_output_size(size, self.kernel_size, self.stride)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        n = x.shape[0]
        a_h, a_w, pooled_h = self.coord.gates(x)
        pooled = pooled_h.mean(2).flatten(1)  # (N, C): mean over H of the W-means
        mix = self.mix_fc(pooled).softmax(dim=1)
        w_width = mix[:, 0].view(n, 1, 1, 1)
        w_height = mix[:, 1].view(n, 1, 1, 1)
        mixed = (w_width * a_w + w_height * a_h).mul_(x)  # x * gate, in the gate's buffer
        return self.out_act(self.out_norm(self.conv(mixed)))

    def formula_params(self) -> int:
        c, co, k = self.channels, self._out_channels, self.kernel_size
        mix = c * 2 + 2
        conv = co * c * k * k + (co if self.conv_bias else 0)
        out_norm = 2 * co if self.has_out_norm else 0
        return self.coord.formula_params() + mix + conv + out_norm

    def formula_macs(self, input_shape: Shape) -> int:
        n, c, h, w = input_shape
        _, co, ho, wo = self.output_shape(input_shape)
        gates = self.coord.gate_macs(input_shape)
        pooled = n * c * h  # mean over H of the (N, C, H, 1) strip
        mix = n * c * 2 + n * 2  # FC + softmax
        weighting = n * c * w + n * c * h + numel(input_shape)  # w0*a_w, w1*a_h, their sum
        scale = numel(input_shape)
        conv = conv_macs(n, c, co, (ho, wo), (self.kernel_size, self.kernel_size))
        out_numel = n * co * ho * wo
        out_norm = 2 * out_numel if self.has_out_norm else 0
        out_act = out_numel if self.has_out_act else 0
        return gates + pooled + mix + weighting + scale + conv + out_norm + out_act


_DYCACONV_SOURCE = (
    f"{NO_OFFICIAL_CODE}: a Q&A page's dynamic coordinate-attention snippet (the user's seed 003), "
    "no paper; the placement is our choice, the conv rule (in place of every block's 3x3 conv)"
)

register_attention(
    "ca",
    CoordAttention,
    family="coordinate",
    paper="Coordinate Attention for Efficient Mobile Network Design",
    arxiv="2103.02907",
    kind="gate",
    blocks=BlockSelector(skip_unexpanded=True),
    official_source="https://github.com/houqb/CoordAttention mbv2_ca.py (after the depthwise conv of every inverted "
    "residual with expand ratio != 1)",
    description="strip means over W and H -> shared 1x1 C->max(8,C/32) + BN + h_swish -> "
    "1x1 convs -> sigmoid gates a_h, a_w; y = x * a_w * a_h",
)
register_attention(
    "dycaconv",
    DyCAConv,
    family="coordinate",
    paper="Dynamic coordinate attention convolution (a Q&A snippet, no paper; builds on CA)",
    arxiv=None,
    kind="conv",
    backbone_kwargs={"out_norm_layer": None, "out_act_layer": None},
    official_source=_DYCACONV_SOURCE,
    description="CA gates mixed by softmax(FC(GAP)): x * (w0*a_w + w1*a_h) -> conv kxk -> BN -> SiLU",
)
register_attention(
    "dycaconv_max",
    DyCAConv,
    family="coordinate",
    paper="Dynamic coordinate attention convolution with max strips (a Q&A snippet, no paper; builds on CA)",
    arxiv=None,
    kind="conv",
    backbone_kwargs={"out_norm_layer": None, "out_act_layer": None},
    official_source=f"{_DYCACONV_SOURCE}; the max strips are the user's request in the same "
    "text, with adaptive max pooling",
    description="DyCAConv whose shared CA conv also sees max-pooled strips (concatenated "
    "along channels, 2C -> mip)",
    add_maxpool=True,
)
