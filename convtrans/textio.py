"""Line-oriented input and output for translate / summarize: streaming in, atomic files out.

Input is read as a stream and cut into chunks: from a pipe or terminal a chunk ends as soon as no
more input is waiting (so an interactive user gets each answer at once), from a file every
`window` lines. Output goes to stdout flushed per chunk, or to a file written aside and renamed
into place at the end, so a failed run never leaves a truncated file that looks complete.
"""

from __future__ import annotations

import os
import select
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from convtrans.data.corpus import read_jsonl_field, read_lines


def input_lines(path: Path | None, jsonl_field: str | None = None) -> Iterator[str]:
    """Lines of a file (.gz ok) or of stdin (path None or '-'); with `jsonl_field`, that field of
    each JSON record."""
    source = Path("-") if path is None else Path(path)
    return read_jsonl_field(source, jsonl_field) if jsonl_field else read_lines(source)


def _stdin_has_data() -> bool:
    try:
        ready, _, _ = select.select([sys.stdin], [], [], 0)
    except (OSError, ValueError, TypeError):  # not a real file descriptor (e.g. under a test runner)
        return True
    return bool(ready)


def chunks(lines: Iterable[str], window: int, interactive: bool) -> Iterator[list[str]]:
    """Cut a line stream into lists of at most `window` lines; when `interactive`, also end a chunk
    whenever no further input is waiting."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= window or (interactive and not _stdin_has_data()):
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class OutputSink:
    """stdout (flushed per write) or a file replaced atomically on success."""

    def __init__(self, path: Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._tmp_name: str | None = None
        if self.path is None:
            self.handle: TextIO = sys.stdout
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, self._tmp_name = tempfile.mkstemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent)
            self.handle = os.fdopen(fd, "w", encoding="utf-8", newline="\n")

    def write_lines(self, lines: Iterable[str]) -> None:
        self.handle.write("".join(line + "\n" for line in lines))
        self.handle.flush()

    def __enter__(self) -> OutputSink:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if self.path is None:
            return
        self.handle.close()
        assert self._tmp_name is not None
        if exc_type is None:
            os.replace(self._tmp_name, self.path)
        else:
            os.unlink(self._tmp_name)
