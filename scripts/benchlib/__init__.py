"""Measuring code behind scripts/bench.py: inputs, in-process pipelines, the served
driver, statistics and the report. Each module is usable on its own."""
