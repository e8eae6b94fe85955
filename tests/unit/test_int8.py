"""int8 Linears (inference/int8.py): the fast CPU path agrees with the exact fp32 path within
stated bounds, on random layers, on every zoo family, and on the shipped translator's real text."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from convtrans.config import GenerateConfig
from convtrans.inference import int8
from convtrans.inference.generate import generate
from tests.unit.test_generate import sources, tiny_model

pytestmark = pytest.mark.skipif(not int8.available(), reason="this torch build has no fbgemm int8 linear")


def test_int8_linear_agrees_with_the_fp32_linear_within_its_quantization_error() -> None:
    """Per-channel int8 weights and 7-bit activations: each output is within a few quantization
    steps of the exact one. The bound scales with the inputs' and weights' magnitudes, so a wrong
    scale, a transposed weight or a lost bias fails it by orders of magnitude."""
    torch.manual_seed(0)
    linear = nn.Linear(256, 96)
    x = torch.randn(7, 5, 256)
    exact = linear(x)
    got = int8.Int8Linear(linear)(x)
    assert got.shape == exact.shape and got.dtype == torch.float32
    weight_step = linear.weight.abs().amax(1) / 127  # (out,) per channel
    input_step = x.abs().max() / 63  # reduce_range: 7-bit activations over the tensor's range
    # |Δy| ≤ Σ_i |x_i|·Δw + |w_i|·Δx (half steps), summed over the 256 inputs
    bound = (x.abs().sum(-1, keepdim=True) * weight_step / 2 + linear.weight.abs().sum(1) * input_step / 2)
    assert ((got - exact).abs() <= bound).all()
    assert (got - exact).abs().max() < 0.05 * exact.abs().max()


def test_int8_linear_without_bias_and_its_shape_attributes() -> None:
    linear = nn.Linear(32, 8, bias=False)
    quantized = int8.Int8Linear(linear)
    assert (quantized.in_features, quantized.out_features) == (32, 8)
    x = torch.randn(3, 32)
    assert torch.allclose(quantized(x), linear(x), atol=0.05 * linear(x).abs().max().item())


@pytest.mark.parametrize("family", ["transformer", "dynamicconv", "lightconv", "synthesizer", "lite_transformer"])
def test_every_family_decodes_on_int8_linears_close_to_fp32(family: str) -> None:
    """Every Linear is swapped (none left in fp32), embeddings stay fp32, and teacher-forced
    log-probabilities stay within 0.3 of the exact model's on a tiny model of each family. Tiny
    random models (d=16) are int8's worst case: with 16 inputs per dot product the rounding errors
    do not average out (0.05-0.19 over five seeds of each family); the shipped model's bound
    below is ten times tighter. A broken quantization is off by whole units."""
    exact = tiny_model(family)
    quantized = int8.quantize_linears(copy.deepcopy(exact))
    assert not any(type(m) is nn.Linear for m in quantized.modules())
    assert sum(isinstance(m, int8.Int8Linear) for m in quantized.modules()) == sum(
        type(m) is nn.Linear for m in exact.modules())
    src = sources([6, 4])
    tgt = torch.tensor([[2, 5, 6, 7, 8], [2, 9, 10, 11, 12]])
    with torch.inference_mode():
        want = exact(src, tgt).log_softmax(-1)
        got = quantized(src, tgt).log_softmax(-1)
    assert (got - want).abs().max() < 0.3


def test_quantize_keeps_a_tied_embedding_exact_and_refuses_training_mode() -> None:
    model = tiny_model("transformer", share_all_embeddings=True)
    embedding = model.tgt_embed.tokens.weight.detach().clone()
    int8.quantize_linears(model)
    assert torch.equal(model.tgt_embed.tokens.weight, embedding)  # the embedding is not quantized
    with pytest.raises(ValueError, match="eval"):
        int8.quantize_linears(tiny_model("transformer").train())


def test_incremental_decoding_on_int8_agrees_with_its_full_forward() -> None:
    """The int8 model is still one model: stepping agrees with its own teacher-forced forward."""
    model = int8.quantize_linears(tiny_model("dynamicconv"))
    src = sources([7])
    tgt = torch.tensor([[2, 5, 6, 7, 8, 9]])
    with torch.inference_mode():
        full = model(src, tgt)
        enc_out, enc_mask = model.encode(src)
        cache, steps = None, []
        for t in range(tgt.shape[1]):
            logits, cache = model.decode_step(tgt[:, t : t + 1], enc_out, enc_mask, cache)
            steps.append(logits)
    # one token per call quantizes each step's activations on their own: equal within the int8 error
    assert (torch.cat(steps, 1) - full).abs().max() < 0.1 * full.abs().max()


def test_precision_choice() -> None:
    assert int8.precision_for(torch.device("cpu"), "auto") == "int8"
    assert int8.precision_for(torch.device("cpu"), "int8") == "int8"
    assert int8.precision_for(torch.device("cpu"), "fp32") == "fp32"
    assert int8.precision_for(torch.device("cuda"), "auto") == "fp32"  # a GPU keeps its own dtype
    with pytest.raises(ValueError, match="precision"):
        int8.precision_for(torch.device("cpu"), "int4")


def test_an_explicit_int8_that_cannot_be_honoured_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """auto falls back to fp32 quietly; asking for int8 where it cannot run says so in one line."""
    from convtrans.errors import UserError

    with pytest.raises(UserError, match="runs on cuda"):
        int8.precision_for(torch.device("cuda"), "int8")
    monkeypatch.setattr(int8, "available", lambda: False)
    assert int8.precision_for(torch.device("cpu"), "int8") == "int8"  # the engine (ONNX Runtime) has int8 too
    monkeypatch.setenv("CONVTRANS_ENGINE", "off")
    assert int8.precision_for(torch.device("cpu"), "auto") == "fp32"
    with pytest.raises(UserError, match="no fbgemm"):
        int8.precision_for(torch.device("cpu"), "int8")


def test_int8_search_finds_the_same_outputs_as_fp32_on_a_tiny_model() -> None:
    """Beam search on int8 weights picks the same hypotheses as fp32 when the scores are not
    within the quantization error of each other (a trained-like margin: temperature 0.2)."""
    exact = tiny_model("dynamicconv")
    with torch.no_grad():
        exact.output.weight.mul_(5.0)  # sharpen the distribution: clear winners at every step
    quantized = int8.quantize_linears(copy.deepcopy(exact))
    src = sources([5, 8, 3])
    config = GenerateConfig(beam=4, max_len_a=0.0, max_len_b=8)
    want, got = generate([exact], src, config), generate([quantized], src, config)
    assert [h[0].tokens for h in got] == [h[0].tokens for h in want]
    assert all(abs(g[0].score - w[0].score) < 0.05 for g, w in zip(got, want))


PAIRS = [("Ein Mann fährt Fahrrad.", "A man is riding a bicycle."),
         ("Zwei Hunde spielen im Schnee.", "Two dogs are playing in the snow."),
         ("Eine Frau in einem roten Kleid singt auf einer Bühne.", "A woman in a red dress is singing on a stage."),
         ("Kinder sitzen an einem Tisch und essen Eis.", "Children are sitting at a table eating ice cream.")]


def test_the_shipped_translator_on_int8_keeps_its_reference_log_probs() -> None:
    """The quality bound on real text: for the shipped model and reference translations, every
    reference token's log-probability is within 0.05 of fp32's, each sentence's within 0.1, and
    the most likely next token is the same at every position (measured: at most 0.020 and 0.024;
    test_2016_flickr BLEU is in the model card)."""
    from convtrans import checkpoint as ckpt
    from convtrans.data.tokenize import SubwordTokenizer
    from convtrans.zoo import resolve_model

    folder = resolve_model("dynamicconv_multi30k_de_en")
    exact, checkpoint = ckpt.load_model(folder)
    quantized = int8.quantize_linears(copy.deepcopy(exact))
    ids = checkpoint.model_config
    tokenizer = SubwordTokenizer(folder / "spm.model")
    for source, target in zip(tokenizer.encode([s for s, _ in PAIRS]), tokenizer.encode([t for _, t in PAIRS])):
        src, tgt_in = torch.tensor([source + [ids.eos_id]]), torch.tensor([[ids.bos_id] + target])
        wanted = torch.tensor(target + [ids.eos_id])
        with torch.inference_mode():
            want, got = exact(src, tgt_in).log_softmax(-1)[0], quantized(src, tgt_in).log_softmax(-1)[0]
        positions = torch.arange(len(wanted))
        per_token = (got[positions, wanted] - want[positions, wanted]).abs()
        assert per_token.max() < 0.05
        assert abs(got[positions, wanted].sum() - want[positions, wanted].sum()) < 0.1
        assert torch.equal(got.argmax(-1), want.argmax(-1))
