"""Running exported models: an adapter that gives TorchScript or ONNX graphs the EncoderDecoder
interface generate.py uses (config, encode, decode_step with a reorderable DecoderCache), so
exported and eager models share one search implementation and give the same output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from convtrans import checkpoint as ckpt
from convtrans.config import ModelConfig
from convtrans.errors import UserError
from convtrans.inference.decode_state import flat_state, unflatten
from convtrans.nn.cache import DecoderCache


class ExportedModel:
    """encoder / init / step graphs of an exported directory behind the model interface."""

    training = False

    def __init__(self, checkpoint: ckpt.Checkpoint, device: torch.device) -> None:
        info = checkpoint.export
        assert info is not None
        self.config: ModelConfig = checkpoint.model_config
        self.format, self.device = info["format"], device
        paths = {name: checkpoint.graph_path(name) for name in info["graphs"]}  # inside the folder, checksummed
        if self.format == "torchscript":  # one module; its methods encode / init / step are the graphs
            module = torch.jit.load(str(paths["step"]), map_location=device)
            module = module.float() if info.get("fp16") else module
            self.graphs = {"encoder": module.encode, "init": module.init, "step": module.step}
        elif self.format == "onnx":
            try:
                import onnxruntime
            except ImportError:
                raise UserError("running an ONNX export needs onnxruntime: pip install 'convtrans[onnx]'") from None
            providers = ["CPUExecutionProvider"]
            if device.type == "cuda":
                providers.insert(0, "CUDAExecutionProvider")
            self.graphs = {name: onnxruntime.InferenceSession(str(path), providers=providers)
                           for name, path in paths.items()}
        else:
            raise UserError(f"{checkpoint.path}: unknown export format {self.format!r}")
        self.n_layers = self.config.decoder_layers

    def eval(self) -> ExportedModel:
        return self

    def _run(self, name: str, *inputs: torch.Tensor) -> list[torch.Tensor]:
        if self.format == "torchscript":
            outputs = self.graphs[name](*inputs)
            return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
        from convtrans.engine.runtime import feeds_of  # the same graph inputs as the engine's (by name)

        session = self.graphs[name]
        feed = {feed_name: inputs[i].cpu().numpy() for feed_name, i in feeds_of(session, name, len(inputs))}
        return [torch.from_numpy(np.asarray(o)).to(self.device) for o in session.run(None, feed)]

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        enc_out, enc_mask = self._run("encoder", src)
        return enc_out, enc_mask.bool()

    def init_cache(self, enc_out: torch.Tensor, enc_mask: torch.Tensor) -> DecoderCache:
        return unflatten(0, self._run("init", enc_out, enc_mask), self.n_layers)

    def decode_step(self, tokens: torch.Tensor, enc_out: torch.Tensor, enc_mask: torch.Tensor,
                    cache: DecoderCache | None = None) -> tuple[torch.Tensor, DecoderCache]:
        if cache is None:
            cache = self.init_cache(enc_out, enc_mask)
        flat = flat_state(cache)
        logits, *new_flat = self._run("step", tokens, torch.tensor(cache.step), enc_out, enc_mask, *flat)
        return logits, unflatten(cache.step + tokens.shape[1], new_flat, self.n_layers)


def load_for_inference(path: Path, device: torch.device, precision: str = "fp32") -> tuple[Any, ckpt.Checkpoint]:
    """An engine, an eager model, or the exported graphs of an exported directory.

    `precision` ("auto", "int8", "fp32"; int8.py) applies to a checkpoint on the CPU. "auto" and
    "int8" run the compiled engine (engine/: ONNX Runtime, int8 GEMMs; built once per machine and
    cached) where onnxruntime is installed and the model exports; otherwise the model gets
    fbgemm's int8 Linears and its decode steps run as one traced graph once enough of them have
    run (traced.py). "fp32" is the exact path: the model's own ops, traced (the same numbers). An
    export decodes as it was exported."""
    from convtrans import engine
    from convtrans.inference import int8, traced

    checkpoint = ckpt.read(path)
    if checkpoint.export:
        int8.precision_for(device, precision)  # still refuses an unknown precision
        return ExportedModel(checkpoint, device), checkpoint
    chosen = int8.precision_for(device, precision)
    if chosen == "int8" and engine.available():
        compiled = engine.engine_model(checkpoint, "int8", lambda: ckpt.load_model(path, device, checkpoint=checkpoint)[0])
        if compiled is not None:
            return compiled, checkpoint
    model, checkpoint = ckpt.load_model(path, device, checkpoint=checkpoint)
    if chosen == "int8" and int8.available():
        int8.quantize_linears(model)
    if device.type == "cpu" and traced.available():  # exact: the graph runs the same ops (traced.py)
        return traced.TracedSteps(model), checkpoint
    return model, checkpoint
