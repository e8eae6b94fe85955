"""Translator and Summarizer: text in, text out, for a checkpoint directory or a shipped model.

    translator = Translator()                                   # the shipped translator (offline)
    translator.translate(["Ein Mann fährt Fahrrad."])            # ['A man is riding a bicycle.']
    translator = Translator("runs/m30/checkpoint_best", beam=8)  # a run's checkpoint, search options
    for result in translator.translate_iterable(open("big.de")): # streaming; text, score, n-best
        print(result.text, result.score)

Lines are prepared exactly as at training time (whitespace normalization, optional Moses and
lowercasing, sentencepiece; an imported model's own pipeline, data/pipelines.py), sorted by length
within a window and grouped into batches of at most `batch_tokens` source tokens (fewer when memory
is short), decoded, and returned in input order. Blank (or whitespace-only) lines give empty
results without touching the model, so line N in is line N out. With a translation model each line
is split into sentences, translated as separate sources of the same batches (a sentence-level model
garbles a paragraph), a sentence over the model's limit cut into pieces, and the outputs joined
with the line's own whitespace; with a summarization model a document over the limit is summarized
in chunks and the summaries joined (segment.py). `split=False` reads each line as one source and
truncates it to the limit (the `on_truncate(line, length, limit)` callback is told).
`convtrans translate` and `summarize` run through `translate_iterable`: the CLI and this API are
one path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from convtrans.config import GenerateConfig
from convtrans.data.pipelines import load_pipeline
from convtrans.inference.segment import LinePlan, plan_line
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
    pieces: int = 1  # how many pieces (sentences, or parts of a sentence over the limit) were translated


class Translator:
    """A model ready to translate: loaded once, then any number of `translate*` calls."""

    task = "translate"  # which shipped default `model=None` loads (models/zoo.toml)

    def __init__(self, model: str | Path | None = None, device: str = "auto", generate: GenerateConfig | None = None,
                 batch_tokens: int = 4096, on_truncate: Callable[[int, int, int], None] | None = None,
                 split: bool = True, on_cut: Callable[[int, int, int], None] | None = None,
                 precision: str = "auto", **search: Any) -> None:
        """`model`: a checkpoint or exported directory, or the name of a shipped model (default: the
        shipped one for this task). `search`: decoding options over the model's defaults (beam,
        lenpen, n_best, min_len, max_len_a, max_len_b, no_repeat_ngram, sampling, temperature,
        top_k, top_p, seed, max_source_len); `generate` replaces the defaults whole. `split`
        (default on): a translation model translates each sentence of a line, and a sentence over
        the model's limit in pieces, then joins them; a summarization model summarizes a document
        over the limit in chunks and joins the summaries (`on_cut(line, length, limit)` is told of
        a cut sentence or chunked document). Off, a line is one source and its tail over the limit
        is dropped (`on_truncate(line, length, limit)` is told). `precision`: "auto" (default)
        decodes on int8 weights on a CPU that has them (faster; within the bounds int8.py states),
        "fp32" exactly as the checkpoint's weights give."""
        from convtrans.inference.exported import load_for_inference

        self.device = pick_device(device)
        self.model, self.checkpoint = load_for_inference(resolve_model(model or default_model(self.task)), self.device,
                                                         precision)
        data = self.checkpoint.data
        self.source, self.target = data.source_lang, data.target_lang
        self.src_pipeline = load_pipeline(self.source, data.text[self.source], self.checkpoint.tokenizer_path)
        self.tgt_pipeline = load_pipeline(self.target, data.text[self.target], self.checkpoint.tokenizer_path)
        self.generate_config = generate or self.checkpoint.generate
        self.generate_config = self.search_config(**search)
        self.batch_tokens = batch_tokens
        self.on_truncate = on_truncate or (lambda line, length, limit: None)
        self.model_source_limit = self.model.config.max_source_len
        # how a line is read (segment.plan_line): a translation model reads sentences; a summarizer
        # reads a document whole, in chunks when it is over the limit
        self.reading = ("chunks" if data.task == "summarization" else "sentences") if split else "whole"
        self.on_cut = on_cut or (lambda line, length, limit: None)

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

    def _encode(self, pieces: Sequence[str], line_numbers: Sequence[int], limit: int) -> list[list[int]]:
        """Subword ids of each piece, truncated to `limit` (the line's number is reported)."""
        ids = self.src_pipeline.encode(pieces)
        for offset, seq in enumerate(ids):
            if len(seq) > limit:
                self.on_truncate(line_numbers[offset], len(seq), limit)
                ids[offset] = seq[:limit]
        return ids

    def _decode(self, tokens: Sequence[int]) -> str:
        return self.tgt_pipeline.decode(tokens)

    def count_subwords(self, text: str) -> int:
        """Source subwords of `text` as the model reads it (the limit is in these)."""
        return len(self.src_pipeline.encode([text])[0])

    def source_limit(self, config: GenerateConfig) -> int:
        return min(self.model_source_limit, config.max_source_len or self.model_source_limit)

    @torch.inference_mode()
    def translate_batch(self, lines: Sequence[str], generate: GenerateConfig | None = None,
                        first_line: int = 1) -> list[Translation]:
        """Translate any number of lines; results are in input order. `first_line` numbers lines in
        truncation and cut reports. Unless reading lines whole (`split=False`), each line's sentences (and the pieces of a
        sentence over the limit) are translated as pieces of one batch and joined back."""
        config = generate or self.generate_config
        limit = self.source_limit(config)
        results: list[Translation | None] = [None] * len(lines)
        plans: dict[int, LinePlan] = {}
        for i, line in enumerate(lines):
            if not line.strip():
                results[i] = Translation("", blank=True)
                continue
            plans[i] = plan_line(line, self.source, self.count_subwords, limit, self.reading)
            if plans[i].longest:
                self.on_cut(first_line + i, plans[i].longest, limit)
        owners = [(i, first_line + i) for i, plan in plans.items() for _ in plan.pieces]
        pieces = [piece for plan in plans.values() for piece in plan.pieces]
        outputs = iter(self._translate_pieces(pieces, [line for _, line in owners], config))
        for i, plan in plans.items():
            parts = [next(outputs) for _ in plan.pieces]
            results[i] = parts[0] if self.reading == "whole" else self._joined(plan, parts)
        assert all(result is not None for result in results)  # blank lines above, the rest in the loop
        return cast(list[Translation], results)

    @staticmethod
    def _joined(plan: LinePlan, parts: list[Translation]) -> Translation:
        """One line's result from its pieces' results: texts in the pieces' places (the line's
        own whitespace around them), tokens concatenated, the score the mean of the pieces'. A
        line of several pieces has no n-best list beyond its one joined text."""
        text = plan.join([part.text for part in parts])
        if len(parts) == 1:
            return Translation(text, parts[0].tokens, parts[0].score,
                               [(plan.join([alt]), score) for alt, score in parts[0].alternatives], pieces=1)
        score = sum(part.score for part in parts) / len(parts)
        tokens = [token for part in parts for token in part.tokens]
        return Translation(text, tokens, score, [(text, score)], pieces=len(parts))

    def _translate_pieces(self, pieces: list[str], line_numbers: list[int],
                          config: GenerateConfig) -> list[Translation]:
        """The model's output for each piece (non-blank), in order; sorted by length into batches."""
        from convtrans.inference.generate import generate as run_generate

        limit = self.source_limit(config)
        results: list[Translation | None] = [None] * len(pieces)
        encoded = self._encode(pieces, line_numbers, limit)
        todo = sorted(range(len(pieces)), key=lambda i: len(encoded[i]), reverse=True)  # similar lengths together
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
