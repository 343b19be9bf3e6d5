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
    "int_matmul",
    "requantize",
    "requant_params",
    "gemv_golden",
    "first_difference",
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
    return wrap_int32(int_matmul(w, x))


#: Integers of magnitude below 2**53 are exact in float64, and so is every sum of them that
#: stays below it, whatever the order of addition.
_FLOAT64_EXACT = 1 << 53


def int_matmul(a, b) -> np.ndarray:
    """The exact integer matrix product ``a @ b`` (any integer dtypes, numpy broadcasting), int64.

    A simulation speed-up, not a numeric choice: when ``K * max|a| * max|b| < 2**53`` (K the
    contracted length) every product and every partial sum of every output, in whatever order
    BLAS adds them, is an integer below 2**53 in magnitude and therefore exact in float64, so
    float64 BLAS returns the exact integer result (about 25x faster than numpy's int64
    matmul, which has no BLAS). Beyond that bound it falls back to int64 arithmetic. Either
    way the result equals the int64 product (``tests/test_golden_arith.py`` checks both
    branches on extreme values).
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.dtype.kind not in "iub" or b.dtype.kind not in "iub":
        raise TypeError(f"int_matmul takes integer arrays, not {a.dtype} and {b.dtype}")
    k = a.shape[-1] if a.ndim else 1
    if a.size and b.size:
        amax = int(np.max(np.abs(a.astype(np.int64))))
        bmax = int(np.max(np.abs(b.astype(np.int64))))
        if k * amax * bmax < _FLOAT64_EXACT:
            return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    return a.astype(np.int64) @ b.astype(np.int64)


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


def gemv_golden(w, x, mult, shift, *, out_int32: bool = False) -> np.ndarray:
    """What the mesh returns for ``y = W x`` of a batch: ``(batch, m)``, int32 accumulators
    (``out_int32``) or int8 after :func:`requantize` with per-row ``mult``/``shift``.

    ``w`` is ``(m, n)`` int8, ``x`` is ``(batch, n)`` int8. The one reference every GEMV
    check uses (the Verilator bench, the board demo).
    """
    acc = matmul_int8(w, np.atleast_2d(x).T)
    if out_int32:
        return acc.T
    return requantize(acc, np.asarray(mult)[:, None], np.asarray(shift)[:, None]).T


def first_difference(got, expected) -> dict | None:
    """The first element (row-major) where ``got`` differs from ``expected``, as
    ``{"vector", "index", "got", "expected"}`` for a 2-D ``(batch, m)`` result; None when
    they are equal. The scoreboard of every bit-exact check: a mismatch names an element."""
    got, expected = np.atleast_2d(got), np.atleast_2d(expected)
    if got.shape != expected.shape:
        raise ValueError(f"result shape {got.shape} differs from the golden {expected.shape}")
    diff = np.argwhere(got != expected)
    if diff.size == 0:
        return None
    b, i = (int(v) for v in diff[0])
    return {"vector": b, "index": i, "got": int(got[b, i]), "expected": int(expected[b, i])}


def requant_params(scale, shift_max: int = SHIFT_MAX) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-point ``(mult, shift)`` closest to a positive real ``scale`` (scalar or array).

    ``mult`` is normalised into ``[2**15, 2**16)`` for 16 bits of precision; scales too small
    to represent with ``shift <= shift_max`` (47, the mesh's limit, by default) give
    ``mult = 0`` (output 0), too large ones saturate at ``shift = 0``.
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
    small = sh > shift_max
    mu[small] = 0
    sh[small] = shift_max
    mult[nz] = mu
    shift[nz] = sh
    return mult, shift


# =====================================================================================
# Integer-only decoder ops (the ``int`` mode of the golden model).
#
# Everything below takes and returns numpy integer arrays and computes in int64 with
# shifts, adds, multiplies, small tables and comparisons only: what a PE has. Tables
# (exp2, SiLU, RoPE) and constants (multipliers, shifts) are built from float once, at
# model-preparation time, by the ``build_*`` / ``*_params`` helpers, and stored as
# integers; no run-time function here touches a float.
#
# Rounding convention everywhere: ``shift_round(v, s)`` = ``(v + 2**(s-1)) >> s`` with an
# arithmetic (flooring) shift, i.e. *round half up* (towards +infinity), the same as the
# mesh's requantization; a non-positive ``s`` is an exact left shift.
# =====================================================================================

__all__ += [
    "INT32_MIN", "INT32_MAX", "shift_round", "sat", "bit_length", "requantize_to",
    "residual_add", "RSQRT_SEED", "rsqrt_int", "RECIP_SEED", "recip_int", "rms_norm_int",
    "ROPE_FRAC", "rope_table_int", "rope_int", "EXP_FRAC", "EXP_ONE", "EXP2_TABLE",
    "exp2_neg_int", "PROB_FRAC", "softmax_int", "silu_table_int8", "lut_int8",
    "gate_up_int", "argmax_int", "signed_params", "silu_table_interp", "silu_interp_int",
    "gate_up_int16",
]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def shift_round(v, s) -> np.ndarray:
    """``v * 2**-s`` rounded half up: ``(v + 2**(s-1)) >> s`` for ``s > 0``, ``v << -s`` else.

    ``v`` and ``s`` are integer arrays (broadcast); computed in int64, no saturation (the
    caller bounds the magnitude; every use below stays under 2**62).
    """
    v = np.asarray(v, dtype=np.int64)
    s = np.asarray(s, dtype=np.int64)
    pos = np.maximum(s, 0)
    rnd = np.where(pos > 0, np.left_shift(np.int64(1), np.maximum(pos - 1, 0)), 0)
    right = (v + rnd) >> pos
    return np.where(s > 0, right, np.left_shift(v, np.maximum(-s, 0)))


def sat(v, bits: int) -> np.ndarray:
    """Clamp to the signed ``bits``-bit range ``[-2**(bits-1), 2**(bits-1) - 1]`` (int64)."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.clip(np.asarray(v, dtype=np.int64), lo, hi)


