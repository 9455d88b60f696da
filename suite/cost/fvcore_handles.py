"""fvcore handles for the attnbench convention, and an analysis that reports what it ignored.

fvcore's ``FlopCountAnalysis`` prices a traced ``aten::`` node with the handle registered for
its kind (``set_op_handle``); a kind without a handle is either *ignored* (a built-in list
that includes compute ops such as ``aten::relu``, ``aten::clamp`` and ``aten::max``) or
*unsupported* (``unsupported_ops()``, counted as zero with a warning).

:func:`attnbench_handles` gives one handle per op of :data:`suite.cost.op_rules.RULES`,
registered under ``aten::<op>`` and its in-place ``aten::<op>_``. Each handle adapts the JIT
values to :class:`~suite.cost.op_rules.TensorArg` / Python values and applies the shared rule.
It returns a ``Counter`` with two entries: the op priced by our rule (key ``<op>``) and the
same node priced as fvcore ships it (key ``shipped::<op>``: fvcore's own handle, 0 when it has
none), so one trace yields both tallies (``macs_fvcore`` and ``macs_fvcore_shipped``).
Arithmetic the tracer records on sizes (``h * w - 1`` on 0-dim tensors) is priced at 0
(:func:`is_shape_arithmetic`): it is not an op of the eager forward.

:class:`AttnbenchFlopCountAnalysis` records every node kind it ignored, so a caller can check
that each one is in the data-movement allowlist (fvcore itself never says what it ignored).
"""

from __future__ import annotations

import typing
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS
from fvcore.nn.jit_analysis import _IGNORED_OPS

from .op_rules import RULES, TensorArg, canonical_op, op_macs

__all__ = [
    "SHIPPED_PREFIX",
    "SHIPPED_HANDLES",
    "SHIPPED_IGNORED",
    "jit_value",
    "is_shape_arithmetic",
    "attnbench_handles",
    "AttnbenchFlopCountAnalysis",
]

SHIPPED_PREFIX = "shipped::"
SHIPPED_HANDLES: dict[str, Callable[..., Any]] = dict(_DEFAULT_SUPPORTED_OPS)
"""fvcore's own handles, by JIT kind (``aten::_convolution``...)."""
SHIPPED_IGNORED: frozenset[str] = frozenset(_IGNORED_OPS)
"""Kinds fvcore ignores silently as shipped (``aten::relu``, ``aten::max``, ``aten::view``...)."""


def jit_value(value: torch._C.Value) -> Any:
    """A traced value as the rules want it: ``TensorArg``, a list of them, or a constant."""
    vtype = value.type()
    if isinstance(vtype, torch._C.TensorType):
        sizes = vtype.sizes() if value.isCompleteTensor() else None
        return TensorArg(tuple(sizes) if sizes is not None else None)
    if isinstance(vtype, torch._C.NoneType):
        return None
    if isinstance(vtype, torch._C.ListType) and isinstance(vtype.getElementType(), torch._C.TensorType):
        node = value.node()
        if node.kind() == "prim::ListConstruct":
            return [jit_value(v) for v in node.inputs()]
        return None
    try:
        return value.toIValue()
    except RuntimeError:
        return None


_SHAPE_SOURCES = frozenset({"prim::NumToTensor", "aten::size", "prim::Constant", "aten::Int", "aten::ScalarImplicit"})


def is_shape_arithmetic(values: list[Any], _depth: int = 0) -> bool:
    """Whether every tensor among ``values`` is derived from sizes and constants only.

    The tracer records Python arithmetic on ``x.shape`` (``n = h * w - 1``; ``4.0 / n``) as
    ``aten::mul`` / ``aten::sub`` / ``aten::reciprocal`` on 0-dim tensors built by
    ``prim::NumToTensor``. Eager mode runs no such op (the dispatch recorder never sees
    them), so the handles price them at 0 rather than 1 MAC each.
    """
    tensors = [v for v in values if isinstance(v.type(), torch._C.TensorType)]
    if not tensors or _depth > 16:
        return False
    for value in tensors:
        sizes = value.type().sizes() if value.isCompleteTensor() else None
        if sizes:  # sizes are 0-dim: anything with a dimension is real data
            return False
        node = value.node()
        kind = node.kind()
        if kind in _SHAPE_SOURCES:
            continue
        if kind.startswith("aten::") and is_shape_arithmetic(list(node.inputs()), _depth + 1):
            continue
        if kind.startswith("aten::") and not any(
            isinstance(i.type(), torch._C.TensorType) for i in node.inputs()
        ):
            continue
        return False
    return True


