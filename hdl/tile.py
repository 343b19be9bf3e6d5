"""A tile: one router, one PE (the fixed-function GEMV engine or the programmable core), and the
configuration agent that programs both.

The configuration agent takes the configuration wavelets the router hands it (those addressed
to this tile's column on its row) and turns them into route-table writes, PE register writes,
SRAM bursts and counter reads. Every malformed header (unknown opcode, a color, register,
address or counter out of range, a route naming a port that does not exist, an SRAM burst that
runs past the end of the SRAM, data with no burst open) is dropped and counted in
``CFG_ERRORS``; none of them stalls the fabric. Counter reads are answered on
:data:`~sparktile.hdl.formats.RSP_COLOR`, which the routers carry east to the row's edge.
"""

from amaranth.hdl import Const, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .core import Core
from .formats import (
    HALF_BITS,
    NUM_COUNTERS,
    NUM_PE_REGS,
    NUM_PORTS,
    ROUTABLE_COLORS,
    RSP_COLOR,
    CfgHeader,
    CfgOp,
    CfgResponse,
    Counter,
    Port,
    ReadAddress,
    RouteEntry,
    Wavelet,
    width_of,
)
from .pe import PE
from .router import Router, RouteWriteSignature

__all__ = ["ConfigAgent", "Tile", "CORE_XBUF_WORDS", "CORE_QUEUES"]

#: XBUF words (the GEMV input vector buffer) and input queues of the core in a tile
#: (``pe="core"``): a PE's share of x up to 1,024 int8 lanes, and four colors a program can
#: receive on at once (x and partial sums need two).
CORE_XBUF_WORDS = 256
CORE_QUEUES = 4

#: Bits of a route entry in a ROUTE header's 16-bit data field (the rest must be 0).
ENTRY_BITS = width_of(RouteEntry)


