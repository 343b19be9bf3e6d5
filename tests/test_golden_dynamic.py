"""Per-token and per-group dynamic activation scales (``act_scales``): the integer ops
against float with stated bounds, their properties at the extremes, and the int8 / int
modes under the ``dynamic`` and ``group`` schemes on random checkpoints."""

import numpy as np
import pytest
from sparktile.golden_model import arith, load_model
from sparktile.golden_model.backend import NumpyBackend
from sparktile.golden_model.errors import GenerationError
from sparktile.golden_model.model import OUTLIER_RATIO_DYNAMIC
from sparktile.golden_model.quant import GROUP
from sparktile.golden_model.testing import random_model, tiny_config

rng = np.random.default_rng(12)


def _rows(n, width, lo_bits, hi_bits):
    mag = 2.0 ** rng.uniform(lo_bits, hi_bits, (n, 1))
    return np.rint(rng.standard_normal((n, width)) * mag / 3).astype(np.int64)


@pytest.mark.parametrize("bits", [(0, 12), (12, 31), (31, 61)])
def test_quantize_dynamic_vs_float(bits):
    v = _rows(300, 64, *bits)
    x_q, mant, ex = arith.quantize_dynamic(v)
    assert x_q.dtype == np.int8 and mant.shape == ex.shape == (300, 1)
    assert mant.min() >= 1 << 15 and mant.max() < 1 << 16
    unit = np.abs(v).max(1, keepdims=True) / 127.0
    deq = x_q.astype(np.float64) * mant * 2.0 ** ex / 127.0
    # Bound: half a unit of rounding, the reciprocal (one unit in 2**16) and the mantissa's
    # truncation (2**-15) over 127 units, the pre-shift's half unit: under 0.52 units + 1.
    err = np.abs(deq - v) / unit
    assert err.max() <= 0.52 + 1.0 / unit.min(), err.max()
    nz = np.abs(v).max(1) > 0
    assert np.all(np.abs(x_q[nz]).max(1) == 127)          # the row maximum maps to +-127


def test_quantize_dynamic_extremes_never_overflow_int8():
    big = (1 << 62) - 1
    v = np.array([[big, -big, 1], [-big, 0, 0], [0, 0, 0], [1, -1, 0], [-1, 0, 0],
                  [np.iinfo(np.int32).min, np.iinfo(np.int32).max, 5]], np.int64)
    x_q, mant, ex = arith.quantize_dynamic(v)
    assert x_q.min() >= -127 and x_q.max() <= 127         # int8 never saturates at -128
    assert x_q[0].tolist() == [127, -127, 0] and x_q[2].tolist() == [0, 0, 0]
    assert x_q[3].tolist() == [127, -127, 0] and x_q[4].tolist() == [-127, 0, 0]
    # a single exact power of two: its scale is exact too
    x_q, mant, ex = arith.quantize_dynamic(np.array([[1 << 40, 0]]))
    assert x_q[0, 0] == 127 and int(mant[0, 0]) * 2.0 ** int(ex[0, 0]) == 2.0 ** 40


def test_requantize_dynamic_vs_float_and_saturation():
    t, k, m = 40, 64, 24
    v = _rows(t, k, 4, 40)
    x_q, mant, ex = arith.quantize_dynamic(v)
    w = rng.integers(-127, 128, (m, k)).astype(np.int8)
    s_w, a, s_out = rng.uniform(1e-3, 1e-2, m), 1e-9, 0.05
    mult, shift = arith.signed_params(s_w * a / (127 * s_out), arith.DYN_SHIFT_MAX)
    acc = arith.matmul_int8(w, x_q.T).T
    got = arith.requantize_dynamic(acc, mant, ex, mult, shift, 32)
    # float of the same int8 inputs: the two roundings and the 16-bit constants only
    ref = acc * (mant * 2.0 ** ex / 127.0) * (s_w * a / s_out)
    assert np.all(np.abs(got - ref) <= 1.0 + 2.0 ** -13 * np.abs(ref))
    sat = arith.requantize_dynamic(acc, mant, ex, mult, shift, 8)
    assert sat.min() >= -128 and sat.max() <= 127
    assert np.array_equal(sat, np.clip(got, -128, 127))


def test_silu_interp_vs_float():
    s_step = 0.09
    s_out = float(np.abs(np.arange(-128, 129) * s_step).max()) / 32767
    tab = arith.silu_table_interp(s_step, s_out)
    assert tab.shape == (257,)
    g = np.arange(-(1 << 15), 1 << 15)
    x = g * s_step / 256
    got = arith.silu_interp_int(g, tab) * s_out
    ref = x / (1 + np.exp(-x))
    # interpolation bound s_step**2 / 16 (max|silu''| = 0.5) plus the table's and the
    # interpolation's rounding (one output unit)
    assert np.abs(got - ref).max() <= s_step ** 2 / 16 + s_out, np.abs(got - ref).max()
    assert np.array_equal(arith.silu_interp_int(g[::256], tab), tab[:256])   # exact on nodes
    with pytest.raises(ValueError, match="int16"):
        arith.silu_interp_int([1 << 15], tab)


