"""The core GEMV mapping (``sparktile.compiler.core_mapping``) without a simulator: each PE's
program runs in the instruction-set simulator, the partial sums handed from PE to PE along each
region row as the routes would carry them, and y is compared bit-exactly with
``arith.gemv_golden``. The Verilator runs are in ``tests/test_gemv_core_rtl.py``."""

import numpy as np
import pytest
from sparktile.cosim.benches.gemv import random_problem
from sparktile.golden_model.arith import first_difference, gemv_golden
from sparktile.hdl import isa
from sparktile.hdl.formats import Port, Wavelet, unpack
from sparktile.hdl.mesh import MeshShape
from sparktile.hdl.tile import CORE_XBUF_WORDS

from sparktile.compiler import iss
from sparktile.compiler.core_mapping import compile_core_gemv, core_task_cycles
from sparktile.compiler.mapping import MappingError, compile_gemv
from sparktile.compiler.routes import check_deadlock_free


def _needs(st, pc):
    """``[(color, words)]`` the instruction at ``pc`` takes from input queues."""
    words = [int(st.sram[pc + j]) for j in range(isa.INSN_WORDS)]
    insn, (_dst, a, b) = isa.decode(words)
    need = []
    if insn["op"] == isa.Op.RECV:
        need.append((a["base"] & 31, insn["n"]))
    if insn["op"] == isa.Op.GEMVX and insn["n"]:
        need.append((a["aux"], insn["imm"] & isa.MAX_GEMV_WORDS))       # x, streamed in
    if insn["op"] in isa.GEMV_OPS and insn["imm"] & isa.FLAG_ADDEND:
        need.append((b["aux"], insn["n"]))
    return need


def run_on_iss(mapping, x):
    """y wavelets per ``(side, mesh row)`` port, from the ISS running every PE's program once
    per vector: each PE steps an instruction when the words it takes are in its queues, and
    the words it sends go where the routes take them (east or west neighbour, or the edge)."""
    shape, region = mapping.shape, mapping.region
    streams = mapping.x_streams(x)
    pes, acts, pcs, where = {}, {}, {}, {}
    # Where each color sent by a PE goes: the neighbour's queue, or an edge port.
    for (r, c), routes in mapping.program.routes.items():
        for color, route in routes.items():
            if route.src == Port.RAMP:
                (out,) = route.dst
                where[r, c, color] = out
    for r in range(region.row, region.row + region.rows):
        for c in range(region.col, region.col + region.cols):
            st = iss.PEState.new(shape.sram_words, CORE_XBUF_WORDS)
            for addr, words in mapping.program.sram[r, c]:
                st.sram[addr:addr + len(words)] = words
            for reg, value in mapping.program.regs[r, c].items():
                if reg < isa.QUEUE_REG_BASE and value >> 15:
                    st.tasks[reg] = value & 0x7FFF
                elif reg >= isa.QUEUE_REG_BASE and value >> 5:
                    st.bind_queue(value & 31)
            acts[r, c] = []
            for p, k in zip(*streams[c], strict=True):
                w = unpack(Wavelet, int(k) << 32 | int(p))
                if w["ctrl"]:
                    acts[r, c].append(w["color"])
                else:
                    st.queues[w["color"]].append(int(p))
            pes[r, c], pcs[r, c] = st, None
    out = {}
    progress = True
    while progress:
        progress = False
        for (r, c), st in pes.items():
            if pcs[r, c] is None:
                if not acts[r, c]:
                    continue
                pcs[r, c] = st.tasks[acts[r, c].pop(0)]
            if any(len(st.queues[c_]) < k for c_, k in _needs(st, pcs[r, c])):
                continue
            pcs[r, c] = iss.step(st, pcs[r, c])
            if pcs[r, c] is None:
                st.stats.tasks += 1
            for color, words in st.sent.items():
                port = where[r, c, color]
                dest = {Port.E: (r, c + 1), Port.W: (r, c - 1)}[port]
                if dest in pes:
                    pes[dest].queues[color].extend(words)
                else:
                    out.setdefault((port.name, r), []).extend(words)
            st.sent.clear()
            progress = True
    assert all(pc is None and not acts[k] for k, pc in pcs.items()), "a PE is stuck"
    return {k: np.array(v, dtype=np.uint32) for k, v in out.items()}, \
        {k: st.stats for k, st in pes.items()}


CASES = [(1, 1, 1, 1, 1, False), (2, 2, 7, 13, 2, False), (2, 3, 37, 91, 2, True),
         (3, 1, 20, 50, 3, False), (4, 4, 256, 992, 1, False), (2, 3, 33, 70, 2, False),
         (2, 2, 2, 9, 2, False),        # one row per PE: one chain
         (1, 4, 9, 40, 2, True), (1, 3, 9, 40, 1, False)]


@pytest.mark.parametrize("rows,cols,m,n,batch,out_int32", CASES)
def test_core_gemv_mapping_on_the_iss_is_bit_exact(rows, cols, m, n, batch, out_int32):
    seed = 7 + m + n
    shape = MeshShape(rows, cols, pe="core")
    w, x, mult, shift = random_problem(m, n, batch, seed)
    mapping = compile_core_gemv(shape, w, mult, shift, out_int32=out_int32)
    check_deadlock_free(mapping.program)
    per_port, stats = run_on_iss(mapping, x)
    assert {k: len(v) for k, v in per_port.items()} == mapping.y_wavelets(batch)
    y = mapping.decode_y_ports(per_port, batch)
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


@pytest.mark.parametrize("w, message", [
    (np.zeros((0, 4)), r"non-empty 2-D matrix, not shape \(0, 4\)"),
    (np.zeros(8), r"non-empty 2-D matrix, not shape \(8,\)"),
    (np.full((2, 4), 128), r"int8: values in \[-128, 127\]"),
])
def test_both_gemv_mappings_refuse_a_matrix_that_is_not_int8(w, message):
    with pytest.raises(MappingError, match=message):
        compile_gemv(MeshShape(1, 1), w, 1 << 15, 0)
    with pytest.raises(MappingError, match=message):
        compile_core_gemv(MeshShape(1, 1, pe="core"), w, 1 << 15, 0)
