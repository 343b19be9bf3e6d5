"""The PE's requantization pipeline: int32 accumulators in, packed int8 wavelet payloads out.

``y = sat8((v * mult + round) >> shift)`` (:func:`sparktile.golden_model.arith.requantize`) in
four registered stages, so that no cycle holds more than one wide operation (on ECP5 the
single-cycle version ran at 28 MHz). ``(p + 2**(s-1)) >> s == (((p << 1) >> s) + 1) >> 1``,
also for s = 0, which turns the 48-bit rounding add into a 10-bit one after the shift.

  C: two 16 x 16 products (DSP)   D: 48-bit sum of the partial products
  E: variable shift               F: round, saturate, pack into the lane, emit

The stages advance together like a pipeline with per-stage valid bits: a stage moves on when
the next is empty or moves on itself, so the pipeline stalls only when its output is not
taken. Each input names the byte lane of its result and whether the packed word is complete
(``emit``); only emitting rows produce an output transfer.

Ordering rule: ``empty`` is 1 only while no row is in any stage. The PE sends its int32
results (which bypass this pipeline) only while ``empty``, so they never overtake int8 ones.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RequantIn", "RequantPipeline", "shift_stage", "round_saturate_stage"]


def shift_stage(m: Module, prod, shift):
    """Stage E's logic: ``t = (prod << 1) >> shift`` (arithmetic) of a signed 48-bit
    product, returned as its low ten bits (signed), whether ``t`` fits in ten signed bits, and its
    sign. Module-level so that the formal proof of the arithmetic
    (:mod:`sparktile.formal.requant`) checks exactly this logic."""
    t = Signal(signed(49))
    m.d.comb += t.eq(Cat(Const(0, 1), prod).as_signed() >> shift)
    fits = Signal()
    m.d.comb += fits.eq((t[9:49] == 0) | (t[9:49] == (1 << 40) - 1))
    return t[0:10].as_signed(), fits, t[48]


def round_saturate_stage(m: Module, t10, fits, neg):
    """Stage F's logic: ``sat8((t + 1) >> 1)`` from stage E's three results."""
    y_mid = Signal(signed(11))
    m.d.comb += y_mid.eq((t10 + 1) >> 1)
    y8 = Signal(signed(8))
    with m.If(fits & (y_mid <= 127) & (y_mid >= -128)):
        m.d.comb += y8.eq(y_mid)
    with m.Elif(neg):
        m.d.comb += y8.eq(-128)
    with m.Else():
        m.d.comb += y8.eq(127)
    return y8


class RequantIn(data.Struct):
    """One row entering the pipeline: the int32 sum, its requantization word's fields, the
    byte lane of its int8 result and whether this row completes the packed word."""
    v: 32
    mult: 16
    shift: 6
    lane: 2
    emit: 1


class _Carry(data.Struct):
    # What travels with a row past stage C (the arithmetic lives in each stage's registers).
    shift: 6
    lane: 2
    emit: 1


class RequantPipeline(wiring.Component):
    """Four-stage requantization pipeline (latency 4 cycles when the output is taken).

    Members
    -------
    i : In(stream.Signature(RequantIn))
        Rows to requantize; ``ready`` is 1 when stage C is empty or moves on this cycle.
    o : Out(stream.Signature(32))
        Packed int8 results (lane ``l`` in bits ``8l..8l+7``), one transfer per emitting row;
        lanes not written since the last emit are 0.
    empty : Out(1)
        No row in any stage (the ordering rule's gate for results that bypass the pipeline).
    """

    def __init__(self):
        super().__init__({
            "i": In(stream.Signature(RequantIn)),
            "o": Out(stream.Signature(32)),
            "empty": Out(1),
        })

    def elaborate(self, platform):
        m = Module()

        valid = [Signal(name=f"valid_{s}") for s in "CDEF"]
        move = [Signal(name=f"move_{s}") for s in "CDEF"]
        c_in = Signal(RequantIn)
        carry = [Signal(_Carry, name=f"carry_{s}") for s in "DEF"]
        f_emit = carry[2].emit

        m.d.comb += move[3].eq(valid[3] & (~f_emit | self.o.ready))
        for s in (2, 1, 0):
            m.d.comb += move[s].eq(valid[s] & (~valid[s + 1] | move[s + 1]))
        m.d.comb += [
            self.i.ready.eq(~valid[0] | move[0]),
            self.empty.eq(~(valid[0] | valid[1] | valid[2] | valid[3])),
            self.o.valid.eq(valid[3] & f_emit),
        ]
        take = self.i.valid & self.i.ready
        with m.If(take):
            m.d.sync += [valid[0].eq(1), c_in.eq(self.i.payload)]
        with m.Elif(move[0]):
            m.d.sync += valid[0].eq(0)
        for s in (1, 2, 3):
            with m.If(move[s - 1]):
                m.d.sync += valid[s].eq(1)
            with m.Elif(move[s]):
                m.d.sync += valid[s].eq(0)
        with m.If(move[0]):
            m.d.sync += [carry[0].shift.eq(c_in.shift), carry[0].lane.eq(c_in.lane),
                         carry[0].emit.eq(c_in.emit)]
        for s in (1, 2):
            with m.If(move[s]):
                m.d.sync += carry[s].eq(carry[s - 1])

        # C: partial products of the signed 32-bit sum and the unsigned 16-bit multiplier.
        c_lo = Signal(32)
        c_hi = Signal(signed(32))
        with m.If(move[0]):
            m.d.sync += [c_lo.eq(c_in.v[0:16] * c_in.mult),
                         c_hi.eq(c_in.v[16:32].as_signed() * c_in.mult)]
        # D: the 48-bit product.
        d_prod = Signal(signed(48))
        with m.If(move[1]):
            m.d.sync += d_prod.eq((c_hi << 16) + c_lo)
        # E: t = (prod << 1) >> shift, arithmetic; only its low ten bits, its sign and whether
        # it fits in ten bits travel on.
        t10, fits, neg = shift_stage(m, d_prod, carry[1].shift)
        e_t = Signal(signed(10))
        e_fits = Signal()
        e_neg = Signal()
        with m.If(move[2]):
            m.d.sync += [e_t.eq(t10), e_neg.eq(neg), e_fits.eq(fits)]
        # F: y = sat8((t + 1) >> 1); in range exactly when -257 <= t <= 254.
        y8 = round_saturate_stage(m, e_t, e_fits, e_neg)
        pack = Signal(32)        # int8 results of the word being packed
        packed = Signal(32)
        m.d.comb += packed.eq(pack)
        m.d.comb += packed.word_select(carry[2].lane, 8).eq(y8)
        m.d.comb += self.o.payload.eq(packed)
        with m.If(move[3]):
            m.d.sync += pack.eq(Mux(f_emit, 0, packed))
        return m

