"""Lightweight convolution (Wu et al. 2019) on B×T×C tensors.

    out[b, t, c] = Σ_k softmax(weight[h(c)])[k] · x[b, t + k − padding_l, c],   h(c) = c // (C/H)

Positions outside [0, T) read as zero, so taking the softmax over all K taps and letting the
zero padding drop the taps that fall off a short sequence is the same as slicing the kernel after
the softmax (never renormalizing): a step-by-step decoder gets exactly the full-sequence output.
DropConnect drops normalized taps with inverted scaling; its mask is per (head, tap), shared by
the batch (what a fused kernel can do for free; the fairseq TBC path masks per position).

Memory traffic of one forward: read x and write out, 2·B·T·C elements; the H×K kernel is noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(x: torch.Tensor, weight: torch.Tensor, padding_l: int) -> None:
    if x.dim() != 3 or weight.dim() != 2:
        raise ValueError(f"lightconv expects x (B, T, C) and weight (H, K), got {tuple(x.shape)} and {tuple(weight.shape)}")
    channels, (heads, taps) = x.shape[2], weight.shape
    if channels % heads:
        raise ValueError(f"lightconv: channels ({channels}) must be divisible by heads ({heads})")
    if not 0 <= padding_l < taps:
        raise ValueError(f"lightconv: padding_l must be in [0, K-1] = [0, {taps - 1}], got {padding_l}")


def lightconv_ref(
    x: torch.Tensor, weight: torch.Tensor, padding_l: int, dropconnect: float = 0.0, training: bool = False
) -> torch.Tensor:
    """Reference: softmax over taps, DropConnect, then a grouped conv1d in fp32.

    x: (B, T, C); weight: (H, K) raw (pre-softmax) kernel logits. Returns (B, T, C) in x's dtype.
    """
    _check(x, weight, padding_l)
    batch, time, channels = x.shape
    heads, taps = weight.shape
    acc = torch.promote_types(x.dtype, torch.float32)  # fp16/bf16 accumulate in fp32, fp64 stays
    w = torch.softmax(weight.to(acc), dim=-1)  # (H, K)
    if training and dropconnect > 0:
        w = F.dropout(w, dropconnect, training=True)
    w = w.repeat_interleave(channels // heads, dim=0).unsqueeze(1)  # (C, 1, K), contiguous head map
    xt = F.pad(x.to(acc).transpose(1, 2), (padding_l, taps - 1 - padding_l))  # (B, C, T + K - 1)
    out = F.conv1d(xt, w, groups=channels)  # (B, C, T)
    return out.transpose(1, 2).to(x.dtype)  # (B, T, C)


def lightconv(
    x: torch.Tensor, weight: torch.Tensor, padding_l: int, dropconnect: float = 0.0, training: bool = False
) -> torch.Tensor:
    """Lightweight convolution; see the module docstring. Differentiable in x and weight."""
    return lightconv_ref(x, weight, padding_l, dropconnect, training)
