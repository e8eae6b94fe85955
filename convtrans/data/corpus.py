"""Reading raw corpora: plain or gzipped text files and JSON lines, validated line by line.

Every reader yields strings and raises `UserError` naming the file and line for input we cannot
use (invalid UTF-8, malformed JSON, a missing field), so a bad corpus fails in one readable line.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from convtrans.errors import UserError


def resolve(prefix: str | Path, suffix: str) -> Path:
    """The file `{prefix}.{suffix}`, or its gzipped twin `{prefix}.{suffix}.gz`."""
    plain = Path(f"{prefix}.{suffix}")
    for path in (plain, Path(f"{plain}.gz")):
        if path.is_file():
            return path
    raise UserError(f"file not found: {plain} (nor {plain}.gz)")


def _open_binary(path: Path) -> BinaryIO:
    """Open a file for reading bytes, transparently gunzipping `.gz` files; `-` is stdin."""
    if str(path) == "-":
        return contextlib.nullcontext(sys.stdin.buffer)  # type: ignore[return-value]  # never close stdin
    try:
        if path.suffix == ".gz":
            return gzip.open(path, "rb")  # type: ignore[return-value]  # a GzipFile is a binary file object
        return open(path, "rb")
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None


def read_lines(path: Path) -> Iterator[str]:
    """Yield the lines of a UTF-8 text file without their line ending.

    Decoding happens per line (not per file) so an error can name the line, and so files larger
    than memory stream through.
    """
    with _open_binary(path) as handle:
        try:
            for lineno, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise UserError(
                        f"{path}:{lineno}: invalid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})"
                    ) from None
                if lineno == 1 and line.startswith("\ufeff"):
                    line = line[1:]  # a UTF-8 byte order mark is not text
                yield line.rstrip("\r\n")
        except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as err:
            raise UserError(f"{path}: cannot decompress ({err})") from None


def read_jsonl_field(path: Path, field: str) -> Iterator[str]:
    """Yield one field of every record of a JSON-lines file (blank lines are skipped)."""
    for lineno, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{lineno}: invalid JSON ({err.msg})") from None
        if not isinstance(record, dict) or field not in record:
            fields = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise UserError(f"{path}:{lineno}: no field {field!r} (has: {fields})")
        value = record[field]
        if not isinstance(value, str):
            raise UserError(f"{path}:{lineno}: field {field!r} is {type(value).__name__}, not a string")
        yield value


def read_pairs(source: Iterator[str], target: Iterator[str], names: tuple[str, str]) -> Iterator[tuple[str, str]]:
    """Zip two sides of a parallel corpus, refusing sides of different lengths.

    The check happens when the shorter side runs out, so streaming is kept; the message gives
    both line counts.
    """
    count = 0
    while True:
        src = next(source, None)
        tgt = next(target, None)
        if src is None and tgt is None:
            return
        if src is None or tgt is None:
            longer = target if src is None else source
            extra = 1 + sum(1 for _ in longer)
            src_count, tgt_count = (count, count + extra) if src is None else (count + extra, count)
            raise UserError(
                f"line counts differ: {names[0]} has {src_count} lines, {names[1]} has {tgt_count}"
            )
        count += 1
        yield src, tgt


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (as stored, so a .gz is hashed compressed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(io.DEFAULT_BUFFER_SIZE * 16), b""):
            digest.update(block)
    return digest.hexdigest()
