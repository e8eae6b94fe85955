"""The PyTorch reference conv ops against naive loops: values, gradients, dtypes, DropConnect;
and the decoder's `*_step` twins against the full causal op."""

import pytest
import torch
import torch.nn.functional as F

from convtrans.ops import dynamicconv, dynamicconv_step, lightconv, lightconv_step
from tests.unit.conv_oracle import naive_dynamicconv, naive_lightconv

# (B, T, C, H, K, padding_l): centered and causal, T < K, T = 1, odd channel counts, even K
SHAPES = [
    (2, 9, 8, 2, 3, 1), (2, 9, 8, 2, 3, 2), (1, 5, 6, 3, 7, 3), (2, 4, 4, 1, 7, 6),
    (3, 1, 5, 5, 5, 4), (2, 12, 6, 2, 4, 1), (1, 6, 3, 1, 31, 30), (1, 7, 3, 1, 31, 15),
]


def _inputs(shape, dtype=torch.float64, seed=0):
    b, t, c, h, k, p = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, c, generator=g, dtype=dtype)
    w_light = torch.randn(h, k, generator=g, dtype=dtype)
    w_dyn = torch.randn(b, t, h, k, generator=g, dtype=dtype)
    return x, w_light, w_dyn, p


@pytest.mark.parametrize("shape", SHAPES)
def test_values_match_naive_loops(shape) -> None:
    x, w_light, w_dyn, p = _inputs(shape)
    torch.testing.assert_close(lightconv(x, w_light, p), naive_lightconv(x, w_light, p))
    torch.testing.assert_close(dynamicconv(x, w_dyn, p), naive_dynamicconv(x, w_dyn, p))


@pytest.mark.parametrize("shape", SHAPES[:5])
def test_gradients_match_autograd_of_naive_loops(shape) -> None:
    x, w_light, w_dyn, p = _inputs(shape)
    for op, naive, w in ((lightconv, naive_lightconv, w_light), (dynamicconv, naive_dynamicconv, w_dyn)):
        leaves = (x.clone().requires_grad_(), w.clone().requires_grad_())
        assert torch.autograd.gradcheck(lambda a, b, op=op: op(a, b, p), leaves)
        xa, wa = x.clone().requires_grad_(), w.clone().requires_grad_()
        xb, wb = x.clone().requires_grad_(), w.clone().requires_grad_()
        grad_out = torch.randn_like(x)
        torch.autograd.backward(op(xa, wa, p), grad_out)
        torch.autograd.backward(naive(xb, wb, p), grad_out)
        torch.testing.assert_close(xa.grad, xb.grad)
        torch.testing.assert_close(wa.grad, wb.grad)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_accumulates_in_fp32(dtype) -> None:
    """Low-precision inputs are summed in fp32 and rounded once: the result is the fp32 result of
    the same (rounded) inputs, cast, and closer to it than a sum carried out in low precision."""
    x, w_light, w_dyn, p = _inputs((2, 40, 64, 4, 31, 15), dtype=torch.float32)
    x_low = x.to(dtype)
    for op, w in ((lightconv, w_light), (dynamicconv, w_dyn)):
        w_low = w.to(dtype)
        out = op(x_low, w_low, p)
        assert out.dtype == dtype
        ref32 = op(x_low.float(), w_low.float(), p)
        assert torch.equal(out, ref32.to(dtype))
    # a low-precision accumulation (tap by tap in bf16/fp16) is measurably worse
    kernel = torch.softmax(w_light.to(dtype).float(), -1).to(dtype).repeat_interleave(16, 0)  # (C, K)
    xp = F.pad(x_low, (0, 0, p, 30 - p))
    lowp = sum(xp[:, k : k + 40] * kernel[:, k] for k in range(31))
    ref32 = lightconv(x_low.float(), w_light.to(dtype).float(), p)
    assert (lightconv(x_low, w_light.to(dtype), p).float() - ref32).abs().max() < (lowp.float() - ref32).abs().max()


def test_softmax_over_all_taps_then_zero_padding() -> None:
    """A sequence shorter than the kernel uses the last taps of the K-tap softmax, unrenormalized."""
    x = torch.randn(1, 3, 2, dtype=torch.float64)
    weight = torch.randn(1, 5, dtype=torch.float64)
    w = torch.softmax(weight, -1)[0]
    out = lightconv(x, weight, padding_l=4)  # causal
    expected_last = w[2] * x[0, 0] + w[3] * x[0, 1] + w[4] * x[0, 2]
    torch.testing.assert_close(out[0, 2], expected_last)


