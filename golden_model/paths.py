"""Files a checkpoint names must lie inside the checkpoint: resolve, then check.

A checkpoint's ``config.json`` (the tokenizer file) and a sharded index (the shard files)
name other files. A checkpoint is untrusted input, so a name like ``../../../../etc/passwd``
or an absolute path must not make the loader read outside the folder; the name is resolved
(symbolic links included) and refused unless it stays below the folder.
"""

from __future__ import annotations

from pathlib import Path

from .errors import CheckpointError, CheckpointNotFound

__all__ = ["inside", "expand_home"]


def expand_home(path) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded, as a shell does; a ``~name`` of no
    user is kept as it is (where :meth:`pathlib.Path.expanduser` raises RuntimeError)."""
    p = Path(path)
    try:
        return p.expanduser()
    except RuntimeError:
        return p


def inside(folder, name, what: str) -> Path:
    """``folder / name``, resolved, if it is an existing file inside ``folder``.

    Parameters
    ----------
    folder : str or os.PathLike
        The checkpoint folder.
    name : str
        The file name as the checkpoint gives it.
    what : str
        Where the name came from, for the message (``"config.json: tokenizer"``).

    Raises
    ------
    CheckpointError
        If ``name`` is not a non-empty string or leads outside ``folder``.
    CheckpointNotFound
        If it stays inside but the file does not exist.
    """
    if not isinstance(name, str) or not name or "\0" in name:
        raise CheckpointError(f"{what} must be a file name inside the checkpoint folder, "
                              f"not {name!r:.100}")
    root = Path(folder).resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or path == root:
        raise CheckpointError(f"{what} {name!r:.200} points outside the checkpoint folder "
                              f"{root}; a checkpoint may only name files inside it")
    if not path.is_file():
        raise CheckpointNotFound(f"{what} {name!r:.200}: no such file in {root}")
    return path
