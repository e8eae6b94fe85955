"""A preprocessed data directory (the output of `convtrans preprocess`), opened for reading.

Opening reads manifest.json and memory-maps splits on demand, so it costs O(1) memory.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from convtrans.data.binarize import TokenArray
from convtrans.data.tokenize import SubwordTokenizer, TextProcessor
from convtrans.errors import UserError

# side and split names become file names (`{split}.{side}.bin`): no separators, no leading dot
_SIMPLE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass
class ParallelSplit:
    """Source and target token arrays of one split, line-aligned."""

    name: str
    src: TokenArray
    tgt: TokenArray

    def __len__(self) -> int:
        return len(self.src)


class DataDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest = self.path / "manifest.json"
        if not manifest.is_file():
            raise UserError(f"{self.path} is not a convtrans data directory (no manifest.json); run `convtrans preprocess`")
        try:
            self.manifest = json.loads(manifest.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{manifest}: unreadable manifest ({err})") from None
        self.source_lang: str = self.manifest["source_lang"]
        self.target_lang: str = self.manifest["target_lang"]
        self.task: str = self.manifest.get("task", "translation")
        for name in (self.source_lang, self.target_lang, *self.manifest["splits"]):
            if not isinstance(name, str) or not _SIMPLE_NAME.fullmatch(name):
                raise UserError(f"{manifest}: {name!r} is not a plain side or split name")

    @property
    def splits(self) -> list[str]:
        return list(self.manifest["splits"])

    def split(self, name: str) -> ParallelSplit:
        if name not in self.manifest["splits"]:
            raise UserError(f"{self.path} has no {name!r} split (has: {', '.join(self.splits)})")
        return ParallelSplit(name, TokenArray(self.path / f"{name}.{self.source_lang}"),
                             TokenArray(self.path / f"{name}.{self.target_lang}"))

    def tokenizer_file(self, side: str) -> Path:
        from convtrans.checkpoint import member

        return member(self.path, self.manifest["tokenizers"][side]["model"])

    @cached_property
    def tokenizers(self) -> dict[str, SubwordTokenizer]:
        return {side: SubwordTokenizer(self.tokenizer_file(side)) for side in (self.source_lang, self.target_lang)}

    def text_processor(self, side: str) -> TextProcessor:
        return TextProcessor(**self.manifest["text"][side])

    def vocab_sizes(self) -> tuple[int, int]:
        sizes = self.manifest["tokenizers"]
        return sizes[self.source_lang]["size"], sizes[self.target_lang]["size"]

    def special_ids(self) -> dict[str, int]:
        """pad/unk/bos/eos ids; both sides agree (preprocess trains them so)."""
        ids = [self.manifest["tokenizers"][side]["special_ids"] for side in (self.source_lang, self.target_lang)]
        if ids[0] != ids[1]:
            raise UserError(f"{self.path}: source and target tokenizers disagree on special ids ({ids[0]} vs {ids[1]})")
        return ids[0]