def bit_length(v) -> np.ndarray:
    """Position of the leading one of non-negative int64 ``v`` plus one (0 for 0).

    A PE does it as a loop of compare-and-shift steps (a binary search over 6 steps for 64
    bits); here the same binary search, vectorized.
    """
    v = np.asarray(v, dtype=np.int64).copy()
    if v.size and v.min() < 0:
        raise ValueError("bit_length needs non-negative integers")
    n = np.zeros(v.shape, np.int64)
    for step in (32, 16, 8, 4, 2, 1):
        big = (v >> step) > 0
        n += np.where(big, step, 0)
        v = np.where(big, v >> step, v)
    return n + (v > 0)


def signed_params(scale, shift_max: int = SHIFT_MAX) -> tuple[np.ndarray, np.ndarray]:
    """``(mult, shift)`` for a real, possibly negative scale: ``sign * requant_params(|s|)``.

    ``mult`` is a signed 17-bit multiplier (magnitude < 2**16); build-time helper (float).
    """
    s = np.atleast_1d(np.asarray(scale, dtype=np.float64))
    m, sh = requant_params(np.abs(s), shift_max)
    return np.where(s < 0, -m, m).astype(np.int64), sh.astype(np.int64)


def requantize_to(acc, mult, shift, bits: int = 8) -> np.ndarray:
    """``sat_bits(shift_round(acc * mult, shift))``: the general requantization.

    Format: ``acc`` int32/int64 with real scale ``a``, output with real scale ``b``, and
    ``mult * 2**-shift ~= a / b`` (``mult`` signed, magnitude < 2**16, from
    :func:`requant_params` / :func:`signed_params`). Rounding half up; saturation to the
    signed ``bits``-bit range. ``acc * mult`` must stay below 2**63 (|acc| < 2**47).
    With ``bits=8`` and unsigned ``mult`` it equals :func:`requantize`.
    """
    p = np.asarray(acc, dtype=np.int64) * np.asarray(mult, dtype=np.int64)
    return sat(shift_round(p, shift), bits)


def residual_add(x, y) -> np.ndarray:
    """Saturating add of two int32 residual-stream words (same fixed-point format).

    Format: the residual stream is int32 with ``F`` fractional bits (``F`` static per
    model); the sum is exact unless it leaves ``[-2**31, 2**31 - 1]``, where it saturates
    (no wrap-around). Returns int32.
    """
    s = np.asarray(x, dtype=np.int64) + np.asarray(y, dtype=np.int64)
    return np.clip(s, INT32_MIN, INT32_MAX).astype(np.int32)


# ---------------------------------------------------------------- reciprocal square root

