"""pytest-benchmark cases of the latency regression gate, run by ``python -m suite regress``
(:func:`suite.regress.cli.run_benchmarks`) in a pytest process of their own."""
