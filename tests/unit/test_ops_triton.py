"""The Triton conv kernels against the PyTorch reference, run on CPU by Triton's interpreter.

Each test sets TRITON_INTERPRET=1 and CONVTRANS_KERNELS=triton (the kernels choose compiled or
interpreted at launch, see ops/_backend.TritonKernel, so setting the variables per test works
even though other modules imported the package first). Values and all gradients are compared
with the reference: kernel sizes 1..31, centered, causal and odd paddings, T < K, T = 1, odd
channel counts, several heads, multi-block grids, fp32 and bf16/fp16 with the low-precision rule
|kernel − ref32| <= 2·|torch_lowp − ref32| + atol, DropConnect with the same mask, fallbacks.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

from convtrans.ops import _backend, dynamicconv, dynamicconv_ref, lightconv, lightconv_ref  # noqa: E402

LC = importlib.import_module("convtrans.ops.lightconv")  # the modules (the package exports the functions)
DC = importlib.import_module("convtrans.ops.dynamicconv")

# (B, T, C, H, K, padding_l)
SHAPES = [
    (2, 9, 8, 2, 3, 1),  # centered
    (2, 9, 8, 2, 3, 2),  # causal
    (2, 5, 4, 2, 1, 0),  # K = 1
    (2, 12, 6, 2, 4, 1),  # even K
    (2, 11, 6, 2, 4, 0),  # padding 0 (looks only ahead)
    (1, 5, 6, 3, 7, 3),  # T < K, three heads
    (2, 4, 4, 1, 7, 6),  # T < K, causal
    (3, 1, 5, 5, 5, 4),  # T = 1, odd channels, one channel per head
    (1, 13, 7, 7, 15, 3),  # odd padding
    (2, 17, 10, 5, 15, 7),
    (1, 6, 3, 1, 31, 30),  # K = 31 causal, T < K
    (1, 33, 9, 3, 31, 15),  # K = 31 centered, T > K
    (1, 9, 4, 2, 63, 31),  # K = 63: beyond the paper's sizes
]
OPS = {"lightconv": (lightconv, lightconv_ref), "dynamicconv": (dynamicconv, dynamicconv_ref)}
FUNCTIONS = {"lightconv": "LightConvFunctionBackward", "dynamicconv": "DynamicConvFunctionBackward"}


@pytest.fixture(autouse=True)
def triton_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("CONVTRANS_KERNELS", "triton")


def _inputs(name: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32, seed: int = 0):
    b, t, c, h, k, p = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, c, generator=g).to(dtype)
    w_shape = (h, k) if name == "lightconv" else (b, t, h, k)
    w = (2 * torch.randn(w_shape, generator=g)).to(dtype)  # spread logits: a peaked softmax
    grad_out = torch.randn(b, t, c, generator=g).to(dtype)
    return x, w, grad_out, p


def _forward_backward(op, x, w, p, grad_out, **kwargs):
    """(out, grad_x, grad_w, grad_fn name) of op on fresh leaf copies."""
    x, w = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    out = op(x, w, p, **kwargs)
    grad_x, grad_w = torch.autograd.grad(out, (x, w), grad_out)
    return out.detach(), grad_x, grad_w, type(out.grad_fn).__name__


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}T{}C{}H{}K{}P{}".format(*s))
def test_fp32_values_and_gradients_match_reference(name: str, shape) -> None:
    op, ref = OPS[name]
    x, w, grad_out, p = _inputs(name, shape)
    out, gx, gw, fn = _forward_backward(op, x, w, p, grad_out)
    assert fn == FUNCTIONS[name]  # the Triton autograd.Function ran, not the reference
    with _backend.use_backend("torch"):
        expected = _forward_backward(ref, x.double(), w.double(), p, grad_out.double())
    for got, want in zip((out, gx, gw), expected[:3]):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_kernels_ran_in_the_interpreter() -> None:
    x, w, grad_out, p = _inputs("dynamicconv", (1, 4, 4, 2, 3, 1))
    _forward_backward(dynamicconv, x, w, p, grad_out)
    _forward_backward(lightconv, x, w[0, 0], p, grad_out)
    kernels = [LC._lightconv_fwd_kernel, LC._lightconv_bwd_weight_kernel, DC._dynamicconv_fwd_kernel,
               DC._dynamicconv_bwd_input_kernel, DC._dynamicconv_bwd_weight_kernel]
    for kernel in kernels:
        assert isinstance(kernel.variants.get(True), InterpretedFunction), kernel.__name__
        assert False not in kernel.variants  # nothing was compiled for a GPU


@pytest.mark.parametrize("name", OPS)
def test_multi_block_grids(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny blocks: several time blocks, channel blocks (lightconv), channel blocks per head and
    the weight-gradient's loop over a head's channels (dynamicconv), several time chunks."""
    for module, attr, value in ((LC, "BLOCK_T", 8), (LC, "MAX_BLOCK_C", 8), (LC, "CHUNK_T", 16),
                                (DC, "BLOCK_T", 8), (DC, "MAX_BLOCK_R", 4)):
        monkeypatch.setattr(module, attr, value)
    op, ref = OPS[name]
    for shape in ((2, 37, 20, 2, 7, 3), (1, 19, 12, 1, 5, 4)):
        x, w, grad_out, p = _inputs(name, shape, seed=1)
        got = _forward_backward(op, x, w, p, grad_out)
        with _backend.use_backend("torch"):
            want = _forward_backward(ref, x, w, p, grad_out)
        for a, b in zip(got[:3], want[:3]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[7], (1, 40, 64, 4, 31, 15)], ids=["K3", "T1", "K31"])
