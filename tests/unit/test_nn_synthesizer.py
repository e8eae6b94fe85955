"""Each Synthesizer part against its formula (Tay et al. 2020), computed naively per position."""

import math

import pytest
import torch

from convtrans.nn.synthesizer import SynthesizerMixer

D, H, L = 8, 2, 12
DH = D // H


def _naive_logits(m: SynthesizerMixer, part: str, x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, T) logits for a full (non-incremental) sequence, one entry at a time."""
    batch, time, _ = x.shape
    out = torch.zeros(batch, H, time, time, dtype=x.dtype)
    for b in range(batch):
        for i in range(time):
            hidden = torch.relu(m.dense_in(x[b, i])) if hasattr(m, "dense_in") else None
            for h in range(H):
                hh = hidden[h * DH : (h + 1) * DH] if hidden is not None else None
                for j in range(time):
                    if part == "dense":  # B_i = W2·ReLU(W1 x_i + b1) + b2, entry j
                        out[b, h, i, j] = hh @ m.dense_out[h, :, j] + m.dense_bias[h, j]
                    elif part == "factorized_dense":  # A[j mod a] · B[j div a]
                        a = m.factor_a.shape[-1]
                        out[b, h, i, j] = (hh @ m.factor_a[h, :, j % a]) * (hh @ m.factor_b[h, :, j // a])
                    elif part == "random":
                        out[b, h, i, j] = m.random[h, i, j]
                    elif part == "factorized_random":
                        out[b, h, i, j] = m.random_r1[h, i] @ m.random_r2[h, j]
                    elif part == "vanilla":
                        q = m.q_proj(x[b, i])[h * DH : (h + 1) * DH]
                        k = m.k_proj(x[b, j])[h * DH : (h + 1) * DH]
                        out[b, h, i, j] = q @ k / math.sqrt(DH)
    return out


def _naive_output(m: SynthesizerMixer, x: torch.Tensor, causal: bool) -> torch.Tensor:
    logits = [_naive_logits(m, p, x) for p in m.parts]
    weights = torch.softmax(m.mix, 0) if len(logits) > 1 else torch.ones(1, dtype=x.dtype)
    mixed = sum(w * part for w, part in zip(weights, logits))
    time = x.shape[1]
    if causal:
        mixed = mixed.masked_fill(torch.ones(time, time, dtype=torch.bool).triu(1), float("-inf"))
    v = m.v_proj(x).view(x.shape[0], time, H, DH).transpose(1, 2)
    y = torch.softmax(mixed, -1) @ v
    return m.out_proj(y.transpose(1, 2).reshape(x.shape[0], time, D))


@pytest.mark.parametrize("parts", [("dense",), ("random",), ("factorized_dense",), ("factorized_random",),
                                   ("random", "vanilla"), ("dense", "vanilla"), ("random", "dense")])
@pytest.mark.parametrize("causal", [False, True])
def test_parts_and_mixtures_match_their_formulas(parts, causal) -> None:
    torch.manual_seed(0)
    m = SynthesizerMixer(d_model=D, heads=H, parts=parts, max_len=L, factors=(3, 4), rank=3, causal=causal).double()
    if len(parts) > 1:
        with torch.no_grad():
            m.mix.copy_(torch.randn(len(parts)))
    x = torch.randn(2, 7, D, dtype=torch.float64)
    out, _ = m(x)
    torch.testing.assert_close(out, _naive_output(m, x, causal))


def test_fixed_random_is_frozen_and_trainable_random_is_not() -> None:
    fixed = SynthesizerMixer(d_model=D, heads=H, parts=("fixed_random",), max_len=L, factors=(3, 4))
    assert "fixed_random" not in dict(fixed.named_parameters()) and "fixed_random" in fixed.state_dict()
    trainable = SynthesizerMixer(d_model=D, heads=H, parts=("random",), max_len=L, factors=(3, 4))
    assert trainable.random.requires_grad


def test_key_padding_is_masked_and_long_inputs_refused() -> None:
    m = SynthesizerMixer(d_model=D, heads=H, parts=("random",), max_len=L, factors=(3, 4)).eval()
    x = torch.randn(1, 6, D)
    pad = torch.tensor([[False] * 4 + [True] * 2])
    masked, _ = m(x, pad)
    changed = x.clone()
    changed[0, 4:] = torch.randn(2, D)
    assert torch.allclose(masked[0, :4], m(changed, pad)[0][0, :4])
    with pytest.raises(ValueError, match="13 positions exceeds max_len=12"):
        m(torch.randn(1, 13, D))
