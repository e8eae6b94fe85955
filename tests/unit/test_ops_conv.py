"""The PyTorch reference conv ops against naive loops: values, gradients, dtypes, DropConnect."""

import pytest
import torch
import torch.nn.functional as F

from convtrans.ops import dynamicconv, dynamicconv_ref, lightconv, lightconv_ref
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
        assert torch.autograd.gradcheck(lambda a, b: op(a, b, p), (x.clone().requires_grad_(), w.clone().requires_grad_()))
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
