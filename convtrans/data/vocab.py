"""Token vocabularies of imported models: fairseq's `dict.xx.txt` and Marian's `vocab.json`.

Both map whitespace-free subword strings to the row of the embedding they index, so the ids must
come out exactly as the original toolkit numbers them:

- fairseq's Dictionary starts with `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3 and appends each line
  `token count [#fairseq:overwrite]` of the file in order (the specials are not in the file; a
  line flagged `#fairseq:overwrite` may repeat a symbol, which keeps its first id).
- Marian's vocab.json is an object `{piece: id}` (OPUS-MT: `</s>`=0, `<unk>`=1, `<pad>` last).

The files are someone else's data: a size cap keeps a wrong path (a checkpoint, /dev/zero) from
being read whole, and a malformed line is refused with its number.
"""

from __future__ import annotations

import json
from pathlib import Path

from convtrans.errors import UserError

# The largest released vocabularies are ~250k entries (a few MB); past this a file is not one.
MAX_VOCAB_BYTES = 64 << 20
FAIRSEQ_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
OVERWRITE_FLAG = "#fairseq:overwrite"


def read_text_file(path: Path, what: str, max_bytes: int = MAX_VOCAB_BYTES) -> str:
    """A small UTF-8 file someone else wrote (a vocabulary, BPE codes), refused in one line naming
    `what` if it is missing, not a regular file, over `max_bytes` or not UTF-8."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    if not path.is_file():
        raise UserError(f"{path}: the {what} is not a regular file")
    if size > max_bytes:
        raise UserError(f"{path}: {size:,} bytes is too large for a {what} (at most {max_bytes:,})")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: the {what} is not UTF-8 text") from None


class Vocabulary:
    """Symbols by id and ids by symbol, with the ids of the specials an imported model uses."""

    def __init__(self, symbols: list[str], unk_id: int, path: Path) -> None:
        self.symbols, self.unk_id, self.path = symbols, unk_id, path
        # a repeated symbol (fairseq's #fairseq:overwrite) encodes to its last id, as in fairseq
        self.index = {symbol: i for i, symbol in enumerate(symbols)}

    def __len__(self) -> int:
        return len(self.symbols)

    def ids(self, tokens: list[str]) -> list[int]:
        """The id of each token, unk for tokens outside the vocabulary."""
        return [self.index.get(token, self.unk_id) for token in tokens]

    def id_of(self, symbol: str) -> int:
        if symbol not in self.index:
            raise UserError(f"{self.path}: the vocabulary has no {symbol!r}")
        return self.index[symbol]


def read_fairseq_dictionary(path: Path) -> Vocabulary:
    """A fairseq `dict.xx.txt` as fairseq's Dictionary numbers it (specials 0-3 first)."""
    path = Path(path)
    symbols = list(FAIRSEQ_SPECIALS)
    seen = set(symbols)
    for number, line in enumerate(read_text_file(path, "fairseq dictionary").splitlines(), start=1):
        fields = line.rstrip().rsplit(" ", 1)
        overwrite = False
        if len(fields) == 2 and fields[1] == OVERWRITE_FLAG:
            overwrite = True
            fields = fields[0].rsplit(" ", 1)
        if len(fields) != 2 or not fields[0] or not fields[1].lstrip("-").isdigit():
            raise UserError(f"{path}:{number}: not a fairseq dictionary line ('<token> <count>'): {line[:60]!r}")
        symbol = fields[0]
        if symbol in seen and not overwrite:
            raise UserError(f"{path}:{number}: {symbol!r} appears twice (fairseq refuses this dictionary too)")
        seen.add(symbol)
        symbols.append(symbol)
    return Vocabulary(symbols, unk_id=FAIRSEQ_SPECIALS.index("<unk>"), path=path)


def read_marian_vocab(path: Path, unk: str = "<unk>") -> Vocabulary:
    """A Marian/OPUS-MT vocab.json: {piece: id}, ids 0..n-1 each used once."""
    path = Path(path)
    try:
        mapping = json.loads(read_text_file(path, "Marian vocabulary"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not a JSON vocabulary ({err.msg} at line {err.lineno})") from None
    if not isinstance(mapping, dict) or not all(isinstance(i, int) for i in mapping.values()):
        raise UserError(f"{path}: a Marian vocabulary is a JSON object of piece -> integer id")
    symbols = [""] * len(mapping)
    for piece, i in mapping.items():
        if not 0 <= i < len(mapping) or symbols[i]:
            raise UserError(f"{path}: ids must be 0..{len(mapping) - 1}, each once (id {i} of {piece!r})")
        symbols[i] = piece
    if unk not in mapping:
        raise UserError(f"{path}: the vocabulary has no {unk!r}")
    return Vocabulary(symbols, unk_id=mapping[unk], path=path)
