"""One cache for everything generated or Verilated: the mesh Verilog, the cocotb harness, the
plain C++ harness and the virtual board.

Every entry lives under :func:`sparktile.toolchain.cache_dir` and is keyed by a hash of what
went into it (Verilog text, C++ sources, flags, tool versions), so a change to any of those
makes a new entry and an unchanged configuration is built once per machine. A file lock makes
concurrent users (two pytest processes, a CLI run beside a test run) build an entry once.

The cache never trusts an entry blindly: each records a SHA-256 of its product (the generated
text, or the built executable) when it is made, and a reuse checks it. An entry that was
truncated, emptied or overwritten since is rebuilt with a one-line notice instead of failing on
every later run.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["locked", "key_of", "cached_text", "cached_build", "file_sha256", "notice"]


def notice(message: str) -> None:
    """One line on stderr, prefixed like every message of the build machinery."""
    print(f"[sparktile] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def locked(path: Path):
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` body."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fd:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def key_of(parts: Iterable[str | bytes], length: int = 20) -> str:
    """A hex key over ``parts`` (each separated, so ``("ab", "c")`` differs from ``("a",
    "bc")``)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\0")
    return h.hexdigest()[:length]


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file (memoized per process by path, size and modification time)."""
    st = path.stat()
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


def _text_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def cached_text(path: Path, produce: Callable[[], str]) -> str:
    """The text at ``path``; on first use ``produce()`` makes it, under a lock, written
    atomically beside its SHA-256 (``path.sha256``), so concurrent runs generate it once.

    A cached text whose hash does not match (truncated, edited, half-copied) is regenerated
    with a notice.
    """
    sidecar = path.with_name(path.name + ".sha256")

    def valid() -> str | None:
        try:
            text = path.read_text()
            want = sidecar.read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None
        return text if _text_sha(text) == want else None

    text = valid()
    if text is not None:
        return text
    with locked(path.with_suffix(".lock")):
        text = valid()
        if text is not None:
            return text
        if path.exists():
            notice(f"cached file {path} does not match its recorded hash (truncated or "
                   f"edited?); generating it again")
        text = produce()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        sidecar.write_text(_text_sha(text) + "\n")
    return text


def _stamp_ok(directory: Path, artifact: str) -> float | None:
    """The build seconds recorded by a complete, unaltered entry; None otherwise."""
    try:
        stamp = json.loads((directory / ".built").read_text())
        exe = directory / artifact
        if stamp["artifact"] == artifact and file_sha256(exe) == stamp["sha256"]:
            return float(stamp["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def cached_build(directory: Path, artifact: str, what: str,
                 build: Callable[[Path], None]) -> float:
    """Make sure ``directory/artifact`` is a complete build; returns the seconds the build
    took now (0.0 when a verified entry was found).

    ``build(directory)`` runs in an emptied ``directory`` under the entry's lock and must
    leave ``artifact`` there (raising on failure). Its SHA-256 goes into ``directory/.built``;
    an entry whose artifact no longer matches (or that has no stamp, or an unreadable one) is
    removed and built again, with a notice saying so.
    """
    if _stamp_ok(directory, artifact) is not None:
        return 0.0
    with locked(directory.with_suffix(".lock")):
        if _stamp_ok(directory, artifact) is not None:
            return 0.0
        if (directory / ".built").exists():
            notice(f"cache entry {directory} is corrupt ({artifact} does not match the hash "
                   f"recorded when it was built); rebuilding it")
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        t0 = time.monotonic()
        build(directory)
        exe = directory / artifact
        if not exe.is_file():
            raise FileNotFoundError(f"the build of {what} produced no {artifact} in {directory}")
        seconds = time.monotonic() - t0
        (directory / ".built").write_text(json.dumps(
            {"artifact": artifact, "sha256": file_sha256(exe), "seconds": round(seconds, 1)}
        ) + "\n")
        return seconds