def _seed_table(lo: int, hi: int, fn) -> np.ndarray:
    # Entry i covers [i, i+1) / 2**6 of the normalised argument; value at the midpoint, Q30.
    i = np.arange(lo, hi, dtype=np.float64)
    return np.round(fn((i + 0.5) / 64.0) * (1 << 30)).astype(np.int64)


#: 96-entry seed of 1/sqrt(a) for a in [0.5, 2) in steps of 1/64 (index ``(m >> 24) - 32``), Q30.
RSQRT_SEED = _seed_table(32, 128, lambda a: 1.0 / np.sqrt(a))
#: 64-entry seed of 1/a for a in [1, 2) in steps of 1/64 (index ``(m >> 24) - 64``), Q30.
RECIP_SEED = _seed_table(64, 128, lambda a: 1.0 / a)


def rsqrt_int(n) -> tuple[np.ndarray, np.ndarray]:
    """Integer reciprocal square root: ``1/sqrt(n) ~= mant * 2**-shift``.

    Algorithm (all int64): normalise ``n`` by an *even* shift ``2k`` to ``m`` in
    ``[2**29, 2**31)`` (right shifts floor; they drop bits only below the 29th, a relative
    error under 2**-29); seed ``y`` (Q30, ``a = m / 2**30``) from :data:`RSQRT_SEED` on the
    top bits of ``m`` (error < 0.6 %); two Newton steps ``y <- y (3 - a y^2) / 2``, each
    product truncated (floor) to Q30; final rounding ``mant = shift_round(y, 14)``.

    Returns
    -------
    mant : numpy.ndarray
        int64 in ``[46340, 92682]`` (17 bits unsigned).
    shift : numpy.ndarray
        int64, ``31 + k``: ``1/sqrt(n) ~= mant * 2**-shift``, ``mant`` within one unit of
        ``round(2**shift / sqrt(n))`` (tested).

    ``n`` must be in ``[1, 2**62)``; 0 is treated as 1.
    """
    n = np.maximum(np.asarray(n, dtype=np.int64), 1)
    b = bit_length(n)
    s = b - 31
    s = s + (s & 1)                           # even: the exponent halves exactly
    m = np.where(s >= 0, n >> np.maximum(s, 0), n << np.maximum(-s, 0))
    y = RSQRT_SEED[(m >> 24) - 32]
    three = np.int64(3 << 30)
    for _ in range(2):
        y2 = (y * y) >> 30                    # Q30
        ay2 = (m * y2) >> 30                  # a * y^2, Q30 (m = a * 2**30)
        y = (y * (three - ay2)) >> 31         # y (3 - a y^2) / 2, Q30
    return shift_round(y, 14), 31 + s // 2


def recip_int(n) -> tuple[np.ndarray, np.ndarray]:
    """Integer reciprocal: ``1/n ~= mant * 2**-shift`` for ``n`` in ``[1, 2**62)``.

    Normalise ``n`` to ``m`` in ``[2**30, 2**31)`` by a shift ``s`` (floor), seed ``y``
    (Q30, ``a = m / 2**30`` in [1, 2)) from :data:`RECIP_SEED` (error < 0.8 %), two Newton
    steps ``y <- y (2 - a y)`` (floored to Q30), ``mant = shift_round(y, 14)`` in
    ``[2**15, 2**16]``, ``shift = 46 + s``; ``mant`` is within one unit of
    ``round(2**shift / n)``.
    """
    n = np.maximum(np.asarray(n, dtype=np.int64), 1)
    s = bit_length(n) - 31
    m = np.where(s >= 0, n >> np.maximum(s, 0), n << np.maximum(-s, 0))
    y = RECIP_SEED[(m >> 24) - 64]
    two = np.int64(2 << 30)
    for _ in range(2):
        ay = (m * y) >> 30
        y = (y * (two - ay)) >> 30
    return shift_round(y, 14), 46 + s


# ---------------------------------------------------------------- RMSNorm

