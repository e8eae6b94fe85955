"""Building an engine: a loaded model's encoder, first state and decode step as ONNX graphs, and for
int8 their Linear layers quantized for ONNX Runtime.

    build(model, folder, "int8")     # writes encoder.onnx, init.onnx, step.onnx (about 2.5 s for the shipped models)

The graphs are the export's (export.py; traced through the PyTorch reference ops) with one change
to the step: it returns only the logits and the new self-mixer states. The cross-attention keys and
values never change during a decode, so returning them would make ONNX Runtime copy them into new
outputs at every step (at beam 5 and batch 32 that is 50 MB per step); the runtime keeps them from
the `init` graph instead.

int8 (onnxruntime.quantization.quantize_dynamic): weights int8 per output channel, activations
uint8 with one scale per call computed on the fly (DynamicQuantizeMatMul, MLAS's U8S8 kernels,
VNNI where the CPU has it); reduce_range keeps weights to 7 bits so AVX2 machines without VNNI
(whose U8S8 instruction saturates 16-bit sums) compute the same numbers as VNNI ones.
tests/unit/test_engine.py bounds the difference to the exact model.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from convtrans.inference.export import _examples, _export_onnx, _Step, step_inputs
from convtrans.model import EncoderDecoder
from convtrans.nn.attention import plain_attention

GRAPHS = ("encoder", "init", "step")
PRECISIONS = ("int8", "fp32")


class SelfStateStep(_Step):
    """The export's step, returning (logits, *new self states) without the unchanged cross states."""

    def forward(self, tokens: torch.Tensor, step: torch.Tensor, enc_out: torch.Tensor, enc_mask: torch.Tensor,
                *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = super().forward(tokens, step, enc_out, enc_mask, *state)
        return outputs[: len(outputs) - 2 * len(self.cross_structure)]


def build(model: EncoderDecoder, folder: Path, precision: str) -> None:
    """Write the three graphs of `model` (eval mode, fp32 weights) into `folder` (which exists)."""
    from convtrans.ops._backend import use_backend

    if precision not in PRECISIONS:
        raise ValueError(f"engine precision must be one of {PRECISIONS}, got {precision!r}")
    folder = Path(folder)
    with use_backend("torch"), plain_attention(), torch.no_grad():
        examples = _examples(model)
        _export_onnx(model, folder, examples, ("encoder", "init"))  # as the export writes them
        _export_step(model, folder / "step.onnx", examples)
    for name in GRAPHS:
        if precision == "int8":
            _quantize(folder / f"{name}.onnx")
        optimize(folder / f"{name}.onnx")


def optimize(path: Path) -> None:
    """Replace `path` by ONNX Runtime's optimized form of it (fused LayerNorms, GELU, quantized
    MatMuls, constant-folded shapes), so that loading needs no optimization pass. Level "extended"
    is the highest whose output does not depend on the CPU (the next adds layout changes for this
    machine's vector width), so an engine folder stays valid on another machine."""
    import onnxruntime

    optimized = path.with_suffix(".optimized.onnx")
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(optimized)
    options.log_severity_level = 3
    onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    optimized.replace(path)


def _export_step(model: EncoderDecoder, path: Path, examples: dict[str, Any]) -> None:
    import onnx

    n_state = len(examples["state"])
    n_self = n_state - 2 * len(examples["structure"][1])
    inputs = ["tokens", "step", "enc_out", "enc_mask", *[f"state_{i}" for i in range(n_state)]]
    outputs = ["logits", *[f"new_state_{i}" for i in range(n_self)]]
    axes: dict[str, dict[int, str]] = {"tokens": {0: "batch"}, "enc_out": {0: "batch", 1: "src_len"},
                                       "enc_mask": {0: "batch", 1: "src_len"}, "logits": {0: "batch"}}
    for i, tensor in enumerate(examples["state"]):
        grows = tensor.dim() == 4 and i < n_self  # attention/synthesizer keys and values: (B, H, steps, Dh)
        axes[f"state_{i}"] = {0: "batch", **({2: "steps"} if grows else {}), **({2: "src_len"} if tensor.dim() == 4
                                                                              and i >= n_self else {})}
        if i < n_self:
            axes[f"new_state_{i}"] = {0: "batch", **({2: "steps1"} if grows else {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(SelfStateStep(model, *examples["structure"]).eval(), step_inputs(examples), str(path),
                          input_names=inputs, output_names=outputs, dynamic_axes=axes, opset_version=17, dynamo=False)
    onnx.checker.check_model(str(path))


def _quantize(path: Path) -> None:
    """Replace `path` by its dynamic int8 quantization (MatMul and Gemm nodes)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path.with_suffix(".int8.onnx")
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice to preprocess first goes to the root logger
    quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
    quantized.replace(path)
