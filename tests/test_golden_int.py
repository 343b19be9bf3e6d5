"""The integer-only path: each arith op against its float counterpart, properties, the model.

Error bounds are stated in units of the op's output format (an "lsb").
"""

import math

import numpy as np
import pytest
from sparktile.golden_model import arith, intpath, load_model
from sparktile.golden_model.backend import NumpyBackend
from sparktile.golden_model.rope import apply_rope
from sparktile.golden_model.testing import random_model, tiny_config

RNG = np.random.default_rng(12)
# Held-out style text that no other test and no calibration uses.
TEXT = '''def merge_sorted(a, b):
    """Merge two sorted lists into one sorted list."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    out.extend(a[i:])
    out.extend(b[j:])
    return out


class Counter(dict):
    def __missing__(self, key):
        return 0

    def most_common(self, n=None):
        items = sorted(self.items(), key=lambda kv: kv[1], reverse=True)
        return items if n is None else items[:n]
'''


# ------------------------------------------------------------------ primitives

def test_shift_round_is_half_up_and_left_shifts():
    v = np.array([-3, -2, -1, 0, 1, 2, 3])
    assert arith.shift_round(v, 1).tolist() == [-1, -1, 0, 0, 1, 1, 2]
    assert arith.shift_round(v, 0).tolist() == v.tolist()
    assert arith.shift_round(v, -2).tolist() == (v * 4).tolist()


def test_residual_add_saturates_at_the_extremes():
    mx, mn = arith.INT32_MAX, arith.INT32_MIN
    r = arith.residual_add([mx, mn, mx, 5, -7], [1, -1, mx, 6, -8])
    assert r.dtype == np.int32
    assert r.tolist() == [mx, mn, mx, 11, -15]


def test_requantize_to_saturates_and_matches_mesh_requantize():
    acc = RNG.integers(-2**31, 2**31, 1000)
    mult, shift = arith.requant_params(RNG.uniform(1e-6, 1e-2, 1000))
    assert np.array_equal(arith.requantize_to(acc, mult, shift, 8),
                          arith.requantize(acc, mult, shift).astype(np.int64))
    big = arith.requantize_to([2**40, -2**40], 1, 0, 16)
    assert big.tolist() == [32767, -32768]


def test_bit_length():
    v = np.concatenate([[0, 1, 2, 3, 2**62], RNG.integers(0, 2**62, 200)])
    assert arith.bit_length(v).tolist() == [int(x).bit_length() for x in v]


def _log_uniform(lo_bits, hi_bits, n):
    return np.unique(np.exp2(RNG.uniform(lo_bits, hi_bits, n)).astype(np.int64).clip(1))


def test_rsqrt_within_one_unit():
    n = np.concatenate([np.arange(1, 300), _log_uniform(0, 61.9, 5000)])
    mant, sh = arith.rsqrt_int(n)
    ref = np.round(np.exp2(sh) / np.sqrt(n.astype(np.float64)))
    assert np.abs(mant - ref).max() <= 1
    assert mant.min() >= 46340 and mant.max() <= 92682


def test_reciprocal_within_one_unit():
    n = np.concatenate([np.arange(1, 300), _log_uniform(0, 61.9, 5000)])
    mant, sh = arith.recip_int(n)
    ref = np.round(np.exp2(sh) / n.astype(np.float64))
    assert np.abs(mant - ref).max() <= 1


# ------------------------------------------------------------------ ops vs float

def test_rms_norm_vs_float():
    d, s_h, eps = 96, 0.02, 1e-5
    x = RNG.integers(-2**24, 2**24, (20, d)) >> RNG.integers(0, 20, (20, 1))
    x[0] = 0                                           # all-zero row: eps only, output 0
    s_r = 2.0 ** -20
    w = 1 + 0.3 * RNG.standard_normal(d)
    w[:3] = -w[:3]                                     # negative norm weights too
    eps_q = round(eps * d / s_r**2)
    mult, shift = arith.signed_params(math.sqrt(d) * w / (s_h * 2**30))
    h = arith.rms_norm_int(x, eps_q, mult, shift)
    assert h.dtype == np.int8
    xf = x * s_r
    ref = xf / np.sqrt((xf**2).mean(-1, keepdims=True) + eps) * w / s_h
    err = np.abs(h - np.clip(ref, -128, 127))
    # half an lsb of rounding, plus the >> e of the sum of squares (< 2**-13 relative)
    assert err.max() <= 0.5 + 2**-13 * 128, err.max()
    assert not h[0].any()
    # saturation: a scale too small for the values clamps at the int8 extremes
    m2, s2 = arith.signed_params(math.sqrt(d) * w / (1e-4 * 2**30))
    h2 = arith.rms_norm_int(x[1:], eps_q, m2, s2)
    assert h2.max() == 127 and h2.min() == -128