def rms_norm_int(x, eps_q: int, mult, shift, bits: int = 8) -> np.ndarray:
    """Integer RMSNorm of int32 residual rows ``x`` (T, d), output int8 (T, d).

    With ``bits=32`` the output is a *wide* int32 (the per-token dynamic scheme quantizes it
    with :func:`quantize_dynamic` afterwards); it cannot saturate when the output scale is
    at least ``sqrt(d) max|w| / 2**31`` (``|x_c| / sqrt(sum x^2) <= 1``).

    Float meaning: ``h = x / sqrt(mean(x^2) + eps) * w``, quantized ``h_q = h / s_h``.

    Steps, per row (token):

    1. dynamic range: ``e = max(0, bit_length(max|x|) - 15)`` (a max-reduction and a
       leading-one search over d words), ``xs = x >> e`` (floor) fits 16 bits;
    2. ``N = sum(xs^2) + (eps_q >> 2e)``, accumulated in int64 (< d * 2**30; a PE carries
       into a second word), ``N >= 1``; ``eps_q = round(eps * d / s_r^2)`` is a model
       constant (``s_r``: the residual stream's scale);
    3. ``(r, k) = rsqrt_int(N)``, so ``1/sqrt(sum x^2 + eps d / s_r^2) ~= r 2**-(k+e)``;
    4. ``t = shift_round(x * r, k + e - 30)``: ``x / sqrt(sum x^2)`` in Q30 (|t| <= 2**30);
    5. ``h_q = sat_bits(shift_round(t * mult[c], shift[c]))`` with
       ``mult[c] 2**-shift[c] ~= sqrt(d) w[c] / (s_h 2**30)`` (signed: the norm weight
       ``w``, the sqrt(d) of the mean and the output scale folded into one per-channel
       requantization, :func:`signed_params`).

    Rounding: floor in step 1, half up in 4 and 5; saturation only in 5 (to the signed
    ``bits``-bit range, [-128, 127] by default).
    """
    x = np.asarray(x, dtype=np.int64)
    amax = np.abs(x).max(axis=-1, keepdims=True)
    e = np.maximum(bit_length(amax) - 15, 0)
    xs = x >> e
    n = (xs * xs).sum(axis=-1, keepdims=True) + (np.int64(eps_q) >> (2 * e))
    r, k = rsqrt_int(n)
    t = shift_round(x * r, k + e - 30)
    out = requantize_to(t, mult, shift, bits)
    return out.astype(np.int8) if bits == 8 else out


# ---------------------------------------------------------------- RoPE

#: Fractional bits of the RoPE cos/sin table (int16, Q1.14: 1.0 = 16384).
ROPE_FRAC = 14


def rope_table_int(cos, sin) -> tuple[np.ndarray, np.ndarray]:
    """Build-time: float cos/sin tables (P, head_dim) -> int16 Q1.14, ``round half even``.

    Values are in ``[-16384, 16384]``. The table rows are positions; the model builds them
    once for ``0 .. max_position - 1`` from :func:`sparktile.golden_model.rope.rope_tables`
    (the checkpoint's theta and rotary scaling).
    """
    f = float(1 << ROPE_FRAC)
    return (np.rint(np.asarray(cos, np.float64) * f).astype(np.int16),
            np.rint(np.asarray(sin, np.float64) * f).astype(np.int16))


def rope_int(x, cos_q, sin_q, mult, shift) -> np.ndarray:
    """Rotate int8 (or int16) ``x`` (T, heads, head_dim) by int16 Q1.14 tables -> int8.

    Pairing is the "rotate half" (NeoX) layout of the internal weights: channel ``j`` pairs
    with ``j + head_dim/2``. GGUF checkpoints (llama.cpp's interleaved pairs) arrive in this
    layout because the loader undoes the converter's q/k row permutation, exactly as the
    float path relies on. Both channels of a pair must share one input scale ``s_in`` (the
    model quantizes q/k projections with one scale per pair).

    ``acc = x * cos - rot(x) * sin`` (int8 x int16, int32 exact, |acc| < 2**23; int16 ``x``,
    as the per-token dynamic scheme gives, |acc| < 2**31), then
    ``sat8(shift_round(acc * mult, shift))`` per output channel (``mult``, ``shift`` of shape
    (heads, head_dim), ``mult 2**-shift ~= s_in 2**-14 / s_out``): one rounding (half up),
    saturation to [-128, 127].
    """
    x = np.asarray(x, dtype=np.int64)
    h = x.shape[-1] // 2
    rot = np.concatenate([-x[..., h:], x[..., :h]], axis=-1)
    acc = x * cos_q[:, None, :].astype(np.int64) + rot * sin_q[:, None, :].astype(np.int64)
    return requantize_to(acc, mult, shift, 8).astype(np.int8)


# ---------------------------------------------------------------- softmax

