"""The one exception type the CLI turns into a one-line message and a non-zero exit.

Library code raises `UserError` for problems with what the user gave it (missing or malformed
files, refused overwrites, invalid options); anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""
