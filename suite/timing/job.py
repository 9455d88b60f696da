"""What the parent sends a worker process: one :class:`Job` per round, one JSON line on its stdin.

A job names the items to measure (latency configurations, or the regression gate's cases), the
process settings the worker sets before measuring (threads, flush-denormal; on CUDA the device,
cuDNN autotuning, TF32, CUDA graphs and the L2 flush) and what its runner needs: a latency round's sampling options, contention limits and
retries, or the gate's measurement settings. :meth:`Job.to_wire` and :meth:`Job.from_wire` are
the one place a job is serialised.

The wire form is a protocol between revisions: ``python -m suite regress --against REV`` drives
the worker of an older revision (its ``suite/timing/worker.py`` and
``suite/regress/cases.py:gate_case``) from this checkout. So the keys and their meanings stay
those every earlier worker reads (:data:`WIRE_KEYS`); a field that a job does not use is left
out of the line, as earlier parents left it out, and so is a field added since at its default
(:data:`OMITTED_AT_DEFAULT`): a CPU job's line is what earlier parents sent, and an earlier
worker ignores keys it does not know.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, is_dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .contention import ContentionLimits
    from .timer import RoundOptions

__all__ = ["Job", "OMITTED_AT_DEFAULT", "WIRE_KEYS"]

WIRE_KEYS: dict[str, str] = {"items": "configs"}
"""Fields whose key on the wire differs from their name: ``{field: wire key}``."""

OMITTED_AT_DEFAULT = ("tf32_conv", "cuda_graph", "flush_l2")
"""Fields left out of the wire line at their default (CUDA settings added after the protocol's
first form; a line without them reads as their defaults)."""


def _item_fields(item: Any) -> dict[str, Any]:
    """One item as the worker reads it: its ``to_wire()``, else its dataclass fields, else a copy."""
    if hasattr(item, "to_wire"):
        return dict(item.to_wire())
    return asdict(item) if is_dataclass(item) else dict(item)


@dataclass(frozen=True)
class Job:
    """One job for a worker process (:mod:`suite.timing.worker`).

    Process settings, set by the worker before it measures anything and recorded with each
    result: ``threads`` (``torch.set_num_threads``), ``device`` (CUDA settings apply only on
    ``cuda``; ``cuda:N`` is made the worker's current device first), ``flush_denormal``,
    ``cudnn_benchmark``, ``tf32`` (TF32 for fp32 matmuls, and for cuDNN convolutions unless
    ``tf32_conv`` says otherwise: ``tf32_conv=None`` is the first protocol's meaning, one flag for
    both), ``cuda_graph`` (steps captured into CUDA graphs and timed by replay) and ``flush_l2``
    (the L2 cache overwritten before every timed call). :attr:`tf32_mode` names the pair as
    ``--tf32`` does.

    ``items``: the fields of each item to measure (a :class:`suite.timing.grid.Config`'s, or a
    :class:`suite.regress.cases.GateCase`'s), in order; on the wire ``configs``.

    ``runner``: ``"package.module:function"`` taking an item's fields and the job and returning
    the item's key and a callable that measures it; empty for a latency round
    (:func:`suite.timing.worker.measure_round`).

    A latency round also carries ``options`` (how a round samples), ``limits`` (when a window is
    contended) and ``retries`` (contended windows sampled again in the same round). The
    regression gate's runner carries ``gate_settings``: a
    :class:`suite.regress.cases.RegressSettings` in its wire form
    (:meth:`~suite.regress.cases.RegressSettings.to_wire`).
    """

    threads: int
    device: str = "cpu"
    flush_denormal: bool = False
    cudnn_benchmark: bool = False
    tf32: bool = False
    items: tuple[dict[str, Any], ...] = ()
    runner: str = ""
    options: RoundOptions | None = None
    limits: ContentionLimits | None = None
    retries: int | None = None
    gate_settings: dict[str, Any] | None = None
    tf32_conv: bool | None = None
    cuda_graph: bool = False
    flush_l2: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise ValueError(f"threads must be a positive int, got {self.threads!r}")
        if self.retries is not None and self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.tf32 and self.tf32_conv is False:
            raise ValueError("TF32 for matmuls with IEEE convolutions is not a TF32 mode (on, off, default)")

    @property
    def tf32_mode(self) -> str:
        """The ``--tf32`` mode of ``tf32`` and ``tf32_conv`` (:data:`suite.timing.timer.TF32_MODES`):
        ``on``, ``off`` or ``default`` (IEEE matmuls, TF32 convolutions)."""
        conv = self.tf32 if self.tf32_conv is None else self.tf32_conv
        return "on" if self.tf32 else ("default" if conv else "off")

    def with_items(self, items: Iterable[Any]) -> Job:
        """This job for ``items`` (dataclass instances, in their wire form where they have one, or
        their fields as mappings)."""
        return replace(self, items=tuple(_item_fields(i) for i in items))

    def to_wire(self) -> dict[str, Any]:
        """The job as the dict a worker reads (JSON-ready); unused fields are left out."""
        wire: dict[str, Any] = {}
        for name, value in self._fields().items():
            at_default = name in OMITTED_AT_DEFAULT and value == Job.__dataclass_fields__[name].default
            if value is None or (name == "runner" and not value) or at_default:
                continue
            wire[WIRE_KEYS.get(name, name)] = value
        return wire

    def to_line(self) -> str:
        """The job as the one JSON line a worker reads on its stdin."""
        return json.dumps(self.to_wire()) + "\n"

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Job:
        """The job of a wire dict (:meth:`to_wire`'s form)."""
        by_field = {name: data[wire] for name, wire in _wire_names().items() if wire in data}
        if by_field.get("options") is not None:
            from .timer import RoundOptions

            by_field["options"] = RoundOptions(**by_field["options"])
        if by_field.get("limits") is not None:
            from .contention import ContentionLimits

            by_field["limits"] = ContentionLimits(**by_field["limits"])
        by_field["items"] = tuple(dict(item) for item in by_field.get("items", ()))
        for flag in ("flush_denormal", "cudnn_benchmark", "tf32", "cuda_graph", "flush_l2"):
            if flag in by_field:
                by_field[flag] = bool(by_field[flag])
        if by_field.get("tf32_conv") is not None:
            by_field["tf32_conv"] = bool(by_field["tf32_conv"])
        by_field["threads"] = int(by_field["threads"])
        return cls(**by_field)

    def _fields(self) -> dict[str, Any]:
        """Every field as plain JSON values (options and limits as dicts, items as lists)."""
        return {
            "threads": self.threads, "device": self.device, "flush_denormal": self.flush_denormal,
            "cudnn_benchmark": self.cudnn_benchmark, "tf32": self.tf32,
            "items": [dict(item) for item in self.items], "runner": self.runner,
            "options": None if self.options is None else asdict(self.options),
            "limits": None if self.limits is None else _limits_wire(self.limits),
            "retries": self.retries,
            "gate_settings": None if self.gate_settings is None else dict(self.gate_settings),
            "tf32_conv": self.tf32_conv, "cuda_graph": self.cuda_graph, "flush_l2": self.flush_l2,
        }


def _limits_wire(limits: Any) -> dict[str, Any]:
    """Contention limits as the wire carries them: the ``strict`` policy (the rule every revision's
    worker applies) is left out, so a strict job's line is the one earlier workers read."""
    wire = asdict(limits)
    if wire.get("policy") == "strict":
        del wire["policy"]
    return wire


def _wire_names() -> dict[str, str]:
    """``{field: wire key}`` for every field of :class:`Job`."""
    return {name: WIRE_KEYS.get(name, name) for name in Job.__dataclass_fields__}
