"""Per-op MAC rules: the convention of ``modules/_base.py``, written once for every counter.

The same rule prices an op whether it was seen by fvcore's JIT trace (``aten::mul`` with
``torch._C.Value`` arguments, adapted in :mod:`suite.cost.fvcore_handles`) or by our
``TorchDispatchMode`` recorder (``aten.mul.Tensor`` with real or meta tensors, adapted in
:mod:`suite.cost.recorder`). Both adapters turn the op's positional arguments into
:class:`TensorArg` (a tensor's shape), lists of them, or plain Python values, and call
:func:`op_macs`.

The convention ("attnbench MACs", forward pass in eval mode):

* convolution: ``N * C_out * H_out * W_out * (C_in / groups) * k_h * k_w`` (bias not counted);
* linear / mm / addmm / bmm / baddbmm / matmul: ``prod(output) * k`` (the contraction size);
  einsum: the product of the sizes of all its index letters (``b * m * n * k``);
* batch norm in eval mode: 2 per element when affine, 1 otherwise; in training mode, and
  group / layer / instance norm: 5 per element when affine, 4 otherwise (fvcore's figures);
* reductions and pooling of any kind (``mean``, ``sum``, ``amax``, ``max`` over a dim,
  ``avg_pool2d``, ``max_pool2d``, ``adaptive_*_pool2d``...): 1 per *input* element;
  ``var`` / ``std`` (and ``var_mean`` / ``std_mean``) and vector norms (``linalg_vector_norm``,
  ``norm``): 2 per input element. ``_base.py`` names var/std only; a norm does the same
  square-and-accumulate per element, and the zoo's closed forms (GCT's l2 norm, SRM's std
  written as a norm) price it at 2, so the rule does too;
* elementwise arithmetic, comparisons and activations (``mul``, ``add``, ``sigmoid``,
  ``softmax``, ``hardswish``, ``relu``, ``clamp``...): 1 per *output* element (broadcast
  included);
* data movement and tensor creation (:data:`DATA_MOVEMENT`): 0.

An op that is in none of these tables is *unknown*: :func:`op_macs` raises
:class:`UnknownOpError` and the counters report it as uncounted instead of pricing it at
zero. Nearest upsampling is data movement; bilinear interpolation, ``grid_sample`` and the
like are deliberately unknown until a module needs them and the convention names a price.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "TensorArg",
    "Rule",
    "RULES",
    "DATA_MOVEMENT",
    "MATMUL_CONV_OPS",
    "UnknownOpError",
    "canonical_op",
    "op_macs",
    "is_data_movement",
    "is_known",
]


@dataclass(frozen=True)
class TensorArg:
    """A tensor argument or output, reduced to its shape (``None`` when the tracer lost it)."""

    shape: tuple[int, ...] | None

    @property
    def numel(self) -> int:
        if self.shape is None:
            raise ValueError("a tensor's shape is unknown (incomplete trace); cannot price the op")
        return math.prod(self.shape)


Rule = Callable[[Sequence[Any], Sequence[Any]], int]
"""``rule(args, outputs) -> MACs``; ``args`` positional in the op's schema order."""


class UnknownOpError(KeyError):
    """The op has no rule and is not data movement: no counter may price it at zero."""


def canonical_op(name: str) -> str:
    """``"aten::mul_"``, ``"aten.mul.Tensor"`` or ``"mul"`` -> ``"mul"``.

    Drops the namespace, the overload and the in-place suffix (``relu_`` costs what ``relu``
    costs). Dunder names (``__and__``) and leading underscores (``_softmax``) are kept.
    """
    base = name.split("::", 1)[-1]
    if "." in base:  # aten.mul.Tensor (dispatch OpOverload repr) -> mul
        parts = base.split(".")
        base = parts[1] if parts[0] == "aten" and len(parts) > 1 else parts[0]
    if base.endswith("_") and not base.endswith("__"):
        base = base[:-1]
    return base


# --------------------------------------------------------------------------- helpers


def _tensor(value: Any, what: str) -> TensorArg:
    if not isinstance(value, TensorArg):
        raise ValueError(f"expected a tensor for {what}, got {value!r}")
    return value


