"""Multi-head dot-product attention on torch's scaled_dot_product_attention, with a KV cache.

Self-attention appends each step's keys/values to an AttnCache; cross-attention computes the
encoder's keys/values once and keeps them. Masks are boolean with True = padding (project-wide);
they are turned into SDPA's "True = may attend" form here.

`plain_attention()` makes attention the three plain ops (q·kᵀ/√Dh, masked softmax, ·v) instead of
SDPA while a graph is traced for ONNX Runtime (engine/graphs.py): the exporter writes SDPA as a
transpose and a scaling of every cached key at every step, a full copy of the cross-attention keys
that cost a quarter of a 160-row decode step; as a MatMul of the transposed keys ONNX Runtime
fuses the transpose into the GEMM. The same numbers within float rounding (tests/unit/test_engine.py).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from convtrans.nn.cache import AttnCache


def xavier_linear(d_in: int, d_out: int, bias: bool = True) -> nn.Linear:
    """A Linear with fairseq's init: Xavier-uniform weight, zero bias."""
    linear = nn.Linear(d_in, d_out, bias=bias)
    nn.init.xavier_uniform_(linear.weight)
    if bias:
        nn.init.zeros_(linear.bias)
    return linear


_PLAIN = [False]  # inside plain_attention()


@contextlib.contextmanager
def plain_attention() -> Iterator[None]:
    """Attention as plain matmul/softmax ops inside the block (for tracing; see the module doc)."""
    before = _PLAIN[0]
    _PLAIN[0] = True
    try:
        yield
    finally:
        _PLAIN[0] = before


def dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                          dropout_p: float = 0.0) -> torch.Tensor:
    """softmax(q·kᵀ/√Dh, masked) · v: (B, H, Tq, Dh); mask True = may attend (SDPA's convention)."""
    if not _PLAIN[0]:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    scores = torch.matmul(q * (1.0 / math.sqrt(q.shape[-1])), k.transpose(-1, -2))
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf)
    return torch.matmul(scores.softmax(-1), v)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, time, width = x.shape
    return x.view(batch, time, heads, width // heads).transpose(1, 2)  # (B, H, T, Dh)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    batch, heads, time, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, time, heads * head_dim)  # (B, T, H·Dh)


def attend_mask(key_pad: torch.Tensor | None, q_len: int, k_len: int, causal_offset: int | None,
                device: torch.device) -> torch.Tensor | None:
    """SDPA boolean mask (True = attend), broadcastable to (B, H, Tq, Tk).

    key_pad: (B, Tk) True at padded keys. causal_offset: absolute position of the first query
    (queries may see keys at positions <= their own); None for no causal constraint.
    """
    mask = None
    if causal_offset is not None:
        q_pos = torch.arange(q_len, device=device).unsqueeze(1) + causal_offset
        mask = torch.arange(k_len, device=device).unsqueeze(0) <= q_pos  # (Tq, Tk)
    if key_pad is not None:
        keep = ~key_pad[:, None, None, :]  # (B, 1, 1, Tk)
        mask = keep if mask is None else keep & mask
    return mask


class MultiheadAttention(nn.Module):
    """Self- or cross-attention over `width` channels with separate q, k, v, out projections."""

    def __init__(self, *, width: int, heads: int, dropout: float = 0.0, kv_width: int | None = None) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} is not divisible by {heads} heads")
        kv_width = kv_width or width
        self.heads, self.dropout = heads, dropout
        self.q_proj = xavier_linear(width, width)
        self.k_proj = xavier_linear(kv_width, width)
        self.v_proj = xavier_linear(kv_width, width)
        self.out_proj = xavier_linear(width, width)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        p = self.dropout if self.training else 0.0
        out = dot_product_attention(q, k, v, mask, p)  # (B, H, Tq, Dh)
        return self.out_proj(merge_heads(out))

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None, causal: bool = False,
                cache: AttnCache | None = None) -> tuple[torch.Tensor, AttnCache | None]:
        """Self-attention. With `cache` (or `causal` decoding state), x holds only the new steps."""
        q, k, v = (split_heads(proj(x), self.heads) for proj in (self.q_proj, self.k_proj, self.v_proj))
        past = 0
        if cache is not None:
            past = cache.k.shape[2]
            k, v = torch.cat([cache.k, k], dim=2), torch.cat([cache.v, v], dim=2)
        mask = attend_mask(pad_mask, x.shape[1], k.shape[2], past if causal else None, x.device)
        new_cache = AttnCache(k, v) if causal else None
        return self._attend(q, k, v, mask), new_cache

    def empty_state(self, batch: int, like: torch.Tensor) -> AttnCache:
        """Self-attention decode state before the first step: no keys or values yet."""
        empty = like.new_zeros(batch, self.heads, 0, self.q_proj.out_features // self.heads)
        return AttnCache(empty, empty)

    def memory_state(self, memory: torch.Tensor) -> AttnCache:
        """Cross-attention keys/values of the encoder output, computed once per sentence."""
        return AttnCache(split_heads(self.k_proj(memory), self.heads), split_heads(self.v_proj(memory), self.heads))

    def cross(self, x: torch.Tensor, memory: torch.Tensor | None, memory_pad: torch.Tensor | None,
              cache: AttnCache | None = None) -> tuple[torch.Tensor, AttnCache]:
        """Attend from x to the encoder output; keys/values are computed once and cached."""
        if cache is None:
            assert memory is not None, "cross-attention needs the encoder output on its first call"
            cache = self.memory_state(memory)
        q = split_heads(self.q_proj(x), self.heads)
        mask = attend_mask(memory_pad, x.shape[1], cache.k.shape[2], None, x.device)
        return self._attend(q, cache.k, cache.v, mask), cache


def scaled_logits(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Dot-product attention logits q·kᵀ/√Dh: (B, H, Tq, Tk). Used where logits are mixed."""
    return torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
