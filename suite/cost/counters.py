"""The counters, side by side: parameters, fvcore, thop, torch's FlopCounterMode, closed forms.

:func:`analyze` measures one ``nn.Module`` on one input shape and returns a flat dict (one CSV
row). Column names carry their convention: ``macs_*`` are multiply-accumulates (fvcore and
thop count one fused multiply-add as one "flop"; so do we), ``flops_*`` are FLOPs at 2 per
MAC (``FlopCounterMode``'s convention). Which columns exist and what each means:

* ``params_total`` / ``params_trainable`` / ``buffers_total``: element counts;
  ``params_formula``: ``formula_params()`` of an :class:`~modules.AttentionModule`.
* ``macs_fvcore``: fvcore with our handles (:mod:`suite.cost.fvcore_handles`), the
  attnbench convention of ``modules/_base.py``. ``macs_fvcore_shipped``: fvcore as shipped
  (same trace). ``macs_fvcore_shipped_conv_linear``: only the conv / linear / matmul ops of
  fvcore as shipped: the count torchvision's published GMACs use (BN excluded).
* ``macs_thop_shipped``: ``thop.profile`` as shipped. ``macs_thop``: thop with our
  extension (see :func:`thop_counts`).
* ``flops_torch``: ``torch.utils.flop_counter.FlopCounterMode``, forward only.
* ``macs_dispatch``: the sum of our per-op rules over the ops the dispatch recorder saw.
* ``macs_formula``: ``formula_macs(shape)`` of an AttentionModule (at model level:
  ``macs_formula_attn`` / ``params_formula_attn``, the sum over the outermost attention
  modules inside the model, at the input shapes they were called with; for a ``conv``
  entry this includes the convolution it replaced, so it is not the delta over the
  baseline).
* ``act_saved_bytes`` / ``act_saved_tensors``: what one training-mode forward saves for
  backward (:mod:`suite.cost.activations`); where a training-mode BatchNorm cannot run
  (one value per channel: a pooled 1x1 map at batch 1, in SK, SRM, BAM...) the BN layers
  are measured in eval mode, on the real module, and ``act_note`` says so (in training mode
  the meta and CPU runs save the same storages; eval-mode BN differs: CPU saves empty batch
  statistics, meta C-sized ones); any other failure leaves the bytes
  empty with ``act_error`` saying why;
  ``act_produced_elems`` / ``act_produced_tensors``: outputs of the compute ops of one
  eval forward.
* What each counter missed, as ``op=MACs;...`` strings (MACs by our rules, signed where a
  counter priced an op differently): ``fvcore_shipped_gap``, ``thop_shipped_gap``,
  ``torch_missed``; and what *no* counter accounts for: ``fvcore_unsupported`` (no handle,
  even ours), ``fvcore_ignored_compute`` (ignored by fvcore, not data movement),
  ``dispatch_unknown`` (ops without a rule) and their union ``uncounted_ops``. Each must be
  empty for a registered module (a test holds this).

Counting runs forward passes in eval mode under ``torch.no_grad``. fvcore needs a real JIT
trace (it fails on the meta device), so it runs on the module as given; the dispatch
recording, thop and the activation pass run on a copy on the ``meta`` device (no arithmetic
is done, only shapes), falling back to the real module when a module cannot run on meta
(``count_device`` says which).
"""

from __future__ import annotations

import copy
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import thop
import torch
from thop.profile import register_hooks as THOP_RULES
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from .activations import saved_activations
from .fvcore_handles import SHIPPED_IGNORED, AttnbenchFlopCountAnalysis
from .op_rules import DATA_MOVEMENT, MATMUL_CONV_OPS, canonical_op
from .recorder import OpRecorder

__all__ = [
    "count_params",
    "fvcore_counts",
    "dispatch_counts",
    "thop_counts",
    "formula_counts",
    "analyze",
    "format_ops",
    "parse_ops",
    "THOP_TRUSTED",
    "TORCH_COUNTED",
    "COUNTER_COLUMNS",
]

THOP_TRUSTED: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
"""Leaf types whose built-in thop rule already follows our convention (thop matches on the
exact type, so subclasses are not trusted). Every other leaf type gets a custom op."""

TORCH_COUNTED: frozenset[str] = frozenset(canonical_op(str(op)) for op in flop_registry)
"""The ops ``FlopCounterMode`` counts (matrix products, convolutions, attention kernels)."""

COUNTER_COLUMNS = (
    "macs_formula", "macs_fvcore", "macs_fvcore_shipped", "macs_fvcore_shipped_conv_linear",
    "macs_thop", "macs_thop_shipped", "flops_torch", "macs_dispatch",
)


# ----------------------------------------------------------------------------- helpers


