"""Writing so that a failure, a signal or kill -9 never leaves something half-done that looks done.

Everything is built aside under a temporary name and renamed into place at the end. Temporary
names carry the writer's PID, so a later run can tell the leftovers of a killed process from the
live work of another one; a directory is swapped in with two renames and the old one removed last.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path


def temp_prefix(path: Path) -> str:
    """Name prefix of the temporary siblings of `path` written by this process: `.NAME.tmp-PID-`.

    The PID lets a later run tell the leftovers of a killed process (kill -9 runs no cleanup) from
    the live temporary files of a process still writing."""
    return f".{path.name}.tmp-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete `.NAME.tmp-PID-*` siblings of `path` whose process is gone; returns what was removed."""
    removed: list[Path] = []
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return removed
    for candidate in parent.glob(f".{path.name}.tmp-*"):
        pid_text = candidate.name[len(f".{path.name}.tmp-"):].split("-", 1)[0]
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        if candidate.is_dir() and not candidate.is_symlink():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


def new_file_mode(existing: Path) -> int:
    """The mode an ordinary `open(path, "w")` would give: the existing file's, else 0666 & ~umask."""
    try:
        return stat.S_IMODE(existing.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def replace_directory(new: Path, dest: Path) -> None:
    """Put the finished directory `new` at `dest`, replacing an existing one only at the very end
    (moved aside first, removed after the swap; a crash between the renames leaves it under its
    `.NAME.old-*` name, never half of each)."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}-{new.name}")
        dest.rename(old)
        new.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(dest)
