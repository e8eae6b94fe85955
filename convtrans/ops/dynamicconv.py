"""Dynamic convolution (Wu et al. 2019) on B×T×C tensors: a kernel per time step and head.

    out[b, t, c] = Σ_k softmax(weight[b, t, h(c)])[k] · x[b, t + k − padding_l, c],   h(c) = c // (C/H)

The kernel logits `weight` (B, T, H, K) are predicted from the current step by the caller
(nn/conv.py); the op normalizes them (softmax over all K taps, then zero padding drops taps that
fall off the sequence, so incremental decoding equals the full forward) and applies DropConnect
per (b, t, h, k) with inverted scaling.

Two implementations: `dynamicconv_ref` (a sum of K shifted products, the CPU path and the test
oracle) and Triton kernels on the native B×T×C layout that fuse the softmax and DropConnect into
the conv: the normalized (B, T, H, K) kernel is never written to memory. The forward keeps one
fp32 log-sum-exp per (b, t, h) for the backward (as flash-attention does), so the backward
rebuilds the normalized taps from the logits in one read. DropConnect draws its keep mask inside
the kernels from `tl.rand(seed, flat index of (b, t, h, k))`; the backward regenerates the same
mask from the saved seed. The seed comes from torch's CPU generator, so `torch.manual_seed`
makes runs repeatable, but the mask differs from the one `F.dropout` draws on the reference path
(same distribution, different stream); `dropconnect_keep_mask` rebuilds it for tests.
`dynamicconv_step` is the decoder's twin of the causal op: the output of one new step from its
window of the last K inputs and that step's logits.

Memory traffic (elements of x's / weight's size; L = log-sum-exp, fp32), each touched once:
    forward:   read x and weight, write out and L    2·B·T·C + B·T·H·K  (+ 4·B·T·H bytes)
    backward:  grad_x kernel reads grad_out, weight, L, writes grad_x;
               grad_weight kernel reads grad_out, x, weight, L, writes grad_weight
               minimum (each once):                  3·B·T·C + 2·B·T·H·K
`traffic_bytes` at the end of the file gives these numbers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from convtrans.ops._backend import HAS_TRITON, kernel_takes, on_device, tl, triton

# ----------------------------------------------------------------------------------- reference


def _check(x: torch.Tensor, weight: torch.Tensor, padding_l: int) -> None:
    if x.dim() != 3 or weight.dim() != 4 or weight.shape[:2] != x.shape[:2]:
        raise ValueError(
            f"dynamicconv expects x (B, T, C) and weight (B, T, H, K), got {tuple(x.shape)} and {tuple(weight.shape)}"
        )
    channels, heads, taps = x.shape[2], weight.shape[2], weight.shape[3]
    if channels % heads:
        raise ValueError(f"dynamicconv: channels ({channels}) must be divisible by heads ({heads})")
    if not 0 <= padding_l < taps:
        raise ValueError(f"dynamicconv: padding_l must be in [0, K-1] = [0, {taps - 1}], got {padding_l}")


def dynamicconv_apply_ref(x: torch.Tensor, kernel: torch.Tensor, padding_l: int) -> torch.Tensor:
    """The conv with an already normalized kernel (B, T, H, K), in fp32 (fp64 stays fp64).

    Looping over taps keeps memory at O(B·T·C) (an unfold + einsum materializes B·T·C·K).
    Tests use it to build the reference for a given DropConnect mask.
    """
    batch, time, channels = x.shape
    heads, taps = kernel.shape[2], kernel.shape[3]
    acc = torch.promote_types(x.dtype, torch.float32)  # fp16/bf16 accumulate in fp32, fp64 stays
    w = kernel.to(acc).unsqueeze(3)  # (B, T, H, 1, K): broadcast over the channels of a head
    xp = F.pad(x.to(acc), (0, 0, padding_l, taps - 1 - padding_l))  # (B, T + K - 1, C)
    xp = xp.view(batch, time + taps - 1, heads, channels // heads)  # (B, T + K - 1, H, R)
    out = xp[:, 0:time] * w[..., 0]
    for k in range(1, taps):
        out = out + xp[:, k : k + time] * w[..., k]  # (B, T, H, R)
    return out.reshape(batch, time, channels).to(x.dtype)  # (B, T, C)


def dynamicconv_ref(
    x: torch.Tensor, weight: torch.Tensor, padding_l: int, dropconnect: float = 0.0, training: bool = False
) -> torch.Tensor:
    """Reference: softmax over taps, DropConnect, then a sum of K shifted products in fp32.

    x: (B, T, C); weight: (B, T, H, K) raw kernel logits. Returns (B, T, C) in x's dtype.
    """
    _check(x, weight, padding_l)
    acc = torch.promote_types(x.dtype, torch.float32)
    w = torch.softmax(weight.to(acc), dim=-1)  # (B, T, H, K)
    if training and dropconnect > 0:
        w = F.dropout(w, dropconnect, training=True)
    return dynamicconv_apply_ref(x, w, padding_l)


# ------------------------------------------------------------------------------ Triton kernels
# A program owns BLOCK_T steps × BLOCK_R channels of ONE head, so the softmax of its rows is
# computed once from a (BLOCK_T, BLOCK_K) logits tile and shared by the head's channels.
# Tests shrink these module constants to force multi-block grids on tiny shapes.
BLOCK_T = 32
MAX_BLOCK_R = 64
MAX_TILE = 4096  # BLOCK_T · BLOCK_K register budget of the logits tile; BLOCK_T shrinks for large K
MAX_KERNEL_SIZE = 256
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
LAUNCH = {"num_warps": 4, "enable_fp_fusion": True}  # FMAs on, explicitly (Triton 3.9 warns if left unset)


if HAS_TRITON:  # the kernels exist where triton does; the reference needs none of this

    @triton.jit
    def _dynamicconv_fwd_kernel(
        x_ptr, w_ptr, out_ptr, lse_ptr,  # x, out: (B, T, C); w: (B, T, H, K) logits; lse: (B, T, H) fp32
        T, C, H, R, n_rblocks, padding_l, seed, p_drop, drop_scale,
        K: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
        DROP: tl.constexpr, STORE_LSE: tl.constexpr,
    ):
        """out[b, t, c] = Σ_k softmax(w[b, t, h])[k] · keep/(1−p) · x[b, t + k − padding_l, c], fp32 sums."""
        pid_t, pid_hr, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        h, rb = pid_hr // n_rblocks, pid_hr % n_rblocks
        t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
        t_ok = t < T
        kk = tl.arange(0, BLOCK_K)
        row = (pid_b * T + t) * H + h  # flat (b, t, h) index; row·K + k indexes the logits
        logits = tl.load(w_ptr + row[:, None] * K + kk[None, :], mask=t_ok[:, None] & (kk < K)[None, :],
                         other=float("-inf")).to(tl.float32)  # (BLOCK_T, BLOCK_K)
        logits = tl.where(t_ok[:, None], logits, 0.0)  # rows past T: finite, never stored
        m = tl.max(logits, axis=1)
        lse = m + tl.log(tl.sum(tl.exp(logits - m[:, None]), axis=1))  # (BLOCK_T,)
        if STORE_LSE:
            if rb == 0:  # every channel block of the head computes the same values
                tl.store(lse_ptr + row, lse, mask=t_ok)
        r = rb * BLOCK_R + tl.arange(0, BLOCK_R)
        r_ok = r < R
        c = h * R + r
        base = pid_b.to(tl.int64) * T * C
        acc = tl.zeros((BLOCK_T, BLOCK_R), dtype=tl.float32)
        for k in range(K):
            # the k-th tap of each row, re-read from cache: cheaper than extracting a tile column
            w = tl.exp(tl.load(w_ptr + row * K + k, mask=t_ok, other=float("-inf")).to(tl.float32) - lse)
            if DROP:
                w = tl.where(tl.rand(seed, row * K + k) >= p_drop, w * drop_scale, 0.0)
            s = t + k - padding_l
            s_ok = (s >= 0) & (s < T)
            xv = tl.load(x_ptr + base + s[:, None] * C + c[None, :], mask=s_ok[:, None] & r_ok[None, :], other=0.0)
            acc += w[:, None] * xv.to(tl.float32)
        out_mask = t_ok[:, None] & r_ok[None, :]
        tl.store(out_ptr + base + t[:, None] * C + c[None, :], acc.to(out_ptr.dtype.element_ty), mask=out_mask)

    @triton.jit
    def _dynamicconv_bwd_input_kernel(
        grad_out_ptr, w_ptr, lse_ptr, grad_x_ptr,  # grad_out, grad_x: (B, T, C); w: logits; lse: (B, T, H)
        T, C, H, R, n_rblocks, padding_l, seed, p_drop, drop_scale,
        K: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr, DROP: tl.constexpr,
    ):
        """grad_x[b, s, c] = Σ_k w̃[b, s − k + padding_l, h, k] · grad_out[b, s − k + padding_l, c].

        Input position s feeds output t = s − k + padding_l through tap k; w̃ (normalized, dropped)
        is rebuilt from the logits and the saved log-sum-exp of row t.
        """
        pid_s, pid_hr, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        h, rb = pid_hr // n_rblocks, pid_hr % n_rblocks
        s = pid_s * BLOCK_T + tl.arange(0, BLOCK_T)
        r = rb * BLOCK_R + tl.arange(0, BLOCK_R)
        r_ok = r < R
        c = h * R + r
        base = pid_b.to(tl.int64) * T * C
        acc = tl.zeros((BLOCK_T, BLOCK_R), dtype=tl.float32)
        for k in range(K):
            t = s - k + padding_l
            t_ok = (t >= 0) & (t < T)
            row = (pid_b * T + t) * H + h
            logit = tl.load(w_ptr + row * K + k, mask=t_ok, other=float("-inf")).to(tl.float32)
            w = tl.exp(logit - tl.load(lse_ptr + row, mask=t_ok, other=0.0))
            if DROP:
                w = tl.where(tl.rand(seed, row * K + k) >= p_drop, w * drop_scale, 0.0)
            g = tl.load(grad_out_ptr + base + t[:, None] * C + c[None, :], mask=t_ok[:, None] & r_ok[None, :], other=0.0)
            acc += w[:, None] * g.to(tl.float32)
        out_mask = (s < T)[:, None] & r_ok[None, :]
        tl.store(grad_x_ptr + base + s[:, None] * C + c[None, :], acc.to(grad_x_ptr.dtype.element_ty), mask=out_mask)

    @triton.jit
    def _dynamicconv_bwd_weight_kernel(
        x_ptr, grad_out_ptr, w_ptr, lse_ptr, grad_w_ptr,  # grad_w: (B, T, H, K) like the logits
        T, C, H, R, padding_l, seed, p_drop, drop_scale,
        K: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
        DROP: tl.constexpr,
    ):
        """Gradient of the raw logits, through DropConnect and the softmax, for BLOCK_T rows of one head.

        g[t, k] = Σ_{c in head} grad_out[b, t, c] · x[b, t + k − padding_l, c]   (d loss / d w̃)
        g ← g · keep / (1 − p);   grad_w[t, k] = p[t, k] · (g[t, k] − Σ_j p[t, j] · g[t, j])
        with p the softmax. Each tap's g is reduced over the head's channels and dropped into its
        column of a (BLOCK_T, BLOCK_K) register tile, so the softmax backward runs in registers.
        """
        pid_t, h, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
        t_ok = t < T
        kk = tl.arange(0, BLOCK_K)
        k_ok = kk < K
        row = (pid_b * T + t) * H + h
        base = pid_b.to(tl.int64) * T * C
        g = tl.zeros((BLOCK_T, BLOCK_K), dtype=tl.float32)
        for k in range(K):
            s = t + k - padding_l
            s_ok = (s >= 0) & (s < T)
            acc = tl.zeros((BLOCK_T, BLOCK_R), dtype=tl.float32)
            for r0 in range(0, R, BLOCK_R):
                r = r0 + tl.arange(0, BLOCK_R)
                c = h * R + r
                r_ok = r < R
                go = tl.load(grad_out_ptr + base + t[:, None] * C + c[None, :],
                             mask=t_ok[:, None] & r_ok[None, :], other=0.0)
                xv = tl.load(x_ptr + base + s[:, None] * C + c[None, :], mask=s_ok[:, None] & r_ok[None, :], other=0.0)
                acc += go.to(tl.float32) * xv.to(tl.float32)
            g = tl.where(kk[None, :] == k, tl.sum(acc, axis=1)[:, None], g)
        tile_ok = t_ok[:, None] & k_ok[None, :]
        offsets = row[:, None] * K + kk[None, :]
        logits = tl.load(w_ptr + offsets, mask=tile_ok, other=float("-inf")).to(tl.float32)
        lse = tl.load(lse_ptr + row, mask=t_ok, other=0.0)
        p = tl.exp(logits - lse[:, None])  # (BLOCK_T, BLOCK_K) softmax, 0 outside the tile
        if DROP:
            g = tl.where(tl.rand(seed, offsets) >= p_drop, g * drop_scale, 0.0)
        grad = p * (g - tl.sum(p * g, axis=1)[:, None])
        tl.store(grad_w_ptr + offsets, grad.to(grad_w_ptr.dtype.element_ty), mask=tile_ok)

    @triton.jit
    def _keep_mask_kernel(keep_ptr, n, seed, p_drop, BLOCK: tl.constexpr):
        """keep[i] = tl.rand(seed, i) >= p: the DropConnect mask the conv kernels draw (for tests)."""
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(keep_ptr + i, (tl.rand(seed, i) >= p_drop).to(tl.int8), mask=i < n)


# ----------------------------------------------------------------------------------- launchers


def _blocks(channels: int, heads: int, taps: int) -> tuple[int, int, int]:
    """(BLOCK_T, BLOCK_R, BLOCK_K): a head's channels in one tile up to MAX_BLOCK_R, rows scaled
    so the logits tile stays within MAX_TILE registers."""
    block_k = triton.next_power_of_2(taps)
    block_t = max(1, min(BLOCK_T, MAX_TILE // block_k))
    return block_t, min(MAX_BLOCK_R, triton.next_power_of_2(channels // heads)), block_k


def _dropout_args(dropconnect: float, seed: int) -> tuple[int, float, float, bool]:
    """(seed, p, 1/(1−p), enabled) for the kernels' DropConnect."""
    if dropconnect <= 0:
        return 0, 0.0, 1.0, False
    return seed, float(dropconnect), 1.0 / (1.0 - dropconnect), True