def test_low_precision_rule(name: str, shape, dtype: torch.dtype) -> None:
    """|kernel − ref32| <= 2·|torch_lowp − ref32| + atol for the output and both gradients, where
    ref32 is the reference on the same rounded inputs upcast to fp32 and torch_lowp the reference
    run in the low dtype (fp32 sums rounded once); outputs and grads keep the input dtypes."""
    op, ref = OPS[name]
    x, w, grad_out, p = _inputs(name, shape, dtype=dtype, seed=2)
    got = _forward_backward(op, x, w, p, grad_out)
    assert got[3] == FUNCTIONS[name]
    with _backend.use_backend("torch"):
        lowp = _forward_backward(ref, x, w, p, grad_out)
        ref32 = _forward_backward(ref, x.float(), w.float(), p, grad_out.float())
    atol = 1e-2 if dtype == torch.bfloat16 else 1e-3
    for kernel_value, lowp_value, ref_value, want_dtype in zip(got, lowp, ref32, (dtype, dtype, dtype)):
        assert kernel_value.dtype == want_dtype
        assert _max_err(kernel_value, ref_value) <= 2 * _max_err(lowp_value, ref_value) + atol


def test_low_precision_weight_gradient_accumulates_in_fp32() -> None:
    """The dynamicconv weight gradient sums a head's channels in fp32: far closer to the fp32
    result than the same sum carried out in fp16 (what fairseq's reference kernel does)."""
    x, w, grad_out, p = _inputs("dynamicconv", (1, 8, 256, 1, 3, 1), dtype=torch.float16, seed=3)
    x = x + 4  # a large common offset makes low-precision partial sums lose digits
    _, _, gw, _ = _forward_backward(dynamicconv, x, w, p, grad_out)
    with _backend.use_backend("torch"):
        _, _, gw32, _ = _forward_backward(dynamicconv_ref, x.float(), w.float(), p, grad_out.float())
    xp = torch.nn.functional.pad(x, (0, 0, p, 3 - 1 - p))  # (B, T + K - 1, C) fp16
    products = torch.stack([grad_out * xp[:, k : k + 8] for k in range(3)], -1)  # (B, T, C, K) fp16
    g16 = torch.zeros(1, 8, 3, dtype=torch.float16)
    for c in range(256):
        g16 = g16 + products[:, :, c]  # each partial sum rounded to fp16
    sm = torch.softmax(w.float(), -1)[:, :, 0]  # (B, T, K)
    g16_logits = sm * (g16.float() - (sm * g16.float()).sum(-1, keepdim=True))
    assert _max_err(gw, gw32) < _max_err(g16_logits, gw32[:, :, 0]) / 10


