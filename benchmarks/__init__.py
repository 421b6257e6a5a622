"""Benchmarks: tools run by `make bench-*`, not library code. Run from the repository root: `python -m benchmarks.NAME`."""
