"""The processing element: local SRAM and two dataflow-triggered tasks (MAC and reduce).

A wavelet that arrives on the PE's *activation color* (``X_COLOR``) triggers the **MAC task**;
one that arrives on its *partial-sum color* (``PSUM_COLOR``) feeds the **reduce task**. Each
color has its own input queue, and the router offers the ramp a wavelet only while that color's
queue has room (``accept``), so a task waiting for one color never blocks the other.

Descriptors. A control wavelet (``ctrl = 1``) on the activation color selects a *descriptor*:
its payload is the SRAM word address of three words, laid out in :mod:`~sparktile.hdl.formats`
(:class:`DescWord0`, :class:`DescWord1`, :class:`DescWord2`) ::

    d0 = w_base[15:0]  | n_words[31:16]   weights: m rows of n_words packed words, row-major
    d1 = m[15:0]       | flags[18:16]     flags: bit 0 FIRST (no partial-sum input)
                                                 bit 1 LAST  (emit results, not partial sums)
                                                 bit 2 INT32 (LAST emits raw int32, else int8)
    d2 = q_base[15:0]                     requantization words (:class:`RequantWord`):
                                          mult[15:0] | shift[21:16]

The descriptor stays selected: every following ``n_words`` data wavelets form one activation
vector (four int8 lanes each), so a batch of vectors streams through back to back (GEMM).

MAC task. For data wavelet ``k`` of a vector and each row ``i < m`` (one row per cycle) it
reads the weight word ``w_base + i * n_words + k`` and accumulates the four-lane dot product
into ``acc[i]`` (``acc[i]`` is overwritten for ``k == 0``): four int8 MACs per cycle. The SRAM
read, the weight register, the four products, their sum and the accumulator update are pipeline
stages, so that no cycle holds a block-RAM read and arithmetic together (FPGA timing).

Reduce task. After the last wavelet of a vector, for each row ``i`` it adds the incoming
partial sum (unless FIRST) to ``acc[i]`` and either sends the int32 sum on ``OUT_COLOR``
(a partial sum for the next PE of the chain) or, if LAST, requantizes it
(``sat8((v * mult + round) >> shift)``, see :mod:`sparktile.golden_model.arith`) in a
four-stage pipeline and sends four int8 results per wavelet (or the raw int32 with INT32, which
leave without the pipeline). One row per cycle when the fabric keeps up. The MAC of the next
vector starts when the reduce task has read the last accumulator (the requantization pipeline
drains meanwhile).
"""

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .counters import count_events
from .cover import CoverPoints
from .formats import (
    NUM_COLORS,
    NUM_PE_REGS,
    DescFlags,
    DescWord0,
    DescWord1,
    DescWord2,
    RequantWord,
    Wavelet,
)
from .mac import MacPipeline
from .requant import RequantPipeline

__all__ = ["PE", "ConfigWriteSignature"]


class ConfigWriteSignature(wiring.Signature):
    """A register or SRAM write from the tile's configuration agent.

    Members
    -------
    en : Out(1)
        Write strobe.
    addr : Out(16)
        Register index or SRAM word address.
    data : Out(32)
        Value.
    """

    def __init__(self):
        super().__init__({"en": Out(1), "addr": Out(16), "data": Out(32)})


