"""Bits per byte of a model on a folder of Python files.

Each file is tokenized whole (preceded by BOS when the tokenizer adds one) and cut into
consecutive, non-overlapping windows of ``window`` predictions; a window sees only its own
tokens (plus the one before it), so the figure is a slightly pessimistic version of full
context. Bits per byte = total cross-entropy in bits / UTF-8 bytes predicted; for the byte
vocabulary it equals bits per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError, GenerationError

__all__ = ["EvalResult", "python_files", "bits_per_byte"]


@dataclass
class EvalResult:
    """Totals of an evaluation: ``bits`` over ``n_bytes`` predicted bytes in ``n_tokens``."""

    bits: float
    n_bytes: int
    n_tokens: int
    n_files: int
    mode: str

    @property
    def bpb(self) -> float:
        """Bits per byte."""
        return self.bits / self.n_bytes if self.n_bytes else float("nan")


def python_files(folder, max_bytes: int | None = None) -> list[tuple[str, str]]:
    """``(relative path, text)`` of the ``.py`` files under ``folder``, sorted by path.

    With ``max_bytes``, files are taken in order until that many bytes are collected (the
    last one cut), for a quicker, still deterministic figure.

    Raises
    ------
    DataError
        If ``folder`` does not exist or holds no ``.py`` file (a :class:`FileNotFoundError`
        and a user error: the CLI prints it as one line).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder {folder} not found")
    out, total = [], 0
    for p in sorted(folder.rglob("*.py")):
        if not p.is_file():  # a folder named x.py
            continue
        try:
            text = p.read_bytes().decode("utf-8", errors="replace")
        except OSError as e:
            raise DataError(f"{p}: cannot read ({e.strerror or e})") from None
        if max_bytes is not None:
            room = max_bytes - total
            if room <= 0:
                break
            text = text.encode()[:room].decode("utf-8", errors="ignore")
        out.append((p.relative_to(folder).as_posix(), text))
        total += len(text.encode())
    if not out:
        raise DataError(f"no .py files under {folder} (--data must be a folder holding Python "
                        "source files, searched recursively)")
    return out


def _log_softmax_at(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z - m).sum(axis=1)) + m[:, 0]
    return z[np.arange(len(targets)), targets] - lse


def bits_per_byte(model, texts, mode: str = "float", window: int = 256) -> EvalResult:
    """Evaluate ``model`` on ``texts`` (strings, or ``(name, text)`` pairs).

    Parameters
    ----------
    model : Model
        Needs a tokenizer.
    mode : str
        ``"float"``, ``"int8"`` or ``"int"``.
    window : int
        Predictions per forward pass (bounded by the model's context).
    """
    tok = model.tokenizer
    if tok is None:
        raise GenerationError("bits_per_byte needs a model with a tokenizer")
    window = min(int(window), model.config.max_position_embeddings - 1)
    if window < 1:
        raise GenerationError(f"window must be at least 1, not {window}")
    bits, n_bytes, n_tok, n_files = 0.0, 0, 0, 0
    for item in texts:
        text = item[1] if isinstance(item, tuple) else item
        ids = tok.encode(text)
        if tok.add_bos and tok.bos_id is not None:
            seq, nb = [tok.bos_id] + ids, len(text.encode())
        else:
            if len(ids) < 2:
                continue
            seq, nb = ids, len(text.encode()) - len(tok.decode(ids[:1]).encode())
        if len(seq) < 2:
            continue
        for s in range(0, len(seq) - 1, window):
            chunk = seq[s:s + window + 1]
            lp = _log_softmax_at(model.float_logits(model.logits(chunk[:-1], mode=mode)),
                                 np.asarray(chunk[1:]))
            bits -= lp.sum() / np.log(2)
            n_tok += len(chunk) - 1
        n_bytes += nb
        n_files += 1
    return EvalResult(bits=float(bits), n_bytes=n_bytes, n_tokens=n_tok, n_files=n_files,
                      mode=mode)
