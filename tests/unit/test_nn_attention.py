"""MultiheadAttention against softmax(QKᵀ/√Dh)·V written out one head at a time with the module's own
projection weights (fp64), plus the masks and the decode state: padded keys and future keys are
excluded, cached cross keys/values and step-by-step self-attention equal recomputing everything.
Model-level incremental decoding over every preset is tests/zoo/test_common.py's job."""

from __future__ import annotations

import math

import pytest
import torch

from convtrans.nn.attention import MultiheadAttention
from convtrans.nn.cache import AttnCache

D, H = 12, 3
DH = D // H


def _mha(seed: int = 0) -> MultiheadAttention:
    torch.manual_seed(seed)
    mha = MultiheadAttention(width=D, heads=H).double().eval()
    with torch.no_grad():  # the init zeroes the biases; random ones make the reference check them too
        for proj in (mha.q_proj, mha.k_proj, mha.v_proj, mha.out_proj):
            proj.bias.normal_()
    return mha


def _x(batch: int, time: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, time, D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def naive_attention(mha: MultiheadAttention, x: torch.Tensor, memory: torch.Tensor,
                    key_pad: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
    """Queries from x (B, Tq, d), keys and values from memory (B, Tk, d): one head at a time."""
    def project(linear: torch.nn.Linear, t: torch.Tensor) -> torch.Tensor:
        return t @ linear.weight.T + linear.bias

    q, k, v = project(mha.q_proj, x), project(mha.k_proj, memory), project(mha.v_proj, memory)
    blocked = torch.zeros(x.shape[0], x.shape[1], memory.shape[1], dtype=torch.bool)  # (B, Tq, Tk)
    if key_pad is not None:
        blocked |= key_pad[:, None, :]
    if causal:
        blocked |= torch.ones(x.shape[1], memory.shape[1], dtype=torch.bool).triu(1)
    heads = []
    for h in range(H):
        cols = slice(h * DH, (h + 1) * DH)
        logits = q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(DH)  # (B, Tq, Tk)
        heads.append(torch.softmax(logits.masked_fill(blocked, float("-inf")), dim=-1) @ v[..., cols])
    return project(mha.out_proj, torch.cat(heads, dim=-1))


@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_equals_the_formula(causal: bool) -> None:
    mha, x = _mha(), _x(2, 6, 1)
    out, cache = mha(x, causal=causal)
    torch.testing.assert_close(out, naive_attention(mha, x, x, causal=causal))
    assert (cache is not None) == causal  # only a causal (decoder) self-attention keeps a decode state


def test_padded_keys_are_excluded() -> None:
    """A padded batch row gives, at its real positions, what the unpadded sequence gives alone,
    whatever the padded positions hold."""
    mha, x = _mha(), _x(2, 7, 2)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[0, 4:] = True
    out, _ = mha(x, pad)
    torch.testing.assert_close(out, naive_attention(mha, x, x, key_pad=pad))
    alone, _ = mha(x[:1, :4])
    torch.testing.assert_close(out[0, :4], alone[0])
    changed = x.clone()
    changed[0, 4:] = _x(1, 3, 3)
    torch.testing.assert_close(mha(changed, pad)[0][0, :4], out[0, :4])


def test_causal_attention_sees_no_future_keys() -> None:
    mha, x = _mha(), _x(2, 6, 4)
    out, _ = mha(x, causal=True)
    for t in range(1, 6):  # position t-1 from the prefix alone equals the full sequence's
        torch.testing.assert_close(mha(x[:, :t], causal=True)[0][:, -1], out[:, t - 1])
    changed = x.clone()
    changed[:, 3:] = _x(2, 3, 5)
    torch.testing.assert_close(mha(changed, causal=True)[0][:, :3], out[:, :3])


def test_cross_attention_with_cached_keys_values_equals_recomputing_them() -> None:
    mha, x, memory = _mha(), _x(2, 5, 6), _x(2, 8, 7)
    memory_pad = torch.zeros(2, 8, dtype=torch.bool)
    memory_pad[1, 5:] = True
    first, cache = mha.cross(x, memory, memory_pad)
    torch.testing.assert_close(first, naive_attention(mha, x, memory, key_pad=memory_pad))
    assert cache.k.shape == cache.v.shape == (2, H, 8, DH)  # (B, H, S, Dh)
    state = mha.memory_state(memory)
    assert torch.equal(state.k, cache.k) and torch.equal(state.v, cache.v)
    again, kept = mha.cross(x, None, memory_pad, cache)  # the encoder output is not needed any more
    assert kept is cache and torch.equal(again, first)
    for t in range(5):  # one step at a time, as in decoding
        step, _ = mha.cross(x[:, t : t + 1], None, memory_pad, cache)
        torch.testing.assert_close(step[:, 0], first[:, t])


@pytest.mark.parametrize("start", ["none", "empty_state"])
def test_incremental_self_attention_equals_full_causal_forward(start: str) -> None:
    mha, x = _mha(), _x(2, 7, 8)
    full, full_cache = mha(x, causal=True)
    cache = mha.empty_state(2, x) if start == "empty_state" else None
    steps = []
    for t in range(7):
        step, cache = mha(x[:, t : t + 1], causal=True, cache=cache)
        steps.append(step)
    torch.testing.assert_close(torch.cat(steps, 1), full)
    torch.testing.assert_close(cache.k, full_cache.k)
    torch.testing.assert_close(cache.v, full_cache.v)
    head, cache = mha(x[:, :3], causal=True)  # a prefix of several steps, then the rest at once
    tail, cache = mha(x[:, 3:], causal=True, cache=cache)
    torch.testing.assert_close(torch.cat([head, tail], 1), full)
    assert cache.k.shape == (2, H, 7, DH)


def test_empty_state_holds_no_steps_and_follows_the_input() -> None:
    mha = _mha()
    like = torch.zeros(1, dtype=torch.float32)
    state = mha.empty_state(3, like)
    assert isinstance(state, AttnCache)
    assert state.k.shape == state.v.shape == (3, H, 0, DH)  # (B, H, 0, Dh)
    assert state.k.dtype == torch.float32 and state.k.device == like.device
    x = _x(3, 1, 9)
    first, cache = mha(x, causal=True, cache=mha.empty_state(3, x))
    assert torch.equal(first, mha(x, causal=True)[0]) and cache.k.shape == (3, H, 1, DH)


def test_width_must_divide_into_heads() -> None:
    with pytest.raises(ValueError, match="width 10 is not divisible by 3 heads"):
        MultiheadAttention(width=10, heads=3)
