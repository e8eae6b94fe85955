"""`convtrans import marian`: an OPUS-MT / MarianMT folder (Hugging Face layout) → a convtrans model.

    import_marian(MarianImport(hf_dir=Path("opus-mt-de-en"), out=Path("opus-mt-de-en-convtrans")))

The folder is what `MarianMTModel.save_pretrained` and `MarianTokenizer.save_pretrained` write:
config.json, model.safetensors (or pytorch_model.bin, read with weights_only=True), source.spm,
target.spm, vocab.json (+ target_vocab.json for separate vocabularies), tokenizer_config.json and
generation_config.json. transformers is not needed: the files are read directly.

What the model is, from transformers' modeling_marian.py: post-norm layers (the legacy
normalize_before / add_final_layer_norm fields are ignored there, as here), embeddings × √d when
scale_embedding, static sinusoids with 10000^(-2i/d) frequencies and positions from 0 (sinusoid
"marian", no offset), an output bias (final_logits_bias), EOS = 0, pad = the last id, which is
also the decoder's start token and never generated (bad_words_ids).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from convtrans import checkpoint as ckpt
from convtrans.config import GenerateConfig, ModelConfig
from convtrans.data.tokenize import load_sentencepiece
from convtrans.data.vocab import Vocabulary, read_marian_vocab, read_text_file
from convtrans.errors import UserError
from convtrans.imports.writer import card_table, complete_tensors, describe, expected_tensors, today, write_model

ACTIVATIONS = {"swish": "silu", "silu": "silu", "gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh",
               "gelu_pytorch_tanh": "gelu_tanh"}
MAX_JSON_BYTES = 1 << 20


@dataclass
class MarianImport:
    """The `convtrans import marian` options."""

    hf_dir: Path
    out: Path
    source_lang: str | None = None
    target_lang: str | None = None
    license: str | None = None
    name: str | None = None
    overwrite: bool = False


def _json(path: Path, required: bool = True) -> dict[str, Any]:
    if not path.is_file():
        if required:
            raise UserError(f"{path.parent} is not a MarianMT folder: {path.name} is missing")
        return {}
    try:
        data = json.loads(read_text_file(path, "model config", MAX_JSON_BYTES))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def _file(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise UserError(f"{folder} is not a complete MarianMT folder: {name} is missing")
    return path


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The state dict from model.safetensors, or pytorch_model.bin without unpickling code (each
    refused first if it would not fit in the free memory)."""
    from convtrans.imports.safe_load import check_memory

    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            check_memory(folder / name)
            break
    if (folder / "model.safetensors").is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(folder / "model.safetensors"))
        except (SafetensorError, OSError) as err:
            raise UserError(f"{folder / 'model.safetensors'}: cannot read weights ({err})") from None
    if (folder / "pytorch_model.bin").is_file():
        try:
            state = torch.load(str(folder / "pytorch_model.bin"), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises many types for a bad or unsafe file
            raise UserError(f"{folder / 'pytorch_model.bin'}: refused or unreadable with weights_only=True "
                            f"({str(err).strip().splitlines()[0][:120]})") from None
        if not isinstance(state, dict):
            raise UserError(f"{folder / 'pytorch_model.bin'}: not a state dict")
        return state
    raise UserError(f"{folder} has no model.safetensors or pytorch_model.bin (TensorFlow/Flax weights are not read)")


def _tensor(state: dict[str, torch.Tensor], *names: str) -> torch.Tensor | None:
    return next((state[name] for name in names if name in state), None)


def model_config(config: dict[str, Any], state: dict[str, torch.Tensor]) -> ModelConfig:
    """The ModelConfig of a MarianConfig, with its sharing read from the weights that are there."""
    def need(key: str) -> Any:
        if key not in config:
            raise UserError(f"config.json has no {key!r}: not a MarianMT config")
        return config[key]

    if config.get("model_type") != "marian":
        raise UserError(f"config.json is model_type {config.get('model_type')!r}, not 'marian'")
    activation = config.get("activation_function", "swish")
    if activation not in ACTIVATIONS:
        raise UserError(f"cannot import this model: activation_function {activation!r} is not one of "
                        f"{', '.join(ACTIVATIONS)}")
    src_vocab = int(need("vocab_size"))
    tgt_vocab = int(config.get("decoder_vocab_size") or src_vocab)
    shared = bool(config.get("share_encoder_decoder_embeddings", True))
    tied = bool(config.get("tie_word_embeddings", True))
    if shared and src_vocab != tgt_vocab:
        raise UserError("config.json shares encoder and decoder embeddings but gives two vocabulary sizes")
    if shared and not tied and _tensor(state, "lm_head.weight") is None:
        raise UserError("config.json unties the output layer but the weights have no lm_head.weight")
    if shared and not tied:
        raise UserError("cannot import this model: shared encoder/decoder embeddings with a separate output layer "
                        "(tie_word_embeddings false) is not supported")
    pad, eos = int(need("pad_token_id")), int(need("eos_token_id"))
    start = int(config.get("decoder_start_token_id", pad))
    positions = int(config.get("max_position_embeddings", 512))
    return ModelConfig(
        family="transformer", src_vocab_size=src_vocab, tgt_vocab_size=tgt_vocab,
        pad_id=pad, bos_id=start, eos_id=eos, decoder_start_id=start,
        d_model=int(need("d_model")), encoder_layers=int(need("encoder_layers")),
        decoder_layers=int(need("decoder_layers")), encoder_ffn_dim=int(need("encoder_ffn_dim")),
        decoder_ffn_dim=int(need("decoder_ffn_dim")), encoder_heads=int(need("encoder_attention_heads")),
        decoder_heads=int(need("decoder_attention_heads")), cross_heads=int(need("decoder_attention_heads")),
        dropout=float(config.get("dropout", 0.1)), attention_dropout=float(config.get("attention_dropout", 0.0)),
        activation_dropout=float(config.get("activation_dropout", 0.0)),
        normalize_before=False, share_all_embeddings=shared and tied,
        share_decoder_input_output_embed=tied and not shared, learned_positions=False,
        max_source_positions=positions, max_target_positions=positions,
        scale_embedding=bool(config.get("scale_embedding", True)), sinusoid="marian", position_offset=0,
        activation=ACTIVATIONS[activation], output_bias=True,
    )


def convert_weights(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """convtrans tensors from a MarianMTModel state dict (tied copies may be absent: the saved file
    keeps one name of each tied matrix)."""
    expected, tied = expected_tensors(config)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(ours: str, *names: str) -> None:
        tensor = _tensor(state, *names)
        if tensor is not None:
            out[ours] = tensor.float()
            used.update(n for n in names if n in state)

    take("src_embed.tokens.weight", "model.encoder.embed_tokens.weight", "model.shared.weight")
    take("tgt_embed.tokens.weight", "model.decoder.embed_tokens.weight", "model.shared.weight")
    take("output.weight", "lm_head.weight")
    if "final_logits_bias" in state:
        out["output.bias"] = state["final_logits_bias"].reshape(-1).float()
        used.add("final_logits_bias")
    else:
        out["output.bias"] = torch.zeros(config.tgt_vocab_size)
    parts = {"self_attn_layer_norm": "mix_block.norm", "encoder_attn_layer_norm": "cross_block.norm",
             "final_layer_norm": "ffn_block.norm", "fc1": "ffn.fc1", "fc2": "ffn.fc2",
             "self_attn": "mixer.attn", "encoder_attn": "cross"}
    for name, tensor in state.items():
        if not name.startswith(("model.encoder.layers.", "model.decoder.layers.")):
            continue
        side, _, layer, rest = name[len("model."):].split(".", 3)
        module, _, leaf = rest.rpartition(".")
        head, _, proj = module.partition(".")
        if head not in parts:
            continue
        out[f"{side}.{layer}.{parts[head]}{'.' + proj if proj else ''}.{leaf}"] = tensor.float()
        used.add(name)
    for ours, source in tied.items():
        alias = out.pop(ours, None) if source in out else None
        if alias is not None and not torch.equal(alias, out[source]):
            raise UserError(f"cannot import this model: {ours} and {source} differ though config.json ties them")
    ignorable = ("model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight")
    unused = sorted(set(state) - used - set(ignorable) - {"model.shared.weight", "lm_head.weight"})
    if unused:
        raise UserError(f"cannot import this model: tensor {unused[0]} has no place in a MarianMT model")
    return complete_tensors(out, expected, tied, "model", "the weights", "config.json gives")


def _vocabularies(folder: Path, tokenizer_config: dict[str, Any]) -> tuple[Path, Path]:
    source = _file(folder, "vocab.json")
    if tokenizer_config.get("separate_vocabs"):
        return source, _file(folder, "target_vocab.json")
    return source, source


def _check_vocab(vocab: Vocabulary, size: int, what: str, config: ModelConfig) -> None:
    if len(vocab) != size:
        raise UserError(f"{vocab.path} has {len(vocab):,} entries but the model's {what} embeddings have {size:,} rows")
    for special, expected in (("</s>", config.eos_id), ("<pad>", config.pad_id)):
        if vocab.index.get(special) != expected:
            raise UserError(f"{vocab.path}: {special} is id {vocab.index.get(special)} but config.json says {expected}")


def import_marian(options: MarianImport) -> Path:
    """Convert and write the model folder; returns its path."""
    folder = options.hf_dir
    if not folder.is_dir():
        raise UserError(f"{folder}: not a directory")
    if options.out.exists() and not options.overwrite:
        raise UserError(f"{options.out} already exists; refusing to overwrite it")
    config_json = _json(folder / "config.json")
    tokenizer_config = _json(folder / "tokenizer_config.json", required=False)
    spm_files = {"source": _file(folder, "source.spm"), "target": _file(folder, "target.spm")}
    for path in spm_files.values():
        load_sentencepiece(path)  # refused in one line if it is not a sentencepiece model
    vocab_files = _vocabularies(folder, tokenizer_config)
    vocabs = [read_marian_vocab(path) for path in vocab_files]
    state = read_weights(folder)
    config = model_config(config_json, state)
    _check_vocab(vocabs[0], config.src_vocab_size, "source", config)
    _check_vocab(vocabs[1], config.tgt_vocab_size, "target", config)
    tensors = convert_weights(state, config)

    source = options.source_lang or tokenizer_config.get("source_lang") or "src"
    target = options.target_lang or tokenizer_config.get("target_lang") or "tgt"
    if source == target:
        raise UserError(f"source and target language are both {source!r}; give --source-lang/--target-lang")
    files = {"source.spm": spm_files["source"], "target.spm": spm_files["target"], "vocab": vocab_files[0]}
    tokenizers = {"source.spm": "source.spm", "target.spm": "target.spm", "vocab": "vocab.json"}
    target_vocab = "vocab"
    if vocab_files[1] != vocab_files[0]:
        files["target_vocab"], tokenizers["target_vocab"], target_vocab = vocab_files[1], "target_vocab.json", "target_vocab"
    # transformers decodes a shared vocabulary with the source model (MarianTokenizer._decode)
    decode_spm = "target.spm" if tokenizer_config.get("separate_vocabs") else "source.spm"
    text = {source: {"pipeline": "marian", "lang": source, "vocab": "vocab", "spm": "source.spm"},
            target: {"pipeline": "marian", "lang": target, "vocab": target_vocab, "spm": "target.spm",
                     "decode_spm": decode_spm}}
    data = ckpt.DataInfo("translation", source, target, tokenizers, text)
    generate = marian_generate(config_json, _json(folder / "generation_config.json", required=False))
    extra = {"imported": {"from": "marian", "folder": folder.name, "date": today(), "license": options.license or ""},
             "name": options.name or options.out.name}
    card = model_card(options, config, source, target, generate)
    return write_model(options.out, config, tensors, data, files, generate, extra, card, options.overwrite)


# transformers' GenerationConfig defaults, for fields a folder leaves out or sets to null
HF_GENERATION_DEFAULTS = {"num_beams": 1, "length_penalty": 1.0, "min_length": 0, "max_length": 20,
                          "early_stopping": False}


def marian_generate(config: dict[str, Any], generation: dict[str, Any]) -> GenerateConfig:
    """The folder's decoding defaults (generation_config.json over config.json) as a GenerateConfig,
    with transformers' defaults for absent or null fields. Logits processors convtrans does not
    reproduce exactly are refused, naming the field (OPUS-MT folders set none of them)."""
    merged = {**config, **generation}

    def value(key: str) -> Any:
        found = merged.get(key)
        return HF_GENERATION_DEFAULTS[key] if found is None else found

    pad = merged.get("pad_token_id")
    unsupported = {
        "repetition_penalty": merged.get("repetition_penalty") not in (None, 1.0),
        "no_repeat_ngram_size": merged.get("no_repeat_ngram_size") not in (None, 0),
        "encoder_no_repeat_ngram_size": merged.get("encoder_no_repeat_ngram_size") not in (None, 0),
        "bad_words_ids": merged.get("bad_words_ids") not in (None, [], [[pad]]),
        "forced_bos_token_id": merged.get("forced_bos_token_id") is not None,
        "do_sample": bool(merged.get("do_sample")),
    }
    for field, refused in unsupported.items():
        if refused:
            raise UserError(f"cannot import this model's decoding defaults: {field}={merged.get(field)!r} is not "
                            "reproduced by convtrans (remove it from generation_config.json to import)")
    max_length = int(value("max_length"))
    if merged.get("max_position_embeddings"):
        max_length = min(max_length, int(merged["max_position_embeddings"]))
    early = value("early_stopping")
    early_stopping = "never" if early == "never" else "true" if early is True else "heuristic"
    # transformers counts the decoder's start token in max_length and min_length
    return GenerateConfig(beam=int(value("num_beams")), lenpen=float(value("length_penalty")),
                          min_len=max(0, int(value("min_length")) - 1), max_len_a=0.0,
                          max_len_b=max(1, max_length - 2), search="hf", early_stopping=early_stopping)


def model_card(options: MarianImport, config: ModelConfig, source: str, target: str, generate: GenerateConfig) -> str:
    name = options.name or options.out.name
    rows = [
        ("source", f"MarianMT folder `{options.hf_dir.name}` (Hugging Face layout)"),
        ("task", f"translation, {source} → {target}"),
        ("architecture", describe(config)),
        ("text pipeline", "sentencepiece (`source.spm` / `target.spm`) and `vocab.json`, as transformers' MarianTokenizer"),
        ("decoding defaults", f"beam {generate.beam}, length penalty {generate.lenpen}, at most "
                              f"{generate.max_len_b} subwords"),
        ("licence", options.license or "not given at import: OPUS-MT models are CC-BY 4.0; check the model's page"),
        ("imported", f"{today()} by `convtrans import marian`; weights converted exactly (fp32), no retraining"),
    ]
    return (f"# {name}: {source}→{target}, imported from Marian (OPUS-MT)\n\n{card_table(rows)}\n"
            "The imported weights are the original ones. Scores, training data and terms of use are those of the\n"
            "original release; convtrans did not evaluate this model.\n")
