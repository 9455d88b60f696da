"""Parameter-free pooling: global average / max pooling and cross-channel pooling.

Global pooling, ``(N, C, H, W) -> (N, C, 1, 1)``
-----------------------------------------------
* Global average pooling (GAP): Lin, Chen, Yan, "Network In Network", ICLR 2014,
  arXiv:1312.4400. ``y[n, c] = mean_{h, w} x[n, c, h, w]``.
* Global max pooling (GMP): ``y[n, c] = max_{h, w} x[n, c, h, w]`` (used for weakly
  supervised localisation by Oquab et al., "Is object localization for free?", CVPR 2015;
  no arXiv version).

PyTorch has no dedicated global pooling layer, so three spellings are common (a CSDN blog post
on global average / max pooling in PyTorch uses the second). Each is registered as its own entry so the suite can time them side by
side; they give the same values in floating point:

================  ==================================  ==================================
entry             average                              max
================  ==================================  ==================================
``*_adaptive``    ``F.adaptive_avg_pool2d(x, 1)``      ``F.adaptive_max_pool2d(x, 1)``
``*_kernel``      ``F.avg_pool2d(x, (H, W))``          ``F.max_pool2d(x, (H, W))``
``gap_mean`` /    ``x.mean((2, 3), keepdim=True)``     ``x.amax((2, 3), keepdim=True)``
``gmp_amax``
================  ==================================  ==================================

GAP vs GMP: both remove all spatial parameters and make the head independent of the
input size. GAP summarises the whole map -- every position contributes ``1 / (H W)`` to the
output and receives the same share of the gradient, which regularises and is the standard
classifier head (ResNet, NIN). GMP keeps only the strongest response -- the gradient flows to
one position per channel (the argmax), so it is sensitive to a single large activation (or
noise) and ignores how much of the map responds, but it localises: it answers "is the feature
present anywhere". CBAM and the DSAN sketch feed both to their gates for that reason.

Average pooling of an *integer* tensor floors (``F.avg_pool2d`` on ``[[8, 6], ...]`` returns an
integer), ``x.mean`` and ``adaptive_max_pool2d`` refuse integers, so the six entries would
disagree; the suite works in floating point and these modules raise ``ValueError`` on a
non-floating input (cast with ``x.float()`` first).

Cross-channel pooling, ``(N, C, H, W) -> (N, C / k, H, W)``
-----------------------------------------------------------
As a CSDN blog post on cross-channel pooling describes it; the classic reference is the maxout unit of Goodfellow, Warde-Farley, Mirza,
Courville, Bengio, "Maxout Networks", ICML 2013, arXiv:1302.4389. The ``C`` channels are split
into ``C / k`` groups of ``k`` *consecutive* channels and each group is reduced to one channel:
``y[n, g, h, w] = max_{j < k} x[n, g k + j, h, w]`` (``ccp_max``) or the mean (``ccp_mean``).
No parameters. ``k`` must divide ``C``.

That post's formulation (transpose the channel axis last, ``F.max_pool2d`` with kernel ``(1, k)``,
transpose back, ``contiguous``) computes exactly the same groups but copies the tensor through a
strided layout; here the channel axis is viewed as ``(C / k, k)`` and reduced over the ``k``
axis, with no copy of the input (``benchmarks/bench_cross_channel.py`` times both).

Cross-channel pooling changes the channel count, so it cannot sit on a residual branch: it is
registered with placement ``none``.

Costs (attnbench convention, ``modules/_base.py``): a reduction costs one MAC per *input*
element, so every entry here costs ``N * C * H * W`` MACs and has no parameters.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from ._base import AttentionModule, Shape, check_divisible, check_positive_int, numel
from ._registry import NO_OFFICIAL_CODE, register_attention

__all__ = ["GlobalAvgPool", "GlobalMaxPool", "CrossChannelPool"]

AvgImpl = Literal["adaptive", "kernel", "mean"]
MaxImpl = Literal["adaptive", "kernel", "amax"]


def _check_floating(module: AttentionModule, x: Tensor) -> None:
    if not x.is_floating_point():
        raise ValueError(
            f"{type(module).__name__} expects a floating-point input, got dtype {x.dtype}; "
            "average pooling of integer tensors floors, cast with x.float() first"
        )


class _GlobalPool(AttentionModule):
    """Shared shape and cost of the global pools: ``(N, C, H, W) -> (N, C, 1, 1)``."""

    impls: tuple[str, ...] = ()

    def __init__(self, channels: int, *, impl: str, device=None, dtype=None) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        if impl not in self.impls:
            raise ValueError(f"impl must be one of {self.impls}, got {impl!r}")
        self.impl = impl

    def output_shape(self, input_shape: Shape) -> Shape:
        n, c, _, _ = input_shape
        return (n, c, 1, 1)

    def formula_params(self) -> int:
        return 0

    def formula_macs(self, input_shape: Shape) -> int:
        return numel(input_shape)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, impl={self.impl!r}"


class GlobalAvgPool(_GlobalPool):
    """Global average pooling (arXiv:1312.4400), ``(N, C, H, W) -> (N, C, 1, 1)``.

    Args:
        channels: input (and output) channels.
        impl: ``"adaptive"`` (``F.adaptive_avg_pool2d(x, 1)``), ``"kernel"``
            (``F.avg_pool2d`` with a kernel the size of the map) or ``"mean"``
            (``x.mean((2, 3), keepdim=True)``).
    """

    impls = ("adaptive", "kernel", "mean")

    def __init__(self, channels: int, *, impl: AvgImpl = "mean", device=None, dtype=None) -> None:
        super().__init__(channels, impl=impl, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        _check_floating(self, x)
        if self.impl == "mean":
            return x.mean((2, 3), keepdim=True)
        if self.impl == "adaptive":
            return F.adaptive_avg_pool2d(x, 1)
        return F.avg_pool2d(x, kernel_size=(x.shape[2], x.shape[3]))


class GlobalMaxPool(_GlobalPool):
    """Global max pooling, ``(N, C, H, W) -> (N, C, 1, 1)``.

    Args:
        channels: input (and output) channels.
        impl: ``"adaptive"`` (``F.adaptive_max_pool2d(x, 1)``), ``"kernel"``
            (``F.max_pool2d`` with a kernel the size of the map) or ``"amax"``
            (``x.amax((2, 3), keepdim=True)``).
    """

    impls = ("adaptive", "kernel", "amax")

    def __init__(self, channels: int, *, impl: MaxImpl = "amax", device=None, dtype=None) -> None:
        super().__init__(channels, impl=impl, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        _check_floating(self, x)
        if self.impl == "amax":
            return x.amax((2, 3), keepdim=True)
        if self.impl == "adaptive":
            return F.adaptive_max_pool2d(x, 1)
        return F.max_pool2d(x, kernel_size=(x.shape[2], x.shape[3]))


class CrossChannelPool(AttentionModule):
    """Cross-channel pooling (maxout, arXiv:1302.4389): ``C -> C / k`` channels.

    Groups of ``k`` consecutive channels are reduced to one by ``max`` or ``mean``.

    Args:
        channels: input channels; must be a multiple of ``k``.
        k: group size (channels pooled into one).
        mode: ``"max"`` or ``"mean"``.
    """

    def __init__(
        self,
        channels: int,
        *,
        k: int = 2,
        mode: Literal["max", "mean"] = "max",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.k = check_positive_int("k", k)
        check_divisible("channels", channels, k, "k")
        if mode not in ("max", "mean"):
            raise ValueError(f"mode must be 'max' or 'mean', got {mode!r}")
        self.mode = mode

    @property
    def out_channels(self) -> int:
        return self.channels // self.k

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        groups = x.unflatten(1, (self.out_channels, self.k))
        if self.mode == "max":
            return groups.amax(2)
        return groups.mean(2)

    def output_shape(self, input_shape: Shape) -> Shape:
        n, _, h, w = input_shape
        return (n, self.out_channels, h, w)

    def formula_params(self) -> int:
        return 0

    def formula_macs(self, input_shape: Shape) -> int:
        return numel(input_shape)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, k={self.k}, mode={self.mode!r}"


_GAP_PAPER = "Network In Network"
_GMP_PAPER = "Is object localization for free? Weakly-supervised learning with CNNs (CVPR 2015)"
_GAP_SOURCE = (
    f"{NO_OFFICIAL_CODE}: Lin, Chen, Yan, Network In Network, ICLR 2014, arXiv:1312.4400, Sec. 3.2 "
    "(global average pooling of the last feature maps in place of the fully connected classifier): "
    "the classifier's global pooling"
)
_GMP_SOURCE = (
    f"{NO_OFFICIAL_CODE}: Oquab, Bottou, Laptev, Sivic, Is object localization for free?, CVPR 2015 "
    "(no arXiv version), Sec. 3 (a global max-pooling layer over the last score maps): the "
    "classifier's global pooling"
)
_CCP_SOURCE = (
    f"{NO_OFFICIAL_CODE}: Goodfellow et al., Maxout Networks, ICML 2013, arXiv:1302.4389, Sec. 3 "
    "(the maxout unit: the max over groups of k linear pieces); no backbone placement (it changes "
    "the channel count)"
)
for _name, _impl, _text in (
    ("gap_adaptive", "adaptive", "F.adaptive_avg_pool2d(x, 1)"),
    ("gap_kernel", "kernel", "F.avg_pool2d(x, (H, W))"),
    ("gap_mean", "mean", "x.mean((2, 3), keepdim=True)"),
):
    register_attention(
        _name,
        GlobalAvgPool,
        family="pooling",
        paper=_GAP_PAPER,
        arxiv="1312.4400",
        kind="pool",
        placement="head",
        official_source=_GAP_SOURCE,
        description=f"global average pooling (N,C,H,W)->(N,C,1,1) as {_text}",
        impl=_impl,
    )
for _name, _impl, _text in (
    ("gmp_adaptive", "adaptive", "F.adaptive_max_pool2d(x, 1)"),
    ("gmp_kernel", "kernel", "F.max_pool2d(x, (H, W))"),
    ("gmp_amax", "amax", "x.amax((2, 3), keepdim=True)"),
):
    register_attention(
        _name,
        GlobalMaxPool,
        family="pooling",
        paper=_GMP_PAPER,
        arxiv=None,
        kind="pool",
        placement="head",
        official_source=_GMP_SOURCE,
        description=f"global max pooling (N,C,H,W)->(N,C,1,1) as {_text}",
        impl=_impl,
    )
_CCP_NOTE = (
    "cross-channel pooling divides the channel count by k, so it cannot sit on a residual "
    "branch (the add needs equal shapes) nor replace the global head pooling"
)
for _name, _mode in (("ccp_max", "max"), ("ccp_mean", "mean")):
    register_attention(
        _name,
        CrossChannelPool,
        family="pooling",
        paper="Maxout Networks",
        arxiv="1302.4389",
        kind="pool",
        placement="none",
        placement_note=_CCP_NOTE,
        official_source=_CCP_SOURCE,
        description=f"cross-channel {_mode} pooling over groups of k consecutive channels, C -> C/k (k=2)",
        mode=_mode,
    )
del _name, _impl, _text, _mode
