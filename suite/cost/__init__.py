"""Cost analysis: parameters, MACs and FLOPs from fvcore, thop and torch's counter, side by side.

``python -m suite cost --help`` for the command line; :func:`analyze` for one module and shape.
The per-op convention is in :mod:`suite.cost.op_rules` (the one of ``modules/_base.py``).
The counters are imported on first use, so ``--help`` does not load fvcore and thop.
"""

from __future__ import annotations

from typing import Any

__all__ = ["analyze", "count_params", "format_ops", "parse_ops"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import counters

        return getattr(counters, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