def _handle(kind: str) -> Callable[[list[Any], list[Any]], typing.Counter[str]]:
    op = canonical_op(kind)
    shipped = SHIPPED_HANDLES.get(kind)
    shipped_key = SHIPPED_PREFIX + op

    def handle(inputs: list[Any], outputs: list[Any]) -> typing.Counter[str]:
        if is_shape_arithmetic(inputs):
            return Counter({op: 0, shipped_key: 0})
        ours = op_macs(kind, [jit_value(v) for v in inputs], [jit_value(v) for v in outputs])
        counts: typing.Counter[str] = Counter({op: ours})
        if shipped is not None:
            # fvcore's own handles return a number or a Counter (conv: {"conv": n}).
            value = shipped(inputs, outputs)
            counts[shipped_key] = int(sum(value.values()) if isinstance(value, Counter) else value)
        else:
            counts[shipped_key] = 0
        return counts

    handle.__name__ = f"{op}_handle"
    handle.__doc__ = f"attnbench MACs of ``{kind}`` (rule {RULES[op].__name__}), plus fvcore's own."
    return handle


def attnbench_handles() -> dict[str, Callable[[list[Any], list[Any]], typing.Counter[str]]]:
    """One handle per op with a rule, keyed ``aten::<op>`` and ``aten::<op>_``."""
    handles = {}
    for op in RULES:
        kinds = (f"aten::{op}",) if op.startswith("__") else (f"aten::{op}", f"aten::{op}_")
        for kind in kinds:
            handles[kind] = _handle(kind)
    return handles


class AttnbenchFlopCountAnalysis(FlopCountAnalysis):
    """``FlopCountAnalysis`` with the attnbench handles, recording the kinds it ignored.

    ``by_operator()`` holds both tallies: ``<op>`` (ours) and ``shipped::<op>`` (fvcore as
    shipped); use :meth:`totals` rather than ``total()``, which would add them together.
    """

    def __init__(self, model: torch.nn.Module, inputs: Any) -> None:
        super().__init__(model, inputs)
        self.set_op_handle(**attnbench_handles())
        self.unsupported_ops_warnings(False)
        self.uncalled_modules_warnings(False)
        self.tracer_warnings("none")
        self._ignored_seen: typing.Counter[str] = Counter()
        self._unpriced: typing.Counter[str] = Counter()
        for kind in SHIPPED_HANDLES:
            if canonical_op(kind) not in RULES:  # fvcore prices it, our convention does not
                self.set_op_handle(kind, self._shipped_only(kind))

    def _shipped_only(self, kind: str) -> Callable[[list[Any], list[Any]], typing.Counter[str]]:
        shipped = SHIPPED_HANDLES[kind]
        key = SHIPPED_PREFIX + canonical_op(kind)

        def handle(inputs: list[Any], outputs: list[Any]) -> typing.Counter[str]:
            self._unpriced[kind] += 1
            value = shipped(inputs, outputs)
            return Counter({key: int(sum(value.values()) if isinstance(value, Counter) else value)})

        return handle

    def _should_ignore_node(self, node: Any) -> bool:  # fvcore calls it for unhandled nodes
        ignored = super()._should_ignore_node(node)
        if ignored:
            self._ignored_seen[node.kind()] += 1
        return ignored

    def ignored_ops(self) -> typing.Counter[str]:
        """Node kinds without a handle that fvcore skipped silently (prim:: included)."""
        self._analyze()
        return Counter(self._ignored_seen)

    def unpriced_ops(self) -> typing.Counter[str]:
        """Kinds unsupported under our convention: fvcore's ``unsupported_ops()`` plus the kinds
        only fvcore's own handles price (e.g. ``aten::upsample_bilinear2d``)."""
        self._analyze()
        return Counter(self.unsupported_ops()) + Counter(self._unpriced)

    def totals(self) -> tuple[int, int, typing.Counter[str], typing.Counter[str]]:
        """``(ours, shipped, ours by op, shipped by op)`` for the whole model."""
        ours: typing.Counter[str] = Counter()
        shipped: typing.Counter[str] = Counter()
        for key, value in self.by_operator().items():
            if key.startswith(SHIPPED_PREFIX):
                shipped[key[len(SHIPPED_PREFIX):]] += int(value)
            else:
                ours[key] += int(value)
        return sum(ours.values()), sum(shipped.values()), ours, shipped
