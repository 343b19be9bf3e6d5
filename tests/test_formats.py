"""hdl/formats.py: every boundary layout packs and unpacks as the RTL's own view of it."""

import numpy as np
import pytest
from amaranth.lib import data
from hypothesis import given, settings
from hypothesis import strategies as st
from sparktile.hdl import formats as f

LAYOUTS = [f.Wavelet, f.CfgHeader, f.CfgResponse, f.RouteEntry, f.ReadAddress, f.DescFlags,
           f.DescWord0, f.DescWord1, f.DescWord2, f.RequantWord]


def _values(layout):
    """A strategy of field dicts for ``layout`` (sub-structs as dicts)."""
    fields = {}
    for name, fld in data.Layout.cast(layout):
        sub = fld.shape
        if isinstance(sub, type) and issubclass(sub, data.Struct):
            fields[name] = _values(sub)
        else:
            fields[name] = st.integers(0, (1 << fld.width) - 1)
    return st.fixed_dictionaries(fields)


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda lay: lay.__name__)
@settings(max_examples=50, derandomize=True, database=None)
@given(data=st.data())
def test_pack_is_amaranths_own_layout(layout, data):
    fields = data.draw(_values(layout))
    word = f.pack(layout, **fields)
    # Amaranth's constant of the same fields: the bits the RTL sees through a View.
    assert word == layout.const(fields).as_value().value
    assert f.unpack(layout, word) == fields
    assert 0 <= word < 1 << f.width_of(layout)


def test_documented_bit_positions():
    # The positions the docstrings and docs/architecture.md give.
    assert f.WAVELET_BITS == 38
    assert f.pack(f.Wavelet, color=1) == 1 << 32 and f.pack(f.Wavelet, ctrl=1) == 1 << 37
    assert f.pack(f.CfgHeader, col=1) == 1 << 27 and f.pack(f.CfgHeader, op=1) == 1 << 24
    assert f.pack(f.CfgHeader, addr=1) == 1 << 16
    assert f.pack(f.DescWord0, n_words=1) == 1 << 16
    assert f.pack(f.DescWord1, flags=f.FLAG_INT32) == 4 << 16
    assert f.pack(f.RequantWord, shift=1) == 1 << 16
    assert f.cc(5, 1) == (5 | f.CC_CTRL) and f.CC_CTRL == 1 << 5 and f.CC_COLOR == 0x1F
    # cfg_header's column check is the field's width: it must span the largest mesh.
    assert 1 << data.Layout.cast(f.CfgHeader)["col"].width == f.MAX_MESH_DIM
    assert f.cfg_header(3, f.CfgOp.READ, 5, 7) == f.pack(f.CfgHeader, col=3, op=3, addr=5,
                                                          value=7)


@pytest.mark.parametrize("call, words", [
    (lambda: f.pack(f.CfgHeader, col=32), r"CfgHeader.col must be in \[0, 31\], not 32"),
    (lambda: f.pack(f.Wavelet, payload=-1), r"Wavelet.payload must be in \[0, 4294967295\]"),
    (lambda: f.pack(f.DescWord0, rows=1), r"DescWord0 has no field 'rows'; fields: w_base"),
    (lambda: f.pack(f.DescWord0, w_base={"x": 1}), "is not a struct"),
    (lambda: f.pack(f.DescWord1, flags={"first": 2}), r"DescFlags.first must be in \[0, 1\]"),
    (lambda: f.pack_array(f.RequantWord, mult=np.array([1, 1 << 16])),
     r"RequantWord.mult must be in \[0, 65535\], not 65536"),
    (lambda: f.cat_bits((4, 2)), "4 does not fit in 2 bits"),
])
def test_out_of_range_fields_are_named(call, words):
    with pytest.raises(ValueError, match=words):
        call()


def test_pack_array_matches_pack():
    rng = np.random.default_rng(3)
    mult, shift = rng.integers(0, 1 << 16, 40), rng.integers(0, 64, 40)
    got = f.pack_array(f.RequantWord, mult=mult, shift=shift)
    assert got.dtype == np.uint32
    assert got.tolist() == [f.pack(f.RequantWord, mult=m, shift=s)
                            for m, s in zip(mult, shift, strict=True)]
    assert f.pack_array(f.Wavelet, payload=np.array([1]), ctrl=1).dtype == np.uint64


@settings(max_examples=100, derandomize=True, database=None)
@given(st.lists(st.integers(1, 40).flatmap(
    lambda w: st.tuples(st.integers(0, (1 << w) - 1), st.just(w))), min_size=1, max_size=8))
def test_cat_and_split_are_inverse(fields):
    word = f.cat_bits(*fields)
    assert f.split_bits(word, *(w for _, w in fields)) == [v for v, _ in fields]
