"""The configuration agent: no input stops it, and a malformed word changes nothing.

The design under test is one tile's :class:`~sparktile.hdl.tile.ConfigAgent` with its
configuration stream, the response stream's ``ready`` and the counters free. The spec decodes
every accepted word a second time, written from the documented format
(``docs/architecture.md``, the configuration header table) rather than from the agent: a
header's opcode and field ranges, the open SRAM burst and its pointer. Asserted every cycle:

* **it keeps accepting**: ``cfg.ready`` is 1 whenever no read response is waiting (so only
  a response that is not taken can hold it), and the response stream keeps Amaranth's rules;
* **a well-formed word does exactly its write**: the route-table, PE-register or SRAM write
  strobe with the fields of the word, and nothing else;
* **a malformed word changes nothing**: no write strobe of any kind, and the error counter
  counts it (exactly one per malformed word);
* no write strobe without an accepted word.

Mutant: the agent that writes a route entry whose high bits are set (the ``[15:8] must be
0`` check dropped).
"""

from __future__ import annotations

from amaranth.hdl import Assert, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In

from ..hdl.formats import (
    NUM_COUNTERS,
    NUM_PE_REGS,
    NUM_PORTS,
    CfgHeader,
    CfgOp,
    ReadAddress,
    RouteEntry,
    Wavelet,
    width_of,
)
from ..hdl.tile import ConfigAgent

__all__ = ["ConfigAgentSpec", "unchecked_route_agent"]


class ConfigAgentSpec(wiring.Component):
    """One configuration agent against an independent decoder of the format.

    Parameters
    ----------
    sram_words, route_colors : int
        The agent's bounds (small ones let a bounded run reach the end of SRAM).
    make : callable
        Builds the agent (``make(col=, sram_words=, route_colors=)``), for the mutant.
    """

    def __init__(self, *, sram_words: int = 6, route_colors: int = 4, make=ConfigAgent):
        self.sram_words, self.route_colors, self.make = sram_words, route_colors, make
        super().__init__({"cfg_valid": In(1), "cfg_payload": In(Wavelet), "resp_ready": In(1),
                          "counters": In(32).array(NUM_COUNTERS)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.make(col=3, sram_words=self.sram_words,
                                           route_colors=self.route_colors, counter_bits=16)
        m.d.comb += [dut.cfg.valid.eq(self.cfg_valid), dut.cfg.payload.eq(self.cfg_payload),
                     dut.resp.ready.eq(self.resp_ready)]
        for c in range(NUM_COUNTERS):
            m.d.comb += dut.counters[c].eq(self.counters[c])

        # It keeps accepting; the response stream's rules.
        m.d.comb += Assert(dut.resp.valid | dut.cfg.ready, "only a waiting response stalls")
        waiting = Signal()
        held = Signal(Wavelet)
        m.d.sync += [waiting.eq(dut.resp.valid & ~dut.resp.ready), held.eq(dut.resp.payload)]
        with m.If(waiting):
            m.d.comb += [Assert(dut.resp.valid), Assert(dut.resp.payload == held)]

        # The independent decoder.
        w = self.cfg_payload
        take = dut.cfg.valid & dut.cfg.ready
        hdr = data.View(CfgHeader, w.payload)
        entry_bits = width_of(RouteEntry)
        entry = data.View(RouteEntry, hdr.value[:entry_bits])
        read = data.View(ReadAddress, hdr.addr)
        burst = Signal()
        ptr = Signal(17)
        want_route = Signal()
        want_reg = Signal()
        want_sram = Signal()
        malformed = Signal()
        with m.If(take & w.ctrl):
            m.d.sync += burst.eq(0)
            with m.If(hdr.op == CfgOp.ROUTE):
                with m.If((hdr.addr < self.route_colors) & (entry.src < NUM_PORTS)
                          & (hdr.value[entry_bits:] == 0)):
                    m.d.comb += want_route.eq(1)
                with m.Else():
                    m.d.comb += malformed.eq(1)
            with m.Elif(hdr.op == CfgOp.PE_REG):
                with m.If((hdr.addr < NUM_PE_REGS) & (hdr.value < 32)):
                    m.d.comb += want_reg.eq(1)
                with m.Else():
                    m.d.comb += malformed.eq(1)
            with m.Elif(hdr.op == CfgOp.SRAM_BURST):
                with m.If((hdr.addr == 0) & (hdr.value < self.sram_words)):
                    m.d.sync += [burst.eq(1), ptr.eq(hdr.value)]
                with m.Else():
                    m.d.comb += malformed.eq(1)
            with m.Elif(hdr.op == CfgOp.READ):
                with m.If(read.counter >= NUM_COUNTERS):
                    m.d.comb += malformed.eq(1)
            with m.Else():
                m.d.comb += malformed.eq(1)
        with m.Elif(take):
            with m.If(burst & (ptr < self.sram_words)):
                m.d.comb += want_sram.eq(1)
                m.d.sync += ptr.eq(ptr + 1)
            with m.Else():
                m.d.comb += malformed.eq(1)

        m.d.comb += [
            Assert(dut.route_write.en == want_route, "a route write exactly when well-formed"),
            Assert(dut.reg_write.en == want_reg, "a register write exactly when well-formed"),
            Assert(dut.sram_write.en == want_sram, "an SRAM write exactly when well-formed"),
        ]
        with m.If(want_route):
            m.d.comb += [Assert(dut.route_write.color == hdr.addr),
                         Assert(dut.route_write.entry == entry)]
        with m.If(want_reg):
            m.d.comb += [Assert(dut.reg_write.addr == hdr.addr),
                         Assert(dut.reg_write.data == hdr.value)]
        with m.If(want_sram):
            m.d.comb += [Assert(dut.sram_write.addr == ptr),
                         Assert(dut.sram_write.data == w.payload)]
        # The error counter counts each malformed word once (16 bits: no wrap in the bound).
        errors = Signal(16)
        m.d.sync += errors.eq(errors + malformed)
        m.d.comb += Assert(dut.errors == errors, "one error count per malformed word")
        return m


def unchecked_route_agent(**kwargs):
    """Mutant: route writes whose high bits ([15:8]) are set are applied, not refused."""
    from .mutants import mutate
    module = mutate("sparktile.hdl.tile",
                    "(value[ENTRY_BITS:] == 0)", "(value[ENTRY_BITS:] == value[ENTRY_BITS:])",
                    tag="unchecked_route")
    return module.ConfigAgent(**kwargs)
