"""Output files of the simulation commands: checked before the run, never lost after it.

A simulation can run for minutes or hours; a report path that turns out to be unwritable only
when the run is over throws all of that away. So every output a command will write (``--json``,
``--waves``, ``verilog -o``) is checked by :func:`check_output` *before* anything is built or
simulated, and the report itself is written by :func:`save_text`: to a temporary file in the
same folder, then renamed over the target (a reader never sees half a report, a crash never
leaves one), and, if even that fails (the disk filled, the folder vanished during the run), to
a file in the temporary directory whose path the error names.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

from .errors import UserError
from .golden_model.paths import expand_home

__all__ = ["check_output", "save_text", "save_json"]


def check_output(path: str | os.PathLike, option: str) -> Path:
    """Fail now, with a :class:`UserError` naming ``option`` and ``path``, unless a file can
    be written at ``path``: its folder exists and is writable, and ``path`` is not a folder
    (an existing file is replaced). Parents are not created: a typo in a folder name is more
    likely than a wish for a new folder, and the error says which folder is missing.

    Returns the path, absolute (the simulator runs in another working directory).
    """
    shown = os.fspath(path)
    if not shown.strip():
        raise UserError(f"{option}: the file name is empty")
    if "\0" in shown:
        raise UserError(f"{option} {shown!r}: a file name cannot contain a NUL byte")
    p = expand_home(path).absolute()
    parent = p.parent
    if p.is_dir():
        raise UserError(f"{option} {shown!r} is a folder; give a file name inside it")
    if not parent.exists():
        raise UserError(f"{option} {shown!r}: the folder {str(parent)!r} does not exist "
                        f"(create it first)")
    if not parent.is_dir():
        raise UserError(f"{option} {shown!r}: {str(parent)!r} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{option} {shown!r}: the folder {str(parent)!r} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise UserError(f"{option} {shown!r}: the file exists and is not writable")
    return p


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)      # mkstemp makes 0600; a report is an ordinary file
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_text(path: str | os.PathLike, text: str, what: str = "report") -> Path:
    """Write ``text`` to ``path`` atomically; returns the path written.

    Raises
    ------
    UserError
        When ``path`` cannot be written even now; the text was then saved in the temporary
        directory, and the message says where (or, if that failed too, that it is lost).
    """
    path = Path(path).expanduser().absolute()
    try:
        _write_atomic(path, text)
        return path
    except OSError as exc:
        reason = exc.strerror or str(exc)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    fd, fallback = tempfile.mkstemp(prefix=f"sparktile-{stamp}-", suffix=f"-{path.name}")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
    except OSError as exc2:
        raise UserError(f"could not write the {what} to {str(path)!r} ({reason}), nor to "
                        f"{fallback!r} ({exc2.strerror or exc2})") from None
    raise UserError(f"could not write the {what} to {str(path)!r} ({reason}); it was saved "
                    f"to {fallback!r} instead")


def save_json(path: str | os.PathLike, data: dict) -> Path:
    """:func:`save_text` of ``data`` as indented JSON."""
    return save_text(path, json.dumps(data, indent=2) + "\n", "JSON report")