#: Fractional bits of the exp2 argument (the table index width).
EXP_FRAC = 8
#: exp2 output format: unsigned, 15 fractional bits (2**0 = 32768).
EXP_ONE = 1 << 15
#: 256-entry table ``round(2**15 * 2**(-f / 256))``, f = 0..255 (uint16 values 16428..32768).
EXP2_TABLE = np.round(EXP_ONE * 2.0 ** (-np.arange(1 << EXP_FRAC) / (1 << EXP_FRAC))).astype(
    np.int64)
#: Probability format: unsigned, 15 fractional bits (1.0 = 32768), held in 16 bits.
PROB_FRAC = 15


def exp2_neg_int(u) -> np.ndarray:
    """``2**(-u / 256)`` for non-negative int ``u``, unsigned Q0.15 (1.0 = 32768).

    Shift-based exp: ``EXP2_TABLE[u & 255]`` (the fraction, by a 256-entry table) shifted
    right by ``u >> 8`` (the integer part), rounded half up; 0 once the integer part
    exceeds 16. Monotone non-increasing in ``u`` (tested); error <= 0.5 units + the
    table's 0.5 units.
    """
    u = np.asarray(u, dtype=np.int64)
    if u.size and u.min() < 0:
        raise ValueError("exp2_neg_int needs non-negative arguments")
    ip = np.minimum(u >> EXP_FRAC, 17)
    return np.where(ip >= 17, 0, shift_round(EXP2_TABLE[u & ((1 << EXP_FRAC) - 1)], ip))


def softmax_int(scores, mult, shift, mask=None) -> np.ndarray:
    """Integer softmax over the last axis of int32 ``scores``; unsigned Q0.15 output.

    Float meaning: ``p = softmax(scores * sigma)`` with ``sigma`` the real scale of the
    scores (``s_q s_k / sqrt(head_dim)``). ``mult * 2**-shift ~= sigma * log2(e) * 256``
    (:func:`requant_params`, broadcast against the rows), so:

    1. ``mx = max`` over the visible entries (``mask`` True = hidden);
    2. ``u = shift_round((mx - s) * mult, shift)`` >= 0: the exponent in base 2, 8
       fractional bits (the 1/sqrt(head_dim) and log2(e) are folded into ``mult``);
    3. ``e = exp2_neg_int(u)`` (table + shift), 0 where hidden; the max entry gives
       exactly 32768;
    4. ``S = sum(e)`` (>= 32768, < 2**31 for fewer than 65536 keys);
    5. ``(r, k) = recip_int(S)``; ``p = shift_round(e * r, k - 15)``: ``e / S`` in Q0.15.

    Width: probabilities are unsigned 16-bit words with 15 fractional bits (1.0 = 32768).
    Eight bits would zero every probability under 1/512 (a uniform head over 512 keys
    would vanish); 15 bits keep a 2048-key uniform head at 16 units. ``p . v`` is then a
    16 x 8 product (two 8-bit passes on the PE's MAC). The sum of a row is
    ``32768 +- (n_visible / 2 + 2)`` (each p rounded by half a unit, the reciprocal within
    one unit; tested).
    """
    s = np.asarray(scores, dtype=np.int64)
    if mask is not None:
        low = np.int64(INT32_MIN)
        s = np.where(mask, low, s)
    mx = s.max(axis=-1, keepdims=True)
    d = mx - s
    u = shift_round(d * np.asarray(mult, np.int64), shift)
    e = exp2_neg_int(np.minimum(u, 17 << EXP_FRAC))
    if mask is not None:
        e = np.where(mask, 0, e)
    tot = e.sum(axis=-1, keepdims=True)
    r, k = recip_int(tot)
    return shift_round(e * r, k - PROB_FRAC)


# ---------------------------------------------------------------- SiLU and the gate product

def silu_table_int8(s_in: float, s_out: float, bits: int = 16) -> np.ndarray:
    """Build-time: ``T[i + 128] = sat(round(silu(i s_in) / s_out))`` for int8 ``i``.

    A 256-entry table is exact (to its output rounding, half to even) for any function of
    an int8 input. Output: signed ``bits``-bit (int16 by default), scale ``s_out``.
    """
    i = np.arange(-128, 128, dtype=np.float64) * s_in
    v = i / (1.0 + np.exp(-i))
    return sat(np.rint(v / s_out), bits)