def _shape(value: Any, what: str) -> tuple[int, ...]:
    shape = _tensor(value, what).shape
    if shape is None:
        raise ValueError(f"the shape of {what} is unknown (incomplete trace); cannot price the op")
    return shape


def _first_output_numel(outputs: Sequence[Any]) -> int:
    for out in outputs:
        if isinstance(out, TensorArg):
            return out.numel
        if isinstance(out, (list, tuple)) and out and isinstance(out[0], TensorArg):
            return sum(o.numel for o in out)
    raise ValueError("the op returned no tensor; cannot price it per output element")


# --------------------------------------------------------------------------- rules


def elementwise(args: Sequence[Any], outputs: Sequence[Any]) -> int:
    """1 per output element (broadcast included)."""
    return _first_output_numel(outputs)


def elementwise_x2(args: Sequence[Any], outputs: Sequence[Any]) -> int:
    """Fused two-op elementwise kernels (``addcmul``, ``addcdiv``, ``lerp``): 2 per output."""
    return 2 * _first_output_numel(outputs)


def reduction(args: Sequence[Any], outputs: Sequence[Any]) -> int:
    """1 per input element read (the first argument)."""
    return _tensor(args[0], "the reduced input").numel


def reduction_x2(args: Sequence[Any], outputs: Sequence[Any]) -> int:
    """``var`` / ``std`` / vector norms: 2 per input element (square and accumulate)."""
    return 2 * _tensor(args[0], "the reduced input").numel


def max_min(args: Sequence[Any], outputs: Sequence[Any]) -> int:
    """``max``/``min``: elementwise when the second argument is a tensor, else a reduction."""
    if len(args) > 1 and isinstance(args[1], TensorArg):
        return elementwise(args, outputs)
    return reduction(args, outputs)


def convolution(args: Sequence[Any], outputs: Sequence[Any]) -> int:
    """``aten::_convolution`` / ``aten.convolution`` / ``conv2d``: see the module docstring.

    ``prod(weight) = C_out * C_in/groups * k_h * k_w``, times ``N`` and the output's spatial
    size (the input's for a transposed convolution).
    """
    x = _shape(args[0], "the convolution input")
    w = _shape(args[1], "the convolution weight")
    transposed = bool(args[6]) if len(args) > 6 and isinstance(args[6], bool) else False
    spatial = x[2:] if transposed else _shape(outputs[0], "the convolution output")[2:]
    return x[0] * math.prod(w) * math.prod(spatial)


def _contraction(a: Any, out: Any) -> int:
    a_shape = _shape(a, "the left matrix")
    return _tensor(out, "the product").numel * a_shape[-1]


def mm(args: Sequence[Any], outputs: Sequence[Any]) -> int:
    """``mm`` / ``bmm`` / ``matmul`` (left operand first): ``prod(output) * k``."""
    return _contraction(args[0], outputs[0])


def addmm(args: Sequence[Any], outputs: Sequence[Any]) -> int:
    """``addmm`` / ``baddbmm`` (bias first, then the two factors); bias not counted."""
    return _contraction(args[1], outputs[0])


def linear(args: Sequence[Any], outputs: Sequence[Any]) -> int:
    """``linear(x, W, b)``: ``prod(output) * in_features``; bias not counted."""
    return _contraction(args[0], outputs[0])


def einsum(args: Sequence[Any], outputs: Sequence[Any]) -> int:
    """``einsum(equation, [a, b])``: product of the sizes of every index letter."""
    equation = args[0]
    operands = args[1]
    if not isinstance(equation, str) or not isinstance(operands, (list, tuple)):
        raise ValueError(f"einsum arguments not understood: {equation!r}, {operands!r}")
    if len(operands) > 2:
        raise ValueError("einsum with more than two operands has no rule (split it in pairs)")
    lhs = equation.replace(" ", "").split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for letters, operand in zip(lhs, operands, strict=True):
        shape = _shape(operand, "an einsum operand")
        if "." in letters:
            raise ValueError("einsum with an ellipsis has no rule")
        for letter, size in zip(letters, shape, strict=True):
            sizes[letter] = max(sizes.get(letter, 1), size)
    return math.prod(sizes.values())


def _norm_cost(x: Any, affine: bool, training: bool) -> int:
    numel = _tensor(x, "the normalised input").numel
    if training:
        return numel * (5 if affine else 4)
    return numel * (2 if affine else 1)


