"""The PE's integer arithmetic, defined once.

Every integer operation the processing element implements has exactly one numpy definition
here. The RTL benches compare the hardware against these functions, and the golden LLM's
``int8`` path calls the same functions, so "bit-exact with the hardware" means "calls this
module".

Numerics (see ``docs/architecture.md``, *Numerics*):

* **Packing.** A 32-bit wavelet carries four int8 lanes; lane ``l`` occupies bits
  ``[8*l + 7 : 8*l]`` (little-endian lane order, two's complement).
* **MAC.** ``int8 x int8 -> int16`` products, summed into a 32-bit accumulator that wraps
  modulo 2**32 (the hardware adder is 32 bits wide and does not saturate).
* **Requantization.** ``y = sat8((acc * mult + round) >> shift)`` with ``mult`` an unsigned
  16-bit multiplier, ``shift`` in ``[0, 47]``, ``round = 1 << (shift - 1)`` (0 when
  ``shift == 0``) and ``>>`` an arithmetic (flooring) shift: *round half up* (towards
  +infinity). ``sat8`` clamps to ``[-128, 127]``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "LANES",
    "MULT_BITS",
    "SHIFT_MAX",
    "pack_int8",
    "unpack_int8",
    "wrap_int32",
    "mac_int8",
    "matmul_int8",
    "requantize",
    "requant_params",
]

#: int8 lanes per 32-bit wavelet: the PE performs this many MACs per cycle.
LANES = 4
#: Width of the unsigned requantization multiplier.
MULT_BITS = 16
#: Largest allowed requantization shift (acc is 32 bits, mult 16 bits: the product fits 48).
SHIFT_MAX = 47


def pack_int8(values) -> np.ndarray:
    """Pack int8 values, four per 32-bit word (lane 0 in the low byte).

    The length must be a multiple of :data:`LANES`; pad with zeros first.
    Returns a ``uint32`` array of ``len(values) // 4`` words.
    """
    v = np.asarray(values)
    if v.ndim != 1 or v.size % LANES:
        raise ValueError(f"pack_int8 needs a 1-D array whose length is a multiple of {LANES}, "
                         f"not shape {v.shape}")
    if v.size and (v.min() < -128 or v.max() > 127):
        raise ValueError(f"pack_int8 values must be in [-128, 127], not [{v.min()}, {v.max()}]")
    b = v.astype(np.int8).view(np.uint8).reshape(-1, LANES).astype(np.uint32)
    return (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16) | (b[:, 3] << 24)).astype(np.uint32)


def unpack_int8(words) -> np.ndarray:
    """Inverse of :func:`pack_int8`: ``uint32`` words to an int8 array four times as long."""
    w = np.asarray(words, dtype=np.uint32)
    return w.astype("<u4").view(np.int8).reshape(-1).copy()


def wrap_int32(values) -> np.ndarray:
    """Reduce integers modulo 2**32 into the signed int32 range, as a 32-bit adder does."""
    v = np.asarray(values, dtype=np.int64)
    return (((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)).astype(np.int32)


def mac_int8(acc, w, x) -> np.ndarray:
    """One PE MAC step over the last axis: ``acc + sum(w * x)`` with int32 wrap-around.

    ``w`` and ``x`` are int8 arrays broadcast against each other; ``acc`` is int32.
    """
    w = np.asarray(w, dtype=np.int64)
    x = np.asarray(x, dtype=np.int64)
    return wrap_int32(np.asarray(acc, dtype=np.int64) + (w * x).sum(axis=-1))


def matmul_int8(w, x) -> np.ndarray:
    """``W @ X`` for int8 ``W`` (M x N) and int8 ``X`` (N, or N x B): int32 results, wrapped.

    Exactly what the mesh computes before requantization, whatever the order in which the
    PEs add their partial sums (addition modulo 2**32 is associative).
    """
    w = np.asarray(w)
    x = np.asarray(x)
    if w.ndim != 2:
        raise ValueError(f"matmul_int8 needs a 2-D weight matrix, not shape {w.shape}")
    if x.shape[0] != w.shape[1]:
        raise ValueError(f"matmul_int8: W is {w.shape[0]}x{w.shape[1]} but x has "
                         f"{x.shape[0]} rows; they must agree")
    return wrap_int32(w.astype(np.int64) @ x.astype(np.int64))


def requantize(acc, mult, shift) -> np.ndarray:
    """Requantize int32 accumulators to int8: ``sat8((acc * mult + round) >> shift)``.

    ``mult`` (unsigned, < 2**16) and ``shift`` (0..47) broadcast against ``acc``; per output
    channel parameters are given as arrays of the channel count. Rounding is half up.
    """
    acc = np.asarray(acc, dtype=np.int64)
    mult = np.asarray(mult, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if mult.size and (mult.min() < 0 or mult.max() >= (1 << MULT_BITS)):
        raise ValueError(f"requantize mult must be in [0, {(1 << MULT_BITS) - 1}], "
                         f"not [{mult.min()}, {mult.max()}]")
    if shift.size and (shift.min() < 0 or shift.max() > SHIFT_MAX):
        raise ValueError(f"requantize shift must be in [0, {SHIFT_MAX}], "
                         f"not [{shift.min()}, {shift.max()}]")
    rnd = np.where(shift > 0, np.left_shift(1, np.maximum(shift - 1, 0)), 0)
    y = (acc * mult + rnd) >> shift
    return np.clip(y, -128, 127).astype(np.int8)


def requant_params(scale) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-point ``(mult, shift)`` closest to a positive real ``scale`` (scalar or array).

    ``mult`` is normalised into ``[2**15, 2**16)`` for 16 bits of precision; scales too small
    to represent with ``shift <= 47`` give ``mult = 0`` (output 0), too large ones saturate
    at ``shift = 0``.
    """
    s = np.atleast_1d(np.asarray(scale, dtype=np.float64))
    if np.any(~np.isfinite(s)) or np.any(s < 0):
        raise ValueError("requant_params needs finite, non-negative scales")
    mult = np.zeros(s.shape, dtype=np.int64)
    shift = np.zeros(s.shape, dtype=np.int64)
    nz = s > 0
    # s = m * 2**e with m in [0.5, 1): mult = round(m * 2**16), shift = 16 - e.
    m, e = np.frexp(s[nz])
    mu = np.round(m * (1 << MULT_BITS)).astype(np.int64)
    sh = MULT_BITS - e.astype(np.int64)
    carry = mu == (1 << MULT_BITS)
    mu[carry] >>= 1
    sh[carry] -= 1
    # Too large: clamp to the biggest representable scale; too small: drop to zero.
    big = sh < 0
    mu[big] = (1 << MULT_BITS) - 1
    sh[big] = 0
    small = sh > SHIFT_MAX
    mu[small] = 0
    sh[small] = SHIFT_MAX
    mult[nz] = mu
    shift[nz] = sh
    return mult, shift
