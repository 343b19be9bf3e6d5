"""The core GEMV mapping (``sparktile.compiler.core_mapping``) without a simulator: each PE's
program runs in the instruction-set simulator, the partial sums handed from PE to PE along each
region row as the routes would carry them, and y is compared bit-exactly with
``arith.gemv_golden``. The Verilator runs are in ``tests/test_gemv_core_rtl.py``."""

import numpy as np
import pytest
from sparktile.cosim.benches.gemv import random_problem
from sparktile.golden_model.arith import first_difference, gemv_golden
from sparktile.hdl import isa
from sparktile.hdl.formats import Wavelet, unpack
from sparktile.hdl.mesh import MeshShape
from sparktile.hdl.tile import CORE_XBUF_WORDS

from sparktile.compiler import iss
from sparktile.compiler.core_mapping import compile_core_gemv, core_task_cycles
from sparktile.compiler.mapping import MappingError
from sparktile.compiler.routes import check_deadlock_free


def run_on_iss(mapping, x):
    """y wavelets per mesh row, from the ISS running every PE's program once per vector."""
    shape, region, colors = mapping.shape, mapping.region, mapping.colors
    streams = mapping.x_streams(x)
    per_row, stats = {}, {}
    for rr in range(region.rows):
        r = region.row + rr
        incoming = []
        for cc_ in range(region.cols):
            c = region.col + cc_
            st = iss.PEState.new(shape.sram_words, CORE_XBUF_WORDS)
            for addr, words in mapping.program.sram[r, c]:
                st.sram[addr:addr + len(words)] = words
            for reg, value in mapping.program.regs[r, c].items():
                if reg < isa.QUEUE_REG_BASE and value >> 15:
                    st.tasks[reg] = value & 0x7FFF
                elif reg >= isa.QUEUE_REG_BASE and value >> 5:
                    st.bind_queue(value & 31)
            pays, ccs = streams[c]
            acts = []
            for p, k in zip(pays, ccs, strict=True):
                w = unpack(Wavelet, int(k) << 32 | int(p))
                if w["ctrl"]:
                    acts.append((w["color"], w["payload"]))
                else:
                    st.queues[w["color"]].append(int(p))
            psum_color = next((v & 31 for reg, v in mapping.program.regs[r, c].items()
                               if reg == isa.QUEUE_REG_BASE + 1), None)
            if psum_color is not None:
                st.queues[psum_color].extend(incoming)
            iss.run_tasks(st, acts)
            assert st.stats.task_errors == 0
            out = colors.y if cc_ == region.cols - 1 else \
                (colors.p1 if cc_ % 2 else colors.p0)
            incoming = st.sent.get(out, [])
            stats[r, c] = st.stats
        per_row[r] = np.array(incoming, dtype=np.uint32)
    return per_row, stats


CASES = [(1, 1, 1, 1, 1, False), (2, 2, 7, 13, 2, False), (2, 3, 37, 91, 2, True),
         (3, 1, 20, 50, 3, False), (4, 4, 256, 992, 1, False), (2, 3, 33, 70, 2, False)]


@pytest.mark.parametrize("rows,cols,m,n,batch,out_int32", CASES)
def test_core_gemv_mapping_on_the_iss_is_bit_exact(rows, cols, m, n, batch, out_int32):
    seed = 7 + m + n
    shape = MeshShape(rows, cols, pe="core")
    w, x, mult, shift = random_problem(m, n, batch, seed)
    mapping = compile_core_gemv(shape, w, mult, shift, out_int32=out_int32)
    check_deadlock_free(mapping.program)
    per_row, stats = run_on_iss(mapping, x)
    y = mapping.decode_y(per_row, batch)
    d = first_difference(y, gemv_golden(w, x, mult, shift, out_int32=out_int32))
    assert d is None, f"seed {seed}: {d}"
    for (r, c), s in stats.items():
        assert s.tasks == batch
        assert s.mac_busy == batch * mapping.m_pe * mapping.widths[c - mapping.region.col]
        assert s.cycles == batch * core_task_cycles(mapping.programs[r, c])


def test_a_core_gemv_that_does_not_fit_names_the_sizes():
    shape = MeshShape(1, 1, pe="core", sram_kb=1)
    with pytest.raises(MappingError, match=r"needs \d+ SRAM words.*256 words"):
        compile_core_gemv(shape, np.ones((64, 64), np.int8), 1, 0)
    with pytest.raises(MappingError, match="at most 256"):
        compile_core_gemv(MeshShape(1, 1, pe="core"), np.ones((1, 4 * 300), np.int8), 1, 0)
    with pytest.raises(MappingError, match="pe='core'"):
        compile_core_gemv(MeshShape(1, 1), np.ones((1, 4), np.int8), 1, 0)


def test_the_pe_option_is_validated_and_keyed_only_when_not_default():
    assert MeshShape(2, 2).key() == (2, 2, 16, 256)
    assert MeshShape(2, 2, pe="core").key() == (2, 2, 16, 256, ("pe", "core"))
    for bad, match in (({"pe": "cpu"}, "pe must be one of gemv, core, not 'cpu'"),
                       ({"pe": "core", "sram_kb": 3}, "power-of-two sram_kb"),
                       ({"pe": "core", "link_regs": True}, "link_regs"),
                       ({"pe": "core", "cover_points": True}, "cover_points")):
        with pytest.raises(ValueError, match=match):
            MeshShape(2, 2, **bad)
