"""Token arrays on disk: every sequence of a split concatenated in `.bin`, offsets in `.idx`.

`.idx` layout: 8-byte magic, 8-byte dtype name (ASCII, NUL-padded), then N+1 little-endian
int64 offsets (in tokens) into `.bin`. Both files are memory-mapped on load, so opening a split
costs O(1) memory whatever the corpus size; sequence i is `bin[offsets[i]:offsets[i+1]]`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from convtrans.errors import UserError

MAGIC = b"CVTIDX01"
_HEADER_BYTES = 16
_DTYPES = ("uint16", "int32")


def dtype_for_vocab(vocab_size: int) -> str:
    """The smallest supported dtype holding every id of a vocabulary."""
    return "uint16" if vocab_size <= np.iinfo(np.uint16).max + 1 else "int32"


class TokenArrayWriter:
    """Appends sequences to `{prefix}.bin` and writes `{prefix}.idx` on close."""

    def __init__(self, prefix: Path, dtype: str) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        self.prefix = Path(prefix)
        self.dtype = np.dtype(dtype)
        self._bin = open(f"{self.prefix}.bin", "wb")
        self._offsets = [0]

    def add(self, sequences: Iterable[Sequence[int]]) -> None:
        for seq in sequences:
            array = np.asarray(seq, dtype=self.dtype)
            self._bin.write(array.astype(self.dtype.newbyteorder("<"), copy=False).tobytes())
            self._offsets.append(self._offsets[-1] + len(array))

    def close(self) -> None:
        self._bin.close()
        with open(f"{self.prefix}.idx", "wb") as idx:
            idx.write(MAGIC + self.dtype.name.encode("ascii").ljust(8, b"\0"))
            idx.write(np.asarray(self._offsets, dtype="<i8").tobytes())

    def __enter__(self) -> TokenArrayWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TokenArray:
    """Read-only, memory-mapped view of a binarized split side."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = Path(prefix)
        idx_path, bin_path = Path(f"{self.prefix}.idx"), Path(f"{self.prefix}.bin")
        for path in (idx_path, bin_path):
            if not path.is_file():
                raise UserError(f"missing token array file: {path}")
        with open(idx_path, "rb") as handle:
            header = handle.read(_HEADER_BYTES)
        if len(header) < _HEADER_BYTES or header[:8] != MAGIC:
            raise UserError(f"{idx_path}: not a convtrans index file")
        dtype_name = header[8:].rstrip(b"\0").decode("ascii", errors="replace")
        if dtype_name not in _DTYPES:
            raise UserError(f"{idx_path}: unsupported token dtype {dtype_name!r}")
        self.dtype = np.dtype(dtype_name).newbyteorder("<")
        self.offsets = np.memmap(idx_path, dtype="<i8", mode="r", offset=_HEADER_BYTES)
        n_tokens = int(self.offsets[-1])
        if os.path.getsize(bin_path) != n_tokens * self.dtype.itemsize:
            raise UserError(f"{bin_path}: size does not match its index (truncated or corrupted)")
        # np.memmap cannot map an empty file; an empty split is a valid (if useless) split.
        self.tokens = np.memmap(bin_path, dtype=self.dtype, mode="r") if n_tokens else np.empty(0, self.dtype)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sequence {i} out of range for {len(self)} sequences")
        i %= len(self)
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        """Length in tokens of every sequence (an int64 array of len(self); O(N) memory)."""
        return np.diff(self.offsets)

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])
