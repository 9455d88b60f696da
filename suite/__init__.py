"""attnbench's harness: cost, latency, memory and accuracy measurements over the module zoo.

Run ``python -m suite --help`` for the stages. Every stage writes raw records with their
environment (``suite.env``) and tidy CSVs, atomically (``suite.records``).

User attention classes named in ``$ATTNBENCH_PLUGINS`` (see :mod:`suite.plugins`) are
registered when this package is imported, so every stage and every worker process sees them.
"""

import os as _os

# the name is suite.plugins.PLUGINS_ENV, spelt out here so that importing suite stays light
if _os.environ.get("ATTNBENCH_PLUGINS", "").strip():
    from .plugins import load_plugins_from_env as _load_plugins_from_env

    _load_plugins_from_env()

__all__ = ["env", "records"]
