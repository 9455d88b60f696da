"""Latency and memory you can trust: the ``latency`` and ``memory`` stages of the harness.

* :mod:`.stats` -- median, IQR, p90/p99 and the order-statistic 95% CI of the median;
* :mod:`.timer` -- the adaptive timer (warm-up, calls per sample, interleaving, stop at a CI
  of +-1% or a budget) with ``perf_counter`` / CUDA-event clocks and explicit settings;
* :mod:`.grid` -- configurations and the cpu / gpu profiles of default axes;
* :mod:`.workloads` -- what is run: module or model, its reference, forward or training step;
* :mod:`.roofline` -- measured bandwidth and matmul rate, the bound of each forward;
* :mod:`.memory` -- CUDA peak, or CPU peak RSS and saved-for-backward bytes in a fresh process;
* :mod:`.sweep`, :mod:`.cli_latency`, :mod:`.cli_memory` -- ``python -m suite latency|memory``.
"""
