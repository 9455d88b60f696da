"""The report: tidy CSVs, seaborn figures and a README re-rendered from a profile's raw stage
outputs (``reports/<profile>/raw/<stage>/``) without measuring anything.

``python -m suite report --out reports/<profile>`` or :func:`render_report` from Python.
"""

from .render import render_report

__all__ = ["render_report"]
