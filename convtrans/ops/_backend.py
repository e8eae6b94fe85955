"""Which implementation an op call takes: the PyTorch reference or the Triton kernel.

Decided per call, so a model moved to CUDA after construction gets the kernels. The environment
variable CONVTRANS_KERNELS forces a choice: `torch` always takes the reference, `triton` always
takes Triton (on CPU tensors this needs TRITON_INTERPRET=1, which is how the tests run the
kernels without a GPU), `auto` (default) takes Triton for CUDA tensors when it is importable.
`use_backend()` overrides the variable inside a block (export forces the reference this way).

This is the only module that imports triton. Where it is not installed, `triton` and `tl` are
None, `HAS_TRITON` is False and the ops files still import (their kernels are plain functions
until first launch, see `TritonKernel`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # CPU-only installs (macOS, aarch64): the reference path only
    triton = None  # type: ignore[assignment]
    tl = None  # type: ignore[assignment]
    HAS_TRITON = False

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


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1), read as triton
    reads it (1/true/yes/on), at call time."""
    knobs = getattr(triton, "knobs", None)  # triton >= 3.3
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


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


def refuse_or_fall_back(op: str, reason: str) -> None:
    """An op the kernel cannot take: raise when Triton is forced, else warn once (per op and
    reason) and let the caller run the reference. Never a silent wrong or zero result."""
    message = f"{op}: the Triton kernel does not support {reason}"
    if backend() == "triton":
        raise RuntimeError(f"{message} (CONVTRANS_KERNELS=triton); use CONVTRANS_KERNELS=auto to fall back")
    if message not in _warned:
        _warned.add(message)
        warnings.warn(f"{message}; using the PyTorch reference", RuntimeWarning, stacklevel=3)


class TritonKernel:
    """A Triton kernel that picks compiled-for-GPU or interpreted at launch, not at import.

    `triton.jit` decides at decoration time whether to return an interpreted function, so a
    module imported before TRITON_INTERPRET=1 is set would hold GPU-only kernels. Wrapping the
    plain function and deciding per launch lets one process run the same kernel either way (the
    tests set the variable after other tests imported the package). Kernels must not call
    jitted helpers of their own (the interpreter variant could not call a GPU-compiled one), so
    they are flat; triton.language's own jitted helpers are handled by `_interpretable_language`.
    The reverse (triton imported under TRITON_INTERPRET=1, later launched on a GPU) is not
    supported. Usage mirrors triton.jit: `kernel[grid](*args, BLOCK=..., num_warps=...)`.
    """

    def __init__(self, fn: Callable[..., None]) -> None:
        self.fn = fn
        self.variants: dict[bool, Any] = {}
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__

    def variant(self) -> Any:
        """The launchable object for the current mode (built once per mode)."""
        mode = interpreting()
        if mode not in self.variants:
            if not HAS_TRITON:
                raise RuntimeError(f"{self.__name__}: triton is not installed")
            if mode:
                from triton.runtime.interpreter import InterpretedFunction

                self.variants[mode] = InterpretedFunction(self.fn)
            else:
                self.variants[mode] = triton.jit(self.fn)
        return self.variants[mode]

    def __getitem__(self, grid: Any) -> Callable[..., Any]:
        launcher = self.variant()[grid]
        interpreted = interpreting()

        def launch(*args: Any, **kwargs: Any) -> Any:
            if interpreted:
                with _interpretable_language():
                    return launcher(*args, **kwargs)
            tensor = next(a for a in args if isinstance(a, torch.Tensor))
            with torch.cuda.device(tensor.device):  # Triton launches on the current device
                return launcher(*args, **kwargs)

        return launch


_language_twins: list[tuple[Any, str, Any, Any]] = []


@contextlib.contextmanager
def _interpretable_language() -> Iterator[None]:
    """Run triton.language's own jitted helpers (tl.zeros, tl.sum, tl.rand, ...) interpreted.

    They are `triton.jit` objects made when triton was imported; if that happened without
    TRITON_INTERPRET=1 they refuse to run inside the interpreter. For the duration of a launch,
    swap in interpreted twins (found once, in every triton.language module). The interpreter
    patches triton.language while a helper runs and does not undo all of it, which would break
    a later GPU compile in the same process, so the attributes of every triton.language module
    and class are snapshotted before the launch and put back after.
    """
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    modules = [m for name, m in list(sys.modules.items()) if name == "triton.language" or name.startswith("triton.language.")]
    if not _language_twins:
        for module in modules:
            for attr, value in list(vars(module).items()):
                if isinstance(value, JITFunction):
                    _language_twins.append((module, attr, value, InterpretedFunction(value.fn)))
    classes = {id(v): v for m in modules for v in vars(m).values()
               if isinstance(v, type) and v.__module__.startswith("triton.language")}
    saved = [(obj, dict(vars(obj))) for obj in [*modules, *classes.values()]]
    for module, attr, _, twin in _language_twins:
        setattr(module, attr, twin)
    try:
        yield
    finally:
        for obj, attrs in saved:  # names the interpreter added (its own globals) stay: it caches code using them
            current = vars(obj)
            for name, value in attrs.items():
                if current.get(name) is not value:
                    setattr(obj, name, value)


def triton_kernel(fn: Callable[..., None]) -> TritonKernel:
    """Decorator, the lazy twin of `@triton.jit` (see TritonKernel)."""
    return TritonKernel(fn)


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= n (tl.arange needs power-of-two extents)."""
    return 1 << max(0, (n - 1).bit_length())