def lut_int8(x, table) -> np.ndarray:
    """Look up int8 ``x`` in a 256-entry table (index ``x + 128``); int64 result."""
    return np.asarray(table, np.int64)[np.asarray(x, np.int64) + 128]


def gate_up_int(gate_q, up_q, table, mult, shift, bits: int = 8) -> np.ndarray:
    """``silu(gate) * up`` in integers: int8 gate and up (T, F) -> int8 (T, F).

    ``bits=32`` gives a wide int32 output instead (the per-token dynamic scheme quantizes it
    with :func:`quantize_dynamic`).

    ``table`` is the layer's SiLU table (:func:`silu_table_int8`, int16, scale ``s_s``);
    the product ``T[gate] * up`` is int16 x int8 -> int32 (exact, |p| < 2**22), then
    requantized per channel ``sat8(shift_round(p * mult[c], shift[c]))`` with
    ``mult 2**-shift ~= s_s s_up[c] / s_down_in``; rounding half up, saturating.
    """
    p = lut_int8(gate_q, table) * np.asarray(up_q, np.int64)
    out = requantize_to(p, mult, shift, bits)
    return out.astype(np.int8) if bits == 8 else out


def silu_table_interp(s_step: float, s_out: float, bits: int = 16) -> np.ndarray:
    """Build-time: the 257-entry table ``T[i + 128] = sat(round(silu(i s_step) / s_out))``,
    ``i = -128 .. 128``, of :func:`gate_up_int16` (a 256-entry int8 table plus its end point,
    so that every interval has both ends). Rounding half to even, signed ``bits``-bit."""
    i = np.arange(-128, 129, dtype=np.float64) * s_step
    return sat(np.rint(i / (1.0 + np.exp(-i)) / s_out), bits)


def silu_interp_int(gate16, table) -> np.ndarray:
    """``silu`` of an int16 gate by linear interpolation in a 257-entry table.

    ``gate16`` has real scale ``s_step / 256``: its top byte ``i = gate16 >> 8`` (floor,
    -128..127) indexes the table (:func:`silu_table_interp`, entries at ``i s_step``), its low
    byte ``f = gate16 & 255`` interpolates:
    ``T[i] + shift_round((T[i + 1] - T[i]) * f, 8)`` (one multiply, one add, one rounding
    half up; int64, |result| < 2**16). Interpolation error at most ``s_step**2 / 8`` times
    max|silu''| (0.5), i.e. ``s_step**2 / 16``, plus half an output unit.
    """
    g = np.asarray(gate16, np.int64)
    if g.size and (g.min() < -(1 << 15) or g.max() >= 1 << 15):
        raise ValueError("silu_interp_int needs int16 gates")
    t = np.asarray(table, np.int64)
    i = (g >> 8) + 128
    f = g & 255
    return t[i] + shift_round((t[i + 1] - t[i]) * f, 8)


def gate_up_int16(gate16, up16, table, mult, shift, bits: int = 32) -> np.ndarray:
    """``silu(gate) * up`` for int16 gate and up (T, F), the per-token dynamic scheme's form.

    ``silu_interp_int(gate16, table)`` (scale ``s_s``, |.| < 2**16) times ``up16`` (int16,
    per-channel scale) is exact in int64 (|p| < 2**31); then
    ``sat_bits(shift_round(p * mult[c], shift[c]))`` per channel, rounding half up
    (``bits=32``: the wide output that :func:`quantize_dynamic` quantizes per token).
    """
    p = silu_interp_int(gate16, table) * np.asarray(up16, np.int64)
    return requantize_to(p, mult, shift, bits)


def argmax_int(logits) -> int:
    """Index of the largest int32 logit of a 1-D row; ties go to the lowest index.

    (A linear scan keeping the first strict maximum, which is what ``np.argmax`` does.)
    """
    z = np.asarray(logits)
    if z.ndim != 1 or not np.issubdtype(z.dtype, np.integer):
        raise ValueError(f"argmax_int needs a 1-D integer array, not {z.dtype} {z.shape}")
    return int(np.argmax(z))


# ---------------------------------------------------------------- per-token dynamic scales

__all__ += ["DYN_MANT_BITS", "DYN_SHIFT_MAX", "quantize_dynamic", "requantize_dynamic"]

#: Width of the per-token scale's mantissa (:func:`quantize_dynamic`): ``[2**15, 2**16)``.
DYN_MANT_BITS = 16
#: Largest static shift of :func:`requantize_dynamic` (a host-side constant, not the mesh's).
DYN_SHIFT_MAX = 62


