"""The Triton conv kernels on a real GPU against the PyTorch reference: values and gradients in
fp32, bf16 and fp16 at the shapes models use (long sequences, 1,024 channels, K up to 31), the
fused DropConnect, non-contiguous inputs, and a whole zoo model with the kernels against the
reference path. Marked `gpu`: `python -m pytest -m gpu tests/gpu` (benchmarks/gpu.sh runs them).

The interpreter tests (tests/triton_interpreter) cover every kernel branch on tiny shapes; these
add what only a GPU shows: compiled code, real tile sizes and many-block grids, atomics-free
reductions at scale, and low precision rounding as the hardware does it.
"""

from __future__ import annotations

import importlib

import pytest
import torch

pytestmark = pytest.mark.gpu
pytest.importorskip("triton")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)

from convtrans.ops import _backend, dynamicconv  # noqa: E402
from tests.conv_kernel_checks import FUNCTIONS, OPS, check_low_precision_rule, forward_backward, make_inputs  # noqa: E402

DC = importlib.import_module("convtrans.ops.dynamicconv")
CUDA = torch.device("cuda")
# (B, T, C, H, K, padding_l): encoder (centered) and decoder (causal) layers of the presets, T = 1
# (a decode step), T < K, long sequences, heads of 64 and of 16 channels, an odd channel count
SHAPES = [
    (8, 512, 512, 8, 3, 1),
    (8, 512, 512, 8, 31, 30),
    (4, 1024, 1024, 16, 15, 7),
    (2, 2049, 1024, 16, 31, 15),
    (16, 1, 512, 8, 7, 6),
    (4, 5, 256, 4, 31, 30),
    (2, 300, 96, 6, 7, 3),
    (1, 8192, 1024, 16, 7, 3),
]


@pytest.fixture(autouse=True)
def forced_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVTRANS_KERNELS", "triton")


def _inputs(name: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32, seed: int = 0):
    return make_inputs(name, shape, dtype, seed, device=CUDA)


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}T{}C{}H{}K{}P{}".format(*s))
def test_fp32_values_and_gradients_match_reference(name: str, shape) -> None:
    op, ref = OPS[name]
    x, w, grad_out, p = _inputs(name, shape)
    got = forward_backward(op, x, w, p, grad_out)
    assert got[3] == FUNCTIONS[name]  # the Triton autograd.Function ran
    with _backend.use_backend("torch"):
        want = forward_backward(ref, x.double(), w.double(), p, grad_out.double())
    for a, b in zip(got[:3], want[:3]):
        assert a.dtype == torch.float32
        # fp32 sums over up to 31 taps (and up to 2,049 positions for the lightconv weight gradient)
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[2], SHAPES[4]], ids=["K31causal", "K15C1024", "T1"])
def test_low_precision_rule(name: str, shape, dtype: torch.dtype) -> None:
    """The interpreter tests' rule (tests/conv_kernel_checks.py) at model shapes, on the GPU."""
    check_low_precision_rule(name, shape, dtype, device=CUDA)


def test_dynamicconv_dropconnect_fused_mask_on_gpu() -> None:
    """The fused mask (tl.rand of the seed and flat index) is reproduced from the same seed, and the
    reference with that mask gives the same output and gradients."""
    shape, drop = (4, 257, 512, 8, 7, 3), 0.3
    x, w, grad_out, p = _inputs("dynamicconv", shape, seed=5)
    torch.manual_seed(12)
    got = forward_backward(dynamicconv, x, w, p, grad_out, dropconnect=drop, training=True)
    torch.manual_seed(12)
    keep = DC.dropconnect_keep_mask(tuple(w.shape), drop, DC.draw_seed(), CUDA)
    assert 0.65 < keep.float().mean() < 0.75
    ww, xx = w.clone().requires_grad_(), x.clone().requires_grad_()
    want = DC.dynamicconv_apply_ref(xx.double(), torch.softmax(ww.double(), -1) * keep / (1 - drop), p)
    want_gx, want_gw = torch.autograd.grad(want, (xx, ww), grad_out.double())
    for a, b in zip(got[:3], (want.detach(), want_gx, want_gw)):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", OPS)
def test_non_contiguous_inputs(name: str) -> None:
    op, ref = OPS[name]
    x, w, grad_out, p = _inputs(name, (4, 300, 512, 8, 7, 3), seed=6)
    x_nc = x.transpose(1, 2).contiguous().transpose(1, 2)
    assert not x_nc.is_contiguous()
    got = forward_backward(op, x_nc, w, p, grad_out)
    with _backend.use_backend("torch"):
        want = forward_backward(ref, x, w, p, grad_out)
    for a, b in zip(got[:3], want[:3]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("preset", ["tiny_lightconv", "tiny_dynamicconv", "tiny_lite_transformer",
                                    "dynamicconv_multi30k_de_en"])
def test_zoo_model_kernels_equal_reference(preset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole model on the GPU: logits and every parameter's gradient with the kernels equal
    the reference path's (fp32, dropout off)."""
    from convtrans.config import load_preset
    from convtrans.model import EncoderDecoder

    torch.manual_seed(0)
    config = load_preset(preset, src_vocab_size=500, tgt_vocab_size=500).replace(
        dropout=0.0, attention_dropout=0.0, weight_dropout=0.0, input_dropout=0.0, activation_dropout=0.0)
    model = EncoderDecoder(config).to(CUDA).train()
    g = torch.Generator(device=CUDA).manual_seed(1)
    src = torch.randint(4, 500, (8, 61), device=CUDA, generator=g)
    tgt = torch.randint(4, 500, (8, 47), device=CUDA, generator=g)
    src[3, 40:] = config.pad_id

    def logits_and_grads(choice: str):
        model.zero_grad(set_to_none=True)
        monkeypatch.setenv("CONVTRANS_KERNELS", choice)
        logits = model(src, tgt)
        logits.float().pow(2).mean().backward()
        return logits.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}

    kernel_logits, kernel_grads = logits_and_grads("triton")
    ref_logits, ref_grads = logits_and_grads("torch")
    torch.testing.assert_close(kernel_logits, ref_logits, rtol=1e-4, atol=1e-4)
    assert kernel_grads.keys() == ref_grads.keys()
    for name in ref_grads:
        torch.testing.assert_close(kernel_grads[name], ref_grads[name], rtol=1e-3, atol=1e-5, msg=name)