def format_ops(ops: Mapping[str, int | float], signed: bool = False) -> str:
    """``{"mul": 10, "mean": 5}`` -> ``"mul=10;mean=5"`` (largest first; zeros dropped)."""
    items = [(k, int(v)) for k, v in ops.items() if int(v) != 0]
    items.sort(key=lambda kv: (-abs(kv[1]), kv[0]))
    return ";".join(f"{k}={v:+d}" if signed else f"{k}={v}" for k, v in items)


def parse_ops(text: Any) -> dict[str, int]:
    """Inverse of :func:`format_ops` (empty or NaN -> ``{}``)."""
    if not isinstance(text, str) or not text:
        return {}
    out: dict[str, int] = {}
    for item in text.split(";"):
        key, _, value = item.rpartition("=")
        out[key] = int(value)
    return out


def _is_leaf(module: nn.Module) -> bool:
    return not any(True for _ in module.children())


def _meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy whose parameters and buffers live on the meta device (no data copied)."""
    memo: dict[int, Any] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        meta = torch.empty_like(tensor, device="meta")
        if isinstance(tensor, nn.Parameter):
            meta = nn.Parameter(meta, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = meta
    return copy.deepcopy(model, memo)


def _module_labels(model: nn.Module) -> dict[nn.Module, str]:
    return {m: type(m).__name__ for m in model.modules()}


# ----------------------------------------------------------------------------- counters


def count_params(model: nn.Module) -> dict[str, int]:
    """Parameter (total, trainable) and buffer element counts; shared tensors counted once."""
    params = {id(p): p for p in model.parameters()}.values()
    buffers = {id(b): b for b in model.buffers()}.values()
    return {
        "params_total": sum(p.numel() for p in params),
        "params_trainable": sum(p.numel() for p in params if p.requires_grad),
        "buffers_total": sum(b.numel() for b in buffers),
    }


def fvcore_counts(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """fvcore with our handles and as shipped, from one JIT trace (real tensors)."""
    analysis = AttnbenchFlopCountAnalysis(model, (x,))
    ours, shipped, ours_by, shipped_by = analysis.totals()
    gap: dict[str, int] = {}
    for op in set(ours_by) | set(shipped_by):
        delta = ours_by.get(op, 0) - shipped_by.get(op, 0)
        if delta:
            if shipped_by.get(op, 0) == 0:
                how = "ignored" if any(k in SHIPPED_IGNORED for k in (f"aten::{op}", f"aten::{op}_")) else "unsupported"
            else:
                how = "priced differently"
            gap[f"{op}({how})"] = delta
    ignored = analysis.ignored_ops()
    ignored_compute = {
        k: v for k, v in ignored.items()
        if not k.startswith("prim::") and canonical_op(k) not in DATA_MOVEMENT
    }
    return {
        "macs_fvcore": ours,
        "macs_fvcore_shipped": shipped,
        "macs_fvcore_shipped_conv_linear": sum(v for k, v in shipped_by.items() if k in MATMUL_CONV_OPS),
        "fvcore_by_op": format_ops(ours_by),
        "fvcore_shipped_gap": format_ops(gap, signed=True),
        "fvcore_unsupported": format_ops(analysis.unpriced_ops()),
        "fvcore_ignored": format_ops({k: v for k, v in ignored.items() if not k.startswith("prim::")}),
        "fvcore_ignored_compute": format_ops(ignored_compute),
    }


def dispatch_counts(model: nn.Module, x: torch.Tensor) -> tuple[dict[str, Any], OpRecorder, dict]:
    """One recorded forward under ``FlopCounterMode``: torch's FLOPs, our per-op MACs, the ops
    torch missed, unknown ops, produced activations; also the input shape of every
    AttentionModule call (for the model-level closed form)."""
    from modules import AttentionModule  # the zoo never imports the suite; the reverse is fine

    recorder = OpRecorder(model)
    attn_inputs: dict[nn.Module, list[tuple[int, ...]]] = defaultdict(list)

    def remember(module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], torch.Tensor):
            attn_inputs[module].append(tuple(args[0].shape))

    handles = [m.register_forward_pre_hook(remember) for m in model.modules() if isinstance(m, AttentionModule)]
    try:
        with FlopCounterMode(display=False) as flop_mode, torch.no_grad(), recorder:
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    missed: Counter[str] = Counter()
    for record in recorder.records:
        op = canonical_op(record.op)
        if record.macs and op not in TORCH_COUNTED:
            missed[op] += record.macs
    tensors, elems = recorder.produced()
    row = {
        "flops_torch": int(flop_mode.get_total_flops()),
        "macs_dispatch": recorder.total_macs,
        "torch_missed": format_ops(missed),
        "dispatch_unknown": format_ops(recorder.unknown_ops()),
        "act_produced_tensors": tensors,
        "act_produced_elems": elems,
    }
    return row, recorder, attn_inputs


def thop_counts(model: nn.Module, x: torch.Tensor, recorder: OpRecorder) -> dict[str, Any]:
    """thop as shipped, and thop extended with the ops it cannot see.

    thop walks the module tree, prices each *leaf* module by type (``custom_ops`` overrides
    its table) and adds the ``total_ops`` buffer it gives every module. It never sees an op
    done with a function in some ``forward`` (``x * gate``, ``torch.bmm``), and has no rule
    for ``nn.Sigmoid`` and friends. Our extension, from the ops ``recorder`` saw in an
    earlier forward of the same model (``OpRecorder.records``, priced by the shared rules,
    attributed to the innermost module):

    * ``custom_ops`` for every leaf type not in :data:`THOP_TRUSTED`: the hook adds the MACs
      of the ops that ran inside that leaf's call (so ``nn.BatchNorm2d`` costs 2 per element
      as in fvcore, not thop's 4; ``nn.Sigmoid`` 1 per element instead of nothing);
    * for every module with children, a forward hook adds the MACs of the ops its
      ``forward`` ran itself to its thop ``total_ops`` buffer, which thop's tree walk sums
      while still descending into the children. thop has no ``custom_ops`` form for this:
      a custom op on a non-leaf type stops thop from descending.

    The per-call MACs are replayed in call order (a module called twice, like CBAM's shared
    MLP, gets its two figures); a mismatch in the number of calls raises.

    ``thop_shipped_gap`` says, op by op and leaf type by leaf type, how shipped thop's figure
    differs from ours: ``mul(direct)`` (functional ops thop never saw), ``Sigmoid(no rule)``,
    ``BatchNorm2d(thop rule)`` (signed deltas); so ``macs_thop_shipped + sum(gap) ==
    macs_thop``.
    """
    was_training = model.training
    shipped_total, _, layer_info = thop.profile(model, (x,), verbose=False, ret_layer_info=True)

    names = dict(model.named_modules())
    direct_ops: dict[nn.Module, Counter[str]] = defaultdict(Counter)
    for record in recorder.records:
        if record.owner is not None and record.macs is not None:
            direct_ops[record.owner][canonical_op(record.op)] += record.macs

    # shipped thop's figure for every leaf it priced (layer_info is keyed by child name)
    shipped_leaf: dict[nn.Module, float] = {}

    def walk(prefix: str, info: Mapping[str, Any]) -> None:
        for child, (ops, _params, sub) in info.items():
            path = f"{prefix}.{child}" if prefix else child
            module = names.get(path)
            if module is not None and _is_leaf(module):
                shipped_leaf[module] = shipped_leaf.get(module, 0.0) + float(ops)
            walk(path, sub)

    walk("", layer_info)
    if _is_leaf(model):  # a root without children: thop's figure is its own
        shipped_leaf[model] = float(shipped_total)

    gap: Counter[str] = Counter()
    custom_types: set[type[nn.Module]] = set()
    for module in model.modules():
        if _is_leaf(module):
            if type(module) in THOP_TRUSTED:
                continue
            custom_types.add(type(module))
            ours = sum(direct_ops[module].values())
            theirs = shipped_leaf.get(module, 0.0)
            known = type(module) in THOP_RULES
            label = f"{type(module).__name__}({'thop rule' if known else 'no rule'})"
            gap[label] += ours - int(theirs)
        else:
            for op, macs in direct_ops[module].items():
                gap[f"{op}(direct)"] += macs

    queues = {
        m: list(v) for m, v in recorder.calls.items()
        if not _is_leaf(m) or type(m) in custom_types
    }

    def take(module: nn.Module) -> int:
        queue = queues.get(module)
        if not queue:
            raise RuntimeError(f"thop ran {type(module).__name__} more often than the recorded forward")
        return queue.pop(0)

    def leaf_hook(module: nn.Module, inputs: Any, output: Any) -> None:
        module.total_ops += take(module)

    def composite_hook(module: nn.Module, inputs: Any, output: Any) -> None:
        macs = take(module)
        if hasattr(module, "total_ops"):
            module.total_ops += macs

    hooks = [m.register_forward_hook(composite_hook) for m in model.modules() if not _is_leaf(m)]
    try:
        custom_ops: dict[type[nn.Module], Callable[..., None]] = {t: leaf_hook for t in custom_types}
        extended_total, _ = thop.profile(model, (x,), custom_ops=custom_ops, verbose=False)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    leftover = [type(m).__name__ for m, q in queues.items() if q]
    if leftover:
        raise RuntimeError(f"thop ran fewer calls than the recorded forward for {sorted(set(leftover))}")
    # leaves thop never called (no forward hook fired) cannot have missed anything
    return {
        "macs_thop": int(extended_total),
        "macs_thop_shipped": int(shipped_total),
        "thop_shipped_gap": format_ops(gap, signed=True),
        "thop_custom_types": ",".join(sorted(t.__name__ for t in custom_types)),
    }


def formula_counts(model: nn.Module, input_shape: tuple[int, ...], attn_inputs: Mapping[nn.Module, list]) -> dict[str, Any]:
    """Closed forms: the module's own, or (model level) the sum over its attention modules."""
    from modules import AttentionModule

    row: dict[str, Any] = {}
    try:
        if isinstance(model, AttentionModule):
            row["params_formula"] = int(model.formula_params())
            row["macs_formula"] = int(model.formula_macs(tuple(input_shape)))
        else:
            # outermost attention modules only: CBAM holds its channel and spatial gates,
            # which are AttentionModules too, and its closed form already includes them
            inner = {
                id(child) for m in model.modules() if isinstance(m, AttentionModule)
                for child in m.modules() if child is not m
            }
            attn = [m for m in model.modules() if isinstance(m, AttentionModule) and id(m) not in inner]
            row["attn_modules"] = len(attn)
            if attn:
                row["params_formula_attn"] = sum(int(m.formula_params()) for m in attn)
                row["macs_formula_attn"] = sum(
                    int(m.formula_macs(shape)) for m in attn for shape in attn_inputs.get(m, [])
                )
    except NotImplementedError as error:  # a closed form not written yet: say so, go on
        row["formula_error"] = f"NotImplementedError: {error}"
    return row


