"""What the Triton conv kernel tests share, on CPU under the interpreter (tests/triton_interpreter)
and on a GPU (tests/gpu): inputs, one forward and backward, and the low-precision rule."""

from __future__ import annotations

import torch

from convtrans.ops import _backend, dynamicconv, dynamicconv_ref, lightconv, lightconv_ref

OPS = {"lightconv": (lightconv, lightconv_ref), "dynamicconv": (dynamicconv, dynamicconv_ref)}
FUNCTIONS = {"lightconv": "LightConvFunctionBackward", "dynamicconv": "DynamicConvFunctionBackward"}


def make_inputs(name: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32, seed: int = 0,
                device: torch.device | str = "cpu"):
    """x, raw kernel logits (spread, so the softmax is peaked), grad_out and padding_l for
    shape (B, T, C, H, K, padding_l)."""
    b, t, c, h, k, p = shape
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(b, t, c, generator=g, device=device).to(dtype)
    w_shape = (h, k) if name == "lightconv" else (b, t, h, k)
    w = (2 * torch.randn(w_shape, generator=g, device=device)).to(dtype)
    grad_out = torch.randn(b, t, c, generator=g, device=device).to(dtype)
    return x, w, grad_out, p


def forward_backward(op, x, w, p, grad_out, **kwargs):
    """(out, grad_x, grad_w, grad_fn name) of op on fresh leaf copies."""
    x, w = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    out = op(x, w, p, **kwargs)
    grad_x, grad_w = torch.autograd.grad(out, (x, w), grad_out)
    return out.detach(), grad_x, grad_w, type(out.grad_fn).__name__


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def check_low_precision_rule(name: str, shape: tuple[int, ...], dtype: torch.dtype,
                             device: torch.device | str = "cpu") -> None:
    """|kernel − ref32| <= 2·|torch_lowp − ref32| + atol for the output and both gradients, where
    ref32 is the reference on the same rounded inputs upcast to fp32 and torch_lowp the reference
    run in the low dtype (fp32 sums rounded once); outputs and grads keep the input dtypes."""
    op, ref = OPS[name]
    x, w, grad_out, p = make_inputs(name, shape, dtype=dtype, seed=2, device=device)
    got = forward_backward(op, x, w, p, grad_out)
    assert got[3] == FUNCTIONS[name]
    with _backend.use_backend("torch"):
        lowp = forward_backward(ref, x, w, p, grad_out)
        ref32 = forward_backward(ref, x.float(), w.float(), p, grad_out.float())
    atol = 1e-2 if dtype == torch.bfloat16 else 1e-3
    for kernel_value, lowp_value, ref_value in zip(got[:3], lowp[:3], ref32[:3]):
        assert kernel_value.dtype == dtype
        assert max_err(kernel_value, ref_value) <= 2 * max_err(lowp_value, ref_value) + atol
