"""Memory estimates: the meta-device footprint matches the built model, and the checks refuse
exactly what does not fit."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from convtrans.config import ModelConfig, list_presets, load_preset
from convtrans.errors import UserError
from convtrans.model import EncoderDecoder
from convtrans.resources import FP32, check_fits, decode_bytes_per_row, footprint, sentences_per_batch


def _built_elements(config: ModelConfig) -> tuple[int, int]:
    with torch.device("meta"):
        model = EncoderDecoder(config)
    buffers = sum(b.numel() for b in model.buffers())
    return model.num_parameters(), buffers


@pytest.mark.parametrize("preset", [p for p in list_presets() if p.startswith(("tiny_", "lite_transformer_iwslt",
                                                                                "transformer_iwslt", "dynamicconv_multi30k"))])
def test_footprint_counts_what_the_model_holds(preset: str) -> None:
    """Exact when every layer has the same kernel; an upper bound (widest kernel) otherwise."""
    config = load_preset(preset, src_vocab_size=1000, tgt_vocab_size=1000)
    parameters, buffers = _built_elements(config)
    fp = footprint(config)
    uniform = len(set(config.encoder_kernel_sizes)) <= 1 and len(set(config.decoder_kernel_sizes)) <= 1
    if uniform:
        assert fp.parameters == parameters and fp.elements == parameters + buffers
    else:
        assert parameters <= fp.parameters <= 1.1 * parameters


@pytest.mark.parametrize("changes", [
    dict(position_offset=2, learned_positions=True, output_bias=True),
    dict(normalize_before=True, decoder_final_norm=False, layernorm_embedding=True),
    dict(normalize_before=True, encoder_final_norm=False, position_embeddings=False),
])
def test_footprint_counts_imported_models_options(changes: dict) -> None:
    """The options imported models use (offset position rows, output bias, embedding LayerNorm,
    missing final norms or positions) are counted exactly too."""
    config = load_preset("tiny_transformer", src_vocab_size=1000, tgt_vocab_size=1000).replace(**changes)
    parameters, buffers = _built_elements(config)
    fp = footprint(config)
    assert fp.parameters == parameters and fp.elements == parameters + buffers


def test_check_fits_refuses_exactly_above_the_free_memory() -> None:
    config = load_preset("tiny_transformer", src_vocab_size=500, tgt_vocab_size=500)
    need = check_fits(config, "inference", available=10**12)
    assert check_fits(config, "inference", available=need) == need
    with pytest.raises(UserError, match=r"needs .* for inference .* more than the"):
        check_fits(config, "inference", available=need - 1)
    parameters = footprint(config).parameters
    assert check_fits(config, "training", available=10**12) == need + 3 * parameters * FP32


def test_the_field_named_is_the_one_out_of_the_ordinary() -> None:
    base = load_preset("transformer_iwslt_de_en", src_vocab_size=8000, tgt_vocab_size=8000)
    cases = {"d_model": dict(d_model=8192, encoder_heads=8, decoder_heads=8, cross_heads=8),
             "src_vocab_size": dict(src_vocab_size=10**9, share_all_embeddings=False),
             "encoder_layers": dict(encoder_layers=900),
             "max_target_positions": dict(max_target_positions=10**9)}
    for field, changes in cases.items():
        config = dataclasses.replace(base, **changes)
        with pytest.raises(UserError, match=rf"^config field {field}="):
            check_fits(config, "inference", available=2 * 10**9)


def test_sentences_per_batch_shrinks_with_memory_then_refuses() -> None:
    config = load_preset("tiny_dynamicconv", src_vocab_size=500, tgt_vocab_size=500)
    row = decode_bytes_per_row(config, 20, 30)
    assert sentences_per_batch(config, 5, 20, 30, wanted=64, available=10**12) == 64
    assert sentences_per_batch(config, 5, 20, 30, wanted=64, available=2 * 5 * row * 3) == 3
    with pytest.raises(UserError, match="beam 5 needs"):
        sentences_per_batch(config, 5, 20, 30, wanted=64, available=5 * row)


def test_attention_decoders_grow_with_the_output_and_conv_decoders_do_not() -> None:
    attention = load_preset("tiny_transformer", src_vocab_size=500, tgt_vocab_size=500)
    conv = load_preset("tiny_dynamicconv", src_vocab_size=500, tgt_vocab_size=500)
    assert decode_bytes_per_row(attention, 20, 200) > decode_bytes_per_row(attention, 20, 20)
    assert decode_bytes_per_row(conv, 20, 200) - decode_bytes_per_row(conv, 20, 20) == FP32 * 2 * 180
