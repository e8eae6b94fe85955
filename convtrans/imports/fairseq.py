"""`convtrans import fairseq`: a fairseq checkpoint + its dictionaries (+ BPE) → a convtrans model.

    import_fairseq(FairseqImport(checkpoint=Path("wmt16.en-de.joined-dict.dynamicconv-glu/model.pt"),
                                 dict_dir=Path("wmt16.en-de.joined-dict.dynamicconv-glu"),
                                 bpe="subword_nmt", bpe_codes=Path(".../bpecodes"), out=Path("dynamicconv-wmt16")))

Everything the user names is checked before the weights are converted: the checkpoint is read
without unpickling code (safe_load.py), its args become a ModelConfig or a one-line refusal
(fairseq_args.py), the dictionaries `dict.<lang>.txt` must exist and have as many symbols as the
embeddings have rows, the BPE codes must parse, and every tensor must find its place
(fairseq_weights.py). The model folder then decodes as fairseq's hub interface does: Moses
tokenization, BPE, the source ending in EOS, the decoder starting from EOS, positions from
pad + 1, and fairseq-generate's search defaults (beam 5, lenpen 1, max length 200).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convtrans import checkpoint as ckpt
from convtrans.config import GenerateConfig, ModelConfig
from convtrans.data.bpe import BPE_KINDS, load_splitter
from convtrans.data.pipelines import FAIRSEQ_TOKENIZERS
from convtrans.data.vocab import read_fairseq_dictionary
from convtrans.errors import UserError
from convtrans.imports import fairseq_weights
from convtrans.imports.fairseq_args import FairseqModel, checkpoint_languages, read_model
from convtrans.imports.safe_load import load_checkpoint
from convtrans.imports.writer import card_table, describe, expected_tensors, today, write_model

# fairseq-generate's defaults (fairseq/dataclass/configs.py GenerationConfig)
FAIRSEQ_GENERATE = GenerateConfig(beam=5, lenpen=1.0, min_len=1, max_len_a=0.0, max_len_b=200)
TASKS = ("translation", "summarization")
BPE_FILE_NAMES = {"subword_nmt": "bpecodes", "fastbpe": "bpecodes", "sentencepiece": "sentencepiece.bpe.model"}


@dataclass
class FairseqImport:
    """The `convtrans import fairseq` options."""

    checkpoint: Path
    dict_dir: Path
    out: Path
    source_lang: str | None = None
    target_lang: str | None = None
    tokenizer: str = "moses"
    bpe: str | None = None
    bpe_codes: Path | None = None
    lowercase: bool = False
    task: str = "translation"
    license: str | None = None
    name: str | None = None
    overwrite: bool = False

    def check_options(self) -> None:
        """What can be refused before reading anything big."""
        if self.tokenizer not in FAIRSEQ_TOKENIZERS:
            raise UserError(f"--tokenizer {self.tokenizer!r}: expected one of {', '.join(FAIRSEQ_TOKENIZERS)}")
        if self.bpe is not None and self.bpe not in BPE_KINDS:
            raise UserError(f"--bpe {self.bpe!r}: expected one of {', '.join(BPE_KINDS)}")
        if (self.bpe is None) != (self.bpe_codes is None):
            raise UserError("--bpe and --bpe-codes go together (the codes file, or the sentencepiece model)")
        if self.bpe_codes is not None and not self.bpe_codes.is_file():
            raise UserError(f"BPE codes file not found: {self.bpe_codes}")
        if not self.dict_dir.is_dir():
            raise UserError(f"--dict-dir {self.dict_dir}: not a directory")
        if self.task not in TASKS:
            raise UserError(f"--task {self.task!r}: expected one of {', '.join(TASKS)}")
        if self.out.exists() and not self.overwrite:
            raise UserError(f"{self.out} already exists; refusing to overwrite it")


def _languages(options: FairseqImport, state: dict[str, Any]) -> tuple[str, str]:
    recorded_source, recorded_target = checkpoint_languages(state)
    source, target = options.source_lang or recorded_source, options.target_lang or recorded_target
    if not source or not target:
        raise UserError("the checkpoint does not say its languages: give --source-lang and --target-lang")
    if source == target:
        raise UserError(f"source and target language are both {source!r}; give --source-lang/--target-lang")
    return str(source), str(target)


def import_fairseq(options: FairseqImport) -> Path:
    """Convert and write the model folder; returns its path."""
    options.check_options()
    if options.bpe and options.bpe_codes:
        load_splitter(options.bpe, options.bpe_codes)  # a bad codes file is refused before the weights are read
    state = load_checkpoint(options.checkpoint)
    source, target = _languages(options, state)
    dict_files = {side: options.dict_dir / f"dict.{side}.txt" for side in (source, target)}
    for path in dict_files.values():
        if not path.is_file():
            raise UserError(f"dictionary not found: {path} (fairseq names it dict.<lang>.txt)")
    vocabs = {side: read_fairseq_dictionary(path) for side, path in dict_files.items()}
    model = read_model(state, len(vocabs[source]), len(vocabs[target]))
    model.config = _versioned_norms(model, state["model"])
    expected, tied = expected_tensors(model.config)
    _check_dictionary_sizes(state["model"], model, vocabs[source].path, vocabs[target].path)
    tensors = fairseq_weights.convert(state["model"], expected, fairseq_weights.transformer_rename, tied)

    files: dict[str, Path] = {f"dict.{side}": path for side, path in dict_files.items()}
    text: dict[str, dict[str, Any]] = {}
    for side in (source, target):
        text[side] = {"pipeline": "fairseq", "lang": side, "tokenizer": options.tokenizer,
                      "bpe": options.bpe or "none", "vocab": f"dict.{side}", "lowercase": options.lowercase}
    if options.bpe_codes is not None:
        files["bpe"] = options.bpe_codes
        for side in text:
            text[side]["bpe_model"] = "bpe"
    tokenizers = {key: BPE_FILE_NAMES[options.bpe] if key == "bpe" and options.bpe else path.name
                  for key, path in files.items()}
    data = ckpt.DataInfo(options.task, source, target, tokenizers, text)
    digest = ckpt.file_digest(options.checkpoint)
    extra = {"imported": {"from": "fairseq", "checkpoint": options.checkpoint.name, "sha256": digest,
                          "arch": model.arch, "family": model.family, "date": today(),
                          "license": options.license or ""},
             "name": options.name or options.out.name}
    card = model_card(options, model, source, target, digest)
    return write_model(options.out, model.config, tensors, data, files, FAIRSEQ_GENERATE, extra, card, options.overwrite)


def _versioned_norms(model: FairseqModel, state: dict[str, Any]) -> ModelConfig:
    """fairseq's Transformer upgrade rule: an encoder of version < 2 and a decoder of version <= 2
    (a missing marker counts as 1) ran without the final LayerNorm of pre-norm models."""
    config = model.config
    if model.family != "transformer" or not config.normalize_before:
        return config

    def version(side: str) -> float:
        marker = state.get(f"{side}.version")
        return float(marker.reshape(-1)[0]) if marker is not None else 1.0

    return config.replace(encoder_final_norm=version("encoder") >= 2,
                          decoder_final_norm=config.decoder_final_norm and version("decoder") > 2)


def _check_dictionary_sizes(state: dict[str, Any], model: FairseqModel, src_path: Path, tgt_path: Path) -> None:
    """The embeddings' rows must equal the dictionaries' sizes: a wrong dict is named, not a tensor."""
    for key, path, size in (("encoder.embed_tokens.weight", src_path, model.config.src_vocab_size),
                            ("decoder.embed_tokens.weight", tgt_path, model.config.tgt_vocab_size)):
        rows = state[key].shape[0] if key in state else None
        if rows is not None and rows != size:
            raise UserError(f"{path} has {size:,} symbols (with fairseq's 4 specials) but the checkpoint's {key} has "
                            f"{rows:,} rows: not this model's dictionary")


def model_card(options: FairseqImport, model: FairseqModel, source: str, target: str, digest: str) -> str:
    name = options.name or options.out.name
    pipeline = ", ".join(part for part in (
        "Moses tokenization (sacremoses)" if options.tokenizer == "moses" else "",
        "lowercased" if options.lowercase else "",
        f"{options.bpe} BPE (`{options.bpe_codes.name}`)" if options.bpe and options.bpe_codes else "",
        "fairseq dictionaries") if part)
    rows = [
        ("source", f"fairseq checkpoint `{options.checkpoint.name}` (sha256 `{digest[:16]}…`), arch `{model.arch}`"),
        ("task", f"{options.task}, {source} → {target}"),
        ("architecture", describe(model.config)),
        ("text pipeline", pipeline),
        ("decoding defaults", "fairseq-generate's: beam 5, length penalty 1.0, max length 200, min length 1"),
        ("licence", options.license or "not given at import: see where the checkpoint came from"),
        ("imported", f"{today()} by `convtrans import fairseq`; weights converted exactly (fp32), no retraining"),
    ]
    return (f"# {name}: {source}→{target}, imported from fairseq ({model.arch})\n\n"
            f"{card_table(rows)}\n"
            "The imported weights are the original ones. Scores, training data and terms of use are those of the\n"
            "original release; convtrans did not evaluate this model.\n")
