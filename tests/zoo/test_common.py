"""One suite over every preset in models/presets, shrunk to tiny width (layer counts, kernel
sizes, mixers and options as the preset has them; presets identical at that width once):
shapes, incremental == full forward, no information from the future, padding invariance, beam
reorder, save → load, gradients."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_model, save_model

from convtrans.config import ModelConfig, list_presets, load_preset
from convtrans.model import EncoderDecoder

VOCAB, PAD = 40, 0


def tiny_config(name: str) -> ModelConfig:
    config = load_preset(name, src_vocab_size=VOCAB, tgt_vocab_size=VOCAB)
    changes = dict(d_model=16, encoder_ffn_dim=24, decoder_ffn_dim=24, encoder_heads=2, decoder_heads=2,
                   cross_heads=2, conv_dim=0, synth_max_len=64, synth_factors=(8, 8), synth_rank=4)
    if "lsra" in (config.encoder_mixer, config.decoder_mixer):
        changes.update(lsra_attention_dim=8, lsra_heads=2)
    return config.replace(**changes)


def distinct_presets() -> list[str]:
    """One preset per architecture that is distinct at tiny width: presets that differ only in
    width, dropout or position limits (e.g. transformer_wmt_en_de and its _big) build the same
    tiny model and are tested once."""
    seen: dict[ModelConfig, str] = {}
    for name in list_presets():
        key = tiny_config(name).replace(family="", dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                                        weight_dropout=0.0, input_dropout=0.0, max_source_positions=1024,
                                        max_target_positions=1024)
        seen.setdefault(key, name)
    return list(seen.values())


@pytest.fixture(params=distinct_presets())
def model(request) -> EncoderDecoder:
    torch.manual_seed(0)
    return EncoderDecoder(tiny_config(request.param)).eval()


def _tokens(batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(4, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def _step_by_step(model: EncoderDecoder, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    enc, mask = model.encode(src)
    cache, logits = None, []
    for t in range(tgt.shape[1]):
        step_logits, cache = model.decode_step(tgt[:, t : t + 1], enc, mask, cache)
        logits.append(step_logits)
    return torch.cat(logits, dim=1)


@torch.no_grad()
def test_forward_shapes(model) -> None:
    logits = model(_tokens(3, 11, 1), _tokens(3, 7, 2))
    assert logits.shape == (3, 7, VOCAB) and torch.isfinite(logits).all()


@pytest.mark.parametrize("tgt_len", [1, 5, 35])  # shorter and longer than the 31-tap kernels
@torch.no_grad()
def test_incremental_decoding_equals_full_forward(model, tgt_len: int) -> None:
    src, tgt = _tokens(2, 9, 3), _tokens(2, tgt_len, 4)
    src[1, 6:] = PAD
    full = model(src, tgt)
    assert (full - _step_by_step(model, src, tgt)).abs().max() < 1e-5
    if tgt_len > 4:  # a prefix of several tokens at once, then the rest
        enc, mask = model.encode(src)
        head, cache = model.decode_step(tgt[:, :4], enc, mask)
        tail, _ = model.decode_step(tgt[:, 4:], enc, mask, cache)
        assert (full - torch.cat([head, tail], 1)).abs().max() < 1e-5


@torch.no_grad()
def test_no_information_flows_from_future_targets(model) -> None:
    src, tgt = _tokens(2, 8, 5), _tokens(2, 12, 6)
    before = model(src, tgt)
    changed = tgt.clone()
    changed[:, 7:] = _tokens(2, 5, 7)
    after = model(src, changed)
    assert torch.equal(before[:, :7], after[:, :7])
    assert not torch.allclose(before[:, 7:], after[:, 7:])


@torch.no_grad()
def test_padding_does_not_change_real_positions(model) -> None:
    short, long = _tokens(1, 5, 8), _tokens(1, 10, 9)
    tgt = _tokens(2, 6, 10)
    batch = torch.cat([torch.nn.functional.pad(short, (0, 5), value=PAD), long])
    together = model(batch, tgt)
    assert (together[0] - model(short, tgt[:1])[0]).abs().max() < 1e-5
    assert (together[1] - model(long, tgt[1:])[0]).abs().max() < 1e-5
    padded_tgt = torch.nn.functional.pad(tgt, (0, 3), value=PAD)
    assert (model(batch, padded_tgt)[:, :6] - together).abs().max() < 1e-5


@torch.no_grad()
def test_beam_reorder_moves_every_cache(model) -> None:
    src, tgt = _tokens(3, 9, 11), _tokens(3, 6, 12)
    enc, mask = model.encode(src)
    _, cache = model.decode_step(tgt[:, :4], enc, mask)
    index = torch.tensor([2, 0, 0])
    cache = cache.reorder(index)
    continued, _ = model.decode_step(tgt[index, 4:], enc[index], mask[index], cache)
    from_scratch = model(src[index], torch.cat([tgt[index, :4], tgt[index, 4:]], 1))[:, 4:]
    assert (continued - from_scratch).abs().max() < 1e-5


@torch.no_grad()
def test_save_and_load_give_identical_logits(model, tmp_path) -> None:
    save_model(model, str(tmp_path / "model.safetensors"))
    restored = EncoderDecoder(ModelConfig.from_json(model.config.to_json())).eval()
    assert [(n, p.shape) for n, p in restored.named_parameters()] == [(n, p.shape) for n, p in model.named_parameters()]
    load_model(restored, str(tmp_path / "model.safetensors"))
    src, tgt = _tokens(2, 7, 13), _tokens(2, 5, 14)
    assert torch.equal(model(src, tgt), restored(src, tgt))


def test_every_parameter_gets_a_gradient(model) -> None:
    model.train()
    logits = model(_tokens(2, 7, 15), _tokens(2, 5, 16))
    logits.logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@torch.no_grad()
def test_explicit_initial_cache_equals_no_cache(model) -> None:
    src, tgt = _tokens(2, 7, 17), _tokens(2, 6, 18)
    enc, mask = model.encode(src)
    cache = model.init_cache(enc, mask)
    steps = []
    for t in range(tgt.shape[1]):
        logits, cache = model.decode_step(tgt[:, t : t + 1], enc, mask, cache)
        steps.append(logits)
    assert (torch.cat(steps, 1) - model(src, tgt)).abs().max() < 1e-5