def test_gate_up_int16_vs_float():
    s_step, s_u = 0.05, rng.uniform(0.001, 0.01, 32)
    s_s = 128 * s_step / 32767
    tab = arith.silu_table_interp(s_step, s_s)
    gate = rng.integers(-(1 << 15), 1 << 15, (20, 32))
    up = rng.integers(-(1 << 15), 1 << 15, (20, 32))
    s_o = 1e-4
    mult, shift = arith.requant_params(s_s * s_u / s_o)
    got = arith.gate_up_int16(gate, up, tab, mult, shift) * s_o
    xg = gate * s_step / 256
    ref = xg / (1 + np.exp(-xg)) * up * s_u
    tol = (s_step ** 2 / 16 + s_s) * np.abs(up) * s_u + 2 ** -14 * np.abs(ref) + s_o
    assert np.all(np.abs(got - ref) <= tol)


def test_shipped_model_stays_static_by_default():
    m = load_model()
    m.quantize()
    assert m.act_scales == "auto" and m.act_scales_used == "static"
    assert m.outlier_ratio < OUTLIER_RATIO_DYNAMIC             # measured 5.9
    assert [op.out for op in m.matmul_ops()] == [s.out for s in m.matmul_shapes()]
    assert {op.out for op in m.matmul_ops()} == {"int8", "int32"}


def test_act_scales_errors_name_the_value_and_field():
    m = random_model(tiny_config(), seed=0)
    with pytest.raises(GenerationError, match="act_scales must be one of.*'per-row'"):
        m.set_act_scales("per-row")
    m.set_act_scales("group")                      # intermediate_size 96: not a multiple of 64
    with pytest.raises(GenerationError, match="intermediate_size = 96 is not a multiple of 64"):
        m.logits([1, 2, 3], mode="int8")


CKPTS = [dict(), dict(attention_bias=True), dict(tie_word_embeddings=True, num_kv_heads=4),
         dict(num_kv_heads=1)]


@pytest.mark.parametrize("scheme", ["dynamic", "group"])
@pytest.mark.parametrize("over", CKPTS)
def test_dynamic_schemes_on_random_checkpoints(scheme, over):
    m = random_model(tiny_config(intermediate_size=128, **over), seed=3)
    m.set_act_scales(scheme)
    ids = [0, 100, 101, 102, 58, 10, 32, 32, 32, 32, 114, 101, 116, 40, 41, 58]
    f = m.logits(ids)
    for mode in ("int8", "int"):
        q = m.float_logits(m.logits(ids, mode=mode))
        err = np.abs(f - q).max() / np.abs(f).max()
        assert err < 0.08, (mode, err)
    assert m.act_scales_used == scheme
    assert all(op.out == "int32" for op in m.matmul_ops())
    names = [op.name for op in m.matmul_ops()]
    if scheme == "group":                          # one op per 64 input channels
        assert "layers.0.mlp.down.g1" in names and len(names) == 2 * (6 + 2) + 1
    assert [s.name for s in m.matmul_shapes()] == names
    # int mode: bit-exact through the KV cache, int8 cache
    full = m.logits(ids, mode="int")
    cache = m.new_cache(2, mode="int")
    parts = [m.forward(ids[:5], cache, "int")] + [m.forward([t], cache, "int")
                                                  for t in ids[5:]]
    assert np.array_equal(np.concatenate(parts), full)


def test_group_scheme_matmuls_go_through_the_backend():
    seen = []

    class Recording(NumpyBackend):
        def matmul(self, op, x_q):
            seen.append((op.name, op.out, x_q.shape[1]))
            return super().matmul(op, x_q)

    m = random_model(tiny_config(intermediate_size=128), seed=1)
    m.set_act_scales("group")
    m.set_backend(Recording())
    for mode in ("int8", "int"):
        seen.clear()
        m.logits([0, 100, 101], mode=mode)
        assert [s[0] for s in seen] == [op.name for op in m.matmul_ops()], mode
        assert {s[1] for s in seen} == {"int32"} and {s[2] for s in seen} == {GROUP}


def test_cli_act_scales_option():
    from click.testing import CliRunner

    from sparktile.cli import main

    r = CliRunner().invoke(main, ["generate", "--prompt", "def f(x):", "--max-tokens", "4",
                                  "--mode", "int", "--act-scales", "dynamic"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("def f(x):")
    r = CliRunner().invoke(main, ["generate", "--prompt", "x", "--act-scales", "row"])
    assert r.exit_code == 2 and "'row' is not one of" in r.output
    r = CliRunner().invoke(main, ["generate", "--prompt", "x", "--mode", "int8",
                                  "--act-scales", "group"])       # shipped ffn is 352 wide
    assert r.exit_code != 0 and "intermediate_size = 352" in r.output
