"""The matmul dispatch point: MatmulOp validation, NumpyBackend == arith, backend plumbing."""

import numpy as np
import pytest
from sparktile.golden_model import arith
from sparktile.golden_model.backend import KINDS, MatmulOp, NumpyBackend, check_input
from sparktile.golden_model.quant import make_linear, quantize_act, quantize_weight
from sparktile.golden_model.testing import random_model, tiny_config


def _op(m=8, n=12, out="int8", seed=0, **kw):
    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, (m, n)).astype(np.int8)
    mult, shift = arith.requant_params(rng.uniform(1e-4, 1e-2, m))
    args = dict(name="layers.0.mlp.up", kind="up", layer=0, w_q=w, mult=mult, shift=shift,
                out=out)
    args.update(kw)
    return MatmulOp(**args)


@pytest.mark.parametrize("out", ["int8", "int32"])
@pytest.mark.parametrize("b", [1, 5])
def test_numpy_backend_is_arith(out, b):
    op = _op(out=out)
    x = np.random.default_rng(1).integers(-128, 128, (b, 12)).astype(np.int8)
    y = NumpyBackend().matmul(op, x)
    acc = arith.matmul_int8(op.w_q, x.T)
    want = acc.T if out == "int32" else arith.requantize(acc, op.mult[:, None],
                                                         op.shift[:, None]).T
    assert y.dtype == (np.int32 if out == "int32" else np.int8)
    assert y.shape == (b, 8)
    np.testing.assert_array_equal(y, want)


def test_int32_accumulator_wraps_like_hardware():
    # 4096 products of (-128 * -128) = 2**26 overflow nothing; make it overflow on purpose.
    n = 1 << 17
    op = MatmulOp("head", "head", -1, np.full((1, n), -128, np.int8),
                  np.zeros(1, np.int64), np.zeros(1, np.int64), "int32")
    y = NumpyBackend().matmul(op, np.full((1, n), -128, np.int8))
    assert int(y[0, 0]) == arith.wrap_int32([(1 << 14) * n])[0] == -(1 << 31)


@pytest.mark.parametrize("field,value,match", [
    ("kind", "ffn", "kind must be one of"),
    ("out", "int16", "out must be 'int8' or 'int32'"),
    ("w_q", np.zeros((4, 4), np.int16), "w_q must be a 2-D int8 array"),
    ("w_q", np.zeros((8, 24), np.int8)[:, ::2], "C-contiguous"),
    ("mult", np.zeros(3, np.int64), r"mult must be an int64 array of shape \(8,\)"),
    ("shift", np.zeros(8, np.int32), "shift must be an int64 array"),
    ("mult", np.full(8, 1 << 16, np.int64), r"mult must be in \[0, 65535\], not"),
    ("shift", np.full(8, 48, np.int64), r"shift must be in \[0, 47\]"),
])
def test_matmul_op_rejects(field, value, match):
    with pytest.raises(ValueError, match=match):
        _op(**{field: value})


def test_backend_rejects_bad_activations():
    op = _op()
    with pytest.raises(ValueError, match="2-D int8 array"):
        check_input(op, np.zeros((1, 12), np.float32))
    with pytest.raises(ValueError, match="activations have 11 columns but the weights are 8x12"):
        NumpyBackend().matmul(op, np.zeros((1, 11), np.int8))


def test_weight_quantization_is_symmetric_per_channel():
    w = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [3.0, 1.5, -0.75]], np.float32)
    w_q, s = quantize_weight(w)
    np.testing.assert_array_equal(w_q, [[64, -127, 32], [0, 0, 0], [127, 64, -32]])
    np.testing.assert_allclose(s, [1 / 127, 1.0, 3 / 127])
    assert quantize_act(np.array([1000.0, -1000.0, 0.4]), 1.0).tolist() == [127, -127, 0]


def test_make_linear_requant_constants():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((32, 64)).astype(np.float32)
    ql = make_linear("layers.0.attn.q", "q", 0, w, 4.0, np.full(32, 10.0))
    s_w = np.abs(w).max(axis=1) / 127
    mult, shift = arith.requant_params(s_w * (4.0 / 127) / (10.0 / 127))
    np.testing.assert_array_equal(ql.op.mult, mult)
    np.testing.assert_array_equal(ql.op.shift, shift)
    head = make_linear("head", "head", -1, w, 4.0, None)
    assert head.op.out == "int32" and head.s_out is None


class _Recorder:
    """A backend that delegates to numpy and records what it was asked."""

    def __init__(self):
        self.calls = []
        self.inner = NumpyBackend()

    def matmul(self, op, x_q):
        self.calls.append((op.name, x_q.shape[0]))
        return self.inner.matmul(op, x_q)


def test_matmul_ops_static_ordered_and_used():
    m = random_model(tiny_config(), seed=3)
    ops = m.matmul_ops()
    c = m.config
    assert len(ops) == 7 * c.num_layers + 1
    assert [o.kind for o in ops[:7]] == ["q", "k", "v", "o", "gate", "up", "down"]
    assert ops[-1].name == "head" and ops[-1].layer == -1 and ops[-1].out == "int32"
    assert all(o.out == "int8" for o in ops[:-1])
    assert {o.kind for o in ops} == set(KINDS)
    assert ops[9].name == "layers.1.attn.v" and ops[9].layer == 1
    assert ops[0].shape == (c.num_heads * c.head_dim, c.hidden_size)
    assert ops[1].shape == (c.num_kv_heads * c.head_dim, c.hidden_size)
    assert all(o.w_q.flags.c_contiguous and o.w_q.dtype == np.int8 for o in ops)
    ref = m.logits([0, 5, 9, 33], mode="int8")
    rec = _Recorder()
    m.set_backend(rec)
    assert m.backend is rec
    np.testing.assert_array_equal(m.logits([0, 5, 9, 33], mode="int8"), ref)
    assert [n for n, _ in rec.calls] == [o.name for o in ops]
    assert {b for _, b in rec.calls} == {4}
    # Same objects every time: the hardware can keep them resident.
    assert all(a is b for a, b in zip(m.matmul_ops(), ops, strict=True))
    # Decode passes B=1.
    rec.calls.clear()
    m.generate([0, 5], 3, mode="int8")
    assert [b for _, b in rec.calls] == [2] * len(ops) + [1] * 2 * len(ops)
    # The float path never touches the backend.
    rec.calls.clear()
    m.logits([1, 2, 3])
    assert rec.calls == []


def test_set_backend_rejects_non_backend():
    m = random_model()
    with pytest.raises(TypeError, match="needs a matmul"):
        m.set_backend(object())
