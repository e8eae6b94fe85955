"""Line → the pieces a sentence-level model translates, and the pieces' outputs → the line again.

A translation model trained on single sentences garbles a paragraph given on one line (it writes
one sentence and drops the rest), and it reads at most `limit` subwords. So `translate` cuts each
line into sentences, cuts a sentence still over the limit at clause boundaries (after , ; : or a
dash), then between words, then (a single "word" over the limit) between characters, translates
every piece, and puts the outputs back with the text that stood between the pieces: the spaces
between sentences, and the whitespace at both ends of the line. Line N in is still line N out and
no piece of the input is dropped.

Sentences come from sentencex (Wikimedia; MIT; ~300 languages, rule-based with per-language
abbreviation lists, no model download). benchmarks/sentence_split.py chose it against pysbd,
blingfire, syntok and Moses' splitter (sentence-splitter) on lines of 2-4 real sentences:
sentencex got 97.0% of German news lines exactly right (pysbd 98.0%, the others 90-92%) at ~300x
pysbd's speed; numbers in docs/long_text.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

CLAUSE_END = re.compile(r"(?<=[,;:])\s+|\s+(?=[-–—]\s)")  # after , ; : or before a dash between spaces
WORD_GAP = re.compile(r"\s+")


@dataclass
class LinePlan:
    """One line as pieces and the text around them: the line is
    gaps[0] + pieces[0] + gaps[1] + pieces[1] + ... + pieces[-1] + gaps[-1]."""

    pieces: list[str]
    gaps: list[str]
    longest: int = 0  # subwords of the longest sentence, when one was cut to fit the limit

    def join(self, outputs: list[str]) -> str:
        """The outputs of the pieces, in the pieces' places (same gaps)."""
        if len(outputs) != len(self.pieces):
            raise ValueError(f"{len(outputs)} outputs for {len(self.pieces)} pieces")
        parts = [self.gaps[0]]
        for output, gap in zip(outputs, self.gaps[1:]):
            parts += [output, gap]
        return "".join(parts)


def split_sentences(text: str, language: str) -> list[str]:
    """The sentences of `text` (each stripped) in order; [] for a blank text."""
    import sentencex

    return [s.strip() for s in sentencex.segment(language, text) if s.strip()]


def whole(text: str) -> LinePlan:
    """`text` as one piece: its stripped content, with the whitespace at both ends as gaps."""
    stripped = text.strip()
    start = text.find(stripped)
    return LinePlan([stripped], [text[:start], text[start + len(stripped):]])


def locate(text: str, pieces: list[str]) -> LinePlan:
    """The gaps between `pieces` found in order in `text`. Where a splitter changed a piece's
    characters and it cannot be found, the line becomes one piece (nothing is lost)."""
    gaps, position = [], 0
    for piece in pieces:
        start = text.find(piece, position)
        if start < 0 or text[position:start].strip():
            return whole(text)
        gaps.append(text[position:start])
        position = start + len(piece)
    gaps.append(text[position:])
    return LinePlan(pieces, gaps)


def _pack(units: list[str], separators: list[str], counts: list[int], limit: int) -> list[str]:
    """Greedily join consecutive units (with the separators between them) while the sum of their
    subword counts stays within `limit`; a unit over the limit on its own stays alone."""
    pieces: list[str] = []
    current, current_count = "", 0
    for unit, separator, count in zip(units, separators, counts):
        if current and current_count + count <= limit:
            current, current_count = current + separator + unit, current_count + count
            continue
        if current:
            pieces.append(current)
        current, current_count = unit, count
    if current:
        pieces.append(current)
    return pieces


def _split_keeping(text: str, pattern: re.Pattern[str]) -> tuple[list[str], list[str]]:
    """The parts of `text` between matches of `pattern`, and the separator before each part."""
    parts, separators, position, before = [], [], 0, ""
    for match in pattern.finditer(text):
        if match.start() > position:
            parts.append(text[position : match.start()])
            separators.append(before)
        before, position = match.group(), match.end()
    parts.append(text[position:])
    separators.append(before)
    return parts, separators


