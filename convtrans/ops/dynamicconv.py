"""Dynamic convolution (Wu et al. 2019) on B×T×C tensors: a kernel per time step and head.

    out[b, t, c] = Σ_k softmax(weight[b, t, h(c)])[k] · x[b, t + k − padding_l, c],   h(c) = c // (C/H)

The kernel logits `weight` (B, T, H, K) are predicted from the current step by the caller
(nn/conv.py); the op normalizes them (softmax over all K taps, then zero padding drops taps that
fall off the sequence, so incremental decoding equals the full forward) and applies DropConnect
per (b, t, h, k) with inverted scaling.

Memory traffic of one forward: read x (B·T·C) and weight (B·T·H·K), write out (B·T·C).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(x: torch.Tensor, weight: torch.Tensor, padding_l: int) -> None:
    if x.dim() != 3 or weight.dim() != 4 or weight.shape[:2] != x.shape[:2]:
        raise ValueError(
            f"dynamicconv expects x (B, T, C) and weight (B, T, H, K), got {tuple(x.shape)} and {tuple(weight.shape)}"
        )
    channels, heads, taps = x.shape[2], weight.shape[2], weight.shape[3]
    if channels % heads:
        raise ValueError(f"dynamicconv: channels ({channels}) must be divisible by heads ({heads})")
    if not 0 <= padding_l < taps:
        raise ValueError(f"dynamicconv: padding_l must be in [0, K-1] = [0, {taps - 1}], got {padding_l}")


def dynamicconv_ref(
    x: torch.Tensor, weight: torch.Tensor, padding_l: int, dropconnect: float = 0.0, training: bool = False
) -> torch.Tensor:
    """Reference: softmax over taps, DropConnect, then a sum of K shifted products in fp32.

    Looping over taps keeps memory at O(B·T·C) (an unfold + einsum materializes B·T·C·K).
    x: (B, T, C); weight: (B, T, H, K) raw kernel logits. Returns (B, T, C) in x's dtype.
    """
    _check(x, weight, padding_l)
    batch, time, channels = x.shape
    heads, taps = weight.shape[2], weight.shape[3]
    acc = torch.promote_types(x.dtype, torch.float32)  # fp16/bf16 accumulate in fp32, fp64 stays
    w = torch.softmax(weight.to(acc), dim=-1)  # (B, T, H, K)
    if training and dropconnect > 0:
        w = F.dropout(w, dropconnect, training=True)
    w = w.unsqueeze(3)  # (B, T, H, 1, K): broadcast over the channels of a head
    xp = F.pad(x.to(acc), (0, 0, padding_l, taps - 1 - padding_l))  # (B, T + K - 1, C)
    xp = xp.view(batch, time + taps - 1, heads, channels // heads)  # (B, T + K - 1, H, R)
    out = xp[:, 0:time] * w[..., 0]
    for k in range(1, taps):
        out = out + xp[:, k : k + time] * w[..., k]  # (B, T, H, R)
    return out.reshape(batch, time, channels).to(x.dtype)


def dynamicconv(
    x: torch.Tensor, weight: torch.Tensor, padding_l: int, dropconnect: float = 0.0, training: bool = False
) -> torch.Tensor:
    """Dynamic convolution; see the module docstring. Differentiable in x and weight."""
    return dynamicconv_ref(x, weight, padding_l, dropconnect, training)
