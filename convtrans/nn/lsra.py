"""Lite Transformer's Long-Short Range Attention (Wu, Liu et al. 2020).

The d channels are split: the first `attn_dim` go to a multi-head attention branch (global
context), the rest to a convolution branch (local context: Linear → (GLU) → LightConv or
DynamicConv → Linear), and the two outputs are concatenated back to d. No mixing layer beyond each
branch's own output projection (lite-transformer's MultiBranch). In the decoder the conv is causal
and the attention masked; both keep their own decode state.
"""

from __future__ import annotations

import torch
from torch import nn

from convtrans.nn.attention import MultiheadAttention
from convtrans.nn.cache import LSRACache
from convtrans.nn.conv import ConvMixer


class LSRAMixer(nn.Module):
    def __init__(self, *, d_model: int, attn_dim: int, heads: int, kernel_size: int, conv_kind: str, glu: bool,
                 causal: bool, attention_dropout: float = 0.0, weight_dropout: float = 0.0,
                 dropconnect_per_position: bool = False, conv_heads: int | None = None) -> None:
        """`heads` for the attention branch, `conv_heads` (default: the same) for the conv branch."""
        super().__init__()
        if not 0 < attn_dim < d_model:
            raise ValueError(f"attention branch width must be in (0, {d_model}), got {attn_dim}")
        self.attn_dim, self.causal = attn_dim, causal
        conv_dim = d_model - attn_dim
        self.attention = MultiheadAttention(width=attn_dim, heads=heads, dropout=attention_dropout)
        self.conv = ConvMixer(d_model=conv_dim, conv_dim=conv_dim, heads=conv_heads or heads, kernel_size=kernel_size,
                              kind=conv_kind, glu=glu, causal=causal, weight_dropout=weight_dropout,
                              dropconnect_per_position=dropconnect_per_position)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None,
                cache: LSRACache | None = None) -> tuple[torch.Tensor, LSRACache | None]:
        """x: (B, T, d) → (B, T, d); with a cache, x holds only the new steps."""
        x_attn, x_conv = x[..., : self.attn_dim], x[..., self.attn_dim :]
        y_attn, attn_cache = self.attention(x_attn, pad_mask, causal=self.causal, cache=cache.attn if cache else None)
        y_conv, conv_cache = self.conv(x_conv, pad_mask, cache.conv if cache else None)
        new_cache = LSRACache(attn_cache, conv_cache) if self.causal else None
        return torch.cat([y_attn, y_conv], dim=-1), new_cache

    def empty_state(self, batch: int, like: torch.Tensor) -> LSRACache:
        return LSRACache(self.attention.empty_state(batch, like), self.conv.empty_state(batch, like))
