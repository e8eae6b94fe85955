"""The Triton side of the conv ops, in the default suite's process (no interpreter here).

Triton decides whether its kernels are interpreted when they are decorated, from TRITON_INTERPRET
as it was when triton was imported; this process imported triton long ago without it. So the
kernel-vs-reference checks live in tests/triton_interpreter and run in a child pytest that sets
TRITON_INTERPRET=1 before anything is imported (`interpreter_child`, awaited by the last test,
`test_kernels_under_the_interpreter`, which fails with the child's output). What stays here
needs no kernel launch: the kernels compile for Ampere and Hopper GPUs, forcing Triton on
unsupported calls raises, auto mode falls back once with a warning, and the package works
without triton.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from convtrans.ops import _backend, dynamicconv, dynamicconv_ref, lightconv, lightconv_ref

LC = importlib.import_module("convtrans.ops.lightconv")  # the modules (the package exports the functions)
DC = importlib.import_module("convtrans.ops.dynamicconv")

ROOT = Path(__file__).resolve().parents[2]
INTERPRETER_TESTS = ROOT / "tests" / "triton_interpreter"
OPS = {"lightconv": (lightconv, lightconv_ref), "dynamicconv": (dynamicconv, dynamicconv_ref)}
needs_triton = pytest.mark.skipif(not _backend.HAS_TRITON, reason="triton is not installed")


@pytest.fixture(scope="module", autouse=True)
def interpreter_child(request: pytest.FixtureRequest) -> Iterator[subprocess.Popen[str] | None]:
    """The child pytest over tests/triton_interpreter with TRITON_INTERPRET=1 (set before it
    imports triton: Triton's own contract), started as this module starts so that it runs on a
    second core while the tests below compile kernels; the last test of the module waits for it.
    None when that test is not selected or cannot run here."""
    wanted = any(item.name == "test_kernels_under_the_interpreter" for item in request.session.items)
    if not wanted or not _backend.HAS_TRITON or _backend.INTERPRET:
        yield None
        return
    env = {**os.environ, "TRITON_INTERPRET": "1", "CONVTRANS_KERNELS": "triton"}
    command = [sys.executable, "-m", "pytest", str(INTERPRETER_TESTS), "-q", "-p", "no:cacheprovider"]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    yield child
    if child.poll() is None:  # the waiting test did not run (deselected by -k, or stopped by -x)
        child.kill()
        child.communicate()


@needs_triton
@pytest.mark.parametrize("arch", [80, 90], ids=["sm80", "sm90"])
def test_kernels_compile_for_gpus(arch: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every kernel compiles through Triton's GPU pipeline to a cubin for Ampere and Hopper
    (ptxas ships with triton; no GPU needed): the interpreter accepts things the compiler rejects."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile

    if _backend.INTERPRET:
        pytest.skip("triton was imported under TRITON_INTERPRET=1: its kernels are interpreted, not compiled")
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
        signature = {p.name: "constexpr" if p.is_constexpr else {**bf16, **types}.get(p.name, "i32") for p in kernel.params}
        # triton 3.3 renamed ASTSource's `constants` to `constexprs`
        named = "constexprs" if "constexprs" in inspect.signature(ASTSource).parameters else "constants"
        source = ASTSource(fn=kernel, signature=signature, **{named: constexprs})
        compiled = compile(source, target=GPUTarget("cuda", arch, 32), options=LC.LAUNCH)
        assert compiled.asm["cubin"][:4] == b"\x7fELF", kernel.__name__


@pytest.fixture
def forced_triton_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """CONVTRANS_KERNELS=triton and CPU tensors accepted as if interpreting: enough for calls the
    op refuses before any launch (these tests never reach a kernel)."""
    monkeypatch.setenv("CONVTRANS_KERNELS", "triton")
    monkeypatch.setattr(_backend, "HAS_TRITON", True)
    monkeypatch.setattr(_backend, "INTERPRET", True)


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
def test_forced_triton_refuses_unsupported_calls(call, message, forced_triton_on_cpu) -> None:
    with pytest.raises(RuntimeError, match=message):
        call()


@pytest.mark.parametrize("name", OPS)
def test_auto_falls_back_to_reference_with_one_warning(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """In auto mode an unsupported call (here fp64 on a tensor the kernel would otherwise take)
    runs the reference and warns once."""
    monkeypatch.setenv("CONVTRANS_KERNELS", "auto")
    monkeypatch.setattr(_backend, "_warned", set())
    monkeypatch.setattr(_backend, "use_triton", lambda x: True)  # as for a CUDA tensor
    op, ref = OPS[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 5, 4, generator=g, dtype=torch.float64)
    w = torch.randn((2, 3) if name == "lightconv" else (1, 5, 2, 3), generator=g, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="using the PyTorch reference"):
        out = op(x, w, 1)
    torch.testing.assert_close(out, ref(x, w, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        op(x, w, 1)  # second time: silent


def test_use_triton_needs_the_interpreter_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_backend, "HAS_TRITON", True)
    monkeypatch.setattr(_backend, "INTERPRET", False)
    monkeypatch.setenv("CONVTRANS_KERNELS", "triton")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1, set before triton is imported"):
        lightconv(torch.randn(1, 3, 2), torch.randn(1, 3), 1)
    monkeypatch.setenv("CONVTRANS_KERNELS", "auto")
    assert not _backend.use_triton(torch.randn(2))  # CPU tensors take the reference in auto mode
    with _backend.use_backend("torch"):
        monkeypatch.setenv("CONVTRANS_KERNELS", "triton")
        assert not _backend.use_triton(torch.randn(2))  # use_backend overrides the variable


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
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    imports = re.compile(r"^\s*(import|from)\s+(triton|convtrans\.ops\._backend)\b", re.MULTILINE)
    assert not [p.name for p in (ROOT / "convtrans" / "nn").glob("*.py") if imports.search(p.read_text())]


@needs_triton
def test_kernels_under_the_interpreter(interpreter_child: subprocess.Popen[str] | None) -> None:
    """Values and gradients of every kernel against the reference, on CPU: the child pytest
    started by `interpreter_child` (last in this module, so the tests above ran meanwhile)."""
    if interpreter_child is None:
        pytest.skip("this process interprets already: pytest collects tests/triton_interpreter itself")
    output, _ = interpreter_child.communicate(timeout=900)
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    # a bare "N passed": a module that skipped itself (triton not interpreting) must not pass silently
    clean = re.fullmatch(r"=* ?\d+ passed(, \d+ warnings?)? in .*", summary)
    assert interpreter_child.returncode == 0 and clean, output[-8000:]
