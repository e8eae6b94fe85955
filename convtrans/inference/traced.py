"""The decode step as one TorchScript graph, traced from the loaded model (no export step).

    model = TracedSteps(model)            # generate.py runs it like the model itself
    hyps = generate([model], src, config)

Why: at small batches a decode step is a few hundred small ops, and in eager mode Python's module
and op dispatch costs more than the arithmetic (DynamicConv on int8, one sentence, one thread:
6.4 ms per step eager, 2.8 ms as a graph; docs/decode_speed.md). The graph is the exported
`step` graph (export.py: tokens, position and the flat decode state in, logits and the new state
out; decode_state.py), so the same search code runs it and beams are reordered by rows as before.

When: tracing costs about 0.5 s, which one short input never pays back, so the first
`eager_steps` decode steps run the model itself and the graph is traced once that many have run.
The graph runs the same ops on the same weights; tests/unit/test_traced.py checks that it gives
the same logits as the eager step, so when the switch happens does not change any output.

Only the encoder-decoder's own step is traced: the encoder runs once per batch, eagerly. The
Triton kernels are never inside a graph (the reference ops are traced, as for an export).
TorchScript is in maintenance in torch 2.13; `available()` lets the caller fall back to eager,
and a model the tracer fails on keeps decoding eagerly (the graph is only a speed-up).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from convtrans.inference.decode_state import flat_state, unflatten
from convtrans.model import EncoderDecoder
from convtrans.nn.cache import DecoderCache

EAGER_STEPS = 200  # decode steps (of any batch) run eagerly before the step is traced


def available() -> bool:
    return hasattr(torch.jit, "trace")


class TracedSteps:
    """An EncoderDecoder whose decode steps run as one traced graph after the first few."""

    training = False

    def __init__(self, model: EncoderDecoder, eager_steps: int = EAGER_STEPS) -> None:
        if model.training:
            raise ValueError("TracedSteps is for inference: call model.eval() first")
        self.model, self.config = model, model.config
        self.n_layers = model.config.decoder_layers
        self.eager_steps = eager_steps
        self.steps_run = 0
        self.graph: Any = None
        self.untraceable = False  # tracing failed once: stay eager (same outputs, only slower)

    def eval(self) -> TracedSteps:
        return self

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode(src)

    def init_cache(self, enc_out: torch.Tensor, enc_mask: torch.Tensor) -> DecoderCache:
        return self.model.init_cache(enc_out, enc_mask)

    def decode_step(self, tokens: torch.Tensor, enc_out: torch.Tensor, enc_mask: torch.Tensor,
                    cache: DecoderCache | None = None) -> tuple[torch.Tensor, DecoderCache]:
        self.steps_run += 1
        if self.graph is None and self.steps_run > self.eager_steps and not self.untraceable:
            try:
                self.graph = trace_step(self.model)
            except Exception:  # noqa: BLE001 - the graph is only a speed-up: a model it fails on decodes eagerly
                self.untraceable = True
        if self.graph is None:
            return self.model.decode_step(tokens, enc_out, enc_mask, cache)
        if cache is None:
            cache = self.init_cache(enc_out, enc_mask)
        # the cache holds an eager step's dataclasses or a graph step's tuples: flat_state reads both
        logits, *new_flat = self.graph(tokens, torch.tensor(cache.step), enc_out, enc_mask, *flat_state(cache))
        return logits, unflatten(cache.step + tokens.shape[1], new_flat, self.n_layers)


def trace_step(model: EncoderDecoder) -> Any:
    """The export's step graph, traced from `model` as it is (int8 Linears included)."""
    from convtrans.inference.export import _examples, _Step, step_inputs
    from convtrans.ops._backend import use_backend

    with use_backend("torch"), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python, as in export
        examples = _examples(model)
        return torch.jit.trace(_Step(model, *examples["structure"]), step_inputs(examples), check_trace=False)
