"""The decode state of an exported model, written down once: how a DecoderCache becomes the flat
list of tensors the exported `init` and `step` graphs take and return, and back.

    state = [self state of decoder layer 0 (its mixer's cache dataclass, fields in order),
             ..., self state of layer n-1,
             cross keys of layer 0, cross values of layer 0, ..., cross keys/values of layer n-1]

Every tensor is batch-first, so a runtime reorders beams by selecting rows of each. Self states
differ by mixer (attention and synthesizer: keys and values growing by one step; conv: the last
K-1 inputs; lsra: both), so a runtime that knows only the layer count splits the list as
`unflatten` does: the last 2·n tensors are the cross pairs, the rest divide evenly by layer.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import torch

from convtrans.nn.cache import DecoderCache


def structure_of(state: Any) -> Any:
    """A description of a (nested) cache dataclass: "T" for a tensor, None, or (class, fields)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return "T"
    return type(state), [(f.name, structure_of(getattr(state, f.name))) for f in dataclasses.fields(state)]


def _flatten(state: Any, out: list[torch.Tensor]) -> None:
    """Tensors in order, from the mixers' dataclasses or from a runtime's tuples (`unflatten`)."""
    if isinstance(state, torch.Tensor):
        out.append(state)
    elif isinstance(state, tuple):
        for item in state:
            _flatten(item, out)
    elif dataclasses.is_dataclass(state):
        for f in dataclasses.fields(state):
            _flatten(getattr(state, f.name), out)


def rebuild(structure: Any, tensors: list[torch.Tensor]) -> Any:
    """Inverse of _flatten: consumes tensors from the front of the list."""
    if structure is None:
        return None
    if structure == "T":
        return tensors.pop(0)
    cls, fields = structure
    return cls(**{name: rebuild(sub, tensors) for name, sub in fields})


def flat_state(cache: DecoderCache) -> list[torch.Tensor]:
    """The cache as the exported graphs take and return it (the layout above), whether it holds
    the mixers' dataclasses (an eager step's) or per-layer tuples (a graph step's, `unflatten`)."""
    flat: list[torch.Tensor] = []
    for state in cache.self_states:
        _flatten(state, flat)
    for state in cache.cross_states:
        _flatten(state, flat)
    return flat


def unflatten(step: int, flat: list[torch.Tensor], n_layers: int) -> DecoderCache:
    """A runtime's view of a flat state: per-layer tuples of tensors (not the mixers' dataclasses,
    which only the traced graph needs); `flat_state` turns it back into the flat list."""
    n_cross = 2 * n_layers
    self_flat, cross_flat = flat[: len(flat) - n_cross], flat[len(flat) - n_cross :]
    per_layer = len(self_flat) // n_layers
    self_states = [tuple(self_flat[i * per_layer : (i + 1) * per_layer]) for i in range(n_layers)]
    cross_states = [tuple(cross_flat[2 * i : 2 * i + 2]) for i in range(n_layers)]
    return DecoderCache(step, self_states, cast(list[Any], cross_states))  # tuples stand in for AttnCache
