"""Benchmarks: the conv kernels (Triton vs the PyTorch reference), and one layer vs attention.

    convtrans bench kernels                                   # default grid, bf16, on cuda if present
    convtrans bench kernels --shapes 32x512x1024 --kernels 31 --json-out bench.json
    convtrans bench kernels --layers                          # + DynamicConv mixer vs self-attention

For each op (lightconv, dynamicconv), shape B×T×C and kernel size K it times the forward (under
no_grad: what inference pays) and forward+backward (grads of the input and the kernel logits) of:
  - `triton`: the Triton kernels (CUDA only; "n/a" elsewhere: the interpreter is a test tool),
  - `reference`: the PyTorch reference the CPU path runs (`lightconv_ref` / `dynamicconv_ref`),
  - `conv1d` (lightconv only): cuDNN's grouped `F.conv1d` on a B×C×T input with the normalized
    (C, 1, K) kernel prepared outside the timing: the bare conv on its preferred layout, a
    lower bound for any implementation that must also transpose and normalize.
Timing: median of about `repeats` calls after `warmup` calls; on GPU by
`triton.testing.do_bench` (CUDA events, the L2 cache cleared before each call). Achieved GB/s use
each op's `traffic_bytes` (the bytes an ideal kernel moves: every tensor touched once), and the
fraction of the device's peak HBM bandwidth when the GPU is in PEAK_GBS (or `--peak-gbs`).
Padding is centered (K//2, the encoder's); the causal decoder padding moves the same bytes.
"""

from __future__ import annotations

import json
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from convtrans.errors import UserError
from convtrans.ops import _backend, dynamicconv, dynamicconv_ref, lightconv, lightconv_ref
from convtrans.ops.dynamicconv import MAX_KERNEL_SIZE as DYNAMICCONV_MAX_K
from convtrans.ops.dynamicconv import traffic_bytes as dynamicconv_traffic
from convtrans.ops.lightconv import traffic_bytes as lightconv_traffic

# Peak HBM bandwidth in GB/s by a substring of torch.cuda.get_device_name(); first match wins,
# so specific names come before general ones. Vendor datasheet figures.
PEAK_GBS: tuple[tuple[str, float], ...] = (
    ("H200", 4800.0),
    ("H100 NVL", 3900.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),  # SXM5 (HBM3)
    ("GH200", 4000.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),  # 40 GB parts
    ("L40S", 864.0),
    ("L4", 300.0),
    ("A10G", 600.0),
    ("A10", 600.0),
    ("V100", 900.0),
    ("T4", 320.0),
    ("RTX 4090", 1008.0),
    ("RTX 3090", 936.0),
)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
OPS = ("lightconv", "dynamicconv")


@dataclass(frozen=True)
class KernelBenchOptions:
    shapes: tuple[tuple[int, int, int], ...]  # (B, T, C)
    kernels: tuple[int, ...]
    ops: tuple[str, ...] = OPS
    dtype: str = "bf16"
    device: str = "cuda"
    heads: int | None = None  # None: C // 64 (64 channels per head, as the paper models)
    repeats: int = 20
    warmup: int = 5
    peak_gbs: float | None = None  # None: looked up in PEAK_GBS
    layers: bool = False


@dataclass
class BenchRow:
    """One (op, shape, K, implementation) measurement; None = not available here."""

    op: str
    impl: str
    batch: int
    time: int
    channels: int
    heads: int
    kernel_size: int
    dtype: str
    fwd_ms: float | None
    fwd_bwd_ms: float | None
    fwd_gbs: float | None = None
    fwd_bwd_gbs: float | None = None
    fwd_peak_frac: float | None = None
    fwd_bwd_peak_frac: float | None = None
    fwd_speedup: float | None = None  # reference time / this time
    fwd_bwd_speedup: float | None = None


@dataclass
class KernelBenchReport:
    device: str
    peak_gbs: float | None
    options: dict[str, Any]
    versions: dict[str, str | None]
    rows: list[BenchRow] = field(default_factory=list)
    layers: list[BenchRow] = field(default_factory=list)


