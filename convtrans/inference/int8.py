"""int8 weights for CPU inference: every nn.Linear of a loaded model becomes an Int8Linear.

    model = quantize_linears(model)         # in place; the model then runs as before, on int8 GEMMs
    precision_for(device, "auto")           # "int8" on a CPU with fbgemm, "fp32" elsewhere

Why: decoding is one matrix-vector product per Linear per generated token, so at small batches
a step streams every weight from memory; int8 weights move 4x fewer bytes, and at larger batches
fbgemm's int8 GEMM beats fp32 on AVX2 (benchmarks/decode_vs_ctranslate2.py measures both).

Which int8 GEMM: fbgemm's dynamic linear (`torch.ops.quantized.linear_dynamic` on weights packed
once at load). Measured on this project's 2-core AVX2 CPU (one thread, weights cycled so they
come from memory as in a decode step): the output projection (256 -> 8000) takes 0.35 ms vs 1.4
ms in fp32 for one row and 19 vs 26 ms for 160 rows; the FFN layers gain 1.1-1.6x. It is the
only int8 matrix product in torch 2.13's CPU build that beats fp32 (`torch._int_mm`, which
torchao's CPU int8 path calls, is 17x slower than fp32 there; fbgemm's fp16-weight linear and
oneDNN's fp32 linear were no faster than plain fp32 at 32-160 rows), and it is what
`torch.ao.quantization.quantize_dynamic` runs, without that deprecated module-swapping API.
Its quantized tensor type is deprecated too: `available()` checks that the ops still exist and
the caller falls back to fp32, so a torch without them decodes exactly, only slower.

Numbers: weights are quantized symmetrically per output channel (scale = max|w|/127); fbgemm
quantizes each call's activations per tensor to 7 bits (reduce_range, which keeps its AVX2 kernel
from saturating its 16-bit accumulators), computes in int32 and returns fp32. Because the
activation scale is shared by the rows of one call, a sentence's int8 result can depend on what
else is in its batch; the fp32 path has no such effect. tests/unit/test_int8.py holds the bounds.
"""

from __future__ import annotations

import warnings
from typing import TypeVar

import torch
from torch import nn

from convtrans.errors import UserError

PRECISIONS = ("auto", "int8", "fp32")
ModuleT = TypeVar("ModuleT", bound=nn.Module)


def available() -> bool:
    """Whether this torch build has fbgemm's int8 dynamic linear (x86 CPU builds do)."""
    ops = torch.ops.quantized
    return (hasattr(ops, "linear_prepack") and hasattr(ops, "linear_dynamic")
            and "fbgemm" in torch.backends.quantized.supported_engines)


def check_precisions(names: tuple[str, ...]) -> None:
    """Refuse, in one line naming the option, precisions other than PRECISIONS (or none at all)."""
    unknown = [name for name in names if name not in PRECISIONS]
    if unknown or not names:
        raise UserError(f"unknown --precision {','.join(unknown)!r}; choose from {', '.join(PRECISIONS)}")


def precision_for(device: torch.device, requested: str = "auto") -> str:
    """The precision a model on `device` decodes in: int8 weights only on a CPU that has them
    (a GPU computes its Linears faster in its own dtype); "fp32" is always exact. "auto" picks;
    an explicit "int8" that cannot be honoured is refused rather than silently run in fp32."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    from convtrans import engine

    possible = device.type == "cpu" and (available() or engine.available())
    if requested == "int8" and not possible:
        where = ("this torch build has no fbgemm int8 linear and onnxruntime is not installed" if device.type == "cpu"
                 else f"the model runs on {device.type}")
        raise UserError(f"--precision int8 needs CPU decoding with onnxruntime or fbgemm ({where}); "
                        "use --precision auto or fp32")
    return "int8" if requested != "fp32" and possible else "fp32"


class Int8Linear(nn.Module):
    """A Linear whose weight is stored as int8 (per-output-channel scales) and packed for fbgemm;
    inputs and outputs stay fp32. Inference only: it has no parameters to train."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float().cpu()
        scales = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()
        zero_points = torch.zeros(self.out_features, dtype=torch.long)
        bias = None if linear.bias is None else linear.bias.detach().float().cpu()
        with warnings.catch_warnings():  # torch warns that quantized tensors are deprecated; see available()
            warnings.simplefilter("ignore")
            quantized = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
            self._packed = torch.ops.quantized.linear_prepack(quantized, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the op's overload, not its packet: the packet inspects every call's arguments in Python
        # (for fake script objects), which cost more than the op itself on a one-row decode step
        return torch.ops.quantized.linear_dynamic.default(x, self._packed, True)  # True: reduce_range (see module doc)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_linears(model: ModuleT) -> ModuleT:
    """Replace every nn.Linear of `model` (in eval mode, on the CPU) by an Int8Linear, in place.
    Other weights (embeddings, LayerNorms, conv kernels) stay fp32; a Linear that shares its
    weight with an embedding gets its own int8 copy, the embedding keeps the fp32 one."""
    if model.training:
        raise ValueError("quantize_linears is for inference: call model.eval() first")
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, Int8Linear(child))
    return model
