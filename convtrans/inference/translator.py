"""Translator and Summarizer: text in, text out, for a checkpoint directory or a shipped model.

    translator = Translator()                                   # the shipped translator (offline)
    translator.translate(["Ein Mann fährt Fahrrad."])            # ['A man is riding a bicycle.']
    translator = Translator("runs/m30/checkpoint_best", beam=8)  # a run's checkpoint, search options
    for result in translator.translate_iterable(open("big.de")): # streaming; text, score, n-best
        print(result.text, result.score)

Lines are prepared exactly as at training time (whitespace normalization, optional Moses and
lowercasing, sentencepiece), sorted by length within a window and grouped into batches of at
most `batch_tokens` source tokens (fewer when memory is short), decoded, and returned in input
order. Blank (or whitespace-only) lines give empty results without touching the model, so line N
in is line N out. Sources longer than the model accepts are truncated to its limit (the
`on_truncate(line, length, limit)` callback is told). `convtrans translate` and `summarize` run
through `translate_iterable`: the CLI and this API are one path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from convtrans.config import GenerateConfig
from convtrans.data.tokenize import SubwordTokenizer, TextProcessor
from convtrans.inference.textio import chunks
from convtrans.resources import pick_device, sentences_per_batch
from convtrans.zoo import default_model, resolve_model


@dataclass
class Translation:
    """One input line's output: the best text, its subword ids and score, and the n-best list."""

    text: str
    tokens: list[int] = field(default_factory=list)
    score: float = 0.0
    alternatives: list[tuple[str, float]] = field(default_factory=list)  # n-best (text, score), best first
    blank: bool = False  # the input line was blank: nothing was translated (its output line stays empty)