def test_dropconnect_masks_normalized_taps_with_inverted_scaling() -> None:
    x, w_light, w_dyn, p = _inputs((2, 6, 4, 2, 3, 1))
    torch.manual_seed(7)
    out = lightconv(x, w_light, p, dropconnect=0.5, training=True)
    torch.manual_seed(7)
    kernel = F.dropout(torch.softmax(w_light, -1), 0.5, training=True)  # one mask per (head, tap)
    torch.testing.assert_close(out, naive_lightconv(x, w_light, p, w=kernel))
    torch.manual_seed(8)
    out = dynamicconv(x, w_dyn, p, dropconnect=0.5, training=True)
    torch.manual_seed(8)
    kernel = F.dropout(torch.softmax(w_dyn, -1), 0.5, training=True)  # one mask per (b, t, head, tap)
    torch.testing.assert_close(out, naive_dynamicconv(x, w_dyn, p, w=kernel))
    assert torch.equal(lightconv(x, w_light, p, dropconnect=0.5, training=False), lightconv(x, w_light, p))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: lightconv(torch.randn(1, 4, 6), torch.randn(4, 3), 1), "divisible by heads"),
        (lambda: lightconv(torch.randn(1, 4, 4), torch.randn(2, 3), 3), r"padding_l must be in \[0, K-1\]"),
        (lambda: dynamicconv(torch.randn(1, 4, 4), torch.randn(1, 5, 2, 3), 1), r"weight \(B, T, H, K\)"),
        (lambda: lightconv(torch.randn(4, 4), torch.randn(2, 3), 1), r"x \(B, T, C\)"),
    ],
)
def test_refuses_bad_shapes(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("taps", [1, 2, 5, 31])
def test_step_equals_last_position_of_causal_op(taps: int) -> None:
    """`*_step` on the window of the last K inputs (zeros before the start) gives the causal op's
    output at that position, for every position of a sequence shorter and longer than K (fp64,
    DropConnect off: decoding is inference)."""
    batch, time, channels, heads = 2, min(taps + 3, 12), 6, 3
    x, w_light, w_dyn, _ = _inputs((batch, time, channels, heads, taps, taps - 1))
    light, dyn = lightconv(x, w_light, taps - 1), dynamicconv(x, w_dyn, taps - 1)
    padded = F.pad(x, (0, 0, taps - 1, 0))  # (B, K - 1 + T, C): zeros before the start
    for t in range(time):
        window = padded[:, t : t + taps]  # (B, K, C): inputs t - K + 1 .. t
        torch.testing.assert_close(lightconv_step(window, w_light), light[:, t : t + 1], rtol=0, atol=1e-12)
        torch.testing.assert_close(dynamicconv_step(window, w_dyn[:, t : t + 1]), dyn[:, t : t + 1], rtol=0, atol=1e-12)


def test_step_keeps_low_precision_dtype() -> None:
    """Like the op: low-precision inputs are summed in fp32 and the result has the input dtype."""
    x, w_light, w_dyn, _ = _inputs((2, 5, 6, 3, 5, 4), dtype=torch.float32)
    window = x.bfloat16()
    assert lightconv_step(window, w_light.bfloat16()).dtype == torch.bfloat16
    assert dynamicconv_step(window, w_dyn[:, -1:].bfloat16()).dtype == torch.bfloat16
    expected = lightconv_step(window.float(), w_light.bfloat16().float())  # fp32 sums of the same rounded inputs
    assert torch.equal(lightconv_step(window, w_light.bfloat16()), expected.bfloat16())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: lightconv_step(torch.randn(1, 4, 6), torch.randn(2, 3)), r"window \(B, K, C\) and weight \(H, K\)"),
        (lambda: lightconv_step(torch.randn(1, 3, 6), torch.randn(4, 3)), "H dividing C"),
        (lambda: dynamicconv_step(torch.randn(1, 3, 6), torch.randn(1, 2, 2, 3)), r"weight \(B, 1, H, K\)"),
    ],
)
def test_step_refuses_mismatched_shapes(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()

