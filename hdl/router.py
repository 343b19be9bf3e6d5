"""Five-port wavelet router with a per-color route table, multicast and round-robin outputs.

Each input (north, east, south, west, and the ramp from the router's own PE) ends in a
two-entry FIFO. A wavelet is looked up in the route table by its color as it enters the FIFO,
and the decision travels with it: at the head, if the color is accepted from that input, it is
offered to every output of the entry's destination mask (multicast, the ramp included);
otherwise it is dropped and counted.
An output chooses among the inputs offering to it round-robin and keeps its choice until the
transfer happens, so ``valid`` never drops and the payload never changes while an output waits
for ``ready`` (Amaranth's stream rules). A multicast wavelet leaves each of its outputs as soon
as that output takes it and is popped when the last one has: one slow output does not stall the
others' progress, which (with the mapping's acyclic routes) is what keeps the fabric free of
deadlock.

Two colors bypass the table. :data:`CFG_COLOR` is accepted only from the west and is either
handed to this tile's configuration agent (``cfg`` stream) or sent east; :data:`RSP_COLOR` is
accepted from the west and the ramp and always sent east. A configuration wavelet that reaches
the east edge of the mesh without finding its column is dropped and counted.

Throughput is one wavelet per cycle per output; the latency through a router is one cycle
(the input FIFO register): outputs are combinational from the FIFO heads, and a FIFO's
``w_rdy`` depends only on its level, so ``ready`` never crosses two routers combinationally.
With ``link_regs`` the four mesh outputs are registered: two cycles per hop, and every path
between routers starts at a flip-flop (for FPGA clock rates).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .counters import count_events
from .cover import ALL_RTL_BINS, ROUTER_FIFO_DEPTH, CoverPoints
from .formats import (
    CFG_COLOR,
    NUM_COLORS,
    NUM_PORTS,
    ROUTABLE_COLORS,
    RSP_COLOR,
    CfgHeader,
    Port,
    RouteEntry,
    Wavelet,
)

__all__ = ["Router", "RouteWriteSignature", "OutputArbiter", "round_robin"]

#: Output index of the configuration-agent stream, after the five ports.
_CFG_OUT = NUM_PORTS
_NUM_OUTS = NUM_PORTS + 1
_OUT_NAMES = [p.name.lower() for p in Port] + ["cfg"]


class RouteWriteSignature(wiring.Signature):
    """Write port of a router's route table (driven by the tile's configuration agent).

    Members
    -------
    en : Out(1)
        Write strobe.
    color : Out(5)
        Color whose entry is written; always below :data:`ROUTABLE_COLORS`.
    entry : Out(RouteEntry)
        New entry.
    """

    def __init__(self):
        super().__init__({
            "en": Out(1),
            "color": Out(range(ROUTABLE_COLORS)),
            "entry": Out(RouteEntry),
        })


def round_robin(m: Module, requests: Signal, last: Signal, n: int) -> tuple[Signal, Signal]:
    """Combinational round-robin choice among ``n`` requests, starting after index ``last``.

    Returns ``(any, index)``.
    """
    choice = Signal(range(n))
    with m.Switch(last):
        for l in range(n):
            with m.Case(l):
                order = [(l + k) % n for k in range(1, n + 1)]
                # Lowest priority first, so the highest-priority assignment wins.
                for idx in reversed(order):
                    with m.If(requests[idx]):
                        m.d.comb += choice.eq(idx)
    return requests.any(), choice


class OutputArbiter(wiring.Component):
    """One output's arbiter: round-robin among the requesting inputs, holding its choice
    until the transfer.

    The choice starts after the input granted last, so every input that keeps requesting is
    granted within ``n`` transfers (proved in :mod:`sparktile.formal.router`). Once
    ``valid`` is up without ``ready`` the arbiter is *locked*: ``valid`` stays up and
    ``choice`` does not move until the transfer, which is what keeps the output's payload
    (the chosen input's head) stable, as Amaranth's stream rules require.

    Parameters
    ----------
    n : int
        Number of requesters (the router's five inputs).

    Members
    -------
    requests : In(n)
        Inputs offering a wavelet to this output.
    ready : In(1)
        The output stream's ``ready``.
    valid : Out(1)
        The output stream's ``valid``.
    choice : Out(range(n))
        The input whose head is on the output.
    """

    def __init__(self, n: int):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"OutputArbiter needs n >= 1 requesters, not {n!r}")
        self._n = n
        super().__init__({"requests": In(n), "ready": In(1), "valid": Out(1),
                          "choice": Out(range(n))})

    def elaborate(self, platform):
        m = Module()
        last = Signal(range(self._n))
        locked = Signal()
        any_req, rr = round_robin(m, self.requests, last, self._n)
        m.d.comb += [self.choice.eq(Mux(locked, last, rr)),
                     self.valid.eq(Mux(locked, 1, any_req))]
        with m.If(self.valid):
            m.d.sync += [last.eq(self.choice), locked.eq(~self.ready)]
        return m


class Router(wiring.Component):
    """A five-port router of the mesh fabric.

    Parameters
    ----------
    col : int or Value
        Column of this router in its mesh (configuration headers are matched against it). A
        5-bit :class:`~amaranth.hdl.Value` (a port of the tile) lets one emitted router serve
        every column, so that Verilator compiles the tile once for the whole mesh.
    last_col : bool or Value
        Whether this is the east-most column: configuration wavelets that would leave east are
        dropped here, since no tile beyond the edge can take them. A 1-bit value, like
        ``col``.
    fifo_depth : int
        Depth of each input FIFO (at least 2, so a link sustains one wavelet per cycle).
    link_regs : bool
        Register the four mesh outputs. Without, an output is combinational from the input
        FIFO heads through the route lookup and the arbiter, and the neighbour's FIFO write
        ends the same path: one cycle per hop, but a clock path that crosses two routers. With
        them, every router-to-router path starts at a flip-flop: two cycles per hop, a
        shorter clock period (the FPGA builds use this). The ramp and the configuration
        output stay combinational (their consumers are in the same tile, and the ramp's
        per-color ``accept`` must be sampled when the wavelet is handed over).
    route_colors : int
        Entries of the route table: colors ``0 .. route_colors - 1`` can be routed, higher
        ones are dropped like a disabled color (small FPGAs use 8 to save the table's logic).
    counter_bits : int
        Width of the counters (16..32).
    cover_points : bool
        Add the functional coverage points of :data:`~sparktile.hdl.cover.ROUTER_BINS` (for
        Verilator's coverage build; see :mod:`~sparktile.hdl.cover`).

    Members
    -------
    inputs : In(stream.Signature(Wavelet)).array(5)
        Input streams, indexed by :class:`Port`.
    outputs : Out(stream.Signature(Wavelet)).array(5)
        Output streams, indexed by :class:`Port`.
    ramp_accept : In(32)
        Per-color flow control from the PE: a wavelet is offered on the ramp output only if the
        bit of its color is set. The PE keeps one queue per bound task; gating the ramp by color
        keeps a task that waits for one color from blocking another color behind it.
    cfg : Out(stream.Signature(Wavelet))
        Configuration wavelets addressed to this tile.
    route_write : In(RouteWriteSignature())
        Route-table write port.
    forwarded : Out(counter_bits)
        Wavelets sent on N/E/S/W since reset.
    route_drops : Out(counter_bits)
        Wavelets dropped because their color is not accepted from the input they came in on.
    cfg_drops : Out(counter_bits)
        Configuration wavelets dropped: from a wrong input, data without a header, or
        addressed beyond the east edge.
    """

    def __init__(self, *, col: int, last_col: bool, fifo_depth: int = 2,
                 link_regs: bool = False, route_colors: int = ROUTABLE_COLORS,
                 counter_bits: int = 32, cover_points: bool = False):
        if isinstance(col, Value):
            if len(col) > 5:
                raise ValueError(f"Router column value must be at most 5 bits wide, not "
                                 f"{len(col)}")
        elif isinstance(col, bool) or not isinstance(col, int) or not 0 <= col < 32:
            raise ValueError(f"Router column must be an integer in [0, 31] or a 5-bit value, "
                             f"not {col!r}")
        if isinstance(last_col, Value) and len(last_col) != 1:
            raise ValueError(f"Router last_col value must be 1 bit wide, not {len(last_col)}")
        if not isinstance(fifo_depth, int) or fifo_depth < 2:
            raise ValueError(f"Router FIFO depth must be an integer >= 2, not {fifo_depth!r}")
        self._col = col
        self._last_col = last_col if isinstance(last_col, Value) else Const(bool(last_col))
        self._fifo_depth = fifo_depth
        self._link_regs = bool(link_regs)
        if not isinstance(route_colors, int) or not 1 <= route_colors <= ROUTABLE_COLORS:
            raise ValueError(f"Router route_colors must be 1..{ROUTABLE_COLORS}, "
                             f"not {route_colors!r}")
        if not isinstance(counter_bits, int) or not 16 <= counter_bits <= 32:
            raise ValueError(f"Router counter width must be 16..32 bits, not {counter_bits!r}")
        self._route_colors = route_colors
        if cover_points and fifo_depth != ROUTER_FIFO_DEPTH:
            raise ValueError(f"Router cover points bin FIFO levels 1..{ROUTER_FIFO_DEPTH}, so "
                             f"they need fifo_depth {ROUTER_FIFO_DEPTH}, not {fifo_depth!r}")
        self._cover_points = bool(cover_points)
        super().__init__({
            "inputs": In(stream.Signature(Wavelet)).array(NUM_PORTS),
            "outputs": Out(stream.Signature(Wavelet)).array(NUM_PORTS),
            "ramp_accept": In(NUM_COLORS),
            "cfg": Out(stream.Signature(Wavelet)),
            "route_write": In(RouteWriteSignature()),
            "forwarded": Out(counter_bits),
            "route_drops": Out(counter_bits),
            "cfg_drops": Out(counter_bits),
        })

    def elaborate(self, platform):
        m = Module()

        # Route table: one entry per routable color, all disabled at reset. Kept as one flat
        # vector so that a lookup is a single indexed part-select rather than a 30-way case.
        entry_bits = RouteEntry.as_shape().size
        table = Signal(self._route_colors * entry_bits)
        with m.If(self.route_write.en):
            m.d.sync += table.word_select(self.route_write.color, entry_bits).eq(
                self.route_write.entry)

        out_streams = [*self.outputs, self.cfg]

        # Configuration-stream state: what the last header on the west input addressed.
        CFG_NONE, CFG_MINE, CFG_OTHER = 0, 1, 2
        cfg_target = Signal(2, init=CFG_NONE)

        # A configuration wavelet for a column further east goes east, or is dropped at the
        # east-most column (no tile beyond the edge can take it).
        beyond_east = self._last_col
        east_want = Mux(beyond_east, 0, 1 << Port.E)

        heads, head_valid, wants, drops, pops, sent = [], [], [], [], [], []
        wl = Wavelet.as_shape().size
        for i in range(NUM_PORTS):
            # Each FIFO entry is the wavelet plus its routing decision, looked up as it enters
            # (``want`` mask, ``drop``, ``cfg_drop``): the decision is made once per wavelet,
            # so a route-table rewrite while it waits cannot change where it goes (and break
            # the stream rules), and no path runs from a FIFO head through the table lookup
            # into the arbiter.
            q = fifo.SyncFIFO(width=wl + _NUM_OUTS + 2, depth=self._fifo_depth)
            m.submodules[f"in_fifo_{Port(i).name.lower()}"] = q
            inw = self.inputs[i].payload
            lookup_want = Signal(_NUM_OUTS, name=f"lookup_want_{i}")
            lookup_drop = Signal(name=f"lookup_drop_{i}")
            lookup_cfg_drop = Signal(name=f"lookup_cfg_drop_{i}")
            m.d.comb += [
                q.w_data.eq(Cat(inw, lookup_want, lookup_drop, lookup_cfg_drop)),
                q.w_en.eq(self.inputs[i].valid),
                self.inputs[i].ready.eq(q.w_rdy),
            ]
            head = data.View(Wavelet, q.r_data[0:wl])
            want = q.r_data[wl:wl + _NUM_OUTS]
            drop = q.r_data[wl + _NUM_OUTS]
            cfg_drop = q.r_data[wl + _NUM_OUTS + 1]

            with m.If(inw.color == CFG_COLOR):
                if i == Port.W:
                    header_col = data.View(CfgHeader, inw.payload).col
                    with m.If(inw.ctrl):
                        with m.If(header_col == self._col):
                            m.d.comb += lookup_want.eq(1 << _CFG_OUT)
                        with m.Else():
                            m.d.comb += [lookup_cfg_drop.eq(beyond_east),
                                         lookup_want.eq(east_want)]
                    with m.Else():
                        with m.Switch(cfg_target):
                            with m.Case(CFG_MINE):
                                m.d.comb += lookup_want.eq(1 << _CFG_OUT)
                            with m.Case(CFG_OTHER):
                                m.d.comb += [lookup_cfg_drop.eq(beyond_east),
                                             lookup_want.eq(east_want)]
                            with m.Default():
                                m.d.comb += lookup_cfg_drop.eq(1)
                    # Track which tile the configuration stream now addresses: the data
                    # wavelets behind this header are looked up after it (the FIFO keeps order).
                    with m.If(q.w_en & q.w_rdy & inw.ctrl):
                        m.d.sync += cfg_target.eq(Mux(header_col == self._col,
                                                      CFG_MINE, CFG_OTHER))
                else:
                    m.d.comb += lookup_cfg_drop.eq(1)
            with m.Elif(inw.color == RSP_COLOR):
                if i in (Port.W, Port.RAMP):
                    m.d.comb += lookup_want.eq(1 << Port.E)
                else:
                    m.d.comb += lookup_drop.eq(1)
            with m.Else():
                entry = data.View(RouteEntry, table.word_select(inw.color, entry_bits))
                in_table = inw.color < self._route_colors
                with m.If(in_table & (entry.src == i) & entry.dst.any()):
                    m.d.comb += lookup_want.eq(entry.dst)
                with m.Else():
                    m.d.comb += lookup_drop.eq(1)

            heads.append(head)
            head_valid.append(q.r_rdy)
            wants.append(want)
            drops.append((drop, cfg_drop))
            pops.append(q.r_en)
            sent.append(Signal(_NUM_OUTS, name=f"sent_{i}"))

        # Output arbitration.
        taken = [[Signal(name=f"taken_{i}_{o}") for o in range(_NUM_OUTS)]
                 for i in range(NUM_PORTS)]
        fwd_count = []
        for o in range(_NUM_OUTS):
            req = Signal(NUM_PORTS, name=f"req_{o}")
            for i in range(NUM_PORTS):
                offer = head_valid[i] & wants[i][o] & ~sent[i][o]
                if o == Port.RAMP:
                    offer &= self.ramp_accept.bit_select(heads[i].color, 1)
                m.d.comb += req[i].eq(offer)
            arbiter = m.submodules[f"arbiter_{_OUT_NAMES[o]}"] = OutputArbiter(NUM_PORTS)
            m.d.comb += arbiter.requests.eq(req)
            out = out_streams[o]
            if self._link_regs and o in (Port.N, Port.E, Port.S, Port.W):
                # A register stage on the link: the arbiter hands the wavelet to it, and the
                # neighbour sees only flip-flops (one more cycle per hop, a shorter clock).
                arb = stream.Signature(Wavelet).create(path=(f"arb_{Port(o).name.lower()}",))
                m.d.comb += arb.ready.eq(~out.valid | out.ready)
                with m.If(arb.ready):
                    m.d.sync += [out.valid.eq(arb.valid), out.payload.eq(arb.payload)]
            else:
                arb = out
            m.d.comb += [arb.valid.eq(arbiter.valid), arbiter.ready.eq(arb.ready)]
            with m.Switch(arbiter.choice):
                for i in range(NUM_PORTS):
                    with m.Case(i):
                        m.d.comb += arb.payload.eq(heads[i])
                        m.d.comb += taken[i][o].eq(arb.valid & arb.ready)
            if o in (Port.N, Port.E, Port.S, Port.W):
                fwd_count.append(out.valid & out.ready)

        # Pop an input once every output it wants has taken it (or when it is dropped).
        for i in range(NUM_PORTS):
            taken_now = Cat(*taken[i])
            done = sent[i] | taken_now
            drop, cfg_drop = drops[i]
            complete = head_valid[i] & (drop | cfg_drop | ((wants[i] & ~done) == 0))
            m.d.comb += pops[i].eq(complete)
            with m.If(complete):
                m.d.sync += sent[i].eq(0)
            with m.Else():
                m.d.sync += sent[i].eq(done)

        if self._cover_points:
            self._cover(m, heads, head_valid, drops, pops, out_streams)

        count_events(m, self.forwarded, *fwd_count)
        count_events(m, self.route_drops,
                     *(head_valid[i] & drops[i][0] for i in range(NUM_PORTS)))
        count_events(m, self.cfg_drops,
                     *(head_valid[i] & drops[i][1] for i in range(NUM_PORTS)))
        return m

    def _cover(self, m, heads, head_valid, drops, pops, out_streams):
        """The coverage points (:data:`~sparktile.hdl.cover.ROUTER_BINS`): what each
        wavelet was and how full its FIFO was when it left, and the stalls on both sides."""
        m.submodules.cover = cover = CoverPoints()
        for i in range(NUM_PORTS):
            name = Port(i).name
            q = m.submodules[f"in_fifo_{name.lower()}"]
            drop, cfg_drop = drops[i]
            dropped = drop | cfg_drop
            color = heads[i].color
            kinds = {"dropped": dropped,
                     "cfg": ~dropped & (color == CFG_COLOR),
                     "rsp": ~dropped & (color == RSP_COLOR),
                     "routed": ~dropped & (color != CFG_COLOR) & (color != RSP_COLOR)}
            for kind, is_kind in kinds.items():
                for level in range(1, ROUTER_FIFO_DEPTH + 1):
                    b = f"router:in={name},class={kind},level={level}"
                    if b in ALL_RTL_BINS:
                        cover.add(b, pops[i] & is_kind & (q.level == level))
            cover.add(f"router:in={name},backpressured",
                        self.inputs[i].valid & ~self.inputs[i].ready)
        for o, out in enumerate(out_streams):
            b = f"router:out={_OUT_NAMES[o].upper()},stalled"
            if b in ALL_RTL_BINS:
                cover.add(b, out.valid & ~out.ready)