class Translator:
    """A model ready to translate: loaded once, then any number of `translate*` calls."""

    task = "translate"  # which shipped default `model=None` loads (models/zoo.toml)

    def __init__(self, model: str | Path | None = None, device: str = "auto", generate: GenerateConfig | None = None,
                 batch_tokens: int = 4096, on_truncate: Callable[[int, int, int], None] | None = None,
                 **search: Any) -> None:
        """`model`: a checkpoint or exported directory, or the name of a shipped model (default: the
        shipped one for this task). `search`: decoding options over the model's defaults (beam,
        lenpen, n_best, min_len, max_len_a, max_len_b, no_repeat_ngram, sampling, temperature,
        top_k, top_p, seed, max_source_len); `generate` replaces the defaults whole."""
        from convtrans.inference.exported import load_for_inference

        self.device = pick_device(device)
        self.model, self.checkpoint = load_for_inference(resolve_model(model or default_model(self.task)), self.device)
        data = self.checkpoint.data
        self.source, self.target = data.source_lang, data.target_lang
        self.src_tok = SubwordTokenizer(self.checkpoint.tokenizer_path(self.source))
        self.tgt_tok = SubwordTokenizer(self.checkpoint.tokenizer_path(self.target))
        self.src_text, self.tgt_text = TextProcessor(**data.text[self.source]), TextProcessor(**data.text[self.target])
        self.generate_config = generate or self.checkpoint.generate
        self.generate_config = self.search_config(**search)
        self.batch_tokens = batch_tokens
        self.on_truncate = on_truncate or (lambda line, length, limit: None)
        self.model_source_limit = self.model.config.max_source_len

    def search_config(self, **overrides: Any) -> GenerateConfig:
        """This translator's decoding options with `overrides`; asking for n_best above the beam
        widens the beam to n_best."""
        sampling = overrides.get("sampling", self.generate_config.sampling)
        if "n_best" in overrides and "beam" not in overrides and not sampling:
            overrides["beam"] = max(self.generate_config.beam, overrides["n_best"])
        return self.generate_config.replace(**overrides)

    def translate(self, lines: Sequence[str], **search: Any) -> list[str]:
        """The best output text of each line, in order (`search` overrides decoding options)."""
        config = self.search_config(**search) if search else None
        return [result.text for result in self.translate_batch(lines, config)]

    def _encode(self, lines: Sequence[str], first_line: int, limit: int) -> list[list[int]]:
        ids = self.src_tok.encode([self.src_text.pre(line) for line in lines])
        for offset, seq in enumerate(ids):
            if len(seq) > limit:
                self.on_truncate(first_line + offset, len(seq), limit)
                ids[offset] = seq[:limit]
        return ids

    def _decode(self, tokens: Sequence[int]) -> str:
        return self.tgt_text.post(self.tgt_tok.decode(list(tokens)))

    @torch.inference_mode()
    def translate_batch(self, lines: Sequence[str], generate: GenerateConfig | None = None,
                        first_line: int = 1) -> list[Translation]:
        """Translate any number of lines; results are in input order. `first_line` numbers lines in
        truncation reports."""
        from convtrans.inference.generate import generate as run_generate

        config = generate or self.generate_config
        results: list[Translation | None] = [None] * len(lines)
        todo = [i for i, line in enumerate(lines) if line.strip()]
        for i in set(range(len(lines))) - set(todo):
            results[i] = Translation("", blank=True)
        limit = min(self.model_source_limit, config.max_source_len or self.model_source_limit)
        encoded = dict(zip(todo, self._encode([lines[i] for i in todo], first_line, limit))) if todo else {}
        todo.sort(key=lambda i: len(encoded[i]), reverse=True)  # similar lengths batch together
        pad, eos = self.model.config.pad_id, self.model.config.eos_id
        start = 0
        rows_per_sentence = config.n_best if config.sampling else config.beam
        while start < len(todo):
            longest = len(encoded[todo[start]]) + 1
            out_len = min(int(config.max_len_a * longest + config.max_len_b), self.model.config.max_target_len)
            size = sentences_per_batch(self.model.config, rows_per_sentence, longest, out_len,
                                       wanted=max(1, self.batch_tokens // longest), device=self.device)
            chunk = todo[start : start + size]
            start += len(chunk)
            src = torch.full((len(chunk), longest), pad, dtype=torch.long)
            for row, i in enumerate(chunk):
                src[row, : len(encoded[i]) + 1] = torch.tensor(encoded[i] + [eos])
            for i, hypotheses in zip(chunk, run_generate([self.model], src.to(self.device), config)):
                best = hypotheses[0]
                results[i] = Translation(self._decode(best.tokens), list(best.tokens), float(best.score),
                                         [(self._decode(h.tokens), float(h.score)) for h in hypotheses])
        assert all(result is not None for result in results)  # blank lines above, the rest in the loop
        return cast(list[Translation], results)

    def translate_iterable(self, lines: Iterable[str], window: int = 256, generate: GenerateConfig | None = None,
                           more_waiting: Callable[[], bool] | None = None) -> Iterator[Translation]:
        """Stream: translate `window` lines at a time (sorted within the window) and yield the
        results in input order. With `more_waiting` (a check that more input is already there), a
        window also ends as soon as nothing more is waiting, so an interactive user gets each
        answer at once."""
        first = 1
        for chunk in chunks(lines, window, more_waiting):
            yield from self.translate_batch(chunk, generate, first_line=first)
            first += len(chunk)


class Summarizer(Translator):
    """A summarization model: one summary per document (a document is one line or one string)."""

    task = "summarize"

    def summarize(self, documents: Sequence[str], **search: Any) -> list[str]:
        """The summary of each document, in order (`search` overrides decoding options)."""
        return self.translate(documents, **search)


def load(model: str | Path, **options: Any) -> Translator:
    """A Translator, or a Summarizer for a summarization model, from a directory or shipped name."""
    from convtrans import checkpoint as ckpt

    task = ckpt.read(resolve_model(model), verify=False).data.task
    return (Summarizer if task == "summarization" else Translator)(model, **options)
