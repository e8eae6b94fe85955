"""The Triton conv kernels against the PyTorch reference, run on CPU by Triton's interpreter.

Needs TRITON_INTERPRET=1 set before triton is imported (Triton decides at decoration time):

    TRITON_INTERPRET=1 CONVTRANS_KERNELS=triton python -m pytest tests/triton_interpreter

The default suite runs this folder that way in a child process
(tests/unit/test_ops_triton.py::test_kernels_under_the_interpreter); collected without the
variable, this module skips itself. Values and all gradients are compared with the reference:
kernel sizes 1..31, centered, causal and odd paddings, T < K, T = 1, odd channel counts, one
and several heads, multi-block grids, fp32 and bf16/fp16 with the low-precision rule
|kernel − ref32| <= 2·|torch_lowp − ref32| + atol, DropConnect with the same mask. The
interpreter runs every program of a grid in Python, so the shapes are as small as the branch
they cover allows: cost grows with programs × taps.
"""

from __future__ import annotations

import importlib

import pytest
import torch

pytest.importorskip("triton")

from convtrans.ops import _backend, dynamicconv, dynamicconv_ref, lightconv, lightconv_ref  # noqa: E402

if not _backend.INTERPRET:
    pytest.skip("needs TRITON_INTERPRET=1 set before triton is imported (tests/unit/test_ops_triton.py "
                "runs this folder so)", allow_module_level=True)

from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

from tests.conv_kernel_checks import (  # noqa: E402
    FUNCTIONS,
    OPS,
    check_low_precision_rule,
    forward_backward,
    make_inputs,
    max_err,
)

LC = importlib.import_module("convtrans.ops.lightconv")  # the modules (the package exports the functions)
DC = importlib.import_module("convtrans.ops.dynamicconv")

# (B, T, C, H, K, padding_l)
SHAPES = [
    (2, 9, 6, 2, 3, 1),  # centered, two sequences, 3 channels per head (a partly masked channel tile)
    (1, 5, 4, 2, 1, 0),  # K = 1
    (1, 11, 6, 2, 4, 0),  # even K, padding 0 (looks only ahead)
    (1, 5, 6, 3, 7, 3),  # T < K, three heads
    (2, 4, 4, 1, 7, 6),  # T < K, causal, one head
    (1, 1, 5, 5, 5, 4),  # T = 1, odd channels, one channel per head
    (1, 13, 6, 2, 15, 3),  # odd padding (neither centered nor causal)
    (1, 6, 3, 1, 31, 30),  # K = 31 causal, T < K
]


@pytest.fixture(autouse=True)
def forced_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVTRANS_KERNELS", "triton")


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}T{}C{}H{}K{}P{}".format(*s))
def test_fp32_values_and_gradients_match_reference(name: str, shape) -> None:
    op, ref = OPS[name]
    x, w, grad_out, p = make_inputs(name, shape)
    out, gx, gw, fn = forward_backward(op, x, w, p, grad_out)
    assert fn == FUNCTIONS[name]  # the Triton autograd.Function ran, not the reference
    with _backend.use_backend("torch"):
        expected = forward_backward(ref, x.double(), w.double(), p, grad_out.double())
    for got, want in zip((out, gx, gw), expected[:3]):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_kernels_are_interpreted() -> None:
    """Under TRITON_INTERPRET=1 triton.jit made interpreted functions: nothing compiles for a GPU."""
    kernels = [LC._lightconv_fwd_kernel, LC._lightconv_bwd_weight_kernel, DC._dynamicconv_fwd_kernel,
               DC._dynamicconv_bwd_input_kernel, DC._dynamicconv_bwd_weight_kernel, DC._keep_mask_kernel]
    for kernel in kernels:
        assert isinstance(kernel, InterpretedFunction), kernel


