"""attnbench's harness: cost, latency, memory and accuracy measurements over the module zoo.

Run ``python -m suite --help`` for the stages. Every stage writes raw records with their
environment (``suite.env``) and tidy CSVs, atomically (``suite.records``).

Importing ``suite`` loads no user code: plugins (:mod:`suite.plugins`) are loaded where they
are asked for, by ``--plugin`` and by the command line and the worker processes that read
``$ATTNBENCH_PLUGINS``.
"""

__all__ = ["env", "records"]
