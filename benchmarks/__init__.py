"""Benchmarks for nanochat (run as modules, e.g. ``python -m benchmarks.tokenizer``)."""