class PE(wiring.Component):
    """Processing element: SRAM, accumulators, a MAC task and a reduce task.

    Parameters
    ----------
    sram_words : int
        32-bit words of local SRAM (weights, requantization words, descriptors); at most 65536.
    acc_depth : int
        Accumulators, i.e. the largest ``m`` (rows per PE) a descriptor may ask for.
    queue_depth : int
        Depth of each per-color input queue.
    counter_bits : int
        Width of the performance and error counters (16..32; small FPGAs use 16, and the
        counters then wrap at 65536).
    ramp_reg : bool
        Register the ramp input (the FPGA builds, with the routers' link registers). Without,
        the router's arbiter writes the PE's queues combinationally and ``ready`` follows the
        queue of the offered color. With it, ``ready`` is always 1 and every wavelet spends a
        cycle in a register before its queue; ``accept`` then reserves room for it (a color is
        accepted while its queue level plus the registered wavelet is below the depth), so
        the only path from the router into the PE is a function of flip-flops. A producer
        that ignores ``accept`` loses the wavelet (counted in ``task_errors``). Needs
        ``queue_depth >= 3`` to stream at one wavelet per cycle.
    cover_points : bool
        Add the functional coverage points of :data:`~sparktile.hdl.cover.PE_BINS` (task
        kind x descriptor flags x back-pressure, and each kind of task error), for
        Verilator's coverage build (see :mod:`~sparktile.hdl.cover`).

    Members
    -------
    ramp_in : In(stream.Signature(Wavelet))
        Wavelets from the router's ramp output.
    accept : Out(32)
        Per-color flow control towards the router: a color's bit is set while its queue has
        room. Unbound colors are always accepted (and dropped, counted in ``task_errors``).
    ramp_out : Out(stream.Signature(Wavelet))
        Partial sums and results towards the router's ramp input.
    reg_write : In(ConfigWriteSignature())
        PE register write (:class:`~sparktile.hdl.formats.PeReg`).
    sram_write : In(ConfigWriteSignature())
        SRAM word write (configuration path).
    mac_busy, stall_in, stall_out, task_errors, vectors : Out(counter_bits)
        Performance and error counters.
    """

    def __init__(self, *, sram_words: int = 4096, acc_depth: int = 256, queue_depth: int = 2,
                 counter_bits: int = 32, ramp_reg: bool = False, cover_points: bool = False):
        if not isinstance(sram_words, int) or not 16 <= sram_words <= 65536:
            raise ValueError(f"PE SRAM must be 16..65536 words, not {sram_words!r}")
        if not isinstance(acc_depth, int) or not 1 <= acc_depth <= 65535:
            raise ValueError(f"PE accumulator depth must be 1..65535, not {acc_depth!r}")
        if not isinstance(queue_depth, int) or queue_depth < 2:
            raise ValueError(f"PE queue depth must be an integer >= 2, not {queue_depth!r}")
        if not isinstance(counter_bits, int) or not 16 <= counter_bits <= 32:
            raise ValueError(f"PE counter width must be 16..32 bits, not {counter_bits!r}")
        self.sram_words = sram_words
        self.ramp_reg = bool(ramp_reg)
        self.acc_depth = acc_depth
        self.queue_depth = queue_depth
        self.cover_points = bool(cover_points)
        super().__init__({
            "ramp_in": In(stream.Signature(Wavelet)),
            "accept": Out(NUM_COLORS),
            "ramp_out": Out(stream.Signature(Wavelet)),
            "reg_write": In(ConfigWriteSignature()),
            "sram_write": In(ConfigWriteSignature()),
            "mac_busy": Out(counter_bits),
            "stall_in": Out(counter_bits),
            "stall_out": Out(counter_bits),
            "task_errors": Out(counter_bits),
            "vectors": Out(counter_bits),
        })

    def elaborate(self, platform):
        m = Module()

        # ---- configuration registers -------------------------------------------------------
        x_color = Signal(5)
        psum_color = Signal(5)
        out_color = Signal(5)
        regs = [x_color, psum_color, out_color]
        assert len(regs) == NUM_PE_REGS
        with m.If(self.reg_write.en):
            with m.Switch(self.reg_write.addr):
                for idx, reg in enumerate(regs):
                    with m.Case(idx):
                        m.d.sync += reg.eq(self.reg_write.data)

        # ---- memories ------------------------------------------------------------------------
        m.submodules.sram = sram = memory.Memory(shape=32, depth=self.sram_words, init=[])
        sram_rd = sram.read_port()
        sram_wr = sram.write_port()
        m.d.comb += [
            sram_wr.en.eq(self.sram_write.en),
            sram_wr.addr.eq(self.sram_write.addr),
            sram_wr.data.eq(self.sram_write.data),
        ]
        m.submodules.acc = acc = memory.Memory(shape=32, depth=self.acc_depth, init=[])
        acc_wr = acc.write_port()
        acc_rd = acc.read_port(transparent_for=(acc_wr,))

        # ---- per-color input queues ----------------------------------------------------------
        width = Wavelet.as_shape().size
        m.submodules.xq = xq = fifo.SyncFIFO(width=width, depth=self.queue_depth)
        m.submodules.pq = pq = fifo.SyncFIFO(width=width, depth=self.queue_depth)
        if self.ramp_reg:
            # The ramp register: always ready, it hands its wavelet to its queue a cycle later.
            r_valid = Signal()
            r_wav = Signal(Wavelet)
            m.d.sync += [r_valid.eq(self.ramp_in.valid), r_wav.eq(self.ramp_in.payload)]
            m.d.comb += self.ramp_in.ready.eq(1)
            inw, in_valid = r_wav, r_valid
        else:
            inw, in_valid = self.ramp_in.payload, self.ramp_in.valid
        to_x = inw.color == x_color
        to_p = (inw.color == psum_color) & ~to_x
        m.d.comb += [
            xq.w_data.eq(inw), pq.w_data.eq(inw),
            xq.w_en.eq(in_valid & to_x),
            pq.w_en.eq(in_valid & to_p),
        ]
        # Every color is acceptable except a bound one whose queue is full (counting, with the
        # ramp register, the wavelet in it); ``accept`` is a function of registers.
        if self.ramp_reg:
            x_full = xq.level + (r_valid & to_x) >= self.queue_depth
            p_full = pq.level + (r_valid & to_p) >= self.queue_depth
            # Only a producer that ignores ``accept`` can find the queue full here.
            overflow = (in_valid & to_x & ~xq.w_rdy) | (in_valid & to_p & ~pq.w_rdy)
        else:
            m.d.comb += self.ramp_in.ready.eq(Mux(to_x, xq.w_rdy, Mux(to_p, pq.w_rdy, 1)))
            x_full, p_full = ~xq.w_rdy, ~pq.w_rdy
            overflow = Const(0)
        accept = Signal(NUM_COLORS)
        m.d.comb += accept.eq(~0)
        with m.If(x_full):
            m.d.comb += accept.bit_select(x_color, 1).eq(0)
        with m.If(p_full):
            m.d.comb += accept.bit_select(psum_color, 1).eq(0)
        m.d.comb += self.accept.eq(accept)
        unbound_drop = (in_valid & ~to_x & ~to_p) | overflow

        xh = data.View(Wavelet, xq.r_data)
        ph = data.View(Wavelet, pq.r_data)

        # ---- descriptor ----------------------------------------------------------------------
        desc_ptr = Signal(16)
        w_base = Signal(16)
        n_words = Signal(16)
        rows = Signal(16)
        flags = Signal(DescFlags)
        q_base = Signal(16)
        desc_ok = Signal()

        # ---- MAC task ------------------------------------------------------------------------
        k = Signal(16)           # index of the data wavelet within the vector
        row = Signal(16)         # row being issued
        row_addr = Signal(16)    # w_base + row * n_words + k, kept incrementally
        x_lanes = Signal(32)     # activation wavelet being applied
        m.submodules.mac = mac = MacPipeline()
        mac_in_flight = mac.busy

        # ---- reduce task ---------------------------------------------------------------------
        r_row = Signal(16)       # next row to issue
        rb_valid = Signal()      # stage B: accumulator and requantization word valid
        rb_row = Signal(16)
        int8_out = flags.last & ~flags.int32
        m.submodules.requant = rq = RequantPipeline()
        rq_free = rq.i.ready     # stage B can hand a row to the requantization pipeline
        rq_empty = rq.empty
        out_valid = Signal()
        out_payload = Signal(Wavelet)

        sram_addr = Signal(16)
        sram_en = Signal()
        acc_addr = Signal(range(self.acc_depth))
        acc_en = Signal()
        m.d.comb += [
            sram_rd.addr.eq(sram_addr), sram_rd.en.eq(sram_en),
            acc_rd.addr.eq(acc_addr), acc_rd.en.eq(acc_en),
        ]

        ev_mac = Signal()
        ev_stall_in = Signal()
        ev_stall_out = Signal()
        ev_error = Signal()
        ev_vector = Signal()
        # The events behind ev_stall_in and ev_error, apart (the coverage points bin them).
        mac_starved = Signal()      # the MAC task waits for the vector's next wavelet
        psum_wait = Signal()        # the reduce task waits for a partial sum
        err_mid_vector = Signal()   # a descriptor selector abandons a vector half-way
        err_no_desc = Signal()      # a data wavelet before any good descriptor
        err_bad_desc = Signal()     # a descriptor with no rows, too many, or no words
        m.d.comb += [ev_stall_in.eq(mac_starved | psum_wait),
                     ev_error.eq(err_mid_vector | err_no_desc | err_bad_desc)]

        out_free = ~out_valid | self.ramp_out.ready
        m.d.comb += rq.o.ready.eq(out_free)
        rq_stall_out = rq.o.valid & ~out_free
        with m.If(self.ramp_out.ready):
            m.d.sync += out_valid.eq(0)
        m.d.comb += [self.ramp_out.valid.eq(out_valid), self.ramp_out.payload.eq(out_payload)]

        with m.FSM(name="task"):
            with m.State("IDLE"):
                with m.If(xq.r_rdy):
                    m.d.comb += xq.r_en.eq(1)
                    with m.If(xh.ctrl):
                        # Descriptor selector: fetch three words. A selector in the middle of
                        # a vector abandons it (counted as an error).
                        m.d.comb += [sram_addr.eq(xh.payload), sram_en.eq(1),
                                     err_mid_vector.eq(k != 0)]
                        m.d.sync += [desc_ptr.eq(xh.payload[:16] + 1), k.eq(0), desc_ok.eq(0)]
                        m.next = "DESC0"
                    with m.Elif(~desc_ok):
                        m.d.comb += err_no_desc.eq(1)
                    with m.Else():
                        m.d.sync += [x_lanes.eq(xh.payload), row.eq(0), row_addr.eq(w_base + k)]
                        m.next = "MAC"
                with m.Else():
                    m.d.comb += mac_starved.eq(k != 0)
            with m.State("DESC0"):
                d0 = data.View(DescWord0, sram_rd.data)
                m.d.comb += [sram_addr.eq(desc_ptr), sram_en.eq(1)]
                m.d.sync += [w_base.eq(d0.w_base), n_words.eq(d0.n_words),
                             desc_ptr.eq(desc_ptr + 1)]
                m.next = "DESC1"
            with m.State("DESC1"):
                d1 = data.View(DescWord1, sram_rd.data)
                m.d.comb += [sram_addr.eq(desc_ptr), sram_en.eq(1)]
                m.d.sync += [rows.eq(d1.rows), flags.eq(d1.flags)]
                m.next = "DESC2"
            with m.State("DESC2"):
                d2 = data.View(DescWord2, sram_rd.data)
                ok = (rows != 0) & (rows <= self.acc_depth) & (n_words != 0)
                m.d.sync += [q_base.eq(d2.q_base), desc_ok.eq(ok)]
                m.d.comb += err_bad_desc.eq(~ok)
                m.next = "IDLE"
            with m.State("MAC"):
                # One weight row per cycle: four MACs.
                m.d.comb += [sram_addr.eq(row_addr), sram_en.eq(1), ev_mac.eq(1)]
                m.d.comb += [mac.issue.valid.eq(1), mac.issue.payload.row.eq(row),
                             mac.issue.payload.first.eq(k == 0), mac.issue.payload.x.eq(x_lanes)]
                with m.If(row + 1 == rows):
                    with m.If(k + 1 == n_words):
                        m.d.sync += [k.eq(0), r_row.eq(0)]
                        m.next = "REDUCE"
                    with m.Else():
                        m.d.sync += k.eq(k + 1)
                        with m.If(xq.r_rdy & ~xh.ctrl):
                            # Next activation wavelet back to back: no bubble.
                            m.d.comb += xq.r_en.eq(1)
                            m.d.sync += [x_lanes.eq(xh.payload), row.eq(0),
                                         row_addr.eq(w_base + k + 1)]
                        with m.Else():
                            m.next = "IDLE"
                with m.Else():
                    m.d.sync += [row.eq(row + 1), row_addr.eq(row_addr + n_words)]
            with m.State("REDUCE"):
                # Stage A: issue the accumulator (and requantization word) of row r_row once
                # the MAC pipeline has written its last accumulator.
                rb_fire = Signal()
                can_issue = (r_row != rows) & ~mac_in_flight & (~rb_valid | rb_fire)
                with m.If(can_issue):
                    m.d.comb += [acc_addr.eq(r_row), acc_en.eq(1),
                                 sram_addr.eq(q_base + r_row), sram_en.eq(1)]
                    m.d.sync += [rb_valid.eq(1), rb_row.eq(r_row), r_row.eq(r_row + 1)]
                with m.Elif(rb_fire):
                    m.d.sync += rb_valid.eq(0)

                # Stage B: add the incoming partial sum. Partial sums and int32 results leave
                # from here; int8 results go on to the requantization pipeline.
                psum = Mux(flags.first, 0, ph.payload)
                v = Signal(32)
                m.d.comb += v.eq(acc_rd.data + psum)
                q_word = data.View(RequantWord, sram_rd.data)
                lane = rb_row[0:2]
                last_row = rb_row + 1 == rows
                p_ok = flags.first | pq.r_rdy
                m.d.comb += rb_fire.eq(rb_valid & p_ok &
                                       Mux(int8_out, rq_free, out_free & rq_empty))
                m.d.comb += [
                    rq.i.valid.eq(rb_valid & p_ok & int8_out),
                    rq.i.payload.v.eq(v),
                    rq.i.payload.mult.eq(q_word.mult),
                    rq.i.payload.shift.eq(q_word.shift),
                    rq.i.payload.lane.eq(lane),
                    rq.i.payload.emit.eq((lane == 3) | last_row),
                ]
                m.d.comb += [
                    psum_wait.eq(rb_valid & ~p_ok),
                    ev_stall_out.eq((rb_valid & p_ok & ~int8_out & ~out_free) | rq_stall_out),
                ]
                with m.If(rb_fire):
                    m.d.comb += pq.r_en.eq(~flags.first)
                    with m.If(~int8_out):
                        m.d.sync += [
                            out_valid.eq(1),
                            out_payload.payload.eq(v),
                            out_payload.color.eq(out_color),
                            out_payload.ctrl.eq(0),
                        ]
                    with m.If(last_row):
                        m.d.comb += ev_vector.eq(1)
                        m.next = "IDLE"

        # ---- requantization pipeline (its own component) -----------------------------------
        # Stage B's direct path waits for it to be empty, so results never overtake each other.
        with m.If(rq.o.valid & rq.o.ready):
            m.d.sync += [
                out_valid.eq(1),
                out_payload.payload.eq(rq.o.payload),
                out_payload.color.eq(out_color),
                out_payload.ctrl.eq(0),
            ]

        # ---- MAC pipeline (its own component) -------------------------------------------------
        # It reads the accumulators in its stage 3, when the reduce task (which waits for
        # ``busy`` to fall) cannot.
        m.d.comb += [mac.weight.eq(sram_rd.data), mac.acc_rd_data.eq(acc_rd.data)]
        with m.If(mac.acc_rd_en):
            m.d.comb += [acc_addr.eq(mac.acc_rd_addr), acc_en.eq(1)]
        m.d.comb += [
            acc_wr.en.eq(mac.acc_wr_en),
            acc_wr.addr.eq(mac.acc_wr_addr),
            acc_wr.data.eq(mac.acc_wr_data),
        ]

        if self.cover_points:
            m.submodules.cover = cover = CoverPoints()
            modes = {"partial": ~flags.last, "int8": int8_out, "int32": flags.last & flags.int32}
            for first in (1, 0):
                for mode, is_mode in modes.items():
                    run = (flags.first == first) & is_mode
                    pre = f"first={first},out={mode},bp="
                    cover.add(f"pe:mac:{pre}flowing", run & ev_mac)
                    cover.add(f"pe:mac:{pre}starved", run & mac_starved)
                    cover.add(f"pe:reduce:{pre}flowing", run & rb_fire)
                    cover.add(f"pe:reduce:{pre}out_stalled", run & ev_stall_out)
                    if first == 0:
                        cover.add(f"pe:reduce:{pre}psum_wait", run & psum_wait)
            for name, event in (("bad_descriptor", err_bad_desc),
                                ("selector_mid_vector", err_mid_vector),
                                ("data_without_descriptor", err_no_desc),
                                ("unbound_color", unbound_drop)):
                cover.add(f"pe:error:{name}", event)

        count_events(m, self.mac_busy, ev_mac)
        count_events(m, self.stall_in, ev_stall_in)
        count_events(m, self.stall_out, ev_stall_out)
        count_events(m, self.task_errors, ev_error, unbound_drop)
        count_events(m, self.vectors, ev_vector)
        return m
