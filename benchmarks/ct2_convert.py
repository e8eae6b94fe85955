"""A convtrans Transformer (attention encoder and decoder, post-norm, sinusoidal positions, tied
embeddings) as a CTranslate2 model with the same weights, so both engines run one model.

Used by decode_vs_ctranslate2.py. CTranslate2's Transformer spec is filled directly (no Hugging
Face model in between): fused q/k/v and k/v projections, post-norm layer norms, our position
table, our sentencepiece pieces as the vocabulary. The benchmark checks that both engines give
the same greedy outputs before it times anything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from convtrans.data.tokenize import SubwordTokenizer
from convtrans.model import EncoderDecoder


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().numpy().copy()  # a copy: quantizing the spec works in place


def _linear(spec, *modules: torch.nn.Linear) -> None:
    """Several Linear layers (q, k, v) fused along the output dimension, as CTranslate2 stores them."""
    spec.weight = _array(torch.cat([m.weight for m in modules], dim=0))
    spec.bias = _array(torch.cat([m.bias for m in modules], dim=0))


def _norm(spec, norm: torch.nn.LayerNorm) -> None:
    spec.gamma, spec.beta = _array(norm.weight), _array(norm.bias)


def convert(model: EncoderDecoder, tokenizer: SubwordTokenizer | list[str], out: Path,
            quantization: str | None = None) -> Path:
    """Write `model` as a CTranslate2 model directory (`quantization`: None, "int8", ...). The
    vocabulary is a sentencepiece tokenizer's pieces, or a list of symbols by id (an imported
    fairseq model's dictionary); the special tokens are the model config's pad/BOS/EOS and start."""
    import ctranslate2
    from ctranslate2 import specs

    cfg = model.config
    if (cfg.encoder_mixer, cfg.decoder_mixer) != ("attention", "attention") or cfg.normalize_before:
        raise ValueError("only post-norm attention Transformers convert to CTranslate2 here")
    if cfg.activation != "relu" or cfg.layernorm_embedding or cfg.output_bias or not cfg.scale_embedding:
        raise ValueError("only ReLU Transformers with scaled embeddings, no embedding LayerNorm or output bias convert here")
    spec = specs.TransformerSpec.from_config((cfg.encoder_layers, cfg.decoder_layers), cfg.encoder_heads,
                                             pre_norm=False)
    enc, dec = spec.encoder, spec.decoder
    enc.embeddings[0].weight = _array(model.src_embed.tokens.weight)
    dec.embeddings.weight = _array(model.tgt_embed.tokens.weight)
    offset = cfg.position_offset  # fairseq counts positions from pad + 1: CTranslate2's row 0 is our row `offset`
    enc.position_encodings.encodings = _array(model.src_embed.table[offset:])
    dec.position_encodings.encodings = _array(model.tgt_embed.table[offset:])
    dec.projection.weight = _array(model.output.weight)
    for layer_spec, layer in zip(enc.layer, model.encoder):
        attn = layer.mixer.attn
        _linear(layer_spec.self_attention.linear[0], attn.q_proj, attn.k_proj, attn.v_proj)
        _linear(layer_spec.self_attention.linear[1], attn.out_proj)
        _norm(layer_spec.self_attention.layer_norm, layer.mix_block.norm)
        _linear(layer_spec.ffn.linear_0, layer.ffn.fc1)
        _linear(layer_spec.ffn.linear_1, layer.ffn.fc2)
        _norm(layer_spec.ffn.layer_norm, layer.ffn_block.norm)
    for layer_spec, layer in zip(dec.layer, model.decoder):
        attn, cross = layer.mixer.attn, layer.cross
        _linear(layer_spec.self_attention.linear[0], attn.q_proj, attn.k_proj, attn.v_proj)
        _linear(layer_spec.self_attention.linear[1], attn.out_proj)
        _norm(layer_spec.self_attention.layer_norm, layer.mix_block.norm)
        _linear(layer_spec.attention.linear[0], cross.q_proj)
        _linear(layer_spec.attention.linear[1], cross.k_proj, cross.v_proj)
        _linear(layer_spec.attention.linear[2], cross.out_proj)
        _norm(layer_spec.attention.layer_norm, layer.cross_block.norm)
        _linear(layer_spec.ffn.linear_0, layer.ffn.fc1)
        _linear(layer_spec.ffn.linear_1, layer.ffn.fc2)
        _norm(layer_spec.ffn.layer_norm, layer.ffn_block.norm)
    if isinstance(tokenizer, list):
        pieces = tokenizer
    else:
        pieces = [tokenizer.sp.id_to_piece(i) for i in range(len(tokenizer))]
    spec.register_source_vocabulary(pieces)
    spec.register_target_vocabulary(pieces)
    spec.config.unk_token, spec.config.bos_token, spec.config.eos_token = "<unk>", pieces[cfg.bos_id], pieces[cfg.eos_id]
    spec.config.decoder_start_token = pieces[cfg.start_id]
    spec.validate()
    if quantization:
        spec.optimize(quantization=quantization)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec.save(str(out))
    assert ctranslate2.contains_model(str(out))
    return out