def analyze(
    model: nn.Module,
    input_shape: Iterable[int],
    *,
    input_requires_grad: bool = True,
    meta: bool = True,
) -> dict[str, Any]:
    """Every counter on ``model`` for one input of ``input_shape`` (batch as given).

    Args:
        model: any module taking one tensor; put in eval mode for counting.
        input_shape: e.g. ``(1, 256, 14, 14)``.
        input_requires_grad: whether the input needs a gradient in the activation pass
            (True at module level: inside a network the input comes from trainable layers;
            False for a whole model fed images).
        meta: run the shape-only counters on a meta-device copy (falls back to the real
            module when the copy fails).

    Returns:
        A flat dict; see the module docstring for the columns.
    """
    shape = tuple(int(s) for s in input_shape)
    start = time.perf_counter()
    model.eval()
    row: dict[str, Any] = {"input_shape": "x".join(map(str, shape))}
    row.update(count_params(model))
    x = torch.randn(shape)
    row.update(fvcore_counts(model, x))

    row["count_device"] = "cpu"
    if meta:
        try:
            shadow = _meta_copy(model)
            row.update(_shape_counters(shadow, shape, input_requires_grad, device="meta", real=model))
            row["count_device"] = "meta"
        except Exception as error:  # noqa: BLE001  (any failure on meta: redo it for real)
            row["meta_error"] = f"{type(error).__name__}: {error}"[:300]
    if row["count_device"] == "cpu":
        row.update(_shape_counters(model, shape, input_requires_grad, device="cpu", real=model))

    uncounted = Counter(parse_ops(row["fvcore_unsupported"]))
    uncounted.update(parse_ops(row["fvcore_ignored_compute"]))
    uncounted.update({f"dispatch:{k}": v for k, v in parse_ops(row["dispatch_unknown"]).items()})
    row["uncounted_ops"] = format_ops(uncounted)
    row["count_seconds"] = round(time.perf_counter() - start, 4)
    return row


