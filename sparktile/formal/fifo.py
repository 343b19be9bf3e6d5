"""The router's input FIFO equals a naive model of itself.

The design under test is the FIFO every router input ends in (:class:`amaranth.lib.fifo.
SyncFIFO`, the router's width and depth); the model is a plain circular buffer with a count.
For every sequence of writes, reads and resets (all free), each cycle: ``w_rdy`` is exactly
"the model has room", ``r_rdy`` exactly "the model holds an entry", ``level`` the model's
count, and the data at the head the model's oldest entry. So nothing is dropped, duplicated,
reordered or changed, and a full FIFO refuses instead of losing a write.

Mutant: :class:`DroppingFifo`, a FIFO that always says ``w_rdy`` and drops a write when full.
"""

from __future__ import annotations

from amaranth.hdl import Array, Assert, Module, Mux, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In

from ..hdl.formats import Wavelet
from ..hdl.router import _NUM_OUTS

__all__ = ["FifoSpec", "DroppingFifo", "ROUTER_FIFO_WIDTH", "fifo_ports"]

#: Width of a router input FIFO entry: the wavelet, its output mask and two drop flags.
ROUTER_FIFO_WIDTH = Wavelet.as_shape().size + _NUM_OUTS + 2


def fifo_ports(width: int, depth: int) -> dict:
    """The ports of :class:`amaranth.lib.fifo.SyncFIFO` as a component signature, for the
    mutants that stand in for the router's input FIFO."""
    return {"w_en": In(1), "w_data": In(width), "r_en": In(1),
            "w_rdy": wiring.Out(1), "r_rdy": wiring.Out(1),
            "r_data": wiring.Out(width), "level": wiring.Out(range(depth + 1))}


class DroppingFifo(wiring.Component):
    """A broken FIFO for the mutation check: ``w_rdy`` is always 1, a write when full is lost."""

    def __init__(self, *, width: int, depth: int):
        self.width, self.depth = width, depth
        super().__init__(fifo_ports(width, depth))

    def elaborate(self, platform):
        m = Module()
        m.submodules.q = q = fifo.SyncFIFO(width=self.width, depth=self.depth)
        m.d.comb += [q.w_en.eq(self.w_en), q.w_data.eq(self.w_data), q.r_en.eq(self.r_en),
                     self.w_rdy.eq(1), self.r_rdy.eq(q.r_rdy), self.r_data.eq(q.r_data),
                     self.level.eq(q.level)]
        return m


class FifoSpec(wiring.Component):
    """The FIFO (``make(width=, depth=)``) against a circular-buffer model; free inputs are
    the write enable and data and the read enable (and the domain's reset)."""

    def __init__(self, *, width: int = ROUTER_FIFO_WIDTH, depth: int = 2, make=fifo.SyncFIFO):
        if depth < 1:
            raise ValueError(f"FIFO depth must be >= 1, not {depth}")
        self.width, self.depth, self.make = width, depth, make
        super().__init__({"w_en": In(1), "w_data": In(width), "r_en": In(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.make(width=self.width, depth=self.depth)
        m.d.comb += [dut.w_en.eq(self.w_en), dut.w_data.eq(self.w_data),
                     dut.r_en.eq(self.r_en)]

        depth = self.depth
        store = Array(Signal(self.width, name=f"model_{k}") for k in range(depth))
        head = Signal(range(depth))
        count = Signal(range(depth + 1))
        has_room = count < depth
        has_entry = count > 0
        write = self.w_en & has_room
        read = self.r_en & has_entry
        tail = Signal(range(2 * depth))
        m.d.comb += tail.eq(head + count)
        with m.If(write):
            m.d.sync += store[_wrap(tail, depth)].eq(self.w_data)
        with m.If(read):
            m.d.sync += head.eq(_wrap(head + 1, depth))
        m.d.sync += count.eq(count + write - read)

        m.d.comb += [
            Assert(dut.w_rdy == has_room, "w_rdy is exactly 'the model has room'"),
            Assert(dut.r_rdy == has_entry, "r_rdy is exactly 'the model holds an entry'"),
            Assert(dut.level == count, "level is the model's count"),
        ]
        with m.If(has_entry):
            m.d.comb += Assert(dut.r_data == store[head], "the head is the oldest entry")
        return m


def _wrap(value, depth: int):
    """``value mod depth`` for ``value < 2 * depth``."""
    return Mux(value >= depth, value - depth, value)[:max(1, (depth - 1).bit_length())]
