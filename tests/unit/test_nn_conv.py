"""The LightConv / DynamicConv mixer (nn/conv.py) on its own, in fp64: decoding one step at a time
equals the full causal forward, each output reads exactly its K taps (no later input in the
decoder), padded encoder positions change nothing, and the widths GLU and out_dim ask for. Whole
models (every preset: incremental decoding, padding, beam reorder) are in tests/zoo."""

from __future__ import annotations

import pytest
import torch

from convtrans.nn.cache import ConvCache
from convtrans.nn.conv import ConvMixer

D, CONV, HEADS = 8, 6, 3
KINDS = ["lightconv", "dynamicconv"]


def _mixer(kind: str, kernel_size: int = 3, causal: bool = True, glu: bool = True, **kwargs) -> ConvMixer:
    torch.manual_seed(0)
    mixer = ConvMixer(d_model=D, conv_dim=CONV, heads=HEADS, kernel_size=kernel_size, kind=kind, glu=glu,
                      causal=causal, **kwargs)
    return mixer.double().eval()


def _x(batch: int, time: int, seed: int, width: int = D) -> torch.Tensor:
    return torch.randn(batch, time, width, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("kernel_size", [1, 4, 7])  # shorter and longer than the 5 steps
@torch.no_grad()
def test_step_by_step_decoding_equals_full_causal_forward(kind: str, kernel_size: int) -> None:
    mixer = _mixer(kind, kernel_size)
    x = _x(2, 5, seed=1)
    full, _ = mixer(x)
    cache, steps = mixer.empty_state(2, x), []
    for t in range(x.shape[1]):
        out, cache = mixer(x[:, t : t + 1], cache=cache)
        steps.append(out)
        assert cache.prev.shape == (2, kernel_size - 1, CONV)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=0, atol=1e-12)
    head, cache = mixer(x[:, :2])  # several steps, no cache
    step, cache = mixer(x[:, 2:3], cache=cache)  # one step: the ops' *_step twins
    rest, _ = mixer(x[:, 3:], cache=cache)  # several steps after a cache: the op over the window
    torch.testing.assert_close(torch.cat([head, step, rest], 1), full, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("causal", [True, False])
def test_each_output_reads_exactly_its_taps(kind: str, causal: bool) -> None:
    """d out[t] / d x[s] is nonzero exactly for s in [t − P, t − P + K − 1] (P = K − 1 in the
    decoder: nothing after t; P = K // 2 in the encoder), clipped to the sequence."""
    k, time, t = 4, 9, 5
    mixer = _mixer(kind, k, causal=causal)
    x = _x(1, time, seed=2).requires_grad_()
    out, _ = mixer(x)
    (grad,) = torch.autograd.grad(out[0, t].sum(), x)
    reads = grad[0].abs().sum(-1) > 0  # (T,)
    first = t - (k - 1 if causal else k // 2)
    assert reads.tolist() == [first <= s <= first + k - 1 for s in range(time)]


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_padded_encoder_positions_change_nothing(kind: str) -> None:
    """Whatever sits at padded positions (True in pad_mask) is zeroed before the conv, so the real
    positions of a padded sequence see what they would see alone."""
    mixer = _mixer(kind, kernel_size=5, causal=False)
    x = _x(2, 7, seed=3)
    pad_mask = torch.zeros(2, 7, dtype=torch.bool)
    pad_mask[1, 4:] = True
    garbage = x.clone()
    garbage[1, 4:] = 1e3 * _x(1, 3, seed=4)
    out, _ = mixer(x, pad_mask)
    torch.testing.assert_close(mixer(garbage, pad_mask)[0][~pad_mask], out[~pad_mask], rtol=0, atol=1e-12)
    alone, _ = mixer(x[1:, :4])
    torch.testing.assert_close(out[1, :4], alone[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("glu", [True, False])
def test_widths_glu_and_out_dim(kind: str, glu: bool) -> None:
    """GLU halves a Linear to 2·conv_dim; without it the Linear goes to conv_dim. The output is
    d_model wide, or out_dim (LSRA's conv branch)."""
    mixer = _mixer(kind, glu=glu)
    assert mixer.linear1.out_features == (2 * CONV if glu else CONV)
    assert mixer.linear2.in_features == CONV and mixer.linear2.out_features == D
    assert mixer(_x(2, 4, seed=5))[0].shape == (2, 4, D)
    narrow = _mixer(kind, glu=glu, out_dim=5)
    assert narrow(_x(2, 4, seed=5))[0].shape == (2, 4, 5)
    assert narrow.empty_state(3, _x(1, 1, seed=6)).prev.shape == (3, 2, CONV)  # the conv's width, K − 1 steps


def test_parameter_names_and_shapes_are_stable() -> None:
    """These are the state_dict keys of shipped checkpoints (models/*/model.safetensors)."""
    shapes = {kind: {n: tuple(p.shape) for n, p in _mixer(kind, kernel_size=7).state_dict().items()} for kind in KINDS}
    common = {"linear1.weight": (2 * CONV, D), "linear1.bias": (2 * CONV,), "linear2.weight": (D, CONV),
              "linear2.bias": (D,)}
    assert shapes["lightconv"] == {**common, "weight": (HEADS, 7)}
    assert shapes["dynamicconv"] == {**common, "weight_linear.weight": (HEADS * 7, CONV)}


def test_arguments_are_keyword_only_and_checked() -> None:
    with pytest.raises(TypeError):
        ConvMixer(D, CONV, HEADS, 3, "lightconv", True, True)  # type: ignore[misc]
    with pytest.raises(ValueError, match="lightconv or dynamicconv"):
        _mixer("conv")
    with pytest.raises(ValueError, match="not divisible by 4 heads"):
        ConvMixer(d_model=D, conv_dim=CONV, heads=4, kernel_size=3, kind="lightconv", glu=True, causal=True)


@pytest.mark.parametrize("kind", KINDS)
def test_dropconnect_only_in_training(kind: str) -> None:
    """weight_dropout drops kernel taps in training (outputs vary with the seed) and never in
    eval, where a decode step must equal the full forward."""
    mixer = _mixer(kind, kernel_size=5, weight_dropout=0.5)
    x = _x(2, 6, seed=7)
    with torch.no_grad():
        evaluated = mixer(x)[0]
        mixer.train()
        torch.manual_seed(1)
        first = mixer(x)[0]
        torch.manual_seed(2)
        second = mixer(x)[0]
    assert not torch.allclose(first, second)
    assert torch.equal(mixer.eval()(x)[0], evaluated)


def test_cache_holds_the_last_inputs_of_the_conv() -> None:
    """The window kept for the next steps is the conv input (after Linear and GLU) of the last
    K − 1 steps, zeros before the start."""
    mixer = _mixer("lightconv", kernel_size=4)
    x = _x(1, 2, seed=8)
    _, cache = mixer(x)
    assert isinstance(cache, ConvCache)
    conv_input = torch.nn.functional.glu(mixer.linear1(x), dim=-1)  # (1, 2, CONV)
    torch.testing.assert_close(cache.prev, torch.cat([torch.zeros(1, 1, CONV, dtype=x.dtype), conv_input], 1))


@pytest.mark.parametrize("causal", [True, False])
def test_lightconv_position_dropconnect_masks_each_step_like_fairseq(causal: bool) -> None:
    """`dropconnect_per_position` draws a mask per (b, t, h, k) over the same softmax taps: the
    output equals the conv with that explicit per-position kernel, steps of one sequence get
    different masks (the shared mask would give a position-independent kernel), and in eval mode
    both granularities are the same plain LightConv."""
    import torch.nn.functional as F

    from convtrans.ops.dynamicconv import dynamicconv_apply_ref

    shared = _mixer("lightconv", kernel_size=3, causal=causal, weight_dropout=0.5)
    per_position = _mixer("lightconv", kernel_size=3, causal=causal, weight_dropout=0.5, dropconnect_per_position=True)
    x = _x(2, 6, seed=3)
    with torch.no_grad():
        assert torch.equal(shared(x)[0], per_position(x)[0])  # eval: no DropConnect
    per_position.train()
    torch.manual_seed(7)
    out, _ = per_position(x)
    torch.manual_seed(7)  # rebuild the same draws by hand: input dropout (p=0) draws nothing
    conv_in = per_position.linear1(x)
    conv_in = F.glu(conv_in, dim=-1)
    taps = torch.softmax(per_position.weight, dim=-1).expand(2, 6, HEADS, 3)
    kernel = F.dropout(taps, 0.5, training=True)
    padding_l = 2 if causal else 1
    expected = per_position.linear2(dynamicconv_apply_ref(conv_in, kernel, padding_l))
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert not torch.equal(kernel[0, 0], kernel[0, 1]) or not torch.equal(kernel[0, 1], kernel[0, 2])
