"""The skeleton around the mixers: residual wiring (pre-norm and post-norm) against the formulas
written out by hand, embedding tying, the checkpoint key names, and the mixer table agreeing with
the names config.py validates. Mixers themselves are tested in test_nn_*.py, every preset in
tests/zoo."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from convtrans.config import MIXERS as MIXER_NAMES
from convtrans.config import ModelConfig
from convtrans.model import MIXERS, DecoderLayer, EncoderDecoder, EncoderLayer

D = 8


def _config(**changes) -> ModelConfig:
    small = dict(src_vocab_size=20, tgt_vocab_size=20, d_model=D, encoder_layers=1, decoder_layers=1,
                 encoder_ffn_dim=12, decoder_ffn_dim=12, encoder_heads=2, decoder_heads=2, cross_heads=2,
                 max_source_positions=32, max_target_positions=32)
    return ModelConfig(**{**small, **changes})


def _random_norms(layer: torch.nn.Module) -> None:
    """LayerNorms start as the identity affine map; random ones make a misplaced norm visible."""
    with torch.no_grad():
        for module in layer.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_()
                module.bias.normal_()


def _ln(norm: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, (D,), norm.weight, norm.bias, norm.eps)


def test_mixer_table_has_exactly_the_names_config_validates() -> None:
    assert sorted(MIXERS) == sorted(MIXER_NAMES)


@pytest.mark.parametrize("normalize_before", [True, False])
def test_encoder_layer_is_the_residual_formula(normalize_before: bool) -> None:
    torch.manual_seed(0)
    layer = EncoderLayer(_config(normalize_before=normalize_before), 0).double().eval()
    _random_norms(layer)
    x = torch.randn(2, 5, D, dtype=torch.float64)
    pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])

    def mix(h: torch.Tensor) -> torch.Tensor:
        return layer.mixer(h, pad)[0]

    norm1, norm2 = layer.mix_block.norm, layer.ffn_block.norm
    if normalize_before:  # x + f(LN(x))
        h = x + mix(_ln(norm1, x))
        expected = h + layer.ffn(_ln(norm2, h))
    else:  # LN(x + f(x))
        h = _ln(norm1, x + mix(x))
        expected = _ln(norm2, h + layer.ffn(h))
    torch.testing.assert_close(layer(x, pad), expected)


@pytest.mark.parametrize("normalize_before", [True, False])
def test_decoder_layer_is_the_residual_formula(normalize_before: bool) -> None:
    torch.manual_seed(0)
    layer = DecoderLayer(_config(normalize_before=normalize_before), 0).double().eval()
    _random_norms(layer)
    x, enc = torch.randn(2, 4, D, dtype=torch.float64), torch.randn(2, 6, D, dtype=torch.float64)
    enc_mask = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])

    def mix(h: torch.Tensor) -> torch.Tensor:
        return layer.mixer(h)[0]

    def cross(h: torch.Tensor) -> torch.Tensor:
        return layer.cross.cross(h, enc, enc_mask)[0]

    norm1, norm2, norm3 = layer.mix_block.norm, layer.cross_block.norm, layer.ffn_block.norm
    if normalize_before:
        h = x + mix(_ln(norm1, x))
        h = h + cross(_ln(norm2, h))
        expected = h + layer.ffn(_ln(norm3, h))
    else:
        h = _ln(norm1, x + mix(x))
        h = _ln(norm2, h + cross(h))
        expected = _ln(norm3, h + layer.ffn(h))
    out, self_state, cross_state = layer(x, enc, enc_mask)
    torch.testing.assert_close(out, expected)
    assert self_state.k.shape[2] == 4 and cross_state.k.shape[2] == 6  # (B, H, steps, Dh): states come back


def test_layer_norm_keys_keep_their_checkpoint_names() -> None:
    """Shipped model.safetensors files name the sublayer norms like this; renaming them breaks loading."""
    keys = set(EncoderDecoder(_config(normalize_before=True)).state_dict())
    for name in ("encoder.0.mix_block.norm", "encoder.0.ffn_block.norm", "decoder.0.mix_block.norm",
                 "decoder.0.cross_block.norm", "decoder.0.ffn_block.norm", "encoder_norm", "decoder_norm"):
        assert {f"{name}.weight", f"{name}.bias"} <= keys


@pytest.mark.parametrize("tying, shared", [
    ({}, []),
    ({"share_decoder_input_output_embed": True}, ["tgt_embed", "output"]),
    ({"share_all_embeddings": True}, ["src_embed", "tgt_embed", "output"]),
])
def test_tied_embeddings_share_one_tensor(tying: dict, shared: list[str]) -> None:
    model = EncoderDecoder(_config(**tying))
    matrices = {"src_embed": model.src_embed.tokens.weight, "tgt_embed": model.tgt_embed.tokens.weight,
                "output": model.output.weight}
    for a in matrices:
        for b in matrices:
            same = a == b or (a in shared and b in shared)
            assert (matrices[a] is matrices[b]) == same, (a, b)
    untied = EncoderDecoder(_config()).num_parameters()
    assert model.num_parameters() == untied - max(0, len(shared) - 1) * 20 * D  # a tied matrix counts once


@pytest.mark.parametrize("mixer", sorted(MIXER_NAMES))
@torch.no_grad()
def test_inference_encoder_runs_its_ffns_on_real_positions_only(mixer: str) -> None:
    """In eval, encode packs the real positions for the FFNs (a padded batch is about half pads):
    the FFN sees only real rows and the real positions come out as in the padded layout."""
    config = _config(encoder_mixer=mixer, decoder_mixer=mixer, encoder_layers=2, synth_max_len=32,
                     encoder_kernel_sizes=(3,), decoder_kernel_sizes=(3,),
                     synth_factors=(4, 8), synth_rank=2, lsra_attention_dim=4, lsra_heads=2)
    torch.manual_seed(0)
    model = EncoderDecoder(config).eval()
    src = torch.tensor([[5, 6, 7, 8, 9, 2], [5, 6, 2, 0, 0, 0], [7, 2, 0, 0, 0, 0]])
    rows: list[int] = []
    model.encoder[0].ffn.fc1.register_forward_hook(lambda m, args, out: rows.append(args[0].reshape(-1, D).shape[0]))
    enc_out, pad_mask = model.encode(src)
    assert rows == [6 + 3 + 2]
    x = model.src_embed(src)
    for layer in model.encoder:
        x = layer(x, pad_mask)  # no positions given: the FFN over the whole padded layout
    torch.testing.assert_close(enc_out[~pad_mask], model.encoder_norm(x)[~pad_mask], rtol=1e-6, atol=1e-6)
