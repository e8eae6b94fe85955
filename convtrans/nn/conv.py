"""LightConv / DynamicConv token mixer (Wu et al. 2019): Linear → (GLU) → conv → Linear.

Follows fairseq's LightConvEncoderLayer/DecoderLayer conv sub-block: input dropout, a Linear to
2·conv_dim followed by GLU (or to conv_dim without), padded encoder positions zeroed before the
conv, the conv (centered padding K//2 in the encoder, causal K-1 in the decoder), and a Linear
back to d. The residual, dropout and LayerNorm belong to the layer (model.py).

DynamicConv predicts H·K kernel logits per step from the conv input at that step
(Linear(conv_dim → H·K), no bias). The op normalizes them (ops/).

Init (pinned, as the reference implementations disagree): Xavier-uniform for the Linears and
the (H, K) LightConv kernel; PyTorch's default (Kaiming-uniform) for the DynamicConv predictor,
which is what fairseq's modules effectively train with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from convtrans import ops
from convtrans.nn.attention import xavier_linear
from convtrans.nn.cache import ConvCache


class ConvMixer(nn.Module):
    """A LightConv (`kind="lightconv"`) or DynamicConv (`kind="dynamicconv"`) block."""

    def __init__(self, *, d_model: int, conv_dim: int, heads: int, kernel_size: int, kind: str, glu: bool,
                 causal: bool, weight_dropout: float = 0.0, input_dropout: float = 0.0,
                 out_dim: int | None = None, dropconnect_per_position: bool = False) -> None:
        """Keyword-only: eight numbers and flags in a row are easy to pass in the wrong order."""
        super().__init__()
        if kind not in ("lightconv", "dynamicconv"):
            raise ValueError(f"conv kind must be lightconv or dynamicconv, got {kind!r}")
        if conv_dim % heads:
            raise ValueError(f"conv width {conv_dim} is not divisible by {heads} heads")
        self.kind, self.heads, self.kernel_size, self.glu, self.causal = kind, heads, kernel_size, glu, causal
        self.weight_dropout, self.input_dropout = weight_dropout, input_dropout
        self.dropconnect_per_position = dropconnect_per_position
        self.padding_l = kernel_size - 1 if causal else kernel_size // 2
        self.linear1 = xavier_linear(d_model, 2 * conv_dim if glu else conv_dim)
        if kind == "lightconv":
            self.weight = nn.Parameter(torch.empty(heads, kernel_size))
            nn.init.xavier_uniform_(self.weight)
        else:
            self.weight_linear = nn.Linear(conv_dim, heads * kernel_size, bias=False)
        self.linear2 = xavier_linear(conv_dim, out_dim or d_model)

    def _conv(self, x: torch.Tensor, padding_l: int) -> torch.Tensor:
        """The op on (B, T, C) with the given left padding."""
        batch, time, _ = x.shape
        if self.kind == "lightconv":
            if self.dropconnect_per_position and self.training and self.weight_dropout > 0:
                # fairseq's granularity: the shared kernel's logits broadcast to every (b, t), so the
                # dynamic op's softmax gives the same taps and its DropConnect draws per (b, t, h, k)
                logits = self.weight.expand(batch, time, *self.weight.shape)
                return ops.dynamicconv(x, logits, padding_l, self.weight_dropout, self.training)
            return ops.lightconv(x, self.weight, padding_l, self.weight_dropout, self.training)
        logits = self.weight_linear(x).view(batch, time, self.heads, self.kernel_size)  # (B, T, H, K)
        return ops.dynamicconv(x, logits, padding_l, self.weight_dropout, self.training)

    def empty_state(self, batch: int, like: torch.Tensor) -> ConvCache:
        """Decode state before the first step: K-1 zeros, which is what the causal padding reads."""
        return ConvCache(like.new_zeros(batch, self.kernel_size - 1, self.linear2.in_features))

    def _decode_step(self, window: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The causal output (B, 1, C) of one new step x (inference) from its window (B, K, C) of
        K-1 cached inputs and the new one: the ops' `*_step` twins, so a decode step costs B·C·K
        and DynamicConv predicts the kernel of the new step only."""
        if self.kind == "lightconv":
            return ops.lightconv_step(window, self.weight)
        batch = x.shape[0]
        logits = self.weight_linear(x).view(batch, 1, self.heads, self.kernel_size)  # (B, 1, H, K)
        return ops.dynamicconv_step(window, logits)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None,
                cache: ConvCache | None = None) -> tuple[torch.Tensor, ConvCache | None]:
        """x: (B, T, d) → (B, T, out_dim). Causal blocks also return the window for the next steps;
        with a cache, x holds only the new steps and the cached inputs precede them."""
        if self.training:  # the identity in eval: no call in a decode step
            x = F.dropout(x, self.input_dropout, True)
        x = self.linear1(x)
        if self.glu:
            x = F.glu(x, dim=-1)  # (B, T, conv_dim)
        if pad_mask is not None:
            x = x.masked_fill(pad_mask.unsqueeze(-1), 0.0)
        if not self.causal:
            return self.linear2(self._conv(x, self.padding_l)), None
        history = self.kernel_size - 1
        if cache is None:
            out = self._conv(x, self.padding_l)
            window = F.pad(x, (0, 0, max(0, history - x.shape[1]), 0))  # zeros before the start
        else:
            window = torch.cat([cache.prev, x], dim=1)  # (B, K-1 + t, C)
            if self.training or x.shape[1] > 1:  # several new steps: the op over the window, then drop the history
                out = self._conv(window, self.padding_l)[:, history:]
            else:
                out = self._decode_step(window, x)
        new_cache = ConvCache(window[:, window.shape[1] - history:])
        return self.linear2(out), new_cache
