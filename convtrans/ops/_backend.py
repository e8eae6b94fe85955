"""Which implementation an op call takes: the PyTorch reference or the Triton kernel.

Decided per call, so a model moved to CUDA after construction gets the kernels. The environment
variable CONVTRANS_KERNELS forces a choice: `torch` always takes the reference, `triton` always
takes Triton (on CPU tensors this needs TRITON_INTERPRET=1, which is how the tests run the
kernels without a GPU), `auto` (default) takes Triton for CUDA tensors when it is importable.
`use_backend()` overrides the variable inside a block (export forces the reference this way).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator

import torch

BACKENDS = ("auto", "torch", "triton")
HAS_TRITON = importlib.util.find_spec("triton") is not None
_override: list[str] = []


def backend() -> str:
    """The requested backend: the innermost `use_backend` block, else CONVTRANS_KERNELS, else auto."""
    choice = _override[-1] if _override else os.environ.get("CONVTRANS_KERNELS", "auto").lower()
    if choice not in BACKENDS:
        raise ValueError(f"CONVTRANS_KERNELS must be one of {', '.join(BACKENDS)}, got {choice!r}")
    return choice


@contextlib.contextmanager
def use_backend(choice: str) -> Iterator[None]:
    if choice not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {choice!r}")
    _override.append(choice)
    try:
        yield
    finally:
        _override.pop()


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def use_triton(x: torch.Tensor) -> bool:
    """Whether an op on `x` should run the Triton kernel."""
    choice = backend()
    if choice == "torch" or torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    if choice == "triton":
        if not HAS_TRITON:
            raise RuntimeError("CONVTRANS_KERNELS=triton but triton is not installed")
        if not x.is_cuda and not interpreting():
            raise RuntimeError("CONVTRANS_KERNELS=triton on CPU tensors needs TRITON_INTERPRET=1")
        return True
    return x.is_cuda and HAS_TRITON
