"""The exceptions the CLI turns into a one-line message and an exit status, never a traceback.

Library code raises `UserError` for problems with what the user gave it (missing or malformed
files, refused overwrites, invalid options, a model too large for this machine); an `OSError`
from the operating system (disk full, permission denied) is described in one line too. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException (like KeyboardInterrupt), so no `except Exception` in a
    library swallows it, while `finally` blocks and context managers still clean up."""


class StdoutClosed(BaseException):
    """The reader of our stdout went away (`| head -1`). A BaseException, not a BrokenPipeError: it
    is raised asynchronously (textio.stop_when_stdout_closes) wherever the main thread happens to
    be, and must not be mistaken for an error of the file being read there."""


def describe_os_error(err: OSError, action: str = "") -> str:
    """One line for an OSError: what failed, on which file, and the system's reason.

    `action` says what we were doing ("write data directory data-bin/x") when the error carries
    no file name, as writes to an open file (disk full) do not.
    """
    reason = err.strerror or str(err) or type(err).__name__
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        reason += " (free some space and run the command again)"
    where = err.filename if err.filename is not None else None
    if action and where is not None:
        return f"cannot {action}: {reason}: {where}"
    if action:
        return f"cannot {action}: {reason}"
    return f"{reason}: {where}" if where is not None else reason


def as_os_error(err: Exception) -> OSError | None:
    """The OSError inside an exception from a native writer (safetensors, torch), if it names one.

    safetensors reports `I/O error: No space left on device (os error 28)` as a SafetensorError;
    this recovers errno 28 so the message is the same as for a Python write.
    """
    import re

    if isinstance(err, OSError):
        return err
    match = re.search(r"\(os error (\d+)\)", str(err))
    if match is None:
        return None
    code = int(match.group(1))
    import os

    return OSError(code, os.strerror(code))
