"""Kernels for the hot token mixers. Each op has a PyTorch reference (`*_ref`, the CPU path and
the test oracle) and a Triton path taken for CUDA tensors; `_backend` decides per call."""

from convtrans.ops.dynamicconv import dynamicconv, dynamicconv_ref
from convtrans.ops.lightconv import lightconv, lightconv_ref

__all__ = ["dynamicconv", "dynamicconv_ref", "lightconv", "lightconv_ref"]
