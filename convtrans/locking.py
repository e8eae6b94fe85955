"""One writer per directory: an advisory lock that a second process is refused, with the PID.

Two `convtrans train` on one run directory would interleave metrics.jsonl and overwrite each
other's checkpoints; two `preprocess` on one --destdir would race to rename their work into
place. Each takes an exclusive `flock` on a lock file and writes its PID and command there, so
the second one fails at once with "... is in use by process 1234 (convtrans train)".

`flock` locks belong to the open file: the kernel drops them when the holder exits, kill -9
included, so a crashed run never leaves a stale lock (its small lock file stays until the next
run). A clean exit deletes the file while still holding the lock; a process that opened the old
file just then notices its inode is gone from the path and locks the new file instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from convtrans.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; directories are not guarded
    fcntl = None  # type: ignore[assignment]  # the module is optional on this platform


class DirectoryLock:
    """`with DirectoryLock(lock_file, guarded, purpose):` holds the lock for the body."""

    def __init__(self, lock_file: Path, guarded: Path, purpose: str) -> None:
        self.lock_file, self.guarded, self.purpose = Path(lock_file), Path(guarded), purpose
        self._fd: int | None = None

    def __enter__(self) -> DirectoryLock:
        if fcntl is None:
            return self
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                raise UserError(f"{self.guarded} is in use by process {holder}; wait for it to finish or stop it") from None
            if self._still_the_lock_file(fd):
                break
            os.close(fd)  # the holder removed the file as we opened it: lock the new one instead
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} ({self.purpose})\n".encode())
        self._fd = fd
        return self

    def _still_the_lock_file(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.lock_file).st_ino
        except FileNotFoundError:
            return False

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.lock_file)  # removed while still held; a waiter re-checks the inode (above)
        except OSError:
            pass
        os.close(self._fd)  # closing releases the flock
        self._fd = None


def run_dir_lock(run_dir: Path) -> DirectoryLock:
    """The lock of a training run directory (the file `.lock` inside it)."""
    return DirectoryLock(Path(run_dir) / ".lock", run_dir, "convtrans train")


def data_dir_lock(destdir: Path) -> DirectoryLock:
    """The lock of a data directory being built. The directory itself is replaced by a rename at
    the end, so its lock lives beside it (`.NAME.lock`) where the rename cannot move it."""
    resolved = Path(destdir).resolve()
    return DirectoryLock(resolved.with_name(f".{resolved.name}.lock"), destdir, "convtrans preprocess")