class ConfigAgent(wiring.Component):
    """Decodes configuration wavelets addressed to one tile.

    Parameters
    ----------
    col : int or Value
        The tile's column, echoed in read responses (a constant, or the tile's 5-bit
        ``col`` port when the tile is emitted once for every column).
    sram_words : int
        Size of the PE's SRAM, for bounds checks of bursts.
    route_colors : int
        Route-table entries of the router, for bounds checks of ROUTE writes.
    counter_bits : int
        Width of the error counter.
    pe : str
        The PE behind the agent, which decides the registers a ``PE_REG`` header may write:
        ``"gemv"`` the PE's :class:`~sparktile.hdl.formats.PeReg` (values below 32, a color);
        ``"core"`` the core's task table (``addr`` = color 0..31 =
        :func:`~sparktile.hdl.isa.task_reg`, value = :func:`~sparktile.hdl.isa.task_entry`:
        a valid entry's program address must lie in the SRAM) and its input-queue bindings
        (``addr`` = :func:`~sparktile.hdl.isa.queue_reg`, ``0x20 .. 0x20 + n_queues - 1``,
        value = :func:`~sparktile.hdl.isa.queue_entry`, below 64). Anything else is a
        configuration error, dropped and counted before it reaches the PE.
    n_queues : int
        The core's input queues (with ``pe="core"``).

    Members
    -------
    cfg : In(stream.Signature(Wavelet))
        Configuration wavelets from the router.
    route_write : Out(RouteWriteSignature())
        To the router's route table.
    reg_write, sram_write : Out(ConfigWriteSignature())
        To the PE.
    counters : In(32).array(NUM_COUNTERS)
        Values readable with :attr:`~sparktile.hdl.formats.CfgOp.READ`, by
        :class:`~sparktile.hdl.formats.Counter`.
    resp : Out(stream.Signature(Wavelet))
        Read responses.
    errors : Out(counter_bits)
        Malformed wavelets dropped by this agent.
    """

    def __init__(self, *, col: int, sram_words: int, route_colors: int = ROUTABLE_COLORS,
                 counter_bits: int = 32, pe: str = "gemv", n_queues: int = CORE_QUEUES):
        from .pe import ConfigWriteSignature
        if pe not in ("gemv", "core"):
            raise ValueError(f"ConfigAgent pe must be 'gemv' or 'core', not {pe!r}")
        self._pe = pe
        self._n_queues = n_queues
        self._col = col if isinstance(col, Value) else Const(col, 5)
        self._sram_words = sram_words
        self._route_colors = route_colors
        super().__init__({
            "cfg": In(stream.Signature(Wavelet)),
            "route_write": Out(RouteWriteSignature()),
            "reg_write": Out(ConfigWriteSignature()),
            "sram_write": Out(ConfigWriteSignature()),
            "counters": In(32).array(NUM_COUNTERS),
            "resp": Out(stream.Signature(Wavelet)),
            "errors": Out(counter_bits),
        })

    def elaborate(self, platform):
        m = Module()
        burst = Signal()
        ptr = Signal(17)
        error = Signal()

        resp_free = ~self.resp.valid | self.resp.ready
        with m.If(self.resp.ready):
            m.d.sync += self.resp.valid.eq(0)
        m.d.comb += self.cfg.ready.eq(resp_free)

        w = self.cfg.payload
        header = data.View(CfgHeader, w.payload)
        op, addr, value = header.op, header.addr, header.value
        with m.If(self.cfg.valid & self.cfg.ready):
            with m.If(w.ctrl):
                m.d.sync += burst.eq(0)
                with m.Switch(op):
                    with m.Case(CfgOp.ROUTE):
                        entry = data.View(RouteEntry, value[:ENTRY_BITS])
                        ok = (addr < self._route_colors) & (entry.src < NUM_PORTS) & \
                             (value[ENTRY_BITS:] == 0)
                        with m.If(ok):
                            m.d.comb += [
                                self.route_write.en.eq(1),
                                self.route_write.color.eq(addr),
                                self.route_write.entry.eq(entry),
                            ]
                        with m.Else():
                            m.d.comb += error.eq(1)
                    with m.Case(CfgOp.PE_REG):
                        with m.If(self._reg_ok(addr, value)):
                            m.d.comb += [
                                self.reg_write.en.eq(1),
                                self.reg_write.addr.eq(addr),
                                self.reg_write.data.eq(value),
                            ]
                        with m.Else():
                            m.d.comb += error.eq(1)
                    with m.Case(CfgOp.SRAM_BURST):
                        with m.If((value < self._sram_words) & (addr == 0)):
                            m.d.sync += [burst.eq(1), ptr.eq(value)]
                        with m.Else():
                            m.d.comb += error.eq(1)
                    with m.Case(CfgOp.READ):
                        read = data.View(ReadAddress, addr)
                        index = read.counter
                        with m.If(index < NUM_COUNTERS):
                            selected = Signal(32)
                            with m.Switch(index):
                                for c in range(NUM_COUNTERS):
                                    with m.Case(c):
                                        m.d.comb += selected.eq(self.counters[c])
                            half = Mux(read.half, selected[HALF_BITS:], selected[:HALF_BITS])
                            resp = Signal(CfgResponse)
                            m.d.comb += [resp.value.eq(half), resp.addr.eq(addr),
                                         resp.col.eq(self._col)]
                            m.d.sync += [
                                self.resp.valid.eq(1),
                                self.resp.payload.payload.eq(resp),
                                self.resp.payload.color.eq(RSP_COLOR),
                                self.resp.payload.ctrl.eq(0),
                            ]
                        with m.Else():
                            m.d.comb += error.eq(1)
                    with m.Default():
                        m.d.comb += error.eq(1)
            with m.Else():
                with m.If(burst & (ptr < self._sram_words)):
                    m.d.comb += [
                        self.sram_write.en.eq(1),
                        self.sram_write.addr.eq(ptr),
                        self.sram_write.data.eq(w.payload),
                    ]
                    m.d.sync += ptr.eq(ptr + 1)
                with m.Else():
                    m.d.comb += error.eq(1)
        with m.If(error):
            m.d.sync += self.errors.eq(self.errors + 1)
        return m

    def _reg_ok(self, addr, value):
        """Whether a ``PE_REG`` header names a register of this PE and a value it holds."""
        if self._pe == "gemv":
            return (addr < NUM_PE_REGS) & (value < 32)
        valid = value[15]
        in_sram = Const(1) if self._sram_words >= isa.TASK_ADDR_LIMIT else \
            value[:15] < self._sram_words
        on_row = value[:2] == 0            # a program starts on an SRAM row (isa.task_entry)
        task = (addr < isa.QUEUE_REG_BASE) & (~valid | (in_sram & on_row))
        queue = (addr >= isa.QUEUE_REG_BASE) & \
            (addr < isa.QUEUE_REG_BASE + self._n_queues) & (value < 64)
        return task | queue


