"""The PE's MAC pipeline: four int8 multiply-accumulates per cycle into the accumulator memory.

Per issued row (one per cycle at most): the weight word of that row is on the SRAM read port
(the PE's task sequencer addresses it in the issue cycle), and the activation word travels
with the row. Stage 1: the weight word leaves the SRAM into a register (a block RAM's output
is slow; nothing else happens in this cycle). Stage 2: four int8 x int8 products (DSP blocks),
registered. Stage 3: their sum; the row's accumulator is read meanwhile. Stage 4: accumulate
(32-bit, wrapping; overwrite for the first wavelet of a vector) and write back. The read in
stage 3 and the write in stage 4 are one cycle apart and the accumulator read port is
transparent to the write, so back-to-back updates of one row (a one-row descriptor) see each
other. The pipeline never stalls: ``issue`` is always ready.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MacIssue", "MacPipeline"]


class MacIssue(data.Struct):
    """A row issued to the MAC pipeline: accumulator index, first wavelet of the vector (the
    accumulator is overwritten), and the four int8 activation lanes."""
    row: 16
    first: 1
    x: 32


class MacPipeline(wiring.Component):
    """Four-stage MAC pipeline (the accumulator write lands 4 cycles after the issue).

    Members
    -------
    issue : In(stream.Signature(MacIssue, always_ready=True))
        One row per cycle at most; its weight word is on ``weight`` the next cycle.
    weight : In(32)
        The SRAM read port's data (four int8 lanes, lane 0 in the low byte).
    acc_rd_en, acc_rd_addr : Out(1), Out(16)
        Accumulator read (stage 3); the data is on ``acc_rd_data`` the next cycle.
    acc_rd_data : In(32)
    acc_wr_en, acc_wr_addr, acc_wr_data : Out(1), Out(16), Out(32)
        Accumulator write-back (stage 4).
    busy : Out(1)
        A row is in stages 1..3 (its accumulator is not written yet; the reduce task waits).
    """

    def __init__(self):
        super().__init__({
            "issue": In(stream.Signature(MacIssue, always_ready=True)),
            "weight": In(32),
            "acc_rd_en": Out(1),
            "acc_rd_addr": Out(16),
            "acc_rd_data": In(32),
            "acc_wr_en": Out(1),
            "acc_wr_addr": Out(16),
            "acc_wr_data": Out(32),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()

        s1_valid = Signal()      # stage 1: weight word on the SRAM read port
        s1 = Signal(MacIssue)
        with m.If(self.issue.valid):
            m.d.sync += s1.eq(self.issue.payload)
        m.d.sync += s1_valid.eq(self.issue.valid)

        sw_valid = Signal()      # stage 2: weight word registered
        sw_row = Signal(16)
        sw_first = Signal()
        sw_w = Signal(32)
        sw_x = Signal(32)
        with m.If(s1_valid):
            m.d.sync += [sw_w.eq(self.weight), sw_x.eq(s1.x)]
        m.d.sync += [sw_valid.eq(s1_valid), sw_row.eq(s1.row), sw_first.eq(s1.first)]

        sp_valid = Signal()      # stage 3: products registered, accumulator read issued
        sp_row = Signal(16)
        sp_first = Signal()
        sp_prod = [Signal(signed(16), name=f"sp_prod_{l}") for l in range(4)]
        with m.If(sw_valid):
            for l in range(4):
                m.d.sync += sp_prod[l].eq(sw_w.word_select(l, 8).as_signed() *
                                          sw_x.word_select(l, 8).as_signed())
        m.d.sync += [sp_valid.eq(sw_valid), sp_row.eq(sw_row), sp_first.eq(sw_first)]

        s2_valid = Signal()      # stage 4: dot product registered, accumulator on its port
        s2_row = Signal(16)
        s2_first = Signal()
        s2_dot = Signal(signed(18))
        m.d.comb += [self.acc_rd_en.eq(sp_valid), self.acc_rd_addr.eq(sp_row)]
        with m.If(sp_valid):
            m.d.sync += s2_dot.eq((sp_prod[0] + sp_prod[1]) + (sp_prod[2] + sp_prod[3]))
        m.d.sync += [s2_valid.eq(sp_valid), s2_row.eq(sp_row), s2_first.eq(sp_first)]
        m.d.comb += [
            self.acc_wr_en.eq(s2_valid),
            self.acc_wr_addr.eq(s2_row),
            self.acc_wr_data.eq(Mux(s2_first, 0, self.acc_rd_data) + s2_dot),
            self.busy.eq(s1_valid | sw_valid | sp_valid),
        ]
        return m
