"""``python -m suite regress``: a latency regression gate that survives noisy CI machines.

Absolute times move 10-30% from one CI job to the next (and 20-120% across processes for
memory-bound modules on the 2-core machine), so the gate never compares them. Each case's
quantity is its **ratio** to a reference (a 3x3 conv of the same shape) measured in the same
process, interleaved with it (:mod:`suite.timing.timer`), or the **instructions** it executes
under Callgrind. It is judged against a git revision measured beside it on the same machine
(A/B, any machine), or against a committed baseline of the same machine class, which stores the
values of ``k`` separate processes and a per-case tolerance derived from their spread
(:func:`suite.regress.gate.tolerance_for`).

* :mod:`suite.regress.cases`: what one case is and how it is measured (the worker process of
  :mod:`suite.timing.worker` runs it, through :func:`suite.regress.cases.gate_case`);
* :mod:`suite.regress.ab`: the A/B gate: both sides materialised from git, each measured from
  its own tree, the verdict rule;
* :mod:`suite.regress.callgrind`: the instruction counter (one valgrind process per side);
* :mod:`suite.regress.gate`: baseline file, machine class, comparison, verdicts, table;
* :mod:`suite.regress.cli`: the command line (pytest-benchmark's JSON layout for the ratio
  counter's measurements).
"""
