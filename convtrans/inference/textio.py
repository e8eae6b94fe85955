"""Line-oriented input and output for translate / summarize: streaming in, atomic files out.

Input is read as a stream and cut into chunks: from a pipe or terminal a chunk ends as soon as no
more input is waiting (so an interactive user gets each answer at once), from a file every
`window` lines. Output goes to stdout flushed per chunk, or to a file written aside and renamed
into place at the end, so a failed run never leaves a truncated file that looks complete.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TextIO

from convtrans.atomic import new_file_mode, remove_stale_temps, temp_prefix
from convtrans.data.corpus import read_jsonl_field, read_lines
from convtrans.errors import StdoutClosed, UserError, describe_os_error


def input_lines(path: Path | None, jsonl_field: str | None = None) -> Iterator[str]:
    """Lines of a file (.gz ok) or of stdin (path None or '-'); with `jsonl_field`, that field of
    each JSON record."""
    source = Path("-") if path is None else Path(path)
    return read_jsonl_field(source, jsonl_field) if jsonl_field else read_lines(source)


def stdin_has_data() -> bool:
    """Whether more of stdin can be read without waiting (for `chunks`' interactive mode)."""
    try:
        ready, _, _ = select.select([sys.stdin], [], [], 0)
    except (OSError, ValueError, TypeError):  # not a real file descriptor (e.g. under a test runner)
        return True
    return bool(ready)


def chunks(lines: Iterable[str], window: int, more_waiting: Callable[[], bool] | None = None) -> Iterator[list[str]]:
    """Cut a line stream into lists of at most `window` lines; with `more_waiting`, also end a
    chunk whenever it says no further input is waiting."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= window or (more_waiting is not None and not more_waiting()):
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ---------------------------------------------------------------------- output
class OutputSink:
    """stdout (flushed per write) or a file replaced atomically on success.

    A file output is checked when the sink is made (before any work): it may not be a directory
    and its folder must be writable. It is written to a temporary sibling that is removed on any
    failure and renamed over the target on success, keeping the target's mode (or the umask's
    for a new file).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._tmp_name: str | None = None
        if self.path is None:
            self.handle: TextIO = sys.stdout
            return
        if self.path.is_dir():
            raise UserError(f"--output {self.path} is a directory; give a file name")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.path)
            fd, self._tmp_name = tempfile.mkstemp(prefix=temp_prefix(self.path), dir=self.path.parent)
            os.fchmod(fd, new_file_mode(self.path))
        except OSError as err:
            raise UserError(describe_os_error(err, f"write {self.path}")) from None
        self.handle = os.fdopen(fd, "w", encoding="utf-8", newline="\n")

    def write_lines(self, lines: Iterable[str]) -> None:
        try:
            self.handle.write("".join(line + "\n" for line in lines))
            self.handle.flush()
        except BrokenPipeError:
            raise
        except OSError as err:
            raise UserError(describe_os_error(err, f"write {self.path or 'to stdout'}")) from None

    def __enter__(self) -> OutputSink:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if self.path is None:
            return
        assert self._tmp_name is not None
        failure: OSError | None = None
        try:
            self.handle.close()  # flushes: a full disk may only show here
        except OSError as err:
            failure = err
        if exc_type is None and failure is None:
            try:
                os.replace(self._tmp_name, self.path)
                return
            except OSError as err:
                failure = err
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp_name)
        if exc_type is None and failure is not None:
            raise UserError(describe_os_error(failure, f"write {self.path}")) from None


@contextlib.contextmanager
def stop_when_stdout_closes() -> Iterator[None]:
    """While the body runs, a closed stdout pipe (the reader of `| head -1` exited) raises
    StdoutClosed in the main thread at once, instead of when the next result is written: the
    work of translating the rest of the input is wasted, so it stops.

    A watcher thread polls stdout for POLLERR/POLLHUP (what a pipe reports once its reader is
    gone) and sends SIGPIPE to the main thread; its handler raises. A real signal (not just a
    flag) also interrupts a main thread blocked reading stdin. Does nothing unless stdout is a
    pipe and this is the main thread.
    """
    try:
        fd = sys.stdout.fileno()
        is_pipe = stat.S_ISFIFO(os.fstat(fd).st_mode)
    except (OSError, ValueError, AttributeError):  # not a real file (a test runner's buffer)
        is_pipe = False
    if not is_pipe or threading.current_thread() is not threading.main_thread() or not hasattr(select, "poll"):
        yield
        return

    fired = False

    def broken_pipe(signum: int, frame: object) -> None:  # noqa: ARG001 - signal handler signature
        # once only: the kernel's SIGPIPE (a write hit the closed pipe) and the watcher's can both
        # arrive, and a second raise inside the first one's cleanup would escape as a traceback
        nonlocal fired
        if not fired:
            fired = True
            raise StdoutClosed

    previous = signal.signal(signal.SIGPIPE, broken_pipe)
    finished = threading.Event()
    main_id = threading.main_thread().ident
    assert main_id is not None

    def watch() -> None:
        poller = select.poll()
        poller.register(fd, 0)  # no events asked: POLLERR / POLLHUP / POLLNVAL are always reported
        while not finished.is_set():
            if poller.poll(100):
                if not finished.is_set():
                    signal.pthread_kill(main_id, signal.SIGPIPE)
                return

    watcher = threading.Thread(target=watch, name="stdout-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        finished.set()
        signal.signal(signal.SIGPIPE, previous)  # first: a signal still on its way finds the old handler
        watcher.join()