def _launch_fwd(x: torch.Tensor, weight: torch.Tensor, padding_l: int, dropconnect: float, seed: int,
                store_lse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (B, T, C) in x's dtype, lse (B, T, H) fp32) from contiguous x and logits."""
    batch, time, channels = x.shape
    heads, taps = weight.shape[2], weight.shape[3]
    block_t, block_r, block_k = _blocks(channels, heads, taps)
    r = channels // heads
    n_rblocks = triton.cdiv(r, block_r)
    out = torch.empty_like(x)
    lse = torch.empty(batch, time, heads, device=x.device, dtype=torch.float32) if store_lse else out
    seed, p, scale, drop = _dropout_args(dropconnect, seed)
    grid = (triton.cdiv(time, block_t), heads * n_rblocks, batch)
    with on_device(x):
        _dynamicconv_fwd_kernel[grid](
            x, weight, out, lse, time, channels, heads, r, n_rblocks, padding_l, seed, p, scale,
            K=taps, BLOCK_T=block_t, BLOCK_R=block_r, BLOCK_K=block_k, DROP=drop, STORE_LSE=store_lse, **LAUNCH,
        )
    return out, lse


def _launch_bwd_input(grad_out: torch.Tensor, weight: torch.Tensor, lse: torch.Tensor, padding_l: int,
                      dropconnect: float, seed: int) -> torch.Tensor:
    batch, time, channels = grad_out.shape
    heads, taps = weight.shape[2], weight.shape[3]
    block_t, block_r, _ = _blocks(channels, heads, taps)
    r = channels // heads
    n_rblocks = triton.cdiv(r, block_r)
    grad_x = torch.empty_like(grad_out)
    seed, p, scale, drop = _dropout_args(dropconnect, seed)
    grid = (triton.cdiv(time, block_t), heads * n_rblocks, batch)
    with on_device(grad_out):
        _dynamicconv_bwd_input_kernel[grid](
            grad_out, weight, lse, grad_x, time, channels, heads, r, n_rblocks, padding_l, seed, p, scale,
            K=taps, BLOCK_T=block_t, BLOCK_R=block_r, DROP=drop, **LAUNCH,
        )
    return grad_x


def _launch_bwd_weight(x: torch.Tensor, grad_out: torch.Tensor, weight: torch.Tensor, lse: torch.Tensor,
                       padding_l: int, dropconnect: float, seed: int) -> torch.Tensor:
    batch, time, channels = x.shape
    heads, taps = weight.shape[2], weight.shape[3]
    block_t, block_r, block_k = _blocks(channels, heads, taps)
    grad_w = torch.empty_like(weight)
    seed, p, scale, drop = _dropout_args(dropconnect, seed)
    grid = (triton.cdiv(time, block_t), heads, batch)
    with on_device(x):
        _dynamicconv_bwd_weight_kernel[grid](
            x, grad_out, weight, lse, grad_w, time, channels, heads, channels // heads, padding_l, seed, p, scale,
            K=taps, BLOCK_T=block_t, BLOCK_R=block_r, BLOCK_K=block_k, DROP=drop, **LAUNCH,
        )
    return grad_w


def dropconnect_keep_mask(shape: tuple[int, ...], dropconnect: float, seed: int, device: torch.device | str) -> torch.Tensor:
    """The boolean keep mask (B, T, H, K) the kernels draw for `seed`, by the same `tl.rand` calls
    (tests build the reference with it)."""
    n = math.prod(shape)
    keep = torch.empty(n, dtype=torch.int8, device=device)
    with on_device(keep):
        _keep_mask_kernel[(triton.cdiv(n, 1024),)](keep, n, seed, float(dropconnect), BLOCK=1024, **LAUNCH)
    return keep.view(shape).bool()


# ---------------------------------------------------------------------------- autograd.Function


def draw_seed() -> int:
    """A DropConnect seed from torch's CPU generator (repeatable under torch.manual_seed; no GPU sync)."""
    return int(torch.randint(0, 2**31 - 1, (), dtype=torch.int64).item())


class DynamicConvFunction(torch.autograd.Function):
    """The Triton dynamicconv on raw logits, softmax and DropConnect fused; grads for x and logits."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, padding_l: int, dropconnect: float,
                seed: int) -> torch.Tensor:
        x, weight = x.contiguous(), weight.contiguous()
        needs_grad = any(ctx.needs_input_grad[:2])
        out, lse = _launch_fwd(x, weight, padding_l, dropconnect, seed, store_lse=needs_grad)
        if needs_grad:
            ctx.save_for_backward(x, weight, lse)
        ctx.padding_l, ctx.dropconnect, ctx.seed = padding_l, dropconnect, seed
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable  # no double backward: say so instead of a wrong answer
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, lse = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = _launch_bwd_input(grad_out, weight, lse, ctx.padding_l, ctx.dropconnect, ctx.seed).to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_w = _launch_bwd_weight(x, grad_out, weight, lse, ctx.padding_l, ctx.dropconnect, ctx.seed)
        return grad_x, grad_w, None, None, None


# ------------------------------------------------------------------------------------ public op


def _unsupported(x: torch.Tensor, weight: torch.Tensor) -> str | None:
    """Why the kernels cannot take this call, or None."""
    batch, time, channels = x.shape
    if x.dtype not in KERNEL_DTYPES or weight.dtype not in KERNEL_DTYPES:
        return f"dtype {x.dtype}/{weight.dtype} (fp32, bf16 and fp16 only)"
    if weight.shape[3] > MAX_KERNEL_SIZE:
        return f"kernel size {weight.shape[3]} (at most {MAX_KERNEL_SIZE})"
    if time * channels >= 2**31 or weight.numel() >= 2**31 or batch > 65535:
        return f"shape {tuple(x.shape)} (T·C and B·T·H·K < 2^31, B <= 65535)"
    if x.device != weight.device:
        return f"x on {x.device} with weight on {weight.device}"
    return None


def dynamicconv(
    x: torch.Tensor, weight: torch.Tensor, padding_l: int, dropconnect: float = 0.0, training: bool = False
) -> torch.Tensor:
    """Dynamic convolution; see the module docstring. Differentiable in x and weight.

    Runs the Triton kernels when `use_triton(x)` (CUDA, or forced), else the reference.
    """
    _check(x, weight, padding_l)
    if not kernel_takes("dynamicconv", x, lambda: _unsupported(x, weight)):
        return dynamicconv_ref(x, weight, padding_l, dropconnect, training)
    p = dropconnect if training else 0.0
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dynamicconv: dropconnect must be in [0, 1), got {dropconnect}")
    return DynamicConvFunction.apply(x, weight, padding_l, p, draw_seed() if p > 0 else 0)



def dynamicconv_step(window: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """One new step of the causal dynamicconv (inference): equals `dynamicconv(x, w, K − 1)[:, -1:]`
    when `window` (B, K, C) holds the last K inputs of x (zeros before its start) and `weight`
    (B, 1, H, K) the logits of the new step, w[:, -1:]. Returns (B, 1, C).

    Decoding calls this instead of the op, so only the new step's kernel is predicted and a step
    costs B·C·K. One broadcast multiply and one sum over K, not a loop over taps (see
    lightconv_step: a decode step is made of tiny ops). DropConnect is off: decoding is inference.
    """
    batch, taps, channels = window.shape
    heads = weight.shape[-2]
    if weight.shape != (batch, 1, heads, taps) or channels % heads:
        raise ValueError(f"dynamicconv_step expects window (B, K, C) and weight (B, 1, H, K) with H dividing C, "
                         f"got {tuple(window.shape)} and {tuple(weight.shape)}")
    acc = torch.promote_types(window.dtype, torch.float32)
    w = torch.softmax(weight.to(acc), dim=-1).view(batch, heads, taps).transpose(1, 2).unsqueeze(-1)  # (B, K, H, 1)
    taps_view = window.to(acc).view(batch, taps, heads, channels // heads)  # (B, K, H, R)
    return (taps_view * w).sum(1).reshape(batch, 1, channels).to(window.dtype)  # (B, H, R) → (B, 1, C)

# --------------------------------------------------------------------------------- bench helper


def traffic_bytes(batch: int, time: int, channels: int, heads: int, taps: int, element_size: int,
                  backward: bool = False) -> int:
    """Bytes a call must move at minimum (each tensor touched once), for GB/s vs peak.

    Forward: 2·B·T·C + B·T·H·K elements plus the fp32 log-sum-exp (4·B·T·H bytes); forward +
    backward adds 3·B·T·C + 2·B·T·H·K elements and one more read of the log-sum-exp.
    """
    btc, bthk, lse = batch * time * channels, batch * time * heads * taps, 4 * batch * time * heads
    if backward:
        return (5 * btc + 3 * bthk) * element_size + 2 * lse
    return (2 * btc + bthk) * element_size + lse
