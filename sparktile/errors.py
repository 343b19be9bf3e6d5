"""The one error type a user sees as a message rather than a traceback.

Every command of the ``sparktile`` CLI runs inside :func:`sparktile.cli.main`, which turns a
:class:`UserError` into one line on stderr (``error: ...``) and exit status 2. Anything else that
escapes is an internal bug and keeps its traceback, so that it gets reported and fixed rather
than hidden.

The domain errors that are the user's to fix (a bad checkpoint, a mesh the model does not fit,
a board that answers garbage, a physically meaningless hardware field, ...) derive from
:class:`UserError`; their messages name the bad value and what is allowed.
"""

from __future__ import annotations

__all__ = ["UserError", "EXIT_USER_ERROR", "one_line"]

#: Exit status of a command that stopped on a user error (click's own usage errors use 2 too).
EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input: an argument, a file, a checkpoint, a board's reply. The message is shown
    to the user as it is, on one line; it names the bad value and what is allowed."""


def one_line(message: object, limit: int = 2000) -> str:
    """``message`` on one line (newlines become ``" | "``), at most ``limit`` characters."""
    text = " | ".join(part.strip() for part in str(message).splitlines() if part.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."
