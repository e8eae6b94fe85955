"""Naive loop implementations of the conv ops, written straight from the formulas (test oracle)."""

import torch


def naive_lightconv(x: torch.Tensor, weight: torch.Tensor, padding_l: int, w: torch.Tensor | None = None) -> torch.Tensor:
    """out[b,t,c] = Σ_k softmax(weight[c // R])[k] · x[b, t+k-P, c]; `w` overrides the normalized kernel.

    A lightweight convolution is a dynamic one whose kernel is the same at every position."""
    batch, time, _ = x.shape
    w = torch.softmax(weight, dim=-1) if w is None else w
    same_everywhere = w.expand(batch, time, *w.shape)  # (B, T, H, K)
    return naive_dynamicconv(x, same_everywhere, padding_l, w=same_everywhere)


def naive_dynamicconv(x: torch.Tensor, weight: torch.Tensor, padding_l: int, w: torch.Tensor | None = None) -> torch.Tensor:
    """out[b,t,c] = Σ_k softmax(weight[b,t,c // R])[k] · x[b, t+k-P, c]."""
    batch, time, channels = x.shape
    heads, taps = weight.shape[2], weight.shape[3]
    w = torch.softmax(weight, dim=-1) if w is None else w
    out = torch.zeros_like(x)
    for t in range(time):
        for k in range(taps):
            s = t + k - padding_l
            if 0 <= s < time:
                for c in range(channels):
                    out[:, t, c] += w[:, t, c // (channels // heads), k] * x[:, s, c]
    return out
