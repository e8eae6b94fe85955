"""Inference: search over decode steps (generate.py), text in and out (translator.py, textio.py),
exported graphs (export.py writes them, exported.py runs them)."""
