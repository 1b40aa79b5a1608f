"""Benchmark drivers behind ``python -m aegis_hpc.bench`` (kept out of the library layers)."""
