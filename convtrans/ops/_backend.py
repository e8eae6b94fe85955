"""Which implementation an op call takes: the PyTorch reference or the Triton kernel.

Decided per call, so a model moved to CUDA after construction gets the kernels. The environment
variable CONVTRANS_KERNELS forces a choice: `torch` always takes the reference, `triton` always
takes Triton, `auto` (default) takes Triton for CUDA tensors when it is importable.
`use_backend()` overrides the variable inside a block (export forces the reference this way).

Triton on CPU tensors means Triton's interpreter, and Triton decides that when a kernel is
decorated: `triton.jit` returns an interpreted function only if TRITON_INTERPRET=1 was set
before triton was imported (its own contract). So CPU runs of the kernels need the variable set
before the process imports triton, e.g. `TRITON_INTERPRET=1 CONVTRANS_KERNELS=triton python -m
pytest tests/triton_interpreter`; `INTERPRET` records what the kernels were made as.

This is the only module that imports triton. Where it is not installed, `triton` and `tl` are
None and `HAS_TRITON` is False; the ops files define their kernels only when it is True, so they
import and run the reference everywhere.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # CPU-only installs (macOS, aarch64, a plain `pip install convtrans`): the reference only
    triton = None
    tl = None
    HAS_TRITON = False


def _interpret_requested() -> bool:
    """TRITON_INTERPRET as triton reads it (1/true/yes/on; its knobs since 3.3)."""
    knobs = getattr(triton, "knobs", None)
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


# Read once, now: the ops modules decorate their kernels right after importing this one, and
# triton.jit reads the same setting then. Setting the variable later changes nothing.
INTERPRET = HAS_TRITON and _interpret_requested()
BACKENDS = ("auto", "torch", "triton")
_override: list[str] = []
_warned: set[str] = set()


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


def use_triton(x: torch.Tensor) -> bool:
    """Whether an op on `x` should run the Triton kernel."""
    choice = backend()
    if choice == "torch" or torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    if choice == "triton":
        if not HAS_TRITON:
            raise RuntimeError("CONVTRANS_KERNELS=triton but triton is not installed")
        if not x.is_cuda and not INTERPRET:
            raise RuntimeError("CONVTRANS_KERNELS=triton on CPU tensors needs TRITON_INTERPRET=1, "
                               "set before triton is imported")
        return True
    return x.is_cuda and HAS_TRITON


def on_device(x: torch.Tensor) -> contextlib.AbstractContextManager[None]:
    """The context a launch runs in: Triton launches on the current CUDA device, so make it x's."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def refuse_or_fall_back(op: str, reason: str) -> None:
    """An op the kernel cannot take: raise when Triton is forced, else warn once (per op and
    reason) and let the caller run the reference. Never a silent wrong or zero result."""
    message = f"{op}: the Triton kernel does not support {reason}"
    if backend() == "triton":
        raise RuntimeError(f"{message} (CONVTRANS_KERNELS=triton); use CONVTRANS_KERNELS=auto to fall back")
    if message not in _warned:
        _warned.add(message)
        warnings.warn(f"{message}; using the PyTorch reference", RuntimeWarning, stacklevel=4)


def kernel_takes(op: str, x: torch.Tensor, refusal: Callable[[], str | None]) -> bool:
    """Whether an op call runs the Triton kernel: Triton is chosen for `x` (`use_triton`), `x` is
    not empty, and `refusal()` (why the kernel cannot take this call) is None. Otherwise the caller
    runs the reference; a refusal warns once, or raises when Triton was forced."""
    if not use_triton(x) or x.numel() == 0:
        return False
    reason = refusal()
    if reason is not None:
        refuse_or_fall_back(op, reason)
        return False
    return True
