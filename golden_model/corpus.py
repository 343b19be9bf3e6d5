"""The training corpus of the shipped code model: CPython's standard library source.

Every Python installation carries its standard library as ``.py`` files (``Lib/`` in the
CPython tree), so the corpus needs no download. It is licensed under the PSF License
Agreement (Python Software Foundation License Version 2), which permits use, modification
and redistribution, including derived works such as trained weights; the shipped model is
such a derived work and says so in its ``config.json``.

The split is by whole file: a file is *held out* (never seen in training, used for the
bits-per-byte figures) when ``sha256(f"{seed}:{relative_path}")`` falls in the first
``fraction`` of the hash range. Hashing the path, not shuffling a list, keeps the split of
each file the same whatever other files an installation has.
"""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path

__all__ = ["SPLIT_SEED", "HELDOUT_FRACTION", "stdlib_root", "stdlib_files", "is_heldout",
           "split_files"]

#: Seed of the held-out split used for the shipped model.
SPLIT_SEED = 0
#: Share of files held out.
HELDOUT_FRACTION = 0.05

# Test suites are mostly unusual bytes (encodings, fuzz inputs): not representative code.
_SKIP_DIRS = {"site-packages", "test", "tests", "idle_test", "__pycache__"}


def stdlib_root() -> Path:
    """The folder of the running interpreter's standard library source."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root=None) -> list[str]:
    """Relative paths (POSIX) of the standard library's ``.py`` files, sorted.

    Files under ``site-packages``, ``test``, ``tests`` and ``idle_test`` are left out.
    """
    root = Path(root) if root is not None else stdlib_root()
    if not root.is_dir():
        raise FileNotFoundError(f"standard library folder {root} not found")
    out = []
    for p in root.rglob("*.py"):
        rel = p.relative_to(root)
        if _SKIP_DIRS.intersection(rel.parts[:-1]):
            continue
        out.append(rel.as_posix())
    return sorted(out)


def is_heldout(relpath: str, seed: int = SPLIT_SEED,
               fraction: float = HELDOUT_FRACTION) -> bool:
    """Whether the file at ``relpath`` belongs to the held-out set of split ``seed``."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"held-out fraction must be in [0, 1], not {fraction}")
    h = hashlib.sha256(f"{seed}:{relpath}".encode()).digest()
    return int.from_bytes(h[:8], "big") < fraction * 2**64


def split_files(root=None, seed: int = SPLIT_SEED,
                fraction: float = HELDOUT_FRACTION) -> tuple[list[str], list[str]]:
    """``(train, heldout)`` relative paths of the standard library files."""
    files = stdlib_files(root)
    held = [f for f in files if is_heldout(f, seed, fraction)]
    train = [f for f in files if not is_heldout(f, seed, fraction)]
    return train, held
