"""Self-supervised warm-up data for summarization: copy a document's units and its principal ones.

A summarizer trained from scratch on a small corpus (DialogSum: 12.5k dialogues) first learns the
summaries' language and ignores its input for many epochs: a fluent generic summary already lowers
the loss, and attention spread over a 200-subword source carries too little signal to learn where
to look. A warm-up run on targets the decoder can only produce by reading the source teaches it to
align and copy, and the summarizer then starts from that model (`convtrans train --init-from`).

The pairs form a curriculum in one data set: every unit of a document copied alone (short sources,
where attention learns to align within a few hundred updates, as in translation), windows of 2, 4,
... units with their principal unit, and the whole document with its two principal units. The
principal units are PEGASUS's "principal sentences" (Zhang et al. 2020, Ind-Orig) kept in the
source: those that overlap most with the rest (unigram F1), in document order, at most `max_words`
words. Units are the document's lines (a dialogue's turns) or, for a one-line document, its
sentences. Choosing them needs a notion of salience, and producing them needs copying from
anywhere in a long source, which is what the summarizer lacks.
"""

from __future__ import annotations

import re
from collections import Counter

PRETEXTS = ("principal",)
_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
MIN_UNIT_WORDS = 4  # shorter units ("OK.", "Yes.") are never principal


def units(document: str) -> list[str]:
    """A document's lines, or its sentences when it is a single line."""
    lines = [line.strip() for line in document.split("\n") if line.strip()]
    if len(lines) > 1:
        return lines
    return [s for s in _SENTENCE_END.split(lines[0]) if s] if lines else []


def _f1(unit: Counter, rest: Counter) -> float:
    overlap = sum((unit & rest).values())
    if not overlap:
        return 0.0
    precision, recall = overlap / sum(unit.values()), overlap / sum(rest.values())
    return 2 * precision * recall / (precision + recall)


def principal(parts: list[str], count: int = 2, max_words: int = 60) -> str:
    """The `count` units that overlap most with the other units, in their order, joined by spaces
    and cut to `max_words` whitespace words. Ties go to the earlier unit."""
    bags = [Counter(_WORD.findall(part.lower())) for part in parts]
    total = sum(bags, Counter())
    scores = [_f1(bag, total - bag) if sum(bag.values()) >= MIN_UNIT_WORDS else 0.0 for bag in bags]
    chosen = sorted(sorted(range(len(parts)), key=lambda i: -scores[i])[:count])
    return " ".join(" ".join(parts[i] for i in chosen).split()[:max_words])


def windows(parts: list[str]) -> list[list[str]]:
    """Non-overlapping windows of 2, 4, 8, ... consecutive units, while shorter than the document."""
    out, size, start = [], 2, 0
    while size < len(parts) and start + size <= len(parts):
        out.append(parts[start : start + size])
        start, size = start + size, size * 2
    return out


def pretext_pairs(document: str) -> list[tuple[str, str]]:
    """(source, target) warm-up pairs of one document, a curriculum in one data set: every unit
    copied alone (short sources, where attention learns to align within a few hundred updates, as
    in translation), windows of 2, 4, ... units with their principal unit, and the whole document
    with its two principal units (search a long source, then copy). Sources keep line breaks."""
    parts = units(document)
    if not parts:
        return []
    pairs = [(part, part) for part in parts]
    if len(parts) == 1:
        return pairs
    pairs += [("\n".join(window), principal(window, count=1)) for window in windows(parts)]
    return pairs + [("\n".join(parts), principal(parts, count=2))]
