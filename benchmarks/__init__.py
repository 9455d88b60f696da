"""Standalone benchmark scripts: run as `python -m benchmarks.NAME` from the project root."""
