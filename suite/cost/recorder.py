"""Record every aten op a forward pass runs, with the innermost module that ran it.

:class:`OpRecorder` is a ``TorchDispatchMode``: it sees each op after autograd and after
the composite ops are decomposed (``linear`` as ``t`` + ``addmm``, ``einsum`` as ``bmm``,
``adaptive_avg_pool2d(x, 1)`` as ``mean``), whether the op came from a module
(``nn.Conv2d``) or from a function called in some ``forward`` (``x * gate``, ``torch.bmm``).
Forward pre-hooks and hooks on every submodule keep a stack, so each op is attributed to
the innermost module running when it executed (its *owner*); an op whose owner has children
ran "directly" in that module's forward, outside any leaf: exactly what thop never sees.

Each op is priced by the shared rules of :mod:`suite.cost.op_rules`; an op without a rule is
kept with ``macs=None`` (uncounted), never priced at zero.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .op_rules import TensorArg, UnknownOpError, is_data_movement, op_macs

__all__ = ["OpRecord", "OpRecorder", "record_forward"]


@dataclass
class OpRecord:
    """One op call: its aten name, owner module, price (None: no rule) and output size."""

    op: str
    owner: nn.Module | None
    owner_name: str
    macs: int | None
    out_elems: int
    data_movement: bool
    owner_is_leaf: bool = True


def _as_arg(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return TensorArg(tuple(value.shape))
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return [TensorArg(tuple(v.shape)) for v in value]
    return value


def _positional(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    """The op's arguments in schema order (keyword arguments and defaults filled in)."""
    merged = list(args)
    for index, argument in enumerate(func._schema.arguments):
        if index < len(args):
            continue
        if argument.name in kwargs:
            merged.append(kwargs[argument.name])
        elif argument.has_default_value():
            merged.append(argument.default_value)
        else:
            merged.append(None)
    return merged


@dataclass
class _Frame:
    module: nn.Module
    name: str
    direct_macs: int = 0


class OpRecorder(TorchDispatchMode):
    """Record the ops of the forward passes run inside ``with OpRecorder(model):``.

    Attributes:
        records: every op call, in order.
        calls: for each module, the MACs of the ops each of its calls ran itself (outside
            its children), in call order. :func:`suite.cost.counters.thop_counts` replays them.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.records: list[OpRecord] = []
        self.calls: dict[nn.Module, list[int]] = {}
        self._stack: list[_Frame] = []
        self._handles: list[Any] = []
        self._names = {m: n for n, m in model.named_modules()}
        self._leaf = {m: not any(True for _ in m.children()) for m in self._names}

    # module stack ------------------------------------------------------------------------
    def _pre(self, module: nn.Module, args: Any) -> None:
        self._stack.append(_Frame(module, self._names.get(module, "?")))

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        frame = self._stack.pop()
        self.calls.setdefault(frame.module, []).append(frame.direct_macs)

    def __enter__(self) -> OpRecorder:
        for module in self._names:
            # the frame opens before any other pre-hook runs and closes after the hooks
            # registered before ours
            self._handles.append(module.register_forward_pre_hook(self._pre, prepend=True))
            self._handles.append(module.register_forward_hook(self._post))
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._stack.clear()
        return super().__exit__(*exc)

    # ops ---------------------------------------------------------------------------------
    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func._schema.name
        outs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
        try:
            macs: int | None = op_macs(
                name,
                [_as_arg(a) for a in _positional(func, args, kwargs)],
                [_as_arg(o) for o in outs] or [_as_arg(out)],
            )
        except UnknownOpError:
            macs = None
        frame = self._stack[-1] if self._stack else None
        owner = frame.module if frame else None
        if frame is not None and macs is not None:
            frame.direct_macs += macs
        self.records.append(OpRecord(
            op=name,
            owner=owner,
            owner_name=frame.name if frame else "",
            macs=macs,
            out_elems=sum(o.numel() for o in outs),
            data_movement=is_data_movement(name),
            owner_is_leaf=self._leaf.get(owner, True) if owner is not None else False,
        ))
        return out

    # summaries ---------------------------------------------------------------------------
    @property
    def total_macs(self) -> int:
        return sum(r.macs for r in self.records if r.macs is not None)

    def unknown_ops(self) -> dict[str, int]:
        """Ops without a rule (count of calls by op name): uncounted by every counter."""
        found: dict[str, int] = {}
        for r in self.records:
            if r.macs is None:
                found[r.op] = found.get(r.op, 0) + 1
        return found

    def produced(self) -> tuple[int, int]:
        """``(tensors, elements)`` produced by the compute ops (data movement excluded)."""
        outs = [r for r in self.records if not r.data_movement]
        return len(outs), sum(r.out_elems for r in outs)


@contextmanager
def record_forward(model: nn.Module) -> Iterator[OpRecorder]:
    """``with record_forward(model) as rec: model(x)``; then read ``rec.records``."""
    recorder = OpRecorder(model)
    with recorder:
        yield recorder

