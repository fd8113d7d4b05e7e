"""Benchmarks against reference peers; run with ``python -m bench``."""
