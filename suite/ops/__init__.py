"""Where the time goes: the ``ops`` stage, an op-level breakdown of each design's step.

* :mod:`.profile` -- one configuration's ops (self CPU time per call, share, calls per step)
  for its module and its reference, from ``torch.profiler``;
* :mod:`.tables` -- ``ops.csv`` from the records, a design's top ops, the report's table;
* :mod:`.cli` -- ``python -m suite ops``.
"""