def test_lightconv_dropconnect_same_mask_as_reference() -> None:
    """The (H, K) kernel is normalized and dropped in PyTorch on both paths: same seed, same mask."""
    x, w, grad_out, p = _inputs("lightconv", (2, 9, 8, 2, 5, 2), seed=4)
    torch.manual_seed(11)
    got = _forward_backward(lightconv, x, w, p, grad_out, dropconnect=0.4, training=True)
    torch.manual_seed(11)
    with _backend.use_backend("torch"):
        want = _forward_backward(lightconv_ref, x, w, p, grad_out, dropconnect=0.4, training=True)
    assert got[3] == FUNCTIONS["lightconv"]
    for a, b in zip(got[:3], want[:3]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got[0], _forward_backward(lightconv, x, w, p, grad_out)[0])  # it did drop


def test_dynamicconv_dropconnect_fused_mask_reconstructed() -> None:
    """The fused mask is tl.rand(seed, flat index) >= p with the seed drawn from torch's CPU
    generator; the reference with that exact mask gives the same output and gradients."""
    shape, drop = (2, 9, 8, 2, 5, 2), 0.3
    x, w, grad_out, p = _inputs("dynamicconv", shape, seed=5)
    torch.manual_seed(12)
    got = _forward_backward(dynamicconv, x, w, p, grad_out, dropconnect=drop, training=True)
    torch.manual_seed(12)
    keep = DC.dropconnect_keep_mask(tuple(w.shape), drop, DC.draw_seed(), "cpu")  # (B, T, H, K)
    assert 0.5 < keep.float().mean() < 0.9 and not keep.all()
    ww = w.clone().requires_grad_()
    xx = x.clone().requires_grad_()
    want = DC.dynamicconv_apply_ref(xx.double(), torch.softmax(ww.double(), -1) * keep / (1 - drop), p)
    want_gx, want_gw = torch.autograd.grad(want, (xx, ww), grad_out.double())
    for a, b in zip(got[:3], (want.detach(), want_gx, want_gw)):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-5, atol=1e-5)
    eval_out = dynamicconv(x, w, p, dropconnect=drop, training=False)
    with _backend.use_backend("torch"):
        torch.testing.assert_close(eval_out, dynamicconv_ref(x, w, p), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", OPS)
def test_non_contiguous_inputs(name: str) -> None:
    op, ref = OPS[name]
    x, w, grad_out, p = _inputs(name, (2, 9, 8, 2, 3, 1))
    x_nc = x.transpose(1, 2).contiguous().transpose(1, 2)  # (B, T, C) view with C-stride T
    assert not x_nc.is_contiguous()
    got = _forward_backward(op, x_nc, w, p, grad_out)
    with _backend.use_backend("torch"):
        want = _forward_backward(ref, x, w, p, grad_out)
    for a, b in zip(got[:3], want[:3]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: lightconv(torch.randn(1, 4, 4, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64), 1),
         "does not support dtype torch.float64"),
        (lambda: dynamicconv(torch.randn(1, 4, 4, dtype=torch.float64), torch.randn(1, 4, 2, 3), 1),
         "does not support dtype torch.float64"),
        (lambda: dynamicconv(torch.randn(1, 2, 2), torch.randn(1, 2, 1, 257), 1), "does not support kernel size 257"),
        (lambda: lightconv(torch.randn(1, 2, 2), torch.randn(1, 1025), 1), "does not support kernel size 1025"),
    ],
)
def test_forced_triton_refuses_unsupported_calls(call, message) -> None:
    with pytest.raises(RuntimeError, match=message):
        call()


