"""Training speed of several models side by side: target tokens per second of whole updates
(forward, label-smoothed loss, backward, optimizer step) on the same batches of a data directory.

Training logs report tokens/s too, but runs that shared a machine with other work (or with each
other) measure the load as much as the model; this times every model in one process, in
rotating order over several rounds, and reports medians, so the numbers compare.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from convtrans.config import ModelConfig, TrainConfig
from convtrans.data.batching import Batch, collate, make_batches
from convtrans.data.datadir import DataDir
from convtrans.data.tokenize import BOS_ID, EOS_ID, PAD_ID
from convtrans.model import EncoderDecoder
from convtrans.training.optim import build_optimizer, label_smoothed_nll


def fixed_batches(data_dir: Path, max_tokens: int, count: int, seed: int = 1) -> list[Batch]:
    """`count` training batches of the data directory (the first ones of epoch 1 for `seed`)."""
    data = DataDir(data_dir)
    split = data.split("train")
    ids, _ = make_batches(split.src.lengths(), split.tgt.lengths(), max_tokens, seed, 1, 1 << 30, 1 << 30)
    return [collate(split, np.asarray(batch), PAD_ID, BOS_ID, EOS_ID) for batch in ids[:count]]


def time_training(configs: dict[str, ModelConfig], batches: list[Batch], train: TrainConfig, rounds: int = 3,
                  seed: int = 0) -> dict[str, float]:
    """Median target tokens/s over `rounds` of one pass over `batches` per model (models in a
    rotating order each round; one warm-up update each first)."""
    torch.manual_seed(seed)
    models = {name: EncoderDecoder(config).train() for name, config in configs.items()}
    optimizers = {name: build_optimizer(model, train) for name, model in models.items()}

    def update(name: str, batch: Batch) -> None:
        model, optimizer = models[name], optimizers[name]
        logits = model(batch.src, batch.tgt_in)
        loss, _ = label_smoothed_nll(logits, batch.tgt_out, train.label_smoothing, model.config.pad_id)
        optimizer.zero_grad(set_to_none=True)
        (loss / batch.n_tokens).backward()
        optimizer.step()

    for name in models:
        update(name, batches[0])
    tokens = sum(batch.n_tokens for batch in batches)
    speeds: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for round_no in range(rounds):
        for name in names[round_no % len(names):] + names[: round_no % len(names)]:
            started = time.perf_counter()
            for batch in batches:
                update(name, batch)
            speeds[name].append(tokens / (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in speeds.items()}
