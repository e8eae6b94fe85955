"""Decode state: each mixer owns a small dataclass of tensors; DecoderCache holds one per layer.

Caches are passed in and returned, never stored on modules. Beam search reorders the whole state
with one `reorder(index)`; export flattens it to a tuple of tensors and back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch


def reorder_state(state: Any, index: torch.Tensor) -> Any:
    """Select batch rows `index` of every tensor in a (nested) cache dataclass; ints are kept."""
    if state is None or isinstance(state, (int, float)):
        return state
    if isinstance(state, torch.Tensor):
        return state.index_select(0, index)
    if isinstance(state, (list, tuple)):
        return type(state)(reorder_state(s, index) for s in state)
    if dataclasses.is_dataclass(state):
        return dataclasses.replace(state, **{  # type: ignore[type-var]  # an instance: classes are never cached
            f.name: reorder_state(getattr(state, f.name), index) for f in dataclasses.fields(state)})
    raise TypeError(f"cannot reorder cache element of type {type(state).__name__}")


@dataclass
class AttnCache:
    """Keys and values seen so far: (B, H, S, Dh) each."""

    k: torch.Tensor
    v: torch.Tensor


@dataclass
class ConvCache:
    """The last K-1 inputs of a causal convolution: (B, K-1, C). Zeros before the sequence start."""

    prev: torch.Tensor


@dataclass
class SynthCache:
    """Synthesizer state: the values (and keys, for a vanilla part) of the S steps so far; the next
    position is S, so no separate counter (an int would be frozen into an exported graph)."""

    v: torch.Tensor  # (B, H, S, Dh)
    k: torch.Tensor | None = None


@dataclass
class LSRACache:
    """Lite Transformer: the attention branch's keys/values and the conv branch's window."""

    attn: AttnCache
    conv: ConvCache


@dataclass
class DecoderCache:
    """Everything a decoder needs between steps: the position, and per layer the self-mixer state
    and the static cross-attention keys/values (computed once from the encoder output)."""

    step: int = 0
    self_states: list[Any] = field(default_factory=list)
    cross_states: list[AttnCache | None] = field(default_factory=list)

    def reorder(self, index: torch.Tensor) -> DecoderCache:
        """The cache for hypotheses `index` of the current batch (beam search)."""
        return reorder_state(self, index)
