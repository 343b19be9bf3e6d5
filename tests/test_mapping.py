"""The mapping compiler, checked without a simulator: a functional model of the PE program
(descriptors, SRAM images, chain order) must reproduce numpy's result."""

import math

import numpy as np
import pytest
from sparktile.golden_model.arith import (
    matmul_int8,
    requant_params,
    requantize,
    unpack_int8,
    wrap_int32,
)
from sparktile.hdl.formats import (
    CC_CTRL,
    DESC_WORDS,
    DescWord0,
    DescWord1,
    DescWord2,
    PeReg,
    RequantWord,
    unpack,
)
from sparktile.hdl.mesh import MeshShape

from sparktile.compiler.mapping import Colors, MappingError, Region, compile_gemv, gemv_words


def _sram(mapping, r, c):
    img = np.zeros(mapping.shape.sram_words, np.uint32)
    for addr, words in mapping.program.sram[r, c]:
        img[addr:addr + len(words)] = words
    return img


def emulate(mapping, x):
    """What the PEs compute, from the compiled SRAM images and the host streams alone."""
    x = np.atleast_2d(x)
    streams = mapping.x_streams(x)
    reg = mapping.region
    out_rows = {}
    for rr in range(reg.rows):
        r = reg.row + rr
        words_out = []
        for desc, _row0, _rows in mapping.passes:
            for b in range(x.shape[0]):
                chain = None
                for cc in range(reg.cols):
                    c = reg.col + cc
                    img = _sram(mapping, r, c)
                    d0, d1, d2 = (unpack(lay, word) for lay, word in zip(
                        (DescWord0, DescWord1, DescWord2), img[desc:desc + DESC_WORDS],
                        strict=True))
                    w_base, nw, rows, q_base = d0["w_base"], d0["n_words"], d1["rows"], \
                        d2["q_base"]
                    flags = d1["flags"]
                    pay, ccs = streams[c]
                    data = pay[(ccs & CC_CTRL) == 0]
                    xs = unpack_int8(data[b * nw:(b + 1) * nw]).astype(np.int64)
                    w = unpack_int8(img[w_base:w_base + rows * nw]).reshape(rows, nw * 4)
                    acc = wrap_int32(w.astype(np.int64) @ xs)
                    assert bool(flags["first"]) == (chain is None)
                    chain = acc if chain is None else wrap_int32(acc.astype(np.int64) + chain)
                    if flags["last"]:
                        if flags["int32"]:
                            words_out += chain.view(np.uint32).tolist()
                        else:
                            q = [unpack(RequantWord, w) for w in img[q_base:q_base + rows]]
                            y = requantize(chain, np.array([e["mult"] for e in q]),
                                           np.array([e["shift"] for e in q]))
                            pad = np.zeros(math.ceil(rows / 4) * 4, np.int8)
                            pad[:rows] = y
                            words_out += pad.view(np.uint32).tolist()
        out_rows[r] = np.array(words_out, np.uint32)
    return mapping.decode_y(out_rows, x.shape[0])


@pytest.mark.parametrize("rows,cols,m,n,batch", [(1, 1, 1, 1, 1), (2, 3, 7, 13, 2),
                                                 (4, 4, 61, 257, 1), (3, 2, 300, 9, 1),
                                                 (2, 5, 64, 64, 3)])
@pytest.mark.parametrize("out_int32", [False, True])
def test_compiled_program_computes_the_gemv(rows, cols, m, n, batch, out_int32):
    rng = np.random.default_rng(rows * 100 + m)
    shape = MeshShape(rows, cols, acc_depth=128)
    w = rng.integers(-128, 128, (m, n), dtype=np.int8)
    x = rng.integers(-128, 128, (batch, n), dtype=np.int8)
    mult, shift = requant_params(rng.uniform(1e-5, 1e-3, m))
    mp = compile_gemv(shape, w, mult, shift, out_int32=out_int32)
    acc = matmul_int8(w, x.T)
    want = acc.T if out_int32 else requantize(acc, mult[:, None], shift[:, None]).T
    np.testing.assert_array_equal(emulate(mp, x), want)
    assert mp.y_wavelets_per_row(batch) * rows == sum(
        (rws if out_int32 else math.ceil(rws / 4)) * batch * rows for _, _, rws in mp.passes)


def test_sub_region_routes_pass_through():
    shape = MeshShape(3, 4)
    w = np.ones((8, 8), np.int8)
    mp = compile_gemv(shape, w, 1 << 15, 16, region=Region(1, 1, 2, 2))
    # x passes through row 0 of the region's columns; y passes east through column 3.
    assert mp.program.routes[0, 1][0].dst == {2}  # Port.S
    assert mp.program.routes[1, 3][3].src == 3    # Port.W
    assert mp.program.regs[1, 2][PeReg.OUT_COLOR] == 3
    x = np.arange(8, dtype=np.int8)
    np.testing.assert_array_equal(emulate(mp, x), requantize(
        matmul_int8(w, x[:, None]), 1 << 15, 16).T)


def test_too_big_names_sizes_and_capacity():
    with pytest.raises(MappingError, match=r"W \(4096x4096\) needs \d+ SRAM words per PE on a "
                                           r"2x2 region .* a PE has 4096 words \(16 KiB\)"):
        compile_gemv(MeshShape(2, 2), np.zeros((4096, 4096), np.int8), 1, 0)


def test_bad_inputs():
    shape = MeshShape(2, 2)
    with pytest.raises(MappingError, match="not inside the 2x2 mesh"):
        compile_gemv(shape, np.zeros((4, 4), np.int8), 1, 0, region=Region(1, 1, 2, 1))
    with pytest.raises(MappingError, match="four distinct colors"):
        compile_gemv(shape, np.zeros((4, 4), np.int8), 1, 0, colors=Colors(0, 0, 1, 2))
    with pytest.raises(MappingError, match="non-empty 2-D"):
        compile_gemv(shape, np.zeros(4, np.int8), 1, 0)
    mp = compile_gemv(shape, np.zeros((4, 4), np.int8), 1, 0)
    with pytest.raises(MappingError, match="x has 5 elements per vector; W has 4"):
        mp.x_streams(np.zeros(5, np.int8))


def test_geometry():
    g = gemv_words(100, 30, Region(0, 0, 3, 2), acc_depth=16)
    assert g == {"m_pe": 34, "nw_pe": 4, "passes": 3, "words": 34 * 4 + 34 + 9}
