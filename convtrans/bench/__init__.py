"""Benchmarks: conv kernels and layers (kernels.py), decoding speed (decode.py). They return
numbers; the CLI renders them (console.py)."""
