"""The contract every attention module in the zoo follows, and the cost convention it states.

Every module subclasses :class:`AttentionModule` and so can say, without running, how many
parameters it holds (:meth:`AttentionModule.formula_params`), what shape it returns
(:meth:`AttentionModule.output_shape`) and how many multiply-accumulates a forward pass costs
(:meth:`AttentionModule.formula_macs`). Tests hold the real module to these closed forms and the
harness reports them next to the counters' figures.

MAC convention ("attnbench MACs"), applied to a forward pass in eval mode:

* convolution: ``N * C_out * H_out * W_out * (C_in / groups) * k_h * k_w`` (bias not counted);
* linear: ``N * in_features * out_features`` (bias not counted);
* matmul / bmm / einsum: the product of the dimensions (``b * m * n * k``);
* batch norm in eval mode: 2 per element when affine, 1 otherwise (fvcore's convention);
  group / layer norm: 5 per element when affine, 4 otherwise (fvcore's convention);
* reductions (average / max pooling of any kind, ``mean``, ``amax``, ``sum``, ``std``...):
  1 per *input* element read, except ``var``/``std`` and vector norms, which count 2;
* elementwise arithmetic and activations (``mul``, ``add``, ``sub``, ``div``, ``sigmoid``,
  ``hardsigmoid``, ``relu``, ``silu``, ``hardswish``, ``tanh``, ``exp``, ``softmax``...): 1 per
  *output* element, broadcast included (``x * gate`` costs ``x.numel()``);
* data movement (``view``, ``permute``, ``cat``, ``split``, ``expand``, ``contiguous``): 0.

Counting 1 MAC for an elementwise op is a convention, not a claim that it does one fused
multiply-add: it makes the memory-bound work of attention gates visible, which fvcore and thop
as shipped leave at zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = [
    "AttentionModule",
    "Shape",
    "ModuleFactory",
    "check_positive_int",
    "check_divisible",
    "conv_macs",
    "linear_macs",
    "numel",
    "make_divisible",
    "check_reduction",
    "reduced_channels",
    "make_activation",
    "ExciteMLP",
    "check_odd_kernel",
    "padded_output_size",
    "weighted_sum",
]

Shape = tuple[int, int, int, int]
"""An ``(N, C, H, W)`` input or output shape."""

ModuleFactory = Callable[..., nn.Module]
"""A callable that builds a layer: ``nn.ReLU``, ``partial(nn.BatchNorm2d, eps=1e-3)``..."""


def numel(shape: Sequence[int]) -> int:
    """Number of elements of a tensor of ``shape``."""
    return math.prod(int(s) for s in shape)


def conv_macs(
    batch: int,
    in_channels: int,
    out_channels: int,
    out_hw: tuple[int, int],
    kernel: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> int:
    """MACs of a 2-D convolution (bias not counted)."""
    return (
        batch * out_channels * out_hw[0] * out_hw[1] * (in_channels // groups) * kernel[0] * kernel[1]
    )


def linear_macs(rows: int, in_features: int, out_features: int) -> int:
    """MACs of a linear layer applied to ``rows`` vectors (bias not counted)."""
    return rows * in_features * out_features


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never going below 90% of it.

    The rounding MobileNetV2 and timm use for reduced channel counts.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is a positive ``int``; raise ``ValueError`` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_divisible(name: str, value: int, divisor: int, divisor_name: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a multiple of ``divisor``."""
    if value % divisor:
        raise ValueError(
            f"{name}={value} must be divisible by {divisor_name}={divisor}; "
            f"accepted values are multiples of {divisor}"
        )


def check_reduction(reduction: object) -> float:
    """Return ``reduction`` if it is a number > 0 (a bottleneck ratio ``r``); ``ValueError`` otherwise."""
    if isinstance(reduction, bool) or not isinstance(reduction, (int, float)) or not reduction > 0:
        raise ValueError(f"reduction must be a number > 0, got {reduction!r}")
    return reduction


