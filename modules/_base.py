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
