"""Latency and memory you can trust: the ``latency`` and ``memory`` stages of the harness.

* :mod:`.stats` -- median, IQR, p90/p99 and the order-statistic 95% CI of the median;
* :mod:`.timer` -- ``sample_round``, the timer of the latency rounds, the regression gate's
  cases and the roofline (and the adaptive ``measure_interleaved``, which only
  ``benchmarks/latency_agreement.py`` still compares), with ``perf_counter`` / CUDA-event clocks
  and explicit settings;
* :mod:`.rounds` -- latency in rounds of fresh worker processes: the loop; :mod:`.pool` the
  processes, :mod:`.job` what is sent to one, :mod:`.worker` what runs in it,
  :mod:`.round_stats` a row from its rounds, :mod:`.resume` where the rounds stand;
* :mod:`.grid` -- configurations and the cpu / gpu profiles of default axes;
* :mod:`.workloads` -- what is run: module or model, its reference, forward or training step;
* :mod:`.roofline` -- measured bandwidth and matmul rate, the bound of each forward;
* :mod:`.memory` -- CUDA peak, or CPU peak RSS and saved-for-backward bytes in a fresh process;
* :mod:`.sweep`, :mod:`.cli_latency`, :mod:`.cli_memory` -- ``python -m suite latency|memory``.
"""