def test_rope_vs_float_and_pairing():
    t, heads, hd = 7, 3, 16
    x = RNG.integers(-128, 128, (t, heads, hd))
    ang = RNG.uniform(-10, 10, (t, hd // 2))
    ang = np.concatenate([ang, ang], axis=1)
    cos, sin = np.cos(ang), np.sin(ang)
    cq, sq = arith.rope_table_int(cos, sin)
    assert cq.dtype == np.int16 and np.abs(cq).max() <= 16384
    s_out = 2.0                                       # output scale in input units
    mult, shift = arith.requant_params(np.full((heads, hd), 2.0**-14 / s_out))
    y = arith.rope_int(x.astype(np.int8), cq, sq, mult, shift)
    ref = apply_rope(x.astype(np.float64), cos, sin) / s_out
    # half an lsb of rounding + the Q1.14 table error (2 * 128 * 2**-15 / s_out)
    assert np.abs(y - ref).max() <= 0.5 + 2 * 128 * 2**-15 / s_out


def test_exp2_is_monotone_and_close():
    u = np.arange(0, 18 * 256)
    e = arith.exp2_neg_int(u)
    assert e[0] == 32768 and e[-1] == 0
    assert np.all(np.diff(e) <= 0)
    ref = 32768 * 2.0 ** (-u / 256)
    assert np.abs(e - ref).max() <= 1.0
    with pytest.raises(ValueError, match="non-negative"):
        arith.exp2_neg_int([-1])


@pytest.mark.parametrize("n", [1, 5, 64, 700])
def test_softmax_vs_float_and_sums_to_one(n):
    rows = 50
    s = RNG.integers(-20000, 20000, (rows, n))
    sigma = RNG.uniform(1e-4, 2e-3)
    mult, shift = arith.requant_params(sigma * math.log2(math.e) * 256)
    mask = RNG.random((rows, n)) < 0.3
    mask[:, 0] = False                                # at least one visible key
    p = arith.softmax_int(s, mult, shift, mask)
    assert p.min() >= 0 and p.max() <= 32768
    assert not p[mask].any()
    z = np.where(mask, -np.inf, s * sigma)
    pf = np.exp(z - z.max(-1, keepdims=True))
    pf /= pf.sum(-1, keepdims=True)
    # exponent quantized to 1/256 in log2 (0.14 % relative), table and shifts: 2**-9
    assert np.abs(p / 32768 - pf).max() <= 2.0**-9
    visible = (~mask).sum(-1)
    assert np.all(np.abs(p.sum(-1) - 32768) <= visible / 2 + 2)


def test_softmax_one_hot_and_uniform():
    p = arith.softmax_int(np.array([[0, 10**6, 0]]), 1 << 15, 15)
    assert p.tolist() == [[0, 32768, 0]]
    p = arith.softmax_int(np.zeros((1, 2048), np.int64), 1 << 15, 15)
    assert np.all(p == 16)                            # 1/2048 survives in Q0.15


def test_silu_table_and_gate_up_vs_float():
    s_g, s_u, s_o = 0.05, 0.03, 0.004
    xs = np.arange(-128, 128) * s_g
    s_s = np.abs(xs / (1 + np.exp(-xs))).max() / 32767
    table = arith.silu_table_int8(s_g, s_s)
    assert table.shape == (256,) and np.abs(table).max() <= 32767
    silu = xs / (1 + np.exp(-xs))
    assert np.abs(table * s_s - silu).max() <= 0.5 * s_s + 1e-12
    g = RNG.integers(-128, 128, (9, 40))
    u = RNG.integers(-128, 128, (9, 40))
    mult, shift = arith.requant_params(np.full(40, s_s * s_u / s_o))
    y = arith.gate_up_int(g.astype(np.int8), u.astype(np.int8), table, mult, shift)
    ref = (g * s_g) / (1 + np.exp(-g * s_g)) * (u * s_u) / s_o
    inside = np.abs(ref) < 127
    assert np.abs(y - ref)[inside].max() <= 0.5 + 128 * 0.5 * s_s * s_u / s_o + 1e-9
    assert np.all(y[ref > 128] == 127) and np.all(y[ref < -129] == -128)


def test_argmax_lowest_index_on_ties():
    assert arith.argmax_int(np.array([3, 7, 7, 1], np.int32)) == 1
    assert arith.argmax_int(np.array([-5, -5], np.int32)) == 0
    with pytest.raises(ValueError, match="integer"):
        arith.argmax_int(np.array([0.5, 1.0]))


@pytest.mark.parametrize("k", [1, 7, 576, 1536])
def test_int_matmul_is_the_exact_int64_product(k):
    """Both branches (float64 BLAS under the 2**53 bound, int64 above it) equal int64 @."""
    ext = np.array([-128, 127, -127], np.int64)
    for trial in range(4):
        a = RNG.integers(-128, 128, (5, k))
        b = RNG.integers(-128, 128, (k, 3))
        if trial == 0:                       # every product at its extreme: the largest sums
            a[:] = -128
            b[:] = -128
        elif trial == 1:
            a = RNG.choice(ext, (5, k))
            b = RNG.choice(ext, (k, 3))
        got = arith.int_matmul(a.astype(np.int8), b.astype(np.int8))
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, a @ b)
    # Batched (the attention scores and p . v) with u16 probabilities.
    p = RNG.integers(0, 1 << 15, (2, 4, k)).astype(np.uint16)
    v = RNG.integers(-128, 128, (2, k, 3)).astype(np.int8)
    np.testing.assert_array_equal(arith.int_matmul(p, v), p.astype(np.int64) @ v.astype(np.int64))
    # Past the float64 bound (k >= 7): values near 2**31 take the int64 branch, still exact.
    big = RNG.integers(-(1 << 31), 1 << 31, (3, k))
    small = RNG.integers(-(1 << 20), 1 << 20, (k, 2))
    np.testing.assert_array_equal(arith.int_matmul(big, small), big @ small)
    with pytest.raises(TypeError, match="integer"):
        arith.int_matmul(np.ones((2, 2)), np.ones((2, 2), np.int8))


# ------------------------------------------------------------------ the model

@pytest.fixture(scope="module")
def shipped():
    m = load_model()
    m.int_params()
    return m


def test_int_mode_logits_are_int32_and_close_to_float(shipped):
    ids = shipped.tokenizer.prompt_ids(TEXT)[:400]
    li = shipped.logits(ids, mode="int")
    assert li.dtype == np.int32 and li.shape == (len(ids), 256)
    lf = shipped.logits(ids, mode="float")
    agree = (li.argmax(1) == lf.argmax(1)).mean()
    assert agree >= 0.9, agree

    def nll(z):
        z = shipped.float_logits(z).astype(np.float64)[:-1]
        lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
        return (lse - z[np.arange(len(z)), ids[1:]]).mean()

    assert nll(li) <= 1.03 * nll(lf), (nll(li), nll(lf))


def test_int_mode_cache_is_bit_exact_and_int8(shipped):
    ids = shipped.tokenizer.prompt_ids(TEXT)[:40]
    full = shipped.logits(ids, mode="int")
    cache = shipped.new_cache(2, mode="int")          # forces growth
    parts = [shipped.forward(ids[:11], cache, "int")]
    parts += [shipped.forward([t], cache, "int") for t in ids[11:]]
    assert cache.k.dtype == np.int8 and cache.v.dtype == np.int8
    assert np.array_equal(np.concatenate(parts), full)


def test_int_mode_generates_deterministically(shipped):
    a = shipped.generate("def fibonacci(n):", 24, mode="int")
    b = load_model().generate("def fibonacci(n):", 24, mode="int")
    assert a.token_ids == b.token_ids and len(a.token_ids) == 24
    ids = shipped.tokenizer.prompt_ids("def fibonacci(n):")
    logits = shipped.logits(ids + a.token_ids[:-1], mode="int")
    assert [arith.argmax_int(r) for r in logits[len(ids) - 1:]] == a.token_ids
    assert "\n" in a.text                              # it writes lines of code


def test_int_mode_matmuls_go_through_the_backend(shipped):
    seen = []

    class Recording(NumpyBackend):
        def matmul(self, op, x_q):
            seen.append(op.name)
            return super().matmul(op, x_q)

    m = load_model()
    m.set_backend(Recording())
    m.logits([0, 100, 101], mode="int")
    assert seen == [n for n, _, _ in m.sites()]     # every weight matmul, in order


@pytest.mark.parametrize("over", [dict(), dict(attention_bias=True),
                                  dict(tie_word_embeddings=True, num_kv_heads=4),
                                  dict(num_kv_heads=1, head_dim=24)])
def test_int_mode_on_random_checkpoints(over):
    m = random_model(tiny_config(**over), seed=3)
    ids = [0, 100, 101, 102, 58, 10, 32, 32, 32, 32, 114, 101, 116]
    f, q = m.logits(ids), m.float_logits(m.logits(ids, mode="int"))
    err = np.abs(f - q).max() / np.abs(f).max()
    assert err < 0.08, err                            # measured 0.02-0.035 (int8: 0.02-0.04)


def test_int_mode_errors_name_the_field():
    cfg = tiny_config(hidden_size=8, num_heads=1, num_kv_heads=1,
                      head_dim=intpath.MAX_HEAD_DIM + 2, intermediate_size=8)
    m = random_model(cfg, seed=0)
    with pytest.raises(ValueError, match="head_dim 16386 is too large for the int path"):
        m.logits([1, 2], mode="int")
    m = random_model(tiny_config(max_position_embeddings=intpath.MAX_POSITIONS + 10), seed=0)
    m.quantize(calibration_ids=list(range(40)))
    cache = m.new_cache(4, mode="int")
    cache.length = intpath.MAX_POSITIONS
    with pytest.raises(ValueError, match=r"at most 65536 positions \(max_position_embeddings"):
        m.forward([1], cache, "int")
    with pytest.raises(ValueError, match="needs a int8 KV cache"):
        m.forward([1], m.new_cache(4), "int")
    with pytest.raises(ValueError, match="mode must be one of 'float', 'int8', 'int'"):
        m.logits([1], mode="int4")


def test_int_mode_on_a_gguf_file_equals_the_same_weights_in_memory(tmp_path):
    """GGUF (llama.cpp's interleaved q/k rows, undone by the loader): identical int logits."""
    from sparktile.golden_model.model import Model
    from sparktile.golden_model.testing import random_weights
    from test_golden_gguf import CFG, write_gguf

    w = random_weights(CFG, seed=5)
    g = load_model(write_gguf(tmp_path / "m.gguf", w))
    ref = Model(CFG, w)
    calib = RNG.integers(0, CFG.vocab_size, 200).tolist()
    for m in (g, ref):
        m.quantize(calibration_ids=calib)
    ids = [1, 5, 280, 100, 7, 42]
    a, b = g.logits(ids, mode="int"), ref.logits(ids, mode="int")
    assert a.dtype == np.int32 and np.array_equal(a, b)


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_int_mode_on_hf_folders(tmp_path, model_type):
    from test_golden_checkpoint import _hf_folder

    p, cfg, _ = _hf_folder(tmp_path, model_type)
    m = load_model(p)
    m.quantize(calibration_ids=np.random.default_rng(0).integers(0, 256, 300).tolist())
    ids = [0, 17, 200, 3, 99, 250, 4]
    f, q = m.logits(ids), m.float_logits(m.logits(ids, mode="int"))
    # measured 0.05 (llama) and 0.07 (qwen2, biases); the int8 path gives 0.14 here
    assert np.abs(f - q).max() / np.abs(f).max() < 0.1


def test_int_mode_seeded_sampling_is_reproducible(shipped):
    a = shipped.generate("import ", 16, mode="int", temperature=0.8, top_k=40, seed=7)
    b = shipped.generate("import ", 16, mode="int", temperature=0.8, top_k=40, seed=7)
    c = shipped.generate("import ", 16, mode="int", temperature=0.8, top_k=40, seed=8)
    assert a.token_ids == b.token_ids and a.token_ids != c.token_ids


def test_first_difference_names_the_first_element_row_major():
    from sparktile.golden_model.arith import first_difference
    a = np.zeros((3, 5), dtype=np.int32)
    assert first_difference(a, a.copy()) is None
    b = a.copy()
    b[2, 0] = 7
    b[1, 4] = -3            # earlier in row-major order than [2, 0]
    assert first_difference(b, a) == {"vector": 1, "index": 4, "got": -3, "expected": 0}
    with pytest.raises(ValueError, match="shape"):
        first_difference(a[:2], a)


def test_gemv_golden_is_requantized_matmul():
    from sparktile.golden_model.arith import gemv_golden, matmul_int8, requantize
    rng = np.random.default_rng(5)
    w = rng.integers(-128, 128, (6, 9), dtype=np.int8)
    x = rng.integers(-128, 128, (2, 9), dtype=np.int8)
    mult = rng.integers(1, 1 << 16, 6)
    shift = rng.integers(8, 20, 6)
    acc = w.astype(np.int64) @ x.T.astype(np.int64)
    assert np.array_equal(gemv_golden(w, x, mult, shift, out_int32=True), acc.T)
    assert np.array_equal(gemv_golden(w, x, mult, shift),
                          requantize(matmul_int8(w, x.T), mult[:, None], shift[:, None]).T)
