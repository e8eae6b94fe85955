"""Text pipelines: raw text → token ids and back, one per side of a model, as it was trained.

A convtrans model (`pipeline` absent or "sentencepiece") prepares text with its TextProcessor
and sentencepiece model. An imported model keeps its original toolkit's pipeline, recorded in the
checkpoint's `data.text[side]`:

- "fairseq": what fairseq's hub interface does (hub_utils.GeneratorHubInterface.encode/decode):
  Moses tokenization (sacremoses; aggressive dash splits and XML escaping on, no punctuation
  normalization, as fairseq's `--tokenizer moses` defaults), optional lowercasing (the IWSLT14
  models were trained lowercased), BPE (bpe.py), then dictionary lookup; decoding drops EOS and
  BOS, writes `<unk>` for unknown ids, joins the BPE and detokenizes.
- "marian": what transformers' MarianTokenizer does: a leading `>>xx<<` language code is a token
  of its own, the rest goes through the source sentencepiece model and vocab.json; decoding
  skips the special tokens (EOS, unk, pad) and joins the pieces (MarianPipeline says with which
  sentencepiece model).

The files a pipeline reads are named by keys of `data.tokenizers` and resolved inside the model
folder (checkpoint.member), so a model folder cannot make us read outside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from convtrans.data.bpe import Splitter, load_splitter
from convtrans.data.tokenize import SubwordTokenizer, TextProcessor, load_sentencepiece, normalize_whitespace
from convtrans.data.vocab import Vocabulary, read_fairseq_dictionary, read_marian_vocab
from convtrans.errors import UserError

PIPELINES = ("sentencepiece", "fairseq", "marian")
FAIRSEQ_TOKENIZERS = ("moses", "none")


class TextPipeline(Protocol):
    def encode(self, lines: Sequence[str]) -> list[list[int]]:
        """Token ids of each line, without EOS (the caller appends it)."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text for the user from output ids (EOS excluded)."""
        ...


class SentencepiecePipeline:
    """convtrans's own: TextProcessor (Moses, lowercase) around a sentencepiece model."""

    def __init__(self, text: TextProcessor, tokenizer: SubwordTokenizer) -> None:
        self.text, self.tokenizer = text, tokenizer

    def encode(self, lines: Sequence[str]) -> list[list[int]]:
        return self.tokenizer.encode([self.text.pre(line) for line in lines])

    def decode(self, ids: Sequence[int]) -> str:
        return self.text.post(self.tokenizer.decode(list(ids)))


class FairseqPipeline:
    """fairseq's hub pipeline: Moses → lowercase → BPE → dictionary, and back."""

    def __init__(self, vocab: Vocabulary, lang: str, tokenizer: str = "moses", splitter: Splitter | None = None,
                 lowercase: bool = False) -> None:
        if tokenizer not in FAIRSEQ_TOKENIZERS:
            raise UserError(f"unknown tokenizer {tokenizer!r}; expected one of {', '.join(FAIRSEQ_TOKENIZERS)}")
        self.vocab, self.lang, self.tokenizer, self.splitter, self.lowercase = vocab, lang, tokenizer, splitter, lowercase
        self.skipped = {vocab.id_of("</s>"), vocab.id_of("<s>")}  # Dictionary.string drops EOS and BOS

    @cached_property
    def _moses(self) -> tuple[Any, Any]:
        import sacremoses

        return sacremoses.MosesTokenizer(lang=self.lang), sacremoses.MosesDetokenizer(lang=self.lang)

    def prepare(self, line: str) -> str:
        """Raw text → the subword string the dictionary reads."""
        text = normalize_whitespace(line)
        if self.tokenizer == "moses" and text:
            text = self._moses[0].tokenize(text, aggressive_dash_splits=True, return_str=True, escape=True)
        if self.lowercase:
            text = text.lower()
        return self.splitter.encode(text) if self.splitter and text else text

    def encode(self, lines: Sequence[str]) -> list[list[int]]:
        return [self.vocab.ids(self.prepare(line).split()) for line in lines]

    def decode(self, ids: Sequence[int]) -> str:
        symbols = self.vocab.symbols
        text = " ".join(symbols[i] if i != self.vocab.unk_id else "<unk>" for i in ids if i not in self.skipped)
        if self.splitter:
            text = self.splitter.decode(text)
        if self.tokenizer == "moses" and text:
            text = self._moses[1].detokenize(text.split())
        return text


class MarianPipeline:
    """transformers' MarianTokenizer (5.x): a leading `>>xx<<` language code, sentencepiece
    pieces, vocab.json ids; decoding skips the special tokens and joins the pieces with
    `decode_spm`, which transformers takes to be the *source* model when the vocabulary is shared
    (MarianTokenizer._decode's default) and the target model for separate vocabularies."""

    def __init__(self, vocab: Vocabulary, spm_path: Path, decode_spm_path: Path | None = None,
                 specials: Sequence[str] = ("</s>", "<unk>", "<pad>")) -> None:
        self.vocab, self.sp = vocab, load_sentencepiece(spm_path)
        self.decode_sp = load_sentencepiece(decode_spm_path) if decode_spm_path else self.sp
        self.special_ids = {vocab.index[s] for s in specials if s in vocab.index}

    def encode(self, lines: Sequence[str]) -> list[list[int]]:
        out = []
        for line in lines:
            code: list[str] = []
            end = line.find("<<") if line.startswith(">>") else -1  # MarianTokenizer.remove_language_code
            if end != -1:
                code, line = [line[: end + 2]], line[end + 2 :]
            out.append(self.vocab.ids(code + self.sp.encode(line, out_type=str)))
        return out

    def decode(self, ids: Sequence[int]) -> str:
        pieces = [self.vocab.symbols[i] for i in ids if i not in self.special_ids]
        return self.decode_sp.decode_pieces(pieces).replace("\u2581", " ").strip()


def load_pipeline(side: str, spec: dict[str, Any], file: Callable[[str], Path]) -> TextPipeline:
    """The pipeline of `side` that a checkpoint's `data.text[side]` describes; `file(key)` resolves
    a key of `data.tokenizers` to a path inside the model folder (checkpoint.tokenizer_path)."""
    spec = dict(spec)
    kind = spec.pop("pipeline", "sentencepiece")
    try:
        if kind == "sentencepiece":
            return SentencepiecePipeline(TextProcessor(**spec), SubwordTokenizer(file(side)))
        if kind == "fairseq":
            splitter = load_splitter(spec["bpe"], file(spec["bpe_model"])) if spec.get("bpe", "none") != "none" else None
            vocab = read_fairseq_dictionary(file(spec["vocab"]))
            return FairseqPipeline(vocab, spec["lang"], spec.get("tokenizer", "moses"), splitter,
                                   bool(spec.get("lowercase", False)))
        if kind == "marian":
            decode_spm = file(spec["decode_spm"]) if spec.get("decode_spm") else None
            return MarianPipeline(read_marian_vocab(file(spec["vocab"])), file(spec["spm"]), decode_spm)
    except (KeyError, TypeError) as err:
        raise UserError(f"the model's text options for {side} are incomplete or wrong ({err})") from None
    raise UserError(f"unknown text pipeline {kind!r}; this convtrans reads {', '.join(PIPELINES)}")
