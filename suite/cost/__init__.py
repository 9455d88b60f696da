"""Cost analysis: parameters, MACs and FLOPs from fvcore, thop and torch's counter, side by side.

``python -m suite cost --help`` for the command line; :func:`analyze` for one module and shape.
The per-op convention is in :mod:`suite.cost.op_rules` (the one of ``modules/_base.py``).
"""

from .counters import analyze, count_params, format_ops, parse_ops

__all__ = ["analyze", "count_params", "format_ops", "parse_ops"]