@pytest.mark.parametrize("name", OPS)
def test_multi_block_grids(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny blocks: several time blocks and channel blocks whose tile spans two heads (lightconv),
    several weight-gradient chunks of two time blocks each (lightconv), two channel blocks per
    head, the weight gradient's loop over a head's channels and time blocks shrunk to keep the
    logits tile within MAX_TILE (dynamicconv: BLOCK_K = 8, so BLOCK_T = 32 // 8 = 4)."""
    for module, attr, value in ((LC, "BLOCK_T", 8), (LC, "MAX_BLOCK_C", 8), (LC, "CHUNK_T", 16),
                                (DC, "BLOCK_T", 8), (DC, "MAX_BLOCK_R", 4), (DC, "MAX_TILE", 32)):
        monkeypatch.setattr(module, attr, value)
    assert DC._blocks(10, 2, 5) == (4, 4, 8)
    op, ref = OPS[name]
    x, w, grad_out, p = make_inputs(name, (1, 17, 10, 2, 5, 2), seed=1)  # T = 17: 3 time blocks (5 dynamicconv), 2 chunks
    got = forward_backward(op, x, w, p, grad_out)
    assert got[3] == FUNCTIONS[name]
    with _backend.use_backend("torch"):
        want = forward_backward(ref, x, w, p, grad_out)
    for a, b in zip(got[:3], want[:3]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("shape", [(1, 9, 8, 2, 3, 2), (1, 1, 6, 3, 5, 4), (1, 20, 24, 2, 15, 7)],
                         ids=["K3causal", "T1", "K15C24"])
def test_low_precision_rule(name: str, shape, dtype: torch.dtype) -> None:
    check_low_precision_rule(name, shape, dtype)


def test_low_precision_weight_gradient_accumulates_in_fp32() -> None:
    """The dynamicconv weight gradient sums a head's channels in fp32: far closer to the fp32
    result than the same sum carried out in fp16 (what fairseq's reference kernel does)."""
    x, w, grad_out, p = make_inputs("dynamicconv", (1, 8, 256, 1, 3, 1), dtype=torch.float16, seed=3)
    x = x + 4  # a large common offset makes low-precision partial sums lose digits
    _, _, gw, _ = forward_backward(dynamicconv, x, w, p, grad_out)
    with _backend.use_backend("torch"):
        _, _, gw32, _ = forward_backward(dynamicconv_ref, x.float(), w.float(), p, grad_out.float())
    xp = torch.nn.functional.pad(x, (0, 0, p, 3 - 1 - p))  # (B, T + K - 1, C) fp16
    products = torch.stack([grad_out * xp[:, k : k + 8] for k in range(3)], -1)  # (B, T, C, K) fp16
    g16 = torch.zeros(1, 8, 3, dtype=torch.float16)
    for c in range(256):
        g16 = g16 + products[:, :, c]  # each partial sum rounded to fp16
    sm = torch.softmax(w.float(), -1)[:, :, 0]  # (B, T, K)
    g16_logits = sm * (g16.float() - (sm * g16.float()).sum(-1, keepdim=True))
    assert max_err(gw, gw32) < max_err(g16_logits, gw32[:, :, 0]) / 10


def test_lightconv_dropconnect_same_mask_as_reference() -> None:
    """The (H, K) kernel is normalized and dropped in PyTorch on both paths: same seed, same mask."""
    x, w, grad_out, p = make_inputs("lightconv", (2, 9, 8, 2, 5, 2), seed=4)
    torch.manual_seed(11)
    got = forward_backward(lightconv, x, w, p, grad_out, dropconnect=0.4, training=True)
    torch.manual_seed(11)
    with _backend.use_backend("torch"):
        want = forward_backward(lightconv_ref, x, w, p, grad_out, dropconnect=0.4, training=True)
    assert got[3] == FUNCTIONS["lightconv"]
    for a, b in zip(got[:3], want[:3]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got[0], forward_backward(lightconv, x, w, p, grad_out)[0])  # it did drop


def test_dynamicconv_dropconnect_fused_mask_reconstructed() -> None:
    """The fused mask is tl.rand(seed, flat index) >= p with the seed drawn from torch's CPU
    generator; the reference with that exact mask gives the same output and gradients."""
    shape, drop = (2, 9, 8, 2, 5, 2), 0.3
    x, w, grad_out, p = make_inputs("dynamicconv", shape, seed=5)
    torch.manual_seed(12)
    got = forward_backward(dynamicconv, x, w, p, grad_out, dropconnect=drop, training=True)
    torch.manual_seed(12)
    keep = DC.dropconnect_keep_mask(tuple(w.shape), drop, DC.draw_seed(), "cpu")  # (B, T, H, K)
    assert 0.5 < keep.float().mean() < 0.9 and not keep.all()
    ww = w.clone().requires_grad_()
    xx = x.clone().requires_grad_()
    want = DC.dynamicconv_apply_ref(xx.double(), torch.softmax(ww.double(), -1) * keep / (1 - drop), p)
    want_gx, want_gw = torch.autograd.grad(want, (xx, ww), grad_out.double())
    for a, b in zip(got[:3], (want.detach(), want_gx, want_gw)):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-5, atol=1e-5)
    eval_out = dynamicconv(x, w, p, dropconnect=drop, training=False)  # no grad needed: no log-sum-exp stored
    with _backend.use_backend("torch"):
        torch.testing.assert_close(eval_out, dynamicconv_ref(x, w, p), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", OPS)
def test_non_contiguousmake_inputs(name: str) -> None:
    op, ref = OPS[name]
    x, w, grad_out, p = make_inputs(name, (2, 9, 8, 2, 3, 1))
    x_nc = x.transpose(1, 2).contiguous().transpose(1, 2)  # (B, T, C) view with C-stride T
    assert not x_nc.is_contiguous()
    got = forward_backward(op, x_nc, w, p, grad_out)
    with _backend.use_backend("torch"):
        want = forward_backward(ref, x, w, p, grad_out)
    for a, b in zip(got[:3], want[:3]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preset", ["tiny_lightconv", "tiny_dynamicconv"])
def test_zoo_model_same_logits_and_gradients(preset: str) -> None:
    """A whole tiny model (encoder and causal decoder convs, GLU, source padding) gives the same
    logits and parameter gradients on both backends; two heads instead of four halve the grid."""
    from convtrans.config import load_preset
    from convtrans.model import EncoderDecoder

    torch.manual_seed(0)
    config = load_preset(preset, src_vocab_size=40, tgt_vocab_size=40)
    model = EncoderDecoder(config.replace(encoder_heads=2, decoder_heads=2, cross_heads=2)).eval()
    g = torch.Generator().manual_seed(1)
    src, tgt = torch.randint(4, 40, (2, 9), generator=g), torch.randint(4, 40, (2, 7), generator=g)
    src[1, 6:] = 0  # padding
    results = {}
    for choice in ("torch", "triton"):
        model.zero_grad()
        with _backend.use_backend(choice):
            logits = model(src, tgt)
            logits.square().mean().backward()
        results[choice] = (logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(results["triton"][0], results["torch"][0], rtol=1e-4, atol=1e-5)
    assert results["triton"][1].keys() == results["torch"][1].keys()
    for name, grad in results["torch"][1].items():
        torch.testing.assert_close(results["triton"][1][name], grad, rtol=1e-4, atol=1e-5, msg=name)
