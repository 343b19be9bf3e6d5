"""Choosing the next token: greedy, or seeded temperature / top-k / top-p sampling.

The filters follow Hugging Face's order: temperature, then top-k, then top-p (nucleus: the
smallest set of most likely tokens whose probabilities sum to at least ``top_p``; the most
likely token is always kept). Ties in top-k keep every token equal to the k-th logit.
"""

from __future__ import annotations

import numpy as np

from .errors import GenerationError

__all__ = ["check_sampling", "next_token"]


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Validate sampling parameters.

    Raises
    ------
    ValueError
        Quoting the bad value and the allowed range.
    """
    if not (isinstance(temperature, (int, float)) and np.isfinite(temperature)
            and temperature >= 0):
        raise GenerationError(f"temperature must be a finite number >= 0, not {temperature!r}")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise GenerationError(f"top_k must be a positive integer or None, not {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise GenerationError(f"top_p must be in (0, 1] or None, not {top_p!r}")


def next_token(logits: np.ndarray, rng: np.random.Generator | None = None,
               temperature: float = 0.0, top_k: int | None = None,
               top_p: float | None = None) -> int:
    """Pick a token id from one row of logits (vocab,).

    ``temperature == 0`` is greedy (argmax, lowest id on ties) and needs no ``rng``.
    """
    check_sampling(temperature, top_k, top_p)
    z = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        return int(np.argmax(z))
    if rng is None:
        raise ValueError("sampling with temperature > 0 needs a numpy Generator (seed)")
    z = z / temperature
    if top_k is not None and top_k < z.size:
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p is not None and top_p < 1:
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order])
        keep = np.searchsorted(cum, top_p) + 1  # first index where cum >= top_p, inclusive
        mask = np.zeros_like(p, dtype=bool)
        mask[order[:keep]] = True
        p = np.where(mask, p, 0.0)
        p /= p.sum()
    return int(rng.choice(p.size, p=p))
