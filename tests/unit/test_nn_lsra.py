"""Lite Transformer's long-short range attention (LSRA, Wu, Liu et al. 2020): the width is split into
an attention branch (global) and a conv branch (local) whose outputs are concatenated (shared/reference/
architectures.md §3.1). Checked in fp64: the split and the branches' reach, decode state, padding, and
the branch widths the config asks for."""

from __future__ import annotations

import pytest
import torch

from convtrans.config import load_preset
from convtrans.model import EncoderDecoder
from convtrans.nn.lsra import LSRAMixer

D, ATTN, HEADS, K = 12, 4, 2, 3
KINDS = [("lightconv", False), ("dynamicconv", True)]


def _lsra(kind: str = "lightconv", glu: bool = False, causal: bool = False, attn_dim: int = ATTN) -> LSRAMixer:
    torch.manual_seed(0)
    return LSRAMixer(d_model=D, attn_dim=attn_dim, heads=HEADS, kernel_size=K, conv_kind=kind, glu=glu,
                     causal=causal).double().eval()


def _x(batch: int, time: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, time, D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind, glu", KINDS)
@pytest.mark.parametrize("causal", [False, True])
def test_output_is_the_two_branches_side_by_side(kind: str, glu: bool, causal: bool) -> None:
    """y = [attention(x[:, :, :a]) | conv(x[:, :, a:])], width d: no mixing layer across branches."""
    lsra, x = _lsra(kind, glu, causal), _x(2, 9, 1)
    y, cache = lsra(x)
    assert y.shape == (2, 9, D)
    y_attn, _ = lsra.attention(x[..., :ATTN], causal=causal)
    y_conv, _ = lsra.conv(x[..., ATTN:])
    assert torch.equal(y, torch.cat([y_attn, y_conv], dim=-1))
    assert (cache is not None) == causal


@pytest.mark.parametrize("attn_dim", [2, 4, 8])
def test_each_half_of_the_output_reads_only_its_channels_and_only_attention_reaches_far(attn_dim: int) -> None:
    lsra, x = _lsra(attn_dim=attn_dim), _x(1, 12, 2)
    y, _ = lsra(x)
    attn_in, conv_in = x.clone(), x.clone()
    attn_in[..., :attn_dim] += 1.0
    conv_in[..., attn_dim:] += 1.0
    y_attn_changed, y_conv_changed = lsra(attn_in)[0], lsra(conv_in)[0]
    torch.testing.assert_close(y_attn_changed[..., attn_dim:], y[..., attn_dim:])  # conv half untouched
    torch.testing.assert_close(y_conv_changed[..., :attn_dim], y[..., :attn_dim])  # attention half untouched
    assert not torch.allclose(y_attn_changed[..., :attn_dim], y[..., :attn_dim])
    assert not torch.allclose(y_conv_changed[..., attn_dim:], y[..., attn_dim:])
    far = x.clone()
    far[:, -1] += 1.0  # the last position: beyond the K=3 window of position 0
    y_far, _ = lsra(far)
    torch.testing.assert_close(y_far[:, 0, attn_dim:], y[:, 0, attn_dim:])  # short range: the conv does not see it
    assert not torch.allclose(y_far[:, 0, :attn_dim], y[:, 0, :attn_dim])  # long range: the attention does


@pytest.mark.parametrize("kind, glu", KINDS)
def test_step_by_step_decoding_equals_the_full_causal_forward(kind: str, glu: bool) -> None:
    lsra, x = _lsra(kind, glu, causal=True), _x(2, 7, 3)
    full, _ = lsra(x)
    cache, steps = lsra.empty_state(2, x), []
    for t in range(7):
        step, cache = lsra(x[:, t : t + 1], cache=cache)
        steps.append(step)
    torch.testing.assert_close(torch.cat(steps, 1), full)
    head, cache = lsra(x[:, :4])  # several steps at once, then the rest
    tail, _ = lsra(x[:, 4:], cache=cache)
    torch.testing.assert_close(torch.cat([head, tail], 1), full)
    changed = x.clone()
    changed[:, 5:] = _x(2, 2, 4)  # neither branch sees the future
    torch.testing.assert_close(lsra(changed)[0][:, :5], full[:, :5])


@pytest.mark.parametrize("kind, glu", KINDS)
def test_padding_does_not_leak_into_real_positions(kind: str, glu: bool) -> None:
    """Encoder side: a padded row's real positions equal the unpadded sequence alone, whatever the pads
    hold (the attention masks padded keys, the conv zeroes padded inputs as its own padding does)."""
    lsra, x = _lsra(kind, glu), _x(2, 8, 5)
    pad = torch.zeros(2, 8, dtype=torch.bool)
    pad[0, 5:] = True
    y, _ = lsra(x, pad)
    torch.testing.assert_close(y[0, :5], lsra(x[:1, :5])[0][0])
    changed = x.clone()
    changed[0, 5:] = _x(1, 3, 6)
    torch.testing.assert_close(lsra(changed, pad)[0][0, :5], y[0, :5])
    torch.testing.assert_close(y[1], lsra(x[1:])[0][0])  # the unpadded row is untouched by the other's mask


@pytest.mark.parametrize("attention_dim, expected", [(0, 16), (8, 8), (24, 24)])
def test_branch_widths_follow_lsra_attention_dim(attention_dim: int, expected: int) -> None:
    """lsra_attention_dim channels go to attention (0 = d/2), the rest to the conv branch, in every layer."""
    config = load_preset("tiny_lite_transformer", src_vocab_size=16, tgt_vocab_size=16)
    config = config.replace(lsra_attention_dim=attention_dim, lsra_heads=4)
    model = EncoderDecoder(config)
    for layer in [*model.encoder, *model.decoder]:
        assert layer.mixer.attention.q_proj.weight.shape == (expected, expected)
        assert layer.mixer.conv.linear1.in_features == config.d_model - expected
        assert layer.mixer.conv.linear2.out_features == config.d_model - expected


def test_branch_width_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"attention branch width must be in \(0, 12\), got 12"):
        _lsra(attn_dim=12)