def quantize_dynamic(v) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row (per-token) dynamic int8 quantization of integer rows ``v`` (T, N).

    Float meaning: ``x_q = round(127 v / max|v|)`` per row, the row's scale ``max|v| / 127``
    (times ``v``'s own real scale ``a``, a static constant of the caller).

    Steps, per row (what a PE does with a max-reduction, a leading-one search, one
    :func:`recip_int` and one multiply-shift per element):

    1. ``M = max|v|``; ``e = max(0, bit_length(M) - 31)``; ``y = shift_round(v, e)``, so
       ``|y| <= 2**31`` (inputs up to 2**62 are accepted);
    2. ``My = max(max|y|, 1)``; ``(r, k) = recip_int(My)`` (``1/My ~= r 2**-k``, ``r`` within
       one unit of 2**16 precision);
    3. ``x_q = sat8(shift_round(y * 127 * r, k))`` (|y 127 r| < 2**54): the row's largest
       element maps to +-127 (its rounding error is under 127 * 2**-15, so it never leaves
       [-127, 127]; the saturation to [-128, 127] is a guard that never acts);
    4. the row's scale as a 16-bit mantissa and an exponent,
       ``My 2**e = mant 2**ex`` up to truncation: ``b = bit_length(My)``,
       ``mant = My >> (b - 16)`` (floor; exact left shift when ``b < 16``) in
       ``[2**15, 2**16)``, ``ex = e + b - 16``. Relative error of the scale under 2**-15.

    Returns
    -------
    x_q : numpy.ndarray
        int8 (T, N); its real value is ``x_q * a * mant * 2**ex / 127``.
    mant, ex : numpy.ndarray
        int64 (T, 1) each.

    Rounding: half up in 1 and 3, floor in 4. An all-zero row gives ``x_q = 0`` (and
    ``My = 1``).
    """
    v = np.asarray(v, dtype=np.int64)
    if v.ndim < 1:
        raise ValueError("quantize_dynamic needs rows (at least one axis)")
    big = np.abs(v).max(axis=-1, keepdims=True) if v.shape[-1] else np.zeros(
        v.shape[:-1] + (1,), np.int64)
    e = np.maximum(bit_length(big) - 31, 0)
    y = shift_round(v, e)
    my = np.maximum(np.abs(y).max(axis=-1, keepdims=True) if v.shape[-1] else 1, 1)
    r, k = recip_int(my)
    x_q = sat(shift_round(y * (127 * r), k), 8).astype(np.int8)
    b = bit_length(my)
    d = b - DYN_MANT_BITS
    mant = np.where(d >= 0, my >> np.maximum(d, 0), my << np.maximum(-d, 0))
    return x_q, mant, e + d


def requantize_dynamic(acc, mant, ex, mult, shift, bits: int = 8) -> np.ndarray:
    """Requantize int32 accumulators of a matmul whose input came from
    :func:`quantize_dynamic`: per-row scale ``mant 2**ex`` (T, 1), per-column static
    ``mult 2**-shift`` (M,).

    Float meaning: ``out = acc * s_w * a * (mant 2**ex / 127) / s_out``, where ``s_w`` is
    the weight scale (per output channel), ``a`` the input's static real scale and
    ``s_out`` the output's; the static part is folded at build time:
    ``mult 2**-shift ~= s_w a / (127 s_out)`` (signed, :func:`signed_params` with
    ``shift_max=DYN_SHIFT_MAX``: the wide input's scale ``a`` is small, and the per-token
    exponent ``ex`` brings the total shift ``shift - ex - 15`` back into range).

    ``out = sat_bits(shift_round(shift_round(acc * mant, 15) * mult, shift - ex - 15))``:
    ``|acc mant| < 2**47``, the first rounding keeps at least ``acc``'s resolution
    (``mant >= 2**15``), the second product stays under 2**48. Two roundings, both half up;
    saturation to the signed ``bits``-bit range at the end (a left shift where
    ``shift - ex - 15 < 0``).
    """
    p = shift_round(np.asarray(acc, np.int64) * np.asarray(mant, np.int64), 15)
    return sat(shift_round(p * np.asarray(mult, np.int64),
                           np.asarray(shift, np.int64) - np.asarray(ex, np.int64) - 15), bits)
