"""The golden model's user errors: a bad checkpoint, config, tokenizer or data folder.

Everything the loaders refuse raises :class:`CheckpointError`, a
:class:`sparktile.errors.UserError`, so that ``sparktile generate``, ``eval`` and ``run``
print it as one line and exit 2 instead of a traceback. It also derives from
:class:`ValueError` (and :class:`CheckpointNotFound` and :class:`DataError` from
:class:`FileNotFoundError`), so
code and tests written against the builtin exceptions keep working.
"""

from __future__ import annotations

from sparktile.errors import UserError

__all__ = ["CheckpointError", "CheckpointNotFound", "DataError", "GenerationError"]


class CheckpointError(UserError, ValueError):
    """A model file or folder that cannot be used: the message names the file, the field or
    tensor, the bad value and what is allowed."""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """A model path, or a file a checkpoint needs, that does not exist."""


class DataError(UserError, FileNotFoundError):
    """An evaluation data folder that cannot be used (missing, or no ``.py`` file)."""


class GenerationError(UserError, ValueError):
    """A request the model cannot serve as asked: a prompt too long for its context, a token
    id outside its vocabulary, sampling parameters out of range, a mode whose number formats
    cannot hold this model."""