def batch_norm(args: Sequence[Any], outputs: Sequence[Any]) -> int:
    """``batch_norm`` / ``native_batch_norm`` / ``_native_batch_norm_legit``.

    Weight at index 1; the ``training`` flag is the first bool after the running stats
    (index 5, or 3 for the overload without running stats).
    """
    training = next((a for a in args[3:] if isinstance(a, bool)), False)
    return _norm_cost(args[0], args[1] is not None, training)


def batch_norm_eval(args: Sequence[Any], outputs: Sequence[Any]) -> int:
    """``_native_batch_norm_legit_no_training``: eval mode by definition."""
    return _norm_cost(args[0], args[1] is not None, False)


def _group_norm_like(weight_index: int) -> Rule:
    def rule(args: Sequence[Any], outputs: Sequence[Any]) -> int:
        affine = len(args) > weight_index and args[weight_index] is not None
        return _norm_cost(args[0], affine, True)

    rule.__doc__ = f"5 per element when affine (weight at argument {weight_index}), 4 otherwise."
    return rule


def zero(args: Sequence[Any], outputs: Sequence[Any]) -> int:
    """Data movement and tensor creation: 0."""
    return 0


# --------------------------------------------------------------------------- tables

_ELEMENTWISE = (
    "add", "sub", "rsub", "mul", "div", "true_divide", "floor_divide", "remainder", "fmod",
    "pow", "sqrt", "rsqrt", "square", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p",
    "neg", "abs", "reciprocal", "sign", "sgn", "floor", "ceil", "round", "trunc", "frac",
    "sin", "cos", "tan", "erf", "erfc",
    "sigmoid", "hardsigmoid", "relu", "relu6", "hardtanh", "leaky_relu", "elu", "selu", "celu",
    "gelu", "silu", "hardswish", "mish", "softplus", "softsign", "tanh", "hardshrink",
    "softshrink", "threshold", "prelu", "_prelu_kernel", "logsigmoid", "glu",
    "clamp", "clamp_min", "clamp_max", "clip", "maximum", "minimum", "fmax", "fmin", "where",
    "masked_fill", "eq", "ne", "gt", "ge", "lt", "le", "logical_and", "logical_or",
    "logical_not", "__and__", "__or__", "bitwise_and", "bitwise_or", "bitwise_not",
    "softmax", "_softmax", "log_softmax", "_log_softmax", "special_softmax",
)
_ELEMENTWISE_X2 = ("addcmul", "addcdiv", "lerp")
_REDUCTIONS = (
    "mean", "sum", "nansum", "prod", "amax", "amin", "aminmax", "argmax", "argmin",
    "logsumexp", "cumsum",
    "avg_pool1d", "avg_pool2d", "avg_pool3d", "max_pool1d", "max_pool2d", "max_pool3d",
    "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
    "mkldnn_max_pool2d", "quantized_max_pool2d", "lp_pool2d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "mkldnn_adaptive_avg_pool2d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
)
_REDUCTIONS_X2 = ("var", "std", "var_mean", "std_mean", "norm", "linalg_vector_norm", "frobenius_norm")