@pytest.mark.parametrize("name", OPS)
def test_auto_falls_back_to_reference_with_one_warning(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """In auto mode an unsupported call (here fp64 on a tensor the kernel would otherwise take)
    runs the reference and warns once."""
    monkeypatch.setenv("CONVTRANS_KERNELS", "auto")
    monkeypatch.setattr(_backend, "_warned", set())
    module = LC if name == "lightconv" else DC
    monkeypatch.setattr(module, "use_triton", lambda x: True)  # as for a CUDA tensor
    op, ref = OPS[name]
    x, w, grad_out, p = _inputs(name, (1, 5, 4, 2, 3, 1), dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="using the PyTorch reference"):
        out = op(x, w, p)
    torch.testing.assert_close(out, ref(x, w, p))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        op(x, w, p)  # second time: silent


def test_use_triton_needs_the_interpreter_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        lightconv(torch.randn(1, 3, 2), torch.randn(1, 3), 1)
    monkeypatch.setenv("CONVTRANS_KERNELS", "auto")
    assert not _backend.use_triton(torch.randn(2))  # CPU tensors take the reference in auto mode


@pytest.mark.parametrize("preset", ["tiny_lightconv", "tiny_dynamicconv"])
def test_zoo_model_same_logits_and_gradients(preset: str) -> None:
    """A whole tiny model gives the same logits and parameter gradients on both backends."""
    from convtrans.config import load_preset
    from convtrans.model import EncoderDecoder

    torch.manual_seed(0)
    model = EncoderDecoder(load_preset(preset, src_vocab_size=40, tgt_vocab_size=40)).eval()
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


def test_kernels_compile_for_hopper(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every kernel compiles through Triton's GPU pipeline to an sm_90 cubin (ptxas ships with
    triton; no GPU needed): the interpreter accepts things the compiler rejects."""
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile
    from triton.runtime.jit import JITFunction

    if not isinstance(tl.zeros, JITFunction):
        pytest.skip("triton was imported under TRITON_INTERPRET=1; its library cannot be compiled")
    monkeypatch.delenv("TRITON_INTERPRET")
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # really compile, leave no cache behind
    bf16 = {"x_ptr": "*bf16", "out_ptr": "*bf16", "grad_out_ptr": "*bf16", "grad_x_ptr": "*bf16", "w_ptr": "*bf16",
            "grad_w_ptr": "*bf16", "lse_ptr": "*fp32", "partial_ptr": "*fp32", "keep_ptr": "*i8",
            "p_drop": "fp32", "drop_scale": "fp32"}
    cases = [
        (LC._lightconv_fwd_kernel, {"w_ptr": "*fp32"}, dict(K=31, BLOCK_T=32, BLOCK_C=64)),
        (LC._lightconv_bwd_weight_kernel, {}, dict(K=31, CHUNK_T=256, BLOCK_T=32, BLOCK_C=64)),
        (DC._dynamicconv_fwd_kernel, {}, dict(K=31, BLOCK_T=32, BLOCK_R=64, BLOCK_K=32, DROP=True, STORE_LSE=True)),
        (DC._dynamicconv_bwd_input_kernel, {}, dict(K=31, BLOCK_T=32, BLOCK_R=64, DROP=True)),
        (DC._dynamicconv_bwd_weight_kernel, {}, dict(K=31, BLOCK_T=32, BLOCK_R=64, BLOCK_K=32, DROP=True)),
        (DC._keep_mask_kernel, {}, dict(BLOCK=1024)),
    ]
    for kernel, types, constexprs in cases:
        fn = JITFunction(kernel.fn)
        signature = {p.name: "constexpr" if p.is_constexpr else {**bf16, **types}.get(p.name, "i32") for p in fn.params}
        source = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
        compiled = compile(source, target=GPUTarget("cuda", 90, 32), options=LC.LAUNCH)
        assert compiled.asm["cubin"][:4] == b"\x7fELF", kernel.__name__


def test_package_works_without_triton() -> None:
    """Where triton is not installed the package imports, the ops run the reference, forcing
    Triton says why, and a model trains; nn/ never imports triton."""
    script = """
import sys
sys.modules["triton"] = None  # `import triton` now raises ImportError
import pytest, torch
from convtrans.ops import _backend, lightconv, lightconv_ref
from convtrans.config import load_preset
from convtrans.model import EncoderDecoder
assert not _backend.HAS_TRITON
x, w = torch.randn(2, 5, 4), torch.randn(2, 3)
assert torch.equal(lightconv(x, w, 1), lightconv_ref(x, w, 1))
with _backend.use_backend("triton"), pytest.raises(RuntimeError, match="triton is not installed"):
    lightconv(x, w, 1)
model = EncoderDecoder(load_preset("tiny_dynamicconv", src_vocab_size=20, tgt_vocab_size=20))
model(torch.randint(4, 20, (2, 6)), torch.randint(4, 20, (2, 5))).sum().backward()
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "CONVTRANS_KERNELS")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                            cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    nn_dir = Path(__file__).resolve().parents[2] / "convtrans" / "nn"
    imports = re.compile(r"^\s*(import|from)\s+(triton|convtrans\.ops\._backend)\b", re.MULTILINE)
    assert not [p.name for p in nn_dir.glob("*.py") if imports.search(p.read_text())]