# ------------------------------------------------------------------------------------- options


def parse_shapes(text: str) -> tuple[tuple[int, int, int], ...]:
    """'32x512x1024,8x2048x1024' → ((32, 512, 1024), (8, 2048, 1024))."""
    shapes: list[tuple[int, int, int]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)[xX×](\d+)[xX×](\d+)", part)
        if not match or 0 in (dims := tuple(int(g) for g in match.groups())):
            raise UserError(f"--shapes: expected BxTxC with positive sizes, e.g. 32x512x1024, got {part!r}")
        shapes.append((dims[0], dims[1], dims[2]))
    if not shapes:
        raise UserError("--shapes: give at least one BxTxC shape")
    return tuple(shapes)


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise UserError(f"{option}: expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"{option}: expected positive integers, got {text!r}")
    return values


def kernel_options(shapes: str, kernels: str, ops: str, dtype: str, device: str, heads: int | None,
                   repeats: int, warmup: int, peak_gbs: float | None, layers: bool) -> KernelBenchOptions:
    """Validate the CLI's strings into options (UserError names the bad option)."""
    chosen_ops = tuple(o.strip() for o in ops.split(",") if o.strip())
    if not chosen_ops or set(chosen_ops) - set(OPS):
        raise UserError(f"--ops: choose from {', '.join(OPS)}, got {ops!r}")
    if dtype not in DTYPES:
        raise UserError(f"--dtype: choose from {', '.join(DTYPES)}, got {dtype!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available (use --device cpu)")
    if repeats < 1 or warmup < 0 or (heads is not None and heads < 1):
        raise UserError("--repeats must be >= 1, --warmup >= 0 and --heads >= 1")
    parsed, sizes = parse_shapes(shapes), parse_ints(kernels, "--kernels")
    if "dynamicconv" in chosen_ops and max(sizes) > DYNAMICCONV_MAX_K:
        raise UserError(f"--kernels: the dynamicconv kernel takes K <= {DYNAMICCONV_MAX_K}, got {max(sizes)}")
    if heads is not None and any(c % heads for _, _, c in parsed):
        raise UserError(f"--heads {heads} does not divide every channel count in --shapes")
    return KernelBenchOptions(parsed, sizes, chosen_ops, dtype, device, heads,
                              repeats, warmup, peak_gbs, layers)


def peak_bandwidth(device: torch.device, override: float | None = None) -> float | None:
    """Peak HBM GB/s of `device`: the override, else PEAK_GBS by name, else None (CPU, unknown)."""
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((gbs for key, gbs in PEAK_GBS if key in name), None)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"


# -------------------------------------------------------------------------------------- timing


def time_ms(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> float:
    """Median milliseconds of `fn()` over about `repeats` calls after `warmup` calls.

    On a GPU with triton this is `triton.testing.do_bench`: CUDA events per call, the L2 cache
    cleared before each (time reads from HBM, not from the last call's L2). Elsewhere (CPU, or a
    GPU without triton) a wall-clock loop, synchronized on CUDA.
    """
    if device.type == "cuda" and _backend.HAS_TRITON:
        with torch.cuda.device(device):
            return _do_bench_ms(fn, repeats, warmup)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _synchronize(device)
        started = time.perf_counter()
        fn()
        _synchronize(device)
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def _do_bench_ms(fn: Callable[[], Any], repeats: int, warmup: int) -> float:
    """do_bench's median. It takes time budgets in ms, not call counts: one timed call (after an
    untimed one, which compiles) turns the counts into budgets of about that many calls."""
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    per_call = max(start.elapsed_time(end), 1e-3)
    return float(_backend.triton.testing.do_bench(fn, warmup=warmup * per_call, rep=repeats * per_call,
                                                  return_mode="median"))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fwd_and_fwd_bwd(call: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                     w: torch.Tensor, grad_out: torch.Tensor) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(forward under no_grad, forward + backward to x and w) closures for the timer."""
    xg, wg = x.detach().requires_grad_(), w.detach().requires_grad_()

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return call(x, w)

    def forward_backward() -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(call(xg, wg), (xg, wg), grad_out)

    return forward, forward_backward


def _with_backend(op: Callable[..., torch.Tensor], choice: str, padding_l: int) -> Callable[..., torch.Tensor]:
    def call(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        with _backend.use_backend(choice):
            return op(x, w, padding_l)

    return call


def triton_available(device: torch.device) -> bool:
    return device.type == "cuda" and _backend.HAS_TRITON


# ---------------------------------------------------------------------------------- op section


Case = tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], torch.Tensor, torch.Tensor]  # (call, x, w)


def _implementations(op: str, x: torch.Tensor, w: torch.Tensor, padding_l: int,
                     device: torch.device) -> dict[str, Case | None]:
    """impl name → (call, x, w) in that implementation's layout, or None when unavailable."""
    fast, ref = (lightconv, lightconv_ref) if op == "lightconv" else (dynamicconv, dynamicconv_ref)
    impls: dict[str, Case | None] = {
        "triton": (_with_backend(fast, "triton", padding_l), x, w) if triton_available(device) else None,
        "reference": (_with_backend(ref, "torch", padding_l), x, w),
    }
    if op == "lightconv":
        channels, heads = x.shape[2], w.shape[0]
        kernel = torch.softmax(w.float(), -1).repeat_interleave(channels // heads, 0).unsqueeze(1).to(x.dtype)  # (C, 1, K)
        x_bct = x.transpose(1, 2).contiguous()  # (B, C, T), cuDNN's layout

        def conv1d(xb: torch.Tensor, kb: torch.Tensor) -> torch.Tensor:
            return F.conv1d(xb, kb, padding=padding_l, groups=channels)

        impls["conv1d"] = (conv1d, x_bct, kernel) if padding_l * 2 == w.shape[1] - 1 else None  # symmetric only
    return impls


def _bench_op(op: str, shape: tuple[int, int, int], taps: int, opts: KernelBenchOptions,
              device: torch.device, peak: float | None) -> list[BenchRow]:
    batch, time_steps, channels = shape
    heads = opts.heads or max(1, channels // 64)
    dtype = DTYPES[opts.dtype]
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, time_steps, channels, generator=g).to(device, dtype)
    w_shape = (heads, taps) if op == "lightconv" else (batch, time_steps, heads, taps)
    w = torch.randn(w_shape, generator=g).to(device, dtype)
    grad_out = torch.randn(batch, time_steps, channels, generator=g).to(device, dtype)
    traffic = (lightconv_traffic if op == "lightconv" else dynamicconv_traffic)
    bytes_fwd = traffic(batch, time_steps, channels, heads, taps, x.element_size())
    bytes_both = traffic(batch, time_steps, channels, heads, taps, x.element_size(), backward=True)
    rows = []
    for impl, case in _implementations(op, x, w, taps // 2, device).items():
        row = BenchRow(op, impl, batch, time_steps, channels, heads, taps, opts.dtype, None, None)
        if case is not None:
            call, xi, wi = case
            go = grad_out.transpose(1, 2).contiguous() if impl == "conv1d" else grad_out
            forward, forward_backward = _fwd_and_fwd_bwd(call, xi, wi, go)
            row.fwd_ms = time_ms(forward, device, opts.repeats, opts.warmup)
            row.fwd_bwd_ms = time_ms(forward_backward, device, opts.repeats, opts.warmup)
            row.fwd_gbs, row.fwd_bwd_gbs = bytes_fwd / row.fwd_ms / 1e6, bytes_both / row.fwd_bwd_ms / 1e6
            if peak:
                row.fwd_peak_frac, row.fwd_bwd_peak_frac = row.fwd_gbs / peak, row.fwd_bwd_gbs / peak
        rows.append(row)
    _speedups(rows)
    return rows


def _speedups(rows: list[BenchRow], baseline: str = "reference") -> None:
    """Fill each row's speedup over the baseline row (its time / this time)."""
    base = next(r for r in rows if r.impl == baseline)
    for row in rows:
        if row.fwd_ms and base.fwd_ms:
            row.fwd_speedup = base.fwd_ms / row.fwd_ms
        if row.fwd_bwd_ms and base.fwd_bwd_ms:
            row.fwd_bwd_speedup = base.fwd_bwd_ms / row.fwd_bwd_ms


# ------------------------------------------------------------------------------- layer section


def _bench_layers(shape: tuple[int, int, int], kernels: tuple[int, ...], opts: KernelBenchOptions,
                  device: torch.device) -> list[BenchRow]:
    """One self-attention (q, k, v, out projections + SDPA) vs one DynamicConv mixer (Linear →
    GLU → dynamicconv → Linear, centered) per K, same width and heads: the part of an encoder
    layer that differs (residual, LayerNorm and FFN are the same in both)."""
    from convtrans.nn.attention import MultiheadAttention
    from convtrans.nn.conv import ConvMixer

    batch, time_steps, channels = shape
    heads = opts.heads or max(1, channels // 64)
    dtype = DTYPES[opts.dtype]
    torch.manual_seed(0)
    x = torch.randn(batch, time_steps, channels, device=device, dtype=dtype)
    cases: list[tuple[str, int, torch.nn.Module | None, str]] = [
        ("attention", 0, MultiheadAttention(width=channels, heads=heads).to(device, dtype), "auto")]
    for taps in kernels:
        conv = ConvMixer(d_model=channels, conv_dim=channels, heads=heads, kernel_size=taps, kind="dynamicconv",
                         glu=True, causal=False).to(device, dtype)
        cases.append(("dynamicconv+triton", taps, conv if triton_available(device) else None, "triton"))
        cases.append(("dynamicconv+reference", taps, conv, "torch"))
    rows = []
    for name, taps, module, choice in cases:
        row = BenchRow("layer", name, batch, time_steps, channels, heads, taps, opts.dtype, None, None)
        if module is not None:
            row.fwd_ms, row.fwd_bwd_ms = _time_module(module, choice, x, device, opts)
        rows.append(row)
    _speedups(rows, baseline="attention")
    return rows


def _time_module(module: torch.nn.Module, choice: str, x: torch.Tensor, device: torch.device,
                 opts: KernelBenchOptions) -> tuple[float, float]:
    params = [p for p in module.parameters()]
    xg = x.detach().requires_grad_()

    def forward() -> Any:
        with torch.no_grad(), _backend.use_backend(choice):
            return module(x)

    def forward_backward() -> Any:
        with _backend.use_backend(choice):
            out = module(xg)[0]  # both mixers return (output, cache)
            return torch.autograd.grad(out, [xg, *params], torch.ones_like(out))

    return (time_ms(forward, device, opts.repeats, opts.warmup),
            time_ms(forward_backward, device, opts.repeats, opts.warmup))


# ---------------------------------------------------------------------------------------- run


def run_kernel_bench(opts: KernelBenchOptions, progress: Callable[[str], None] | None = None) -> KernelBenchReport:
    """Time every (op, shape, K) and, with `opts.layers`, attention vs DynamicConv per shape."""
    device = torch.device(opts.device)
    peak = peak_bandwidth(device, opts.peak_gbs)
    triton_version = _backend.triton.__version__ if _backend.HAS_TRITON else None
    report = KernelBenchReport(device_name(device), peak, asdict(opts),
                               {"torch": torch.__version__, "triton": triton_version})
    for shape in opts.shapes:
        for taps in opts.kernels:
            for op in opts.ops:
                if progress:
                    progress(f"{op} {'x'.join(map(str, shape))} K={taps}")
                report.rows.extend(_bench_op(op, shape, taps, opts, device, peak))
        if opts.layers:
            if progress:
                progress(f"layers {'x'.join(map(str, shape))}")
            report.layers.extend(_bench_layers(shape, opts.kernels, opts, device))
    return report


def write_json(report: KernelBenchReport, path: Path) -> None:
    """The report as JSON (None for unavailable measurements), written atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(report), indent=2) + "\n")
    tmp.replace(path)


# -------------------------------------------------------------------------------------- tables