class Tile(wiring.Component):
    """Router + PE + configuration agent: the unit the mesh is tiled from.

    Parameters
    ----------
    col : int or None
        Column of the tile; ``None`` makes it an input port (below).
    last_col : bool or None
        Whether the tile is in the east-most column; ``None`` makes it an input port.
        With both ports every tile of a mesh is the same hardware, so the Verilog can hold one
        tile module instantiated ``rows x cols`` times and Verilator compiles it once (see
        :class:`~sparktile.hdl.mesh.Mesh`'s ``tile_module``).
    sram_words, acc_depth : int
        PE parameters (see :class:`~sparktile.hdl.pe.PE`; the core has no accumulator
        memory and ignores ``acc_depth``).
    pe : str
        ``"gemv"``: the fixed-function :class:`~sparktile.hdl.pe.PE`; ``"core"``: the
        programmable :class:`~sparktile.hdl.core.Core` (:data:`CORE_XBUF_WORDS` of XBUF,
        :data:`CORE_QUEUES` input queues; no ``link_regs``, no ``cover_points`` yet). Both
        have the same ports and counters, so the router, the agent and the counter read path
        are the same.
    link_regs : bool
        Registered router outputs (see :class:`~sparktile.hdl.router.Router`) and a registered
        ramp into the PE (see :class:`~sparktile.hdl.pe.PE`): every path between the router
        and its neighbours or its PE starts at a flip-flop.
    route_colors, counter_bits : int
        Route-table entries and counter width (see :class:`~sparktile.hdl.router.Router`).
    cover_points : bool
        The router's and the PE's functional coverage points (:mod:`~sparktile.hdl.cover`).

    Members
    -------
    inputs : In(stream.Signature(Wavelet)).array(4)
        From the neighbours, indexed N, E, S, W.
    outputs : Out(stream.Signature(Wavelet)).array(4)
        To the neighbours, indexed N, E, S, W.
    col : In(5)
        The tile's column (only when ``col`` is ``None``); tied to a constant by the mesh.
    last_col : In(1)
        Whether the tile is east-most (only when ``last_col`` is ``None``).
    """

    def __init__(self, *, col: int | None, last_col: bool | None, sram_words: int = 4096,
                 acc_depth: int = 256, link_regs: bool = False,
                 route_colors: int = ROUTABLE_COLORS, counter_bits: int = 32,
                 cover_points: bool = False, pe: str = "gemv"):
        if pe not in ("gemv", "core"):
            raise ValueError(f"Tile pe must be 'gemv' or 'core', not {pe!r}")
        if pe == "core" and (link_regs or cover_points):
            raise ValueError("a core tile has no registered ramp and no coverage points yet: "
                             "link_regs and cover_points must be False with pe='core'")
        self.pe = pe
        self.link_regs = link_regs
        self.cover_points = cover_points
        self.route_colors = route_colors
        self.counter_bits = counter_bits
        self._coords = (col, last_col)
        self.sram_words = sram_words
        self.acc_depth = acc_depth
        if (col is None) != (last_col is None):
            raise ValueError("Tile col and last_col must both be given or both be None "
                             f"(ports), not col={col!r}, last_col={last_col!r}")
        members = {
            "inputs": In(stream.Signature(Wavelet)).array(4),
            "outputs": Out(stream.Signature(Wavelet)).array(4),
        }
        if col is None:
            members.update({"col": In(5), "last_col": In(1)})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        # Coordinates: the constructor's constants, or the ports the signature added.
        col, last_col = self._coords
        if col is None:
            col, last_col = self.col, self.last_col
        m.submodules.router = router = Router(
            col=col, last_col=last_col, link_regs=self.link_regs,
            route_colors=self.route_colors, counter_bits=self.counter_bits,
            cover_points=self.cover_points)
        # With link registers the ramp into the PE is registered too, and the PE's queues are
        # one deeper to keep one wavelet per cycle (see PE's ``ramp_reg``).
        if self.pe == "core":
            m.submodules.pe = pe = Core(sram_words=self.sram_words,
                                        xbuf_words=CORE_XBUF_WORDS, n_queues=CORE_QUEUES,
                                        counter_bits=self.counter_bits)
        else:
            m.submodules.pe = pe = PE(sram_words=self.sram_words, acc_depth=self.acc_depth,
                                      counter_bits=self.counter_bits, ramp_reg=self.link_regs,
                                      queue_depth=3 if self.link_regs else 2,
                                      cover_points=self.cover_points)
        m.submodules.agent = agent = ConfigAgent(
            col=col, sram_words=self.sram_words, route_colors=self.route_colors,
            counter_bits=self.counter_bits, pe=self.pe, n_queues=CORE_QUEUES)

        for p in (Port.N, Port.E, Port.S, Port.W):
            wiring.connect(m, wiring.flipped(self.inputs[p]), router.inputs[p])
            wiring.connect(m, router.outputs[p], wiring.flipped(self.outputs[p]))
        wiring.connect(m, router.outputs[Port.RAMP], pe.ramp_in)
        m.d.comb += router.ramp_accept.eq(pe.accept)
        wiring.connect(m, router.cfg, agent.cfg)
        wiring.connect(m, agent.route_write, router.route_write)
        wiring.connect(m, agent.reg_write, pe.reg_write)
        wiring.connect(m, agent.sram_write, pe.sram_write)

        # Merge the PE's results and the agent's read responses onto the ramp, holding the
        # choice until the router takes the wavelet (stream rules).
        ramp = router.inputs[Port.RAMP]
        hold_resp = Signal()
        hold_pe = Signal()
        pick_resp = Mux(hold_pe, 0, Mux(hold_resp, 1, agent.resp.valid))
        m.d.comb += [
            ramp.valid.eq(Mux(pick_resp, agent.resp.valid, pe.ramp_out.valid)),
            ramp.payload.eq(Mux(pick_resp, agent.resp.payload, pe.ramp_out.payload)),
            agent.resp.ready.eq(pick_resp & ramp.ready),
            pe.ramp_out.ready.eq(~pick_resp & ramp.ready),
        ]
        m.d.sync += [
            hold_resp.eq(pick_resp & ramp.valid & ~ramp.ready),
            hold_pe.eq(~pick_resp & ramp.valid & ~ramp.ready),
        ]

        cycles = Signal(self.counter_bits)
        m.d.sync += cycles.eq(cycles + 1)
        cfg_errors = Signal(self.counter_bits)
        m.d.comb += cfg_errors.eq(agent.errors + router.cfg_drops)
        counter_values = {
            Counter.CYCLES: cycles,
            Counter.MAC_BUSY: pe.mac_busy,
            Counter.STALL_IN: pe.stall_in,
            Counter.STALL_OUT: pe.stall_out,
            Counter.FORWARDED: router.forwarded,
            Counter.ROUTE_DROPS: router.route_drops,
            Counter.CFG_ERRORS: cfg_errors,
            Counter.TASK_ERRORS: pe.task_errors,
            Counter.VECTORS: pe.vectors,
        }
        assert len(counter_values) == NUM_COUNTERS
        for idx, value in counter_values.items():
            m.d.comb += agent.counters[idx].eq(value)
        return m
