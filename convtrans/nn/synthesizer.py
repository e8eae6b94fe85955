"""Synthesizer token mixer (Tay et al. 2020): attention weights synthesized without token-token
dot products, optionally mixed with dot-product attention.

Parts (per head; l = max_len; keys/queries are positions 0..l-1, sliced to the actual lengths):
- dense:             logits_i = W2·ReLU(W1·x_i + b1) + b2 ∈ ℝ^l (W1: d→d shared, W2: Dh→l per head)
- random:            a learned (l × l) matrix R per head, independent of the input
- fixed_random:      R frozen at its random init
- factorized_dense:  two per-head projections A ∈ ℝ^a, B ∈ ℝ^b of ReLU(W1·x_i) with a·b = l;
                     logits_i[p] = A[p mod a] · B[p div a] (A tiled b times, B repeated a times)
- factorized_random: R = R1·R2ᵀ with R1, R2 ∈ ℝ^{l×k} per head
- vanilla:           q·kᵀ/√Dh (separate query and key projections)
Mixtures combine the parts' logits before the softmax with learned weights softmax(α)
(α starts at 0: equal weights). Causal and key-padding masks apply to the mixed logits.
Values G(x) and the output projection are as in attention. Inputs longer than l are refused.

Decode state: the values (and keys, for a vanilla part) of earlier steps; their count is the next
position, which selects the rows of R / the slice of dense logits.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from convtrans.config import SYNTH_PARTS
from convtrans.nn.attention import merge_heads, scaled_logits, split_heads, xavier_linear
from convtrans.nn.cache import SynthCache

DENSE_PARTS = ("dense", "factorized_dense")  # the parts that read the hidden layer ReLU(W1·x + b1)


class SynthesizerMixer(nn.Module):
    def __init__(self, *, d_model: int, heads: int, parts: tuple[str, ...], max_len: int,
                 factors: tuple[int, int] = (16, 32), rank: int = 16, dropout: float = 0.0,
                 causal: bool = False) -> None:
        super().__init__()
        unknown = [p for p in parts if p not in SYNTH_PARTS]
        if unknown or not parts:
            raise ValueError(f"synthesizer parts must be among {SYNTH_PARTS}, got {parts}")
        if factors[0] * factors[1] != max_len:
            raise ValueError(f"factorized_dense needs a·b = max_len, got {factors} for {max_len}")
        self.parts, self.heads, self.max_len, self.causal, self.dropout = tuple(parts), heads, max_len, causal, dropout
        head_dim = d_model // heads
        if set(DENSE_PARTS) & set(parts):
            self.dense_in = xavier_linear(d_model, d_model)  # W1, b1 (split into heads)
        if "dense" in parts:
            self.dense_out = nn.Parameter(torch.empty(heads, head_dim, max_len))  # W2 per head
            self.dense_bias = nn.Parameter(torch.zeros(heads, max_len))
            nn.init.xavier_uniform_(self.dense_out)
        if "factorized_dense" in parts:
            self.factor_a = nn.Parameter(torch.empty(heads, head_dim, factors[0]))
            self.factor_b = nn.Parameter(torch.empty(heads, head_dim, factors[1]))
            nn.init.xavier_uniform_(self.factor_a)
            nn.init.xavier_uniform_(self.factor_b)
        if "random" in parts:
            self.random = nn.Parameter(torch.randn(heads, max_len, max_len))
        if "fixed_random" in parts:
            self.register_buffer("fixed_random", torch.randn(heads, max_len, max_len))
        if "factorized_random" in parts:
            self.random_r1 = nn.Parameter(torch.randn(heads, max_len, rank) / rank**0.5)
            self.random_r2 = nn.Parameter(torch.randn(heads, max_len, rank) / rank**0.5)
        if "vanilla" in parts:
            self.q_proj = xavier_linear(d_model, d_model)
            self.k_proj = xavier_linear(d_model, d_model)
        if len(parts) > 1:
            self.mix = nn.Parameter(torch.zeros(len(parts)))
        self.v_proj = xavier_linear(d_model, d_model)
        self.out_proj = xavier_linear(d_model, d_model)

    def _part_logits(self, part: str, x: torch.Tensor, hidden: torch.Tensor | None, q_pos: slice,
                     k_len: int, k: torch.Tensor | None) -> torch.Tensor:
        """Logits (B or 1, H, Tq, Tk) of one part for queries at positions q_pos over keys 0..k_len-1."""
        if part in DENSE_PARTS:
            assert hidden is not None  # computed in forward whenever a dense part is present
        if part == "dense":
            logits = torch.einsum("bhtd,hdl->bhtl", hidden, self.dense_out) + self.dense_bias[:, None, :]
            return logits[..., :k_len]
        if part == "factorized_dense":
            a = torch.einsum("bhtd,hdf->bhtf", hidden, self.factor_a)
            b = torch.einsum("bhtd,hdf->bhtf", hidden, self.factor_b)
            n_a, n_b = a.shape[-1], b.shape[-1]
            logits = a.repeat(1, 1, 1, n_b) * b.repeat_interleave(n_a, dim=-1)  # position p: A[p % a]·B[p // a]
            return logits[..., :k_len]
        if part in ("random", "fixed_random"):
            table = self.random if part == "random" else cast(torch.Tensor, self.fixed_random)
            return table[:, q_pos, :k_len].unsqueeze(0)
        if part == "factorized_random":
            return torch.matmul(self.random_r1[:, q_pos], self.random_r2[:, :k_len].transpose(1, 2)).unsqueeze(0)
        assert k is not None  # the vanilla part: forward computes keys
        q = split_heads(self.q_proj(x), self.heads)
        return scaled_logits(q, k)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None,
                cache: SynthCache | None = None) -> tuple[torch.Tensor, SynthCache | None]:
        """x: (B, T, d) → (B, T, d). Causal mixers also return their decode state; with a cache,
        x holds only the new steps."""
        batch, time, _ = x.shape
        start = cache.v.shape[2] if cache is not None else 0
        if not torch.jit.is_tracing() and start + time > self.max_len:
            raise ValueError(f"synthesizer input of {start + time} positions exceeds max_len={self.max_len}")
        v = split_heads(self.v_proj(x), self.heads)  # (B, H, T, Dh)
        k = split_heads(self.k_proj(x), self.heads) if "vanilla" in self.parts else None
        if cache is not None:
            v = torch.cat([cache.v, v], dim=2)
            if k is not None:
                assert cache.k is not None  # a vanilla part caches its keys
                k = torch.cat([cache.k, k], dim=2)
        k_len = v.shape[2]
        hidden = None
        if set(DENSE_PARTS) & set(self.parts):
            hidden = split_heads(torch.relu(self.dense_in(x)), self.heads)  # (B, H, T, Dh)
        q_pos = slice(start, start + time)
        part_logits = [self._part_logits(p, x, hidden, q_pos, k_len, k) for p in self.parts]
        if len(part_logits) == 1:
            logits = part_logits[0]
        else:
            alpha = torch.softmax(self.mix, dim=0)
            logits = sum(a * part for a, part in zip(alpha, part_logits))
        logits = logits.expand(batch, -1, -1, -1)  # (B, H, T, Tk)
        blocked = torch.zeros(1, 1, time, k_len, dtype=torch.bool, device=x.device)
        if self.causal:
            q_abs = torch.arange(start, start + time, device=x.device).unsqueeze(1)
            blocked = blocked | (torch.arange(k_len, device=x.device).unsqueeze(0) > q_abs)
        if pad_mask is not None:
            blocked = blocked | pad_mask[:, None, None, :]
        acc = torch.promote_types(logits.dtype, torch.float32)  # softmax in at least fp32
        weights = torch.softmax(logits.to(acc).masked_fill(blocked, float("-inf")), dim=-1).to(v.dtype)
        weights = nn.functional.dropout(weights, self.dropout, self.training)
        out = self.out_proj(merge_heads(torch.matmul(weights, v)))
        new_cache = SynthCache(v, k) if self.causal else None
        return out, new_cache

    def empty_state(self, batch: int, like: torch.Tensor) -> SynthCache:
        """Decode state before the first step (no values yet)."""
        empty = like.new_zeros(batch, self.heads, 0, self.v_proj.out_features // self.heads)
        return SynthCache(empty, empty if "vanilla" in self.parts else None)
