"""Length-bucketed batches bounded by a token budget, shuffled deterministically per epoch.

A batch costs `size × (longest side + 1)` tokens with padding (the +1 is EOS/BOS), like fairseq's
max_tokens. Sorting by length keeps padding low; ties and the batch order are shuffled with a
generator seeded by (seed, epoch), so an epoch's batches are a pure function of the data, the seed
and the epoch number: what makes resuming and multi-process sharding exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from convtrans.data.datadir import ParallelSplit


@dataclass
class Batch:
    """Model inputs for one batch; `ids` are the example indices within the split."""

    src: torch.Tensor  # (B, S): source + EOS, right-padded
    tgt_in: torch.Tensor  # (B, T): BOS + target
    tgt_out: torch.Tensor  # (B, T): target + EOS
    ids: np.ndarray
    n_tokens: int  # non-pad target tokens (the loss is normalized by these)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.src.to(device), self.tgt_in.to(device), self.tgt_out.to(device), self.ids, self.n_tokens)


def make_batches(src_lengths: np.ndarray, tgt_lengths: np.ndarray, max_tokens: int, seed: int, epoch: int,
                 max_src_len: int, max_tgt_len: int, shuffle: bool = True) -> tuple[list[np.ndarray], int]:
    """Group example indices into batches; returns (batches, number of examples skipped as too long).

    max_src_len / max_tgt_len bound the tokens of a side without EOS/BOS (the model's positions
    minus one); longer examples, and ones that alone exceed max_tokens, are skipped.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(src_lengths)) if shuffle else np.arange(len(src_lengths))
    cost = np.maximum(src_lengths, tgt_lengths) + 1
    # Sort by the cost first (the longer side sets a batch's padded size), then source, then target
    # length; stable, so ties stay shuffled. Sorting by target first mixed short and long documents
    # in one batch when summarizing (targets of similar length, sources of 75-511 subwords).
    order = order[np.lexsort((tgt_lengths[order], src_lengths[order], cost[order]))]
    valid = (src_lengths <= max_src_len) & (tgt_lengths <= max_tgt_len) & (cost <= max_tokens)
    order = order[valid[order]]
    batches, start, longest = [], 0, 0
    for i, index in enumerate(order):
        longest_with = max(longest, cost[index])
        if longest_with * (i - start + 1) > max_tokens:
            batches.append(order[start:i])
            start, longest_with = i, cost[index]
        longest = longest_with
    if start < len(order):
        batches.append(order[start:])
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches, int((~valid).sum())


def shard(batches: list[np.ndarray], rank: int, world_size: int) -> list[np.ndarray]:
    """Rank r takes batches r, r+W, r+2W, ...; every rank gets the same count (the tail is dropped),
    so update k of W processes sees the batches update k of one process with update_freq W sees."""
    per_rank = len(batches) // world_size
    return batches[rank : per_rank * world_size : world_size]


def collate(split: ParallelSplit, ids: np.ndarray, pad: int, bos: int, eos: int) -> Batch:
    """Pad one batch of examples into tensors."""
    src_seqs = [np.append(split.src[i], eos) for i in ids]
    tgt_seqs = [split.tgt[i].astype(np.int64) for i in ids]
    src = torch.full((len(ids), max(map(len, src_seqs))), pad, dtype=torch.long)
    width = max(map(len, tgt_seqs)) + 1
    tgt_in = torch.full((len(ids), width), pad, dtype=torch.long)
    tgt_out = torch.full((len(ids), width), pad, dtype=torch.long)
    for row, (s, t) in enumerate(zip(src_seqs, tgt_seqs)):
        src[row, : len(s)] = torch.from_numpy(s.astype(np.int64))
        tgt_in[row, 0] = bos
        tgt_in[row, 1 : len(t) + 1] = torch.from_numpy(t)
        tgt_out[row, : len(t)] = torch.from_numpy(t)
        tgt_out[row, len(t)] = eos
    return Batch(src, tgt_in, tgt_out, ids, int(tgt_out.ne(pad).sum()))
