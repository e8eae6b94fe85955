"""Data preparation: corpus reading, tokenization, binarized token arrays, batching."""
