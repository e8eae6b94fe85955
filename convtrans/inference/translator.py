"""Translator: text in, text out, for a checkpoint directory or a model shipped in models/.

    translator = Translator("models/dynamicconv_multi30k_de_en")     # or a zoo name, or a run's checkpoint_best
    translator.translate_batch(["Ein Mann fährt Fahrrad."])[0].text
    for result in translator.translate_iterable(open("big.de")): ...

Lines are prepared exactly as at training time (whitespace normalization, optional Moses and
lowercasing, sentencepiece), sorted by length within a batch call and grouped into batches of at
most `batch_tokens` source tokens, decoded, and returned in input order. Blank (or whitespace-only)
lines give empty results without touching the model, so line N in is line N out. Sources longer
than the model accepts are truncated to its limit (the `on_truncate(line, length, limit)` callback
is told).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from convtrans.config import GenerateConfig
from convtrans.data.tokenize import SubwordTokenizer, TextProcessor
from convtrans.errors import UserError
from convtrans.resources import sentences_per_batch
from convtrans.zoo import resolve_model


@dataclass
class Translation:
    """One input line's output: the best text, its subword ids and score, and the n-best list."""

    text: str
    tokens: list[int] = field(default_factory=list)
    score: float = 0.0
    alternatives: list[tuple[str, float]] = field(default_factory=list)  # n-best (text, score), best first


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda requested but no CUDA device is available")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


class Translator:
    def __init__(self, model: str | Path, device: str = "auto", generate: GenerateConfig | None = None,
                 batch_tokens: int = 4096, on_truncate: Callable[[int, int, int], None] | None = None) -> None:
        self.device = pick_device(device)
        from convtrans.inference.exported import load_for_inference

        self.model, self.checkpoint = load_for_inference(resolve_model(model), self.device)
        data = self.checkpoint.data
        self.source, self.target = data.source_lang, data.target_lang
        self.src_tok = SubwordTokenizer(self.checkpoint.tokenizer_path(self.source))
        self.tgt_tok = SubwordTokenizer(self.checkpoint.tokenizer_path(self.target))
        self.src_text, self.tgt_text = TextProcessor(**data.text[self.source]), TextProcessor(**data.text[self.target])
        self.generate_config = generate or self.checkpoint.generate
        self.batch_tokens = batch_tokens
        self.on_truncate = on_truncate or (lambda line, length, limit: None)
        self.model_source_limit = self.model.config.max_source_len

    @property
    def task(self) -> str:
        return self.checkpoint.data.task

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
            results[i] = Translation("")
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
        return results  # type: ignore[return-value]

    def translate_iterable(self, lines: Iterable[str], window: int = 256,
                           generate: GenerateConfig | None = None) -> Iterator[Translation]:
        """Stream: translate `window` lines at a time (sorted within the window), yield in order."""
        iterator = iter(lines)
        first = 1
        while chunk := list(itertools.islice(iterator, window)):
            yield from self.translate_batch(chunk, generate, first_line=first)
            first += len(chunk)