def _shape_counters(
    model: nn.Module, shape: tuple[int, ...], input_requires_grad: bool, device: str, real: nn.Module
) -> dict[str, Any]:
    model.eval()
    x = torch.randn(shape, device=device)
    row, recorder, attn_inputs = dispatch_counts(model, x)
    row.update(formula_counts(model, shape, attn_inputs))
    row.update(thop_counts(model, x, recorder))
    try:
        try:
            row.update(saved_activations(model, shape, input_requires_grad=input_requires_grad, device=device))
        except ValueError as error:
            if "more than 1 value per channel" not in str(error):
                raise
            # BatchNorm over a pooled 1x1 map cannot train at batch 1 (SK, SRM, BAM...):
            # measure with the BN layers in eval mode and say so
            # on the real module: meta's eval-mode BN kernel allocates the two per-channel
            # statistics that the CPU kernel leaves empty
            row.update(saved_activations(
                real, shape, input_requires_grad=input_requires_grad, device="cpu", freeze_batchnorm=True
            ))
            row["act_note"] = "batch norm in eval mode: a training BN cannot run on one value per channel"
    except (ValueError, RuntimeError) as error:  # keep the MACs, say why the bytes are missing
        row["act_error"] = f"{type(error).__name__}: {error}"[:300]
    model.eval()
    return row