DATA_MOVEMENT: frozenset[str] = frozenset({
    # views and layout
    "view", "_unsafe_view", "reshape", "view_as", "reshape_as", "permute", "transpose",
    "swapaxes", "swapdims", "t", "numpy_T", "contiguous", "flatten", "unflatten", "squeeze",
    "unsqueeze", "expand", "expand_as", "broadcast_to", "as_strided", "alias", "detach",
    "select", "slice", "narrow", "unbind", "split", "split_with_sizes", "chunk",
    "tensor_split", "unsafe_split", "unsafe_chunk", "movedim", "moveaxis", "diagonal",
    "lift_fresh", "lift_fresh_copy", "_reshape_alias", "real", "view_as_real",
    # copies, concatenation, indexing, padding, nearest resampling
    "cat", "concat", "concatenate", "stack", "clone", "copy", "_to_copy", "to", "type_as",
    "repeat", "repeat_interleave", "tile", "roll", "flip", "index", "index_select",
    "gather", "take_along_dim", "index_put", "scatter", "constant_pad_nd", "pad",
    "reflection_pad1d", "reflection_pad2d", "replication_pad1d", "replication_pad2d",
    "zero_pad2d", "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d",
    "_upsample_nearest_exact2d", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle",
    "native_channel_shuffle", "im2col", "col2im", "unfold", "fill", "zero", "masked_select",
    "nonzero",
    # creation and metadata
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "zeros",
    "zeros_like", "ones", "ones_like", "full", "full_like", "new_zeros", "new_ones",
    "new_full", "arange", "linspace", "eye", "scalar_tensor", "tensor", "size", "numel",
    "dim", "stride", "Int", "Float", "Bool", "ScalarImplicit", "item", "_local_scalar_dense",
    "IntImplicit", "FloatImplicit", "is_nonzero", "_assert_async", "sym_size", "sym_numel",
    "sym_stride", "sym_storage_offset", "_shape_as_tensor", "randn", "rand", "randint",
    "normal", "uniform", "bernoulli", "_has_compatible_shallow_copy_type", "resolve_conj",
    "resolve_neg", "align_to",
    # identities in eval mode
    "dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout", "native_dropout",
    "dropout2d", "identity",
})
"""Ops priced at 0: data movement, tensor creation, metadata and eval-mode identities.

This is the explicit allowlist the "no silent zero" test checks against: an op ignored by a
counter must be in it (or be a JIT ``prim::`` node, which only builds lists and constants)."""

RULES: dict[str, Rule] = {}
for _name in _ELEMENTWISE:
    RULES[_name] = elementwise
for _name in _ELEMENTWISE_X2:
    RULES[_name] = elementwise_x2
for _name in _REDUCTIONS:
    RULES[_name] = reduction
for _name in _REDUCTIONS_X2:
    RULES[_name] = reduction_x2
RULES.update({
    "max": max_min,
    "min": max_min,
    "_convolution": convolution,
    "convolution": convolution,
    "conv1d": convolution,
    "conv2d": convolution,
    "conv3d": convolution,
    "mkldnn_convolution": convolution,
    "_slow_conv2d_forward": convolution,
    "thnn_conv2d": convolution,
    "mm": mm,
    "bmm": mm,
    "matmul": mm,
    "addmm": addmm,
    "baddbmm": addmm,
    "linear": linear,
    "einsum": einsum,
    "batch_norm": batch_norm,
    "native_batch_norm": batch_norm,
    "_native_batch_norm_legit": batch_norm,
    "_native_batch_norm_legit_no_training": batch_norm_eval,
    "group_norm": _group_norm_like(2),  # (input, num_groups, weight, bias, eps, cudnn)
    "native_group_norm": _group_norm_like(1),  # (input, weight, bias, N, C, HxW, group, eps)
    "layer_norm": _group_norm_like(2),  # (input, normalized_shape, weight, bias, ...)
    "native_layer_norm": _group_norm_like(2),
    "instance_norm": _group_norm_like(1),  # (input, weight, bias, running stats, ...)
})
for _name in DATA_MOVEMENT:
    RULES.setdefault(_name, zero)

MATMUL_CONV_OPS: frozenset[str] = frozenset({
    "_convolution", "convolution", "conv1d", "conv2d", "conv3d", "mkldnn_convolution",
    "_slow_conv2d_forward", "thnn_conv2d", "mm", "bmm", "matmul", "addmm", "baddbmm",
    "linear", "einsum",
})
"""The ops ``FlopCounterMode`` counts (matrix products and convolutions), and the ops the
published torchvision figures count (conv and linear)."""


def is_data_movement(name: str) -> bool:
    """Whether the op is priced at 0 on purpose (in :data:`DATA_MOVEMENT`)."""
    return canonical_op(name) in DATA_MOVEMENT


def is_known(name: str) -> bool:
    """Whether the op has a rule (data movement included)."""
    return canonical_op(name) in RULES


def op_macs(name: str, args: Sequence[Any], outputs: Sequence[Any]) -> int:
    """MACs of one op call by the attnbench convention; :class:`UnknownOpError` if it has no rule."""
    rule = RULES.get(canonical_op(name))
    if rule is None:
        raise UnknownOpError(name)
    return int(rule(args, outputs))