def reduced_channels(channels: int, reduction: float, min_channels: int = 1, divisor: int = 1,
                     *, nearest: bool = False) -> int:
    """Width of a bottleneck of ratio ``reduction``, never below ``min_channels``.

    ``divisor=1``: ``channels // reduction``, floored, as the SE paper and most official code
    write ``C / r``. ``divisor > 1``: rounded to a multiple of ``divisor`` as MobileNetV2 and
    timm's ``make_divisible`` do (never below 90% of ``C / r``). ``nearest``: to the nearest
    multiple, halves up, with no 90% rule (timm's ``round_limit=0``, which its Gather-Excite uses).
    """
    check_positive_int("channels", channels)
    check_reduction(reduction)
    check_positive_int("min_channels", min_channels)
    check_positive_int("divisor", divisor)
    value = channels / reduction
    if nearest:
        return max(min_channels, int(value + divisor / 2) // divisor * divisor)
    if divisor > 1:
        return make_divisible(value, divisor, min_value=min_channels)
    return max(min_channels, int(channels // reduction))


def make_activation(act_layer: ModuleFactory) -> nn.Module:
    """``act_layer(inplace=True)`` where the activation accepts it (as timm builds its layers),
    else ``act_layer()``."""
    try:
        return act_layer(inplace=True)
    except TypeError:
        return act_layer()


def check_odd_kernel(kernel_size: object, why: str = "padding is kernel_size // 2") -> int:
    """Return ``kernel_size`` if it is an odd positive int; ``ValueError`` saying ``why`` otherwise."""
    check_positive_int("kernel_size", kernel_size)
    if kernel_size % 2 == 0:  # type: ignore[operator]
        raise ValueError(f"kernel_size must be odd ({why}), got {kernel_size}")
    return kernel_size  # type: ignore[return-value]


def padded_output_size(size: int, kernel_size: int, stride: int = 1) -> int:
    """Output length of a convolution with padding ``kernel_size // 2`` along one axis."""
    pad = kernel_size // 2
    return (size + 2 * pad - kernel_size) // stride + 1


def weighted_sum(features: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum_i features[i] * weights[i]``, accumulated in place into the first product (the
    paths of Selective Kernel and the splits of ResNeSt's split attention)."""
    out = features[0] * weights[0]
    for feature, weight in zip(features[1:], weights[1:], strict=True):
        out = out.addcmul_(feature, weight)
    return out


class ExciteMLP:
    """The squeeze-excite bottleneck, shared by the gates that have it (SE, CBAM's channel gate,
    Gather-Excite, FcaNet, DSAN): ``fc2(act(fc1(v)))`` on a pooled ``(N, C_in, 1, 1)`` map,
    with ``fc1: C_in -> hidden`` and ``fc2: hidden -> C_out`` 1x1 convolutions with bias (the
    maths of ``nn.Linear``; the attribute names ``fc1``, ``act``, ``fc2`` are timm's, so its
    weights copy over), and its closed forms.

    A mixin: :meth:`build_excite` adds the layers to the module itself, so parameter names stay
    ``fc1.weight`` and not ``mlp.fc1.weight``.
    """

    fc1: nn.Conv2d
    act: nn.Module
    fc2: nn.Conv2d

    def build_excite(self, in_channels: int, hidden: int, out_channels: int, act_layer: ModuleFactory,
                     *, bias: bool = True, device: torch.device | str | None = None,
                     dtype: torch.dtype | None = None) -> None:
        """Add ``fc1``, ``act`` and ``fc2`` to this module."""
        factory = {"device": device, "dtype": dtype}
        self.fc1 = nn.Conv2d(in_channels, hidden, 1, bias=bias, **factory)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(hidden, out_channels, 1, bias=bias, **factory)

    def excite(self, pooled: torch.Tensor) -> torch.Tensor:
        """The gate's logits: ``fc2(act(fc1(pooled)))``."""
        return self.fc2(self.act(self.fc1(pooled)))

    def excite_params(self) -> int:
        """Weights and biases of ``fc1`` and ``fc2``, in closed form."""
        c_in, hidden, c_out = self.fc1.in_channels, self.fc1.out_channels, self.fc2.out_channels
        biases = hidden + c_out if self.fc1.bias is not None else 0
        return c_in * hidden + hidden * c_out + biases

    def excite_macs(self, vectors: int) -> int:
        """MACs of :meth:`excite` on ``vectors`` pooled vectors: both FCs (bias not counted) and
        the activation (1 per hidden element)."""
        c_in, hidden, c_out = self.fc1.in_channels, self.fc1.out_channels, self.fc2.out_channels
        return vectors * (c_in * hidden + hidden * c_out + hidden)


class AttentionModule(nn.Module):
    """Base class of every module in the zoo.

    Subclasses set ``self.channels`` (the input channel count) in ``__init__``, call
    :meth:`check_input` at the top of ``forward`` and implement the three closed forms.

    ``in_channels`` is what ``forward`` accepts; ``out_channels`` what it returns.
    """

    channels: int

    @property
    def in_channels(self) -> int:
        return self.channels

    @property
    def out_channels(self) -> int:
        return self.channels

    def check_input(self, x: torch.Tensor) -> None:
        """Refuse a non-4D input or one with the wrong channel count (``ValueError``)."""
        if x.dim() != 4:
            raise ValueError(
                f"{type(self).__name__} expects a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} was built for channels={self.in_channels}, "
                f"got an input with {x.shape[1]} channels (shape {tuple(x.shape)})"
            )

    def output_shape(self, input_shape: Shape) -> Shape:
        """Shape of the output for an input of ``input_shape``. Gates keep the shape."""
        return tuple(input_shape)  # type: ignore[return-value]

    def formula_params(self) -> int:
        """Parameter count in closed form (from the constructor arguments, not by counting)."""
        raise NotImplementedError

    def formula_macs(self, input_shape: Shape) -> int:
        """Forward MACs in eval mode for an input of ``input_shape``, by the convention above."""
        raise NotImplementedError

    def no_weight_decay(self) -> set[str]:
        """Names of this module's own parameters (as in ``named_parameters(recurse=False)``)
        that its official training recipe keeps out of weight decay; empty by default.

        A training recipe reads this from every module of a model (timm's models expose a
        ``no_weight_decay()`` the same way), so the module that owns a parameter declares it.
        """
        return set()
