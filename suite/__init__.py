"""attnbench's harness: cost, latency, memory and accuracy measurements over the module zoo.

Run ``python -m suite --help`` for the stages. Every stage writes raw records with their
environment (``suite.env``) and tidy CSVs, atomically (``suite.records``).
"""

__all__ = ["env", "records"]
