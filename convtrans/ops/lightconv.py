"""Lightweight convolution (Wu et al. 2019) on B×T×C tensors.

    out[b, t, c] = Σ_k softmax(weight[h(c)])[k] · x[b, t + k − padding_l, c],   h(c) = c // (C/H)

Positions outside [0, T) read as zero, so taking the softmax over all K taps and letting the
zero padding drop the taps that fall off a short sequence is the same as slicing the kernel after
the softmax (never renormalizing): a step-by-step decoder gets exactly the full-sequence output.
DropConnect drops normalized taps with inverted scaling; its mask is per (head, tap), shared by
the batch (what a fused kernel can do for free; the fairseq TBC path masks per position).

Two implementations: `lightconv_ref` (grouped conv1d, the CPU path and the test oracle) and
Triton kernels on the native B×T×C layout. On the Triton path the softmax and DropConnect of the
(H, K) kernel stay in PyTorch: it is a few hundred numbers, computed once per call (autograd
takes their backward), where fusing them would make each of thousands of programs redo it; and
the mask then comes from torch's RNG, so both paths draw the same mask for the same seed.
`lightconv_step` is the decoder's twin of the causal op: the output of one new step from its
window of the last K inputs.

Memory traffic (elements; one element = x.element_size() bytes), each tensor touched once:
    forward:   read x, write out                      2·B·T·C
    backward:  read grad_out and x, write grad_x      3·B·T·C   (+ an fp32 partial sum of the
               weight gradient, (B·⌈T/CHUNK_T⌉)·K·C·4 bytes, reduced in PyTorch)
The (H, K) kernel is noise. `traffic_bytes` at the end of the file gives these numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convtrans.ops._backend import HAS_TRITON, kernel_takes, on_device, tl, triton

# ----------------------------------------------------------------------------------- reference


def _check(x: torch.Tensor, weight: torch.Tensor, padding_l: int) -> None:
    if x.dim() != 3 or weight.dim() != 2:
        raise ValueError(f"lightconv expects x (B, T, C) and weight (H, K), got {tuple(x.shape)} and {tuple(weight.shape)}")
    channels, (heads, taps) = x.shape[2], weight.shape
    if channels % heads:
        raise ValueError(f"lightconv: channels ({channels}) must be divisible by heads ({heads})")
    if not 0 <= padding_l < taps:
        raise ValueError(f"lightconv: padding_l must be in [0, K-1] = [0, {taps - 1}], got {padding_l}")


def normalized_kernel(weight: torch.Tensor, acc: torch.dtype, dropconnect: float, training: bool) -> torch.Tensor:
    """softmax over the K taps of each head, then DropConnect: (H, K) in `acc` (shared by both paths)."""
    w = torch.softmax(weight.to(acc), dim=-1)  # (H, K)
    if training and dropconnect > 0:
        w = F.dropout(w, dropconnect, training=True)
    return w


def lightconv_ref(
    x: torch.Tensor, weight: torch.Tensor, padding_l: int, dropconnect: float = 0.0, training: bool = False
) -> torch.Tensor:
    """Reference: softmax over taps, DropConnect, then a grouped conv1d in fp32.

    x: (B, T, C); weight: (H, K) raw (pre-softmax) kernel logits. Returns (B, T, C) in x's dtype.
    """
    _check(x, weight, padding_l)
    batch, time, channels = x.shape
    heads, taps = weight.shape
    acc = torch.promote_types(x.dtype, torch.float32)  # fp16/bf16 accumulate in fp32, fp64 stays
    w = normalized_kernel(weight, acc, dropconnect, training)  # (H, K)
    w = w.unsqueeze(1).expand(heads, channels // heads, taps).reshape(channels, 1, taps)  # (C, 1, K), contiguous head map
    xt = F.pad(x.to(acc).transpose(1, 2), (padding_l, taps - 1 - padding_l))  # (B, C, T + K - 1)
    out = F.conv1d(xt, w, groups=channels)  # (B, C, T)
    return out.transpose(1, 2).to(x.dtype)  # (B, T, C)


# ------------------------------------------------------------------------------ Triton kernels
# Tiles: BLOCK_T time steps × BLOCK_C channels, channels contiguous in memory (coalesced rows).
# Tests shrink these module constants to force multi-block grids on tiny shapes.
BLOCK_T = 32
MAX_BLOCK_C = 64
CHUNK_T = 256  # time steps one weight-gradient program sums over (fewer partial rows to reduce)
MAX_KERNEL_SIZE = 1024  # a sanity bound: the kernels loop over taps, nothing is sized by K
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
LAUNCH = {"num_warps": 4, "enable_fp_fusion": True}  # FMAs on, explicitly (Triton 3.9 warns if left unset)


if HAS_TRITON:  # the kernels exist where triton does; the reference needs none of this

    @triton.jit
    def _lightconv_fwd_kernel(
        x_ptr, w_ptr, out_ptr,  # x, out: (B, T, C) contiguous; w: (H, K) fp32, normalized
        T, C, R, padding_l,  # R = C // H channels per head
        K: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        """out[b, t, c] = Σ_k w[c // R, k] · x[b, t + k − padding_l, c], summed in fp32.

        Also the input gradient: grad_x = this kernel on grad_out with the taps reversed and
        padding K−1−padding_l (a correlation's adjoint is the flipped correlation).
        """
        pid_t, pid_c, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
        c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        base = pid_b.to(tl.int64) * T * C
        w_row = (c // R) * K
        acc = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
        for k in range(K):
            s = t + k - padding_l
            s_ok = (s >= 0) & (s < T)
            w = tl.load(w_ptr + w_row + k, mask=c_ok, other=0.0)
            xv = tl.load(x_ptr + base + s[:, None] * C + c[None, :], mask=s_ok[:, None] & c_ok[None, :], other=0.0)
            acc += xv.to(tl.float32) * w[None, :]
        out_mask = (t < T)[:, None] & c_ok[None, :]
        tl.store(out_ptr + base + t[:, None] * C + c[None, :], acc.to(out_ptr.dtype.element_ty), mask=out_mask)

    @triton.jit
    def _lightconv_bwd_weight_kernel(
        x_ptr, grad_out_ptr, partial_ptr,  # x, grad_out: (B, T, C); partial: (B·n_chunks, K, C) fp32
        T, C, padding_l, n_chunks,
        K: tl.constexpr, CHUNK_T: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        """partial[b·n_chunks + j, k, c] = Σ_{t in chunk j} grad_out[b, t, c] · x[b, t + k − padding_l, c].

        Taps are the outer loop so each tap's sum stays in one register tile and is reduced over
        time once per chunk (the chunk's x and grad_out rows are re-read per tap, from cache).
        """
        pid_j, pid_c, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        base = pid_b.to(tl.int64) * T * C
        row = (pid_b * n_chunks + pid_j).to(tl.int64) * K * C
        for k in range(K):
            acc = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
            for start in range(0, CHUNK_T, BLOCK_T):
                t = pid_j * CHUNK_T + start + tl.arange(0, BLOCK_T)
                s = t + k - padding_l
                t_ok = t < T
                s_ok = (s >= 0) & (s < T)
                g = tl.load(grad_out_ptr + base + t[:, None] * C + c[None, :], mask=t_ok[:, None] & c_ok[None, :], other=0.0)
                xv = tl.load(x_ptr + base + s[:, None] * C + c[None, :], mask=s_ok[:, None] & c_ok[None, :], other=0.0)
                acc += g.to(tl.float32) * xv.to(tl.float32)
            tl.store(partial_ptr + row + k * C + c, tl.sum(acc, axis=0), mask=c_ok)


# ----------------------------------------------------------------------------------- launchers


def _block_c(channels: int) -> int:
    return min(MAX_BLOCK_C, triton.next_power_of_2(channels))


def _launch_fwd(x: torch.Tensor, kernel: torch.Tensor, padding_l: int) -> torch.Tensor:
    """out (B, T, C) in x's dtype from contiguous x (B, T, C) and an fp32 (H, K) kernel."""
    batch, time, channels = x.shape
    heads, taps = kernel.shape
    out = torch.empty_like(x)
    block_c = _block_c(channels)
    grid = (triton.cdiv(time, BLOCK_T), triton.cdiv(channels, block_c), batch)
    with on_device(x):
        _lightconv_fwd_kernel[grid](
            x, kernel, out, time, channels, channels // heads, padding_l,
            K=taps, BLOCK_T=BLOCK_T, BLOCK_C=block_c, **LAUNCH,
        )
    return out


def _launch_bwd_weight(x: torch.Tensor, grad_out: torch.Tensor, heads: int, taps: int, padding_l: int) -> torch.Tensor:
    """Gradient of the normalized (H, K) kernel, fp32: kernel partial sums, then a tiny torch sum."""
    batch, time, channels = x.shape
    chunk = max(BLOCK_T, min(CHUNK_T, triton.next_power_of_2(time)) // BLOCK_T * BLOCK_T)  # few compiled variants
    n_chunks = triton.cdiv(time, chunk)
    partial = torch.empty(batch * n_chunks, taps, channels, device=x.device, dtype=torch.float32)
    block_c = _block_c(channels)
    grid = (n_chunks, triton.cdiv(channels, block_c), batch)
    with on_device(x):
        _lightconv_bwd_weight_kernel[grid](
            x, grad_out, partial, time, channels, padding_l, n_chunks,
            K=taps, CHUNK_T=chunk, BLOCK_T=BLOCK_T, BLOCK_C=block_c, **LAUNCH,
        )
    per_channel = partial.sum(0)  # (K, C)
    return per_channel.view(taps, heads, channels // heads).sum(-1).t().contiguous()  # (H, K)


# ---------------------------------------------------------------------------- autograd.Function


class LightConvFunction(torch.autograd.Function):
    """The Triton lightconv on an already normalized fp32 (H, K) kernel; gradients for x and kernel."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: torch.Tensor, padding_l: int) -> torch.Tensor:
        x, kernel = x.contiguous(), kernel.contiguous()
        ctx.save_for_backward(x, kernel)
        ctx.padding_l = padding_l
        return _launch_fwd(x, kernel, padding_l)

    @staticmethod
    @torch.autograd.function.once_differentiable  # no double backward: say so instead of a wrong answer
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x, kernel = ctx.saved_tensors
        heads, taps = kernel.shape
        grad_out = grad_out.contiguous()
        grad_x = grad_kernel = None
        if ctx.needs_input_grad[0]:
            flipped = kernel.flip(-1).contiguous()  # (H, K) taps reversed
            grad_x = _launch_fwd(grad_out, flipped, taps - 1 - ctx.padding_l).to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_kernel = _launch_bwd_weight(x, grad_out, heads, taps, ctx.padding_l)
        return grad_x, grad_kernel, None


# ------------------------------------------------------------------------------------ public op


def _unsupported(x: torch.Tensor, weight: torch.Tensor) -> str | None:
    """Why the kernels cannot take this call, or None."""
    batch, time, channels = x.shape
    if x.dtype not in KERNEL_DTYPES or weight.dtype not in KERNEL_DTYPES:
        return f"dtype {x.dtype}/{weight.dtype} (fp32, bf16 and fp16 only)"
    if weight.shape[1] > MAX_KERNEL_SIZE:
        return f"kernel size {weight.shape[1]} (at most {MAX_KERNEL_SIZE})"
    if time * channels >= 2**31 or batch > 65535:
        return f"shape {tuple(x.shape)} (T·C < 2^31 and B <= 65535)"
    if x.device != weight.device:
        return f"x on {x.device} with weight on {weight.device}"
    return None


def lightconv(
    x: torch.Tensor, weight: torch.Tensor, padding_l: int, dropconnect: float = 0.0, training: bool = False
) -> torch.Tensor:
    """Lightweight convolution; see the module docstring. Differentiable in x and weight.

    Runs the Triton kernels when `use_triton(x)` (CUDA, or forced), else the reference.
    """
    _check(x, weight, padding_l)
    if not kernel_takes("lightconv", x, lambda: _unsupported(x, weight)):
        return lightconv_ref(x, weight, padding_l, dropconnect, training)
    kernel = normalized_kernel(weight, torch.float32, dropconnect, training)  # (H, K)
    return LightConvFunction.apply(x, kernel, padding_l)



def lightconv_step(window: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """One new step of the causal lightconv (inference): equals `lightconv(x, weight, K − 1)[:, -1:]`
    when `window` (B, K, C) holds the last K inputs of x, zeros before its start. Returns (B, 1, C).

    Decoding calls this instead of the op: a step costs B·C·K, not a conv over the window. The taps
    are one broadcast multiply and one sum over K, not a loop over taps: a decode step at beam 5 is
    made of tiny ops, and a tap loop adds 2·K of them per layer (for K = 31 it cost 10x more than
    this); a batched matmul (B·H matrix-vector products) was slower still. DropConnect is off:
    decoding is inference. Same math as the op: softmax over all K taps, fp32 accumulation.
    """
    batch, taps, channels = window.shape
    heads = weight.shape[0]
    if weight.shape[1] != taps or channels % heads:
        raise ValueError(f"lightconv_step expects window (B, K, C) and weight (H, K) with H dividing C, "
                         f"got {tuple(window.shape)} and {tuple(weight.shape)}")
    acc = torch.promote_types(window.dtype, torch.float32)
    w = torch.softmax(weight.to(acc), dim=-1).t().unsqueeze(-1)  # (H, K) → (K, H, 1)
    taps_view = window.to(acc).view(batch, taps, heads, channels // heads)  # (B, K, H, R)
    return (taps_view * w).sum(1).reshape(batch, 1, channels).to(window.dtype)  # (B, H, R) → (B, 1, C)

# --------------------------------------------------------------------------------- bench helper


def traffic_bytes(batch: int, time: int, channels: int, heads: int, taps: int, element_size: int,
                  backward: bool = False) -> int:
    """Bytes a call must move at minimum (each B×T×C tensor touched once), for GB/s vs peak.

    Forward 2·B·T·C elements; forward + backward adds 3·B·T·C (the fp32 partial sums of the
    weight gradient and the (H, K) kernel are left out: the figure is what an ideal kernel moves).
    """
    del heads, taps  # the (H, K) kernel is noise next to B·T·C
    elements = batch * time * channels * (5 if backward else 2)
    return elements * element_size
