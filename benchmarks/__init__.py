"""Benchmarks for meigen_async against its peers (``python -m benchmarks``); not a test suite."""
