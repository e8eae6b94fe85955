"""TracedSteps (inference/traced.py): the decode step as a traced graph gives exactly the eager
step's numbers, so switching to it (after `eager_steps`) never changes an output."""

from __future__ import annotations

import copy

import pytest
import torch

from convtrans.config import GenerateConfig
from convtrans.inference import int8
from convtrans.inference.generate import generate
from convtrans.inference.traced import TracedSteps
from tests.unit.test_generate import sources, tiny_model

FAMILIES = ["transformer", "dynamicconv", "lightconv", "synthesizer", "lite_transformer"]
PRECISIONS = ["fp32"] + (["int8"] if int8.available() else [])


def _model(family: str, precision: str):  # noqa: ANN202
    model = tiny_model(family)
    return int8.quantize_linears(model) if precision == "int8" else model


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_graph_steps_equal_eager_steps_exactly(family: str, precision: str) -> None:
    """Bit-for-bit: the same logits at every step, from the first (empty state) on, with a
    padded batch of two sources."""
    model = _model(family, precision)
    traced = TracedSteps(model, eager_steps=0)
    src = sources([7, 4])
    with torch.inference_mode():
        enc_out, enc_mask = model.encode(src)
        eager_cache = graph_cache = None
        tokens = torch.full((2, 1), model.config.bos_id)
        for step in range(6):
            want, eager_cache = model.decode_step(tokens, enc_out, enc_mask, eager_cache)
            got, graph_cache = traced.decode_step(tokens, enc_out, enc_mask, graph_cache)
            assert torch.equal(got, want), f"step {step}"
            tokens = want[:, -1].argmax(-1, keepdim=True)
    assert traced.graph is not None


# one per state layout: growing keys/values, a conv window, both (the per-step test covers the rest)
@pytest.mark.parametrize(("family", "precision"), [("transformer", PRECISIONS[-1]), ("dynamicconv", "fp32"),
                                                   ("lite_transformer", PRECISIONS[-1])])
def test_beam_search_on_graph_steps_equals_eager_even_when_it_switches_midway(family: str, precision: str) -> None:
    """Beams reorder the graph's flat state by rows like the eager caches; switching from eager
    to the graph after 5 steps (inside the first batch) changes nothing."""
    model = _model(family, precision)
    src = sources([5, 9, 3])
    config = GenerateConfig(beam=3, n_best=3, max_len_a=0.0, max_len_b=10)
    want = generate([model], src, config)
    for eager_steps in (0, 5):
        got = generate([TracedSteps(copy.deepcopy(model), eager_steps=eager_steps)], src, config)
        assert [[(h.tokens, h.score) for h in hyps] for hyps in got] == [[(h.tokens, h.score) for h in hyps]
                                                                           for hyps in want]


def test_steps_are_eager_until_the_threshold() -> None:
    traced = TracedSteps(tiny_model("dynamicconv"), eager_steps=3)
    generate([traced], sources([4]), GenerateConfig(beam=1, max_len_a=0.0, max_len_b=2))  # 3 steps
    assert traced.graph is None and traced.steps_run == 3
    generate([traced], sources([4]), GenerateConfig(beam=1, max_len_a=0.0, max_len_b=2))
    assert traced.graph is not None


def test_refuses_a_model_in_training_mode() -> None:
    with pytest.raises(ValueError, match="eval"):
        TracedSteps(tiny_model("transformer").train())


def test_a_model_that_cannot_be_traced_keeps_decoding_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tracing is only a speed-up: if it fails, the same outputs come from eager steps, and it is
    not tried again."""
    from convtrans.inference import traced as traced_module

    calls = []

    def failing(model):  # noqa: ANN001, ANN202
        calls.append(model)
        raise RuntimeError("not traceable")

    monkeypatch.setattr(traced_module, "trace_step", failing)
    model = tiny_model("dynamicconv")
    config = GenerateConfig(beam=2, max_len_a=0.0, max_len_b=6)
    wrapped = TracedSteps(model, eager_steps=1)
    for _ in range(2):
        got = generate([wrapped], sources([5, 3]), config)
        assert [[h.tokens for h in hyps] for hyps in got] == [[h.tokens for h in hyps]
                                                               for hyps in generate([model], sources([5, 3]), config)]
    assert wrapped.graph is None and wrapped.untraceable and len(calls) == 1