def cut_to_limit(sentence: str, count: Callable[[str], int], limit: int) -> list[str]:
    """`sentence` as pieces of at most `limit` subwords (by `count`): whole if it fits, else at
    clause boundaries, else between words, else between characters. Joining the pieces with the
    whitespace between them gives the sentence back."""
    if count(sentence) <= limit:
        return [sentence]
    pieces: list[str] = []
    clauses, clause_gaps = _split_keeping(sentence, CLAUSE_END)
    for clause in _pack(clauses, clause_gaps, [count(c) for c in clauses], limit):
        if count(clause) <= limit:
            pieces.append(clause)
            continue
        words, word_gaps = _split_keeping(clause, WORD_GAP)
        for group in _pack(words, word_gaps, [count(w) for w in words], limit):
            pieces += [group] if count(group) <= limit else _cut_characters(group, count, limit)
    return pieces


def _cut_characters(word: str, count: Callable[[str], int], limit: int) -> list[str]:
    """A run of text without spaces over the limit, cut into the longest prefixes that fit."""
    pieces, start = [], 0
    while start < len(word):
        low, high = start + 1, len(word)  # the longest end with count(word[start:end]) <= limit
        while low < high:
            middle = (low + high + 1) // 2
            if count(word[start:middle]) <= limit:
                low = middle
            else:
                high = middle - 1
        pieces.append(word[start:low])
        start = low
    return pieces


def plan_line(line: str, language: str, count: Callable[[str], int], limit: int, mode: str) -> LinePlan:
    """How to read one non-blank line. `mode`: "sentences" (translation: each sentence, cut to the
    limit), "chunks" (summarization: the whole line if it fits, else `plan_chunks`) or "whole"
    (one source; the caller truncates it)."""
    if mode not in ("sentences", "chunks", "whole"):
        raise ValueError(f"unknown mode {mode!r}")
    if mode == "whole":
        return whole(line)
    if mode == "chunks":
        plan = whole(line)
        length = count(plan.pieces[0])
        return plan if length <= limit else plan_chunks(plan.pieces[0], language, count, limit, plan.gaps, length)
    plan = locate(line, split_sentences(line, language))
    pieces, gaps, longest = [], [plan.gaps[0]], 0
    for sentence, gap in zip(plan.pieces, plan.gaps[1:]):
        length = count(sentence)  # most sentences fit: counted once
        cut = [sentence] if length <= limit else cut_to_limit(sentence, count, limit)
        if len(cut) > 1:
            longest = max(longest, length)
        inner = locate(sentence, cut)
        pieces += inner.pieces
        gaps[-1] += inner.gaps[0]
        gaps += inner.gaps[1:-1] + [inner.gaps[-1] + gap]
    return LinePlan(pieces, gaps, longest)


def plan_chunks(document: str, language: str, count: Callable[[str], int], limit: int,
                ends: list[str], length: int) -> LinePlan:
    """A document over the limit as chunks of whole lines and sentences (a sentence over the limit
    is cut as in translation): as few chunks as the limit allows, as even as whole sentences allow
    (the smallest chunk size that still needs no more chunks, so the last one is not a scrap).
    Each chunk is summarized on its own and the summaries are joined with a space (`ends` are the
    line's own whitespace before and after; `length` is the document's subword count).

    benchmarks/long_documents.py measured this against truncation and against reading the whole
    document past the model's training length on DialogSum dev (docs/long_text.md)."""
    units: list[str] = []
    for paragraph in document.split("\n"):
        for sentence in split_sentences(paragraph, language):
            units += cut_to_limit(sentence, count, limit)
    counts = [count(unit) for unit in units]
    separators = [" "] * len(units)
    fewest = len(_pack(units, separators, counts, limit))
    low, high = max(counts), limit  # the smallest size whose greedy packing needs `fewest` chunks
    while low < high:
        middle = (low + high) // 2
        if len(_pack(units, separators, counts, middle)) <= fewest:
            high = middle
        else:
            low = middle + 1
    pieces = _pack(units, separators, counts, low)
    return LinePlan(pieces, [ends[0], *[" "] * (len(pieces) - 1), ends[1]], longest=length)
