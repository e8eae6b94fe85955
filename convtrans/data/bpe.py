"""Subword splitting of imported fairseq models, exactly as fairseq's `--bpe` options do it.

- subword_nmt: subword-nmt's BPE on its codes file (the library fairseq itself calls), `@@ ` joins.
- fastbpe: fastBPE's codes (`left right count` per line) applied by subword-nmt. fastBPE (C++,
  unmaintained, needs a compiler) and subword-nmt run the same algorithm: each word is split into
  characters with `</w>` on the last, then the adjacent pair of lowest merge rank is merged
  everywhere until none is left; so the codes are read as subword-nmt version-0.2 codes
  (tests/fixtures/imports/fastbpe: fastBPE's own output on 300 sentences, matched exactly).
- sentencepiece: fairseq's `--bpe sentencepiece`: the pieces joined by spaces; `▁` marks words.

subword-nmt was chosen over a hand-written merge loop: it is the reference implementation of the
papers' BPE, maintained, pure Python and small. Its own parser exits the process on a bad codes
line, so codes are checked here first and refused in one line.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Protocol

from convtrans.data.vocab import read_text_file
from convtrans.errors import UserError

BPE_KINDS = ("subword_nmt", "fastbpe", "sentencepiece")
MAX_CODES_BYTES = 64 << 20  # released codes files are ~1 MB (40k merges)
SEPARATOR = "@@"
SPM_SPACE = "\u2581"


class Splitter(Protocol):
    def encode(self, text: str) -> str: ...

    def decode(self, text: str) -> str: ...


def _codes_lines(path: Path, fields: int) -> list[str]:
    """The merge lines of a codes file (header dropped), each checked to have `fields` fields."""
    lines = read_text_file(path, "BPE codes file", MAX_CODES_BYTES).rstrip("\n").split("\n")
    first = 1 if lines and lines[0].startswith("#version:") else 0
    for number, line in enumerate(lines[first:], start=first + 1):
        if len(line.strip("\r\n ").split(" ")) != fields:
            kind = "subword-nmt codes ('left right')" if fields == 2 else "fastBPE codes ('left right count')"
            raise UserError(f"{path}:{number}: not a line of {kind}: {line[:60]!r}")
    return lines


class SubwordNmt:
    """subword-nmt BPE; `codes_text` is the codes file's content (version header included)."""

    def __init__(self, codes_text: str) -> None:
        from subword_nmt.apply_bpe import BPE

        self.bpe = BPE(io.StringIO(codes_text), separator=SEPARATOR)

    @classmethod
    def from_subword_nmt(cls, path: Path) -> SubwordNmt:
        return cls("\n".join(_codes_lines(path, 2)) + "\n")

    @classmethod
    def from_fastbpe(cls, path: Path) -> SubwordNmt:
        lines = _codes_lines(path, 3)
        return cls("#version: 0.2\n" + "".join(" ".join(line.split(" ")[:2]) + "\n" for line in lines))

    def encode(self, text: str) -> str:
        return self.bpe.process_line(text)

    def decode(self, text: str) -> str:
        """fairseq's remove_bpe: `@@ ` continuations joined."""
        return (text + " ").replace(SEPARATOR + " ", "").rstrip()


class SentencepieceBpe:
    """fairseq's sentencepiece 'BPE': pieces as space-separated tokens."""

    def __init__(self, path: Path) -> None:
        from convtrans.data.tokenize import load_sentencepiece

        self.sp = load_sentencepiece(path)

    def encode(self, text: str) -> str:
        return " ".join(self.sp.encode(text, out_type=str))

    def decode(self, text: str) -> str:
        return text.replace(" ", "").replace(SPM_SPACE, " ").strip()


def load_splitter(kind: str, path: Path) -> Splitter:
    """The splitter `kind` (one of BPE_KINDS) reading `path`."""
    if kind == "subword_nmt":
        return SubwordNmt.from_subword_nmt(Path(path))
    if kind == "fastbpe":
        return SubwordNmt.from_fastbpe(Path(path))
    if kind == "sentencepiece":
        return SentencepieceBpe(Path(path))
    raise UserError(f"unknown BPE {kind!r}; expected one of {', '.join(BPE_KINDS)}")
