"""Text ↔ token ids: optional Moses normalization/tokenization, then sentencepiece subwords.

The same `TextProcessor` runs at preprocess time and at translate time (its options are saved in
the data manifest and the checkpoint), so training and inference see identically prepared text.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from convtrans.errors import UserError

# The special ids every convtrans sentencepiece model uses (fixed at training time below).
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
# sentencepiece reads a model whole into memory; the largest published ones (mT5's 250k pieces)
# are a few MB, so a file past this is not a subword model and is refused before reading.
MAX_SPM_BYTES = 256 << 20


def normalize_whitespace(text: str) -> str:
    """Collapse every run of Unicode whitespace (tabs, newlines, U+2028, ...) to one space.

    Documents such as dialogues carry newlines; one example must stay one line on disk and in
    sentencepiece's line-based trainer.
    """
    return " ".join(text.split())


@dataclass(frozen=True)
class TextProcessor:
    """Language-specific preparation around the subword model.

    `moses` applies sacremoses punctuation normalization and tokenization before subwords and
    Moses detokenization after decoding; `lowercase` lowercases the input.
    """

    lang: str
    moses: bool = False
    lowercase: bool = False

    @cached_property
    def _moses(self):  # noqa: ANN202 - sacremoses has no type hints
        import sacremoses

        return (
            sacremoses.MosesPunctNormalizer(lang=self.lang),
            sacremoses.MosesTokenizer(lang=self.lang),
            sacremoses.MosesDetokenizer(lang=self.lang),
        )

    def pre(self, text: str) -> str:
        """Raw text → the text sentencepiece sees."""
        text = normalize_whitespace(text)
        if self.moses and text:
            normalizer, tokenizer, _ = self._moses
            text = tokenizer.tokenize(normalizer.normalize(text), return_str=True, escape=False)
        if self.lowercase:
            text = text.lower()
        return text

    def post(self, text: str) -> str:
        """Decoded sentencepiece text → text for the user."""
        if self.moses and text:
            _, _, detokenizer = self._moses
            text = detokenizer.detokenize(text.split())
        return text


def train_sentencepiece(
    inputs: Sequence[Path],
    model_prefix: Path,
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    threads: int = 1,
    max_sentences: int = 5_000_000,
) -> Path:
    """Train a sentencepiece model on text files (one example per line); returns the .model path.

    `hard_vocab_limit=False` lets a small corpus yield a smaller vocabulary instead of failing;
    the random seed is fixed so the same inputs give a byte-identical model.
    """
    import io

    import sentencepiece as spm

    def sentences() -> Iterator[str]:
        for path in inputs:
            with open(path, encoding="utf-8", newline="\n") as handle:
                yield from (line.rstrip("\n") for line in handle)

    # Sentences are streamed in and the model is written to memory rather than passing paths:
    # sentencepiece stores its input and output paths inside the model, which would make the
    # bytes depend on where preprocess ran.
    model = io.BytesIO()
    spm.set_random_generator_seed(1)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=sentences(),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            hard_vocab_limit=False,
            input_sentence_size=max_sentences,
            shuffle_input_sentence=True,
            num_threads=threads,
            minloglevel=2,
        )
    except RuntimeError as err:
        raise UserError(f"sentencepiece training failed: {str(err).strip().splitlines()[-1]}") from None
    path = Path(f"{model_prefix}.model")
    path.write_bytes(model.getvalue())
    return path


def load_sentencepiece(model_path: Path):  # noqa: ANN201 - sentencepiece has no type hints
    """A SentencePieceProcessor for a model file, refused in one line if it is not one (or huge)."""
    import sentencepiece as spm

    path = Path(model_path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{path}: not a regular file (a sentencepiece model is read whole)")
    if info.st_size > MAX_SPM_BYTES:
        raise UserError(f"{path}: {info.st_size:,} bytes is too large for a sentencepiece model "
                        f"(at most {MAX_SPM_BYTES:,})")
    sp = spm.SentencePieceProcessor()
    try:
        sp.load(str(path))
    except (OSError, RuntimeError):
        raise UserError(f"{path}: not a sentencepiece model") from None
    return sp


class SubwordTokenizer:
    """A sentencepiece model with the ids convtrans needs (pad, unk, bos, eos)."""

    def __init__(self, model_path: Path) -> None:
        self.path = Path(model_path)
        self.sp = load_sentencepiece(self.path)
        ids = {"pad": self.sp.pad_id(), "unk": self.sp.unk_id(), "bos": self.sp.bos_id(), "eos": self.sp.eos_id()}
        missing = [name for name, value in ids.items() if value < 0]
        if missing:
            raise UserError(
                f"{self.path}: sentencepiece model defines no {'/'.join(missing)} piece; "
                f"train it with --pad_id={PAD_ID} --unk_id={UNK_ID} --bos_id={BOS_ID} --eos_id={EOS_ID}"
            )
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = ids["pad"], ids["unk"], ids["bos"], ids["eos"]

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, lines: Sequence[str], threads: int = 1) -> list[list[int]]:
        """Subword ids of each line (no bos/eos; the model adds those)."""
        return self.sp.encode(list(lines), out_type=int, num_threads=threads)

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode(list(ids))

    def vocab_text(self) -> str:
        """The vocabulary as `piece<TAB>score` lines, sentencepiece's .vocab format."""
        return "".join(f"{self.sp.id_to_piece(i)}\t{self.sp.get_score(i):g}\n" for i in range(len(self)))
