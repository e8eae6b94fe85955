"""Kernels for the hot token mixers. Each op has a PyTorch reference (`*_ref`, the CPU path and
the test oracle), a Triton path taken for CUDA tensors (`_backend` decides per call) and a
`*_step` twin that decodes one new step of the causal op."""

from convtrans.ops.dynamicconv import dynamicconv, dynamicconv_ref, dynamicconv_step
from convtrans.ops.lightconv import lightconv, lightconv_ref, lightconv_step

__all__ = ["dynamicconv", "dynamicconv_ref", "dynamicconv_step", "lightconv", "lightconv_ref", "lightconv_step"]
