"""The PE's requantization pipeline equals ``arith.requantize`` for all inputs.

Proved in two parts, because a bit-level solver cannot compare two differently built 32 x 16
multipliers at 48 bits in useful time:

* :class:`RoundingLemma` (combinational, so unbounded): for every signed 48-bit product
  ``p`` and every ``shift <= SHIFT_MAX``, the pipeline's shift stage and its round-and-saturate
  stage (:func:`~sparktile.hdl.requant.shift_stage`, :func:`~sparktile.hdl.requant.
  round_saturate_stage`, the very logic the pipeline instantiates) give
  ``sat8((p + 2**(shift-1)) >> shift)``, the formula of
  :func:`sparktile.golden_model.arith.requantize`. The product itself is ``v * mult`` split
  as ``hi * mult * 2**16 + lo * mult`` (``v = hi * 2**16 + lo``, exact in 48 bits since
  ``|v * mult| < 2**47``).
* :class:`RequantSpec` (bounded): the pipeline, under every input sequence and every stall of
  its output, gives each emitted word as a model that requantizes each row the moment it
  enters and packs the results as the PE does: every output word is the model's oldest, no
  word appears that the model did not make, and the ordering rule holds (``empty`` is never 1
  while a word is owed, so int32 results, which wait for ``empty``, never overtake).

Mutants: :class:`FloorRequantLemma` (rounding dropped: the shift floors) fails the lemma;
:class:`EagerEmpty` (``empty`` ignores the last stage) fails the ordering rule.
"""

from __future__ import annotations

from amaranth.hdl import Array, Assert, Assume, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from ..golden_model.arith import SHIFT_MAX
from ..hdl.requant import RequantIn, RequantPipeline, round_saturate_stage, shift_stage

__all__ = ["RoundingLemma", "RequantSpec", "FloorRequantLemma", "EagerEmpty",
           "requantize_formula"]

#: Words the pipeline can owe at once (one per stage).
_OWED = 4


def requantize_formula(m: Module, prod, shift, *, round_half_up: bool = True):
    """``sat8((prod + 2**(shift-1)) >> shift)`` at full width, as written in ``arith``."""
    rnd = Signal(48)
    total = Signal(signed(50))
    y = Signal(signed(50))
    out = Signal(signed(8))
    m.d.comb += [
        rnd.eq(Mux(shift == 0, 0, Const(1, 48) << (shift - 1)[:6]) if round_half_up else 0),
        total.eq(prod + rnd),
        y.eq(total >> shift),
        out.eq(Mux(y > 127, 127, Mux(y < -128, -128, y))),
    ]
    return out


def pipeline_arithmetic(m: Module, v, mult, shift):
    """The pipeline's arithmetic of one row in one step: stage C's two partial products,
    stage D's sum, stage E's shift and stage F's rounding and saturation."""
    prod = Signal(signed(48))
    m.d.comb += prod.eq((v[16:32].as_signed() * mult << 16) + v[0:16] * mult)
    return round_saturate_stage(m, *shift_stage(m, prod, shift))


class RoundingLemma(wiring.Component):
    """Stages E and F against the formula, for every product and shift (combinational)."""

    _round_half_up = True

    def __init__(self):
        super().__init__({"prod": In(signed(48)), "shift": In(6)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += Assume(self.shift <= SHIFT_MAX)
        got = round_saturate_stage(m, *shift_stage(m, self.prod, self.shift))
        want = requantize_formula(m, self.prod, self.shift, round_half_up=self._round_half_up)
        m.d.comb += Assert(got == want, "stages E and F give sat8((p + round) >> shift)")
        return m


class FloorRequantLemma(RoundingLemma):
    """Mutant: the formula without its rounding term; the pipeline must differ from it."""

    _round_half_up = False


class EagerEmpty(RequantPipeline):
    """Mutant: ``empty`` also while the last stage still holds a row."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        # The later assignment wins: empty is now "the input stage is free" (too eager).
        m.d.comb += self.empty.eq(self.i.ready)
        return m


class RequantSpec(wiring.Component):
    """The pipeline (``make()``) against the one-step model; free inputs: the input stream
    (valid and payload), the output's ready, and the domain's reset."""

    def __init__(self, make=RequantPipeline):
        self.make = make
        super().__init__({"i_valid": In(1), "i_payload": In(RequantIn), "o_ready": In(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.make()
        # The rows' scale is fixed (mult 1, shift 0: y = sat8(v)) so that the solver follows
        # the pipeline's control, stalls and packing through every input sequence; with free
        # 16-bit multipliers and 49-bit shifters in every row of an 8-cycle unrolling it runs
        # for longer than CI allows. The arithmetic for every mult and shift is RoundingLemma.
        row = Signal(RequantIn)
        m.d.comb += [row.eq(self.i_payload), row.mult.eq(1), row.shift.eq(0)]
        m.d.comb += [dut.i.valid.eq(self.i_valid), dut.i.payload.eq(row),
                     dut.o.ready.eq(self.o_ready)]
        y8 = pipeline_arithmetic(m, row.v, row.mult, row.shift)
        # The model's packing: the word being filled, then a queue of finished words.
        pack = Signal(32)
        packed = Signal(32)
        m.d.comb += packed.eq(pack)
        m.d.comb += packed.word_select(row.lane, 8).eq(y8)
        queue = Array(Signal(32, name=f"owed_{k}") for k in range(_OWED))
        count = Signal(range(_OWED + 1))
        take = dut.i.valid & dut.i.ready
        give = dut.o.valid & dut.o.ready
        push = take & row.emit
        with m.If(take):
            m.d.sync += pack.eq(Mux(row.emit, 0, packed))
        with m.If(give):
            for k in range(_OWED - 1):
                m.d.sync += queue[k].eq(queue[k + 1])
        with m.If(push):
            m.d.sync += queue[count - give].eq(packed)
        m.d.sync += count.eq(count + push - give)

        with m.If(dut.o.valid):
            m.d.comb += [Assert(count > 0, "no output word the model did not make"),
                         Assert(dut.o.payload == queue[0], "each word is the model's oldest")]
        with m.If(dut.empty):
            m.d.comb += Assert(count == 0, "empty only when no int8 word is owed")
        m.d.comb += Assert(count <= _OWED)
        return m
