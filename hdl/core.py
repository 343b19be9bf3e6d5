"""The programmable PE core: color-bound tasks running vector programs from SRAM.

Same external ports as :class:`~sparktile.hdl.pe.PE` (so the tile can hold either), with the
ISA of :mod:`sparktile.hdl.isa` instead of the fixed GEMV engine.

* **Inputs.** A data wavelet goes to the input queue bound to its color (``n_queues`` queues,
  bound through ``reg_write``); a control wavelet on a color with a task-table entry is an
  *activation* and waits in the activation queue. Anything else is dropped and counted in
  ``task_errors`` (never a hang). ``accept`` clears a color's bit while its queue (or, for a
  task color, the activation queue) is full.
* **Sequencer.** One task at a time: fetch the instruction (one read of its SRAM row), decode
  it as it leaves the read port (a malformed instruction, or a COLOR source with no input
  queue, ends the task with a task error), execute the vector loop, next instruction; END
  returns to idle and starts the next activation. Every state's last cycle leaves the read
  port free (the last element has been read), so the next instruction's row is read there
  and decoded the cycle after: one cycle an instruction instead of two, except after a last
  cycle that writes SRAM into that very row (a program patching its next instruction), when
  the read waits a cycle for the write. A scalar op runs in its decode cycle (its result is
  computed from the row on the read port, and that cycle reads the next row): one cycle a
  scalar op, which the integer rsqrt and reciprocal steps run dozens of in a row; a load
  (SLD, SLDR) issues its read in the decode cycle and takes one more. Cycle rules:
  :func:`~sparktile.hdl.isa.fetch_cycles` and :func:`~sparktile.hdl.isa.exec_cycles`.
* **Memories.** SRAM (``sram_words``, one read and one write port: a simple dual-port block
  RAM) holds programs, weights, tables, the KV cache. It is 128 bits wide, four words a row
  with a write enable per word: the same bits and block RAMs as a 32-bit memory, but an
  instruction (four words, programs start on a row) comes in one read instead of four, which
  took two thirds of a short instruction's cycles; a data read selects its word from the row
  by the low address bits it registered. XBUF (``xbuf_words``, a second simple
  dual-port RAM) holds the GEMV's input vector, so that the GEMV reads one weight word and one
  x word every cycle without a second SRAM read port (which a block RAM would only give by
  duplicating the whole SRAM). Every block-RAM read is registered before arithmetic uses it.
* **GEMV.** Row-major: one weight word (four int8 MACs) per cycle, the row's dot product in
  one accumulator register, written (SRAM or XBUF) or sent (a color, int32 partial sums) four
  cycles after its last word while the next row streams: ``rows * words + 4`` cycles. GEMVX
  (x streaming in, ``isa.gemv(..., x_from=c)``): the first row pops each x word from its queue
  as it issues and writes it into XBUF (whose write port is otherwise idle then) for the
  other rows.
* **Element-wise ops and REDUCE.** A five-stage pipeline (``isa.VEC_STAGES``): S0 issues an
  element's reads (memory, input queue or register), S1 registers them and issues the reads
  that need a port's second turn or a's value (b in a's memory or on a's color, VLUT's table
  entry), S2 registers those, S3 computes, S4 writes, sends or updates the register. One
  element every ``isa.elem_interval`` cycles (1, or 2 when a port serves two accesses an
  element): ``interval * (n - 1) + 5`` cycles. Read-after-write closer than
  ``isa.RAW_DISTANCE`` elements is forbidden by the ISA (the ISS refuses it); in-place ops are
  fine.
* **Stalls.** A busy ramp freezes the instruction (nothing moves; the block-RAM ports hold
  their data); an empty input queue freezes it too, except that in an element-wise op the
  elements already issued drain while the next one waits. Each stall cycle is counted
  (``stall_in`` / ``stall_out``) and delays the end by one, so the cycle count of a program,
  stalls excluded, is exactly the ISS's.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .counters import count_events
from .formats import NUM_COLORS, Wavelet
from .isa import FLAG_MAX, FLAG_SAT, Fmt, Op, ReqWord, Space
from .pe import ConfigWriteSignature

__all__ = ["Core"]


def _pow2(name, value, lo, hi):
    if not isinstance(value, int) or not lo <= value <= hi or value & (value - 1):
        raise ValueError(f"core {name} must be a power of two in {lo}..{hi}, not {value!r}")


def _shift_round(v, sh):
    """``arith.shift_round(v, sh)`` for a signed ``v`` and an unsigned 6-bit ``sh``: 64-bit
    signed result (round half up, arithmetic shift)."""
    rnd = Mux(sh == 0, 0, Const(1, 1) << (sh - 1)[:6])
    return ((v.as_signed() + rnd.as_signed()) >> sh)


class Core(wiring.Component):
    """Programmable PE core.

    Parameters
    ----------
    sram_words : int
        SRAM words, a power of two in 64..65536 (addresses wrap modulo it), held as
        ``sram_words / 4`` rows of four (:attr:`sram_data`; word ``a`` is lane ``a % 4`` of
        row ``a // 4``).
    xbuf_words : int
        XBUF words (the GEMV input vector buffer), a power of two in 4..65536.
    n_queues : int
        Input queues (colors a program can receive on at once), 1..8.
    queue_depth : int
        Depth of each input queue and of the activation queue (>= 2).
    counter_bits : int
        Width of the counters (16..32).
    ramp_reg : bool
        Only False this round (the FPGA builds' registered ramp is next round's).

    Members
    -------
    ramp_in : In(stream.Signature(Wavelet))
    accept : Out(32)
        Per-color flow control towards the router.
    ramp_out : Out(stream.Signature(Wavelet))
    reg_write : In(ConfigWriteSignature())
        Task table (``isa.task_reg``) and queue bindings (``isa.queue_reg``).
    sram_write : In(ConfigWriteSignature())
        SRAM word write, taken while no task runs (else dropped and counted as a task error).
    mac_busy, stall_in, stall_out, task_errors, vectors : Out(counter_bits)
        GEMV weight-word cycles, input and output stall cycles, errors, tasks completed.
    instructions, task_cycles : Out(counter_bits)
        Instructions fetched; cycles a task ran (stalls included).
    """

    def __init__(self, *, sram_words: int = 4096, xbuf_words: int = 256, n_queues: int = 4,
                 queue_depth: int = 2, counter_bits: int = 32, ramp_reg: bool = False):
        _pow2("sram_words", sram_words, 64, 65536)
        _pow2("xbuf_words", xbuf_words, 4, 65536)
        if not isinstance(n_queues, int) or not 1 <= n_queues <= 8:
            raise ValueError(f"core n_queues must be 1..8, not {n_queues!r}")
        if not isinstance(queue_depth, int) or queue_depth < 2:
            raise ValueError(f"core queue_depth must be an integer >= 2, not {queue_depth!r}")
        if not isinstance(counter_bits, int) or not 16 <= counter_bits <= 32:
            raise ValueError(f"core counter width must be 16..32 bits, not {counter_bits!r}")
        if ramp_reg:
            raise ValueError("core ramp_reg=True is not implemented yet; use ramp_reg=False")
        self.sram_words, self.xbuf_words = sram_words, xbuf_words
        self.n_queues, self.queue_depth = n_queues, queue_depth
        sig = {
            "ramp_in": In(stream.Signature(Wavelet)),
            "accept": Out(NUM_COLORS),
            "ramp_out": Out(stream.Signature(Wavelet)),
            "reg_write": In(ConfigWriteSignature()),
            "sram_write": In(ConfigWriteSignature()),
        }
        for name in ("mac_busy", "stall_in", "stall_out", "task_errors", "vectors",
                     "instructions", "task_cycles"):
            sig[name] = Out(counter_bits)
        super().__init__(sig)
        # The state a bench compares with the ISS (memories' contents, scalar registers).
        self.sram_data = memory.MemoryData(shape=32 * isa.INSN_WORDS,
                                           depth=sram_words // isa.INSN_WORDS, init=[])
        self.xbuf_data = memory.MemoryData(shape=32, depth=xbuf_words, init=[])
        self.regs = [Signal(32, name=f"r{r}") for r in range(isa.NUM_SREGS)]

    def elaborate(self, platform):
        m = Module()
        sa = (self.sram_words - 1).bit_length()
        xa = (self.xbuf_words - 1).bit_length()
        nq = self.n_queues

        # ---- configuration registers: task table and queue bindings ------------------------
        task_pc = Array(Signal(15, name=f"task_pc_{c}") for c in range(NUM_COLORS))
        task_ok = Signal(NUM_COLORS)
        q_color = Array(Signal(5, name=f"q_color_{q}") for q in range(nq))
        q_ok = Signal(nq)
        reg_err = Signal()
        with m.If(self.reg_write.en):
            addr, value = self.reg_write.addr, self.reg_write.data
            with m.If((addr < isa.QUEUE_REG_BASE) & value[15] & (value[:2] != 0)):
                m.d.comb += reg_err.eq(1)        # a program must start on an SRAM row
            with m.Elif(addr < isa.QUEUE_REG_BASE):
                m.d.sync += [task_pc[addr[:5]].eq(value[:15]),
                             task_ok.bit_select(addr[:5], 1).eq(value[15])]
            with m.Elif(addr < isa.QUEUE_REG_BASE + nq):
                qi = (addr - isa.QUEUE_REG_BASE)[:3]
                m.d.sync += [q_color[qi].eq(value[:5]), q_ok.bit_select(qi, 1).eq(value[5])]
            with m.Else():
                m.d.comb += reg_err.eq(1)

        # ---- memories --------------------------------------------------------------------------
        m.submodules.sram = sram = memory.Memory(data=self.sram_data)
        m.submodules.xbuf = xbuf = memory.Memory(data=self.xbuf_data)
        s_rd, s_wr = sram.read_port(), sram.write_port(granularity=32)
        x_rd, x_wr = xbuf.read_port(), xbuf.write_port()

        # ---- input queues and activations ----------------------------------------------------
        queues = []
        for q in range(nq):
            f = fifo.SyncFIFO(width=32, depth=self.queue_depth)
            m.submodules[f"q{q}"] = f
            queues.append(f)
        m.submodules.acts = acts = fifo.SyncFIFO(width=37, depth=self.queue_depth)
        inw = self.ramp_in.payload
        hit = Signal(nq)
        for q in range(nq):
            m.d.comb += hit[q].eq(q_ok[q] & (q_color[q] == inw.color))
        is_act = inw.ctrl & task_ok.bit_select(inw.color, 1)
        to_q = ~inw.ctrl & hit.any()
        q_room = Signal()
        for q in reversed(range(nq)):      # the lowest bound queue wins
            with m.If(hit[q]):
                m.d.comb += q_room.eq(queues[q].w_rdy)
        for q, f in enumerate(queues):
            first = hit[q] & ~(hit & ((1 << q) - 1)).any()
            m.d.comb += [f.w_data.eq(inw.payload),
                         f.w_en.eq(self.ramp_in.valid & ~inw.ctrl & first)]
        m.d.comb += [acts.w_data.eq(inw.payload | (inw.color << 32)),
                     acts.w_en.eq(self.ramp_in.valid & is_act),
                     self.ramp_in.ready.eq(Mux(is_act, acts.w_rdy, Mux(to_q, q_room, 1)))]
        drop = self.ramp_in.valid & ~is_act & ~to_q
        accept = Signal(NUM_COLORS)
        for c in range(NUM_COLORS):
            full_q = Const(0)
            for q, f in enumerate(queues):
                full_q = full_q | (q_ok[q] & (q_color[q] == c) & ~f.w_rdy)
            m.d.comb += accept[c].eq(~full_q & ~(task_ok[c] & ~acts.w_rdy))
        m.d.comb += self.accept.eq(accept)
        q_rdy = Array(f.r_rdy for f in queues)
        q_data = Array(f.r_data for f in queues)
        q_pop = Signal(nq)
        for q, f in enumerate(queues):
            m.d.comb += f.r_en.eq(q_pop[q])

        # ---- output register -----------------------------------------------------------------
        out_valid = Signal()
        out_payload = Signal(Wavelet)
        out_free = ~out_valid | self.ramp_out.ready
        with m.If(self.ramp_out.ready):
            m.d.sync += out_valid.eq(0)
        m.d.comb += [self.ramp_out.valid.eq(out_valid), self.ramp_out.payload.eq(out_payload)]

        def send(word, color):
            m.d.sync += [out_valid.eq(1), out_payload.payload.eq(word),
                         out_payload.color.eq(color), out_payload.ctrl.eq(0)]

        # ---- sequencer state -----------------------------------------------------------------
        regs = Array(self.regs)
        pc = Signal(16)
        # The instruction: decoded from the row on the read port in DECODE, from the
        # registers that DECODE loads while it executes.
        decoding = Signal()
        w0_r = Signal(isa.Insn)
        od_r, oa_r, ob_r = (Signal(isa.Operand, name=f"{n}_r") for n in ("od", "oa", "ob"))
        w0 = Signal(isa.Insn)
        od, oa, ob = (Signal(isa.Operand, name=n) for n in ("od", "oa", "ob"))
        for k_, (view, held) in enumerate(((w0, w0_r), (od, od_r), (oa, oa_r), (ob, ob_r))):
            m.d.comb += view.eq(Mux(decoding, s_rd.data.word_select(k_, 32), held.as_value()))
        bword = ob.as_value()
        op, n, imm = w0.op, w0.n, w0.imm
        i = Signal(16)
        pa, pb, pd = Signal(16), Signal(16), Signal(16)
        qa, qb = Signal(3), Signal(3)
        pack_reg = Signal(32)
        racc = Signal(signed(32))
        last = i + 1 == n

        # memory access helpers (one read of each memory per cycle at most)
        # (SRAM addresses are word addresses; the port reads the row, and s_word is the word
        # of the last read: its lane is registered with the read, and held with the port's
        # data while no read is enabled)
        s_addr, s_en, xr_addr, xr_en = Signal(sa), Signal(), Signal(xa), Signal()
        s_lane = Signal(2)
        m.d.comb += [s_rd.addr.eq(s_addr[2:]), s_rd.en.eq(s_en),
                     x_rd.addr.eq(xr_addr), x_rd.en.eq(xr_en)]
        with m.If(s_en):
            m.d.sync += s_lane.eq(s_addr[:2])
        s_word = s_rd.data.word_select(s_lane, 32)
        busy = Signal()
        cfg_ok = self.sram_write.en & ~busy
        sw_en, sw_addr, sw_data = Signal(), Signal(sa), Signal(32)
        w_addr, w_data = Signal(sa), Signal(32)
        m.d.comb += [w_addr.eq(Mux(busy, sw_addr, self.sram_write.addr)),
                     w_data.eq(Mux(busy, sw_data, self.sram_write.data)),
                     s_wr.addr.eq(w_addr[2:]),
                     s_wr.en.eq(Mux(Mux(busy, sw_en, cfg_ok), 1 << w_addr[:2], 0)),
                     s_wr.data.eq(Cat(*[w_data] * isa.INSN_WORDS))]

        def mem_read(space, addr):
            with m.If(space == Space.XBUF):
                m.d.comb += [xr_addr.eq(addr), xr_en.eq(1)]
            with m.Else():
                m.d.comb += [s_addr.eq(addr), s_en.eq(1)]

        def mem_data(space):
            return Mux(space == Space.XBUF, x_rd.data, s_word)

        def mem_write(space, addr, word):
            with m.If(space == Space.XBUF):
                m.d.comb += [x_wr.en.eq(1), x_wr.addr.eq(addr), x_wr.data.eq(word)]
            with m.Else():
                m.d.comb += [sw_en.eq(1), sw_addr.eq(addr), sw_data.eq(word)]

        def element(word, fmt, lane):
            return Mux(fmt == Fmt.I8X4, word.word_select(lane, 8).as_signed(),
                       word.as_signed())

        def step_ptr(ptr, operand, lane):
            adv = (operand.fmt != Fmt.I8X4) | (lane == 3)
            with m.If(adv):
                m.d.sync += ptr.eq(ptr + operand.stride)

        def issue(from_color, queue, pre, operand, ptr, lane):
            """Issue one element of an operand: pop its input queue into ``pre``, read its
            register into ``pre``, or start its memory read (the data is there next cycle);
            then step its pointer."""
            with m.If(from_color):
                m.d.comb += q_pop.bit_select(queue, 1).eq(1)
                m.d.sync += pre.eq(q_data[queue])
            with m.Elif(operand.space == Space.REG):
                m.d.sync += pre.eq(regs[operand.base[:4]])
            with m.Else():
                mem_read(operand.space, ptr)
            step_ptr(ptr, operand, lane)

        ev_mac, ev_in, ev_out, ev_err, ev_done, ev_insn = (Signal(name=f"ev_{k}") for k in
                                                            ("mac", "in", "out", "err",
                                                             "done", "insn"))

        def next_insn(npc):
            """End this instruction: read the next one's row now, in the last cycle, where
            every state leaves the read port free, and decode it the cycle after
            (isa.PREFETCH_CYCLES); unless this cycle writes SRAM in that row, which the read
            would miss: then fetch it the cycle after (isa.FETCH_CYCLES)."""
            with m.If(sw_en & (sw_addr[2:] == npc[2:sa])):
                m.next = "FETCH"
            with m.Else():
                m.d.comb += [s_addr.eq(npc), s_en.eq(1), ev_insn.eq(1)]
                m.next = "DECODE"

        # ---- scalar ops: computed from the row on the read port, so that a scalar op
        # finishes in its decode cycle (which also reads the next instruction's row)
        s_av = regs[oa.base[:4]].as_signed()
        s_bv = Mux(imm[6], bword, regs[ob.base[:4]]).as_signed()
        s_res = Signal(32)
        s_bl = Signal(6)
        for bit in range(32):
            with m.If(s_av.as_unsigned()[bit]):
                m.d.comb += s_bl.eq(bit + 1)
        with m.Switch(op):
            with m.Case(Op.SLI):
                m.d.comb += s_res.eq(bword)
            with m.Case(Op.SADD):
                m.d.comb += s_res.eq(s_av + s_bv)
            with m.Case(Op.SSUB):
                m.d.comb += s_res.eq(s_av - s_bv)
            with m.Case(Op.SMULSH):
                bu = Signal(signed(33), name="smulsh_b")
                m.d.comb += bu.eq(Mux(imm[7], s_bv.as_unsigned(), s_bv))
                m.d.comb += s_res.eq((s_av * bu) >> imm[:6])
            with m.Case(Op.SSHR):
                m.d.comb += s_res.eq(_shift_round(s_av, imm[:6]))
            with m.Case(Op.SSHL):
                m.d.comb += s_res.eq(s_av << imm[:5])
            with m.Case(Op.SBITLEN):
                m.d.comb += s_res.eq(s_bl)
            with m.Case(Op.SLT):
                m.d.comb += s_res.eq(s_av < s_bv)
            with m.Case(Op.SMAX):
                m.d.comb += s_res.eq(Mux(s_av > s_bv, s_av, s_bv))
            with m.Case(Op.SSHLV):
                m.d.comb += s_res.eq(s_av << s_bv.as_unsigned()[:5])

        # ---- decode: validity and queue lookup -------------------------------------------------
        valid = Signal()
        with m.Switch(op):
            for o in Op:
                with m.Case(int(o)):
                    conds = []
                    for slot, operand in enumerate((od, oa, ob)):
                        allowed = isa.ALLOWED[o][slot]
                        if allowed is None or (slot == 2 and o in isa.RAW_B):
                            continue
                        ok = Const(0)
                        for s in allowed:
                            ok = ok | (operand.space == int(s))
                        if slot == 2 and o in isa.SCALAR_OPS:
                            ok = ok | imm[6]
                        conds.append(ok)
                    if o in isa.GEMV_OPS:
                        conds.append((n == 0) | (imm[:9] != 0))
                    if o is Op.REDUCE:
                        conds.append(n != 0)
                    ok = Const(1)
                    for c in conds:
                        ok = ok & c
                    m.d.comb += valid.eq(ok)
        def lookup(operand, slots_ops, found, idx, *, addend=None, extra=None):
            uses = Const(0) if extra is None else extra
            for o in slots_ops:
                uses = uses | (op == int(o))
            addend = Const(0) if addend is None else addend
            uses = (uses & (operand.space == Space.COLOR)) | addend
            want = Mux(addend, operand.aux, operand.base[:5])
            hits = Signal(nq, name=f"{found.name}_hits")
            for q in range(nq):
                m.d.comb += hits[q].eq(q_ok[q] & (q_color[q] == want))
            for q in reversed(range(nq)):
                with m.If(hits[q]):
                    m.d.comb += idx.eq(q)
            m.d.comb += found.eq(~uses | hits.any())
        a_found, b_found = Signal(), Signal()
        qa_d, qb_d = Signal(3), Signal(3)
        a_queue_ops = [o for o in Op if isa.ALLOWED[o][1] and Space.COLOR in isa.ALLOWED[o][1]]
        b_queue_ops = [o for o in Op if isa.ALLOWED[o][2] and o not in isa.RAW_B
                       and Space.COLOR in isa.ALLOWED[o][2] and o is not Op.VSHR]
        lookup(oa, a_queue_ops, a_found, qa_d)
        g_addend = imm[9]
        lookup(ob, b_queue_ops, b_found, qb_d,
               addend=((op == Op.GEMV) | (op == Op.GEMVX)) & g_addend,
               extra=(op == Op.VSHR) & imm[6])
        # GEMVX: x streams in on color a.aux during the first row.
        g_xin = op == Op.GEMVX
        x_found, qx_d, qx = Signal(), Signal(3), Signal(3)
        lookup(oa, [], x_found, qx_d, addend=g_xin)

        # GEMV pipeline registers
        g_row, g_k = Signal(16), Signal(9)
        g_words = imm[:9]
        g_issuing = Signal()
        v1, v2, v3, v4 = Signal(), Signal(), Signal(), Signal()
        f1, l1, f2, l2, f3, l3 = (Signal(name=n) for n in ("f1", "l1", "f2", "l2", "f3", "l3"))
        g_w, g_x, g_xq, x1 = Signal(32), Signal(32), Signal(32), Signal()
        g_p = [Signal(signed(16), name=f"g_p{l}") for l in range(4)]
        g_acc = Signal(32)
        have = Signal()

        # Element-wise pipeline (S0..S4, see isa.VEC_STAGES): the per-element interval of
        # isa.elem_interval, tabulated over the op, the operand spaces, FLAG_VAR and whether
        # a and b name one color, so that the RTL and the ISS take it from one function.
        v_c2 = Signal()
        same_color = oa.base[:5] == ob.base[:5]
        key = Cat(oa.space, ob.space, imm[6], same_color, op)
        slow = []
        for o in isa.VEC_OPS:
            for sa_ in isa.Space:
                for sb_ in isa.Space:
                    for var in (0, 1):
                        for same in (0, 1):
                            interval = isa.elem_interval(
                                o, var << 6, isa.Src(sa_, 0), isa.Src(sb_, 0 if same else 1))
                            assert interval in (1, 2), interval
                            if interval == 2:
                                slow.append(int(sa_) | int(sb_) << 2 | var << 4 | same << 5 |
                                            int(o) << 6)
        with m.Switch(key):
            with m.Case(*slow):
                m.d.comb += v_c2.eq(1)
        v_bused = ((op == Op.VADD) | (op == Op.VMUL) | (op == Op.VMAX) | (op == Op.VREQ) |
                   (op == Op.VMULSR) | ((op == Op.VSHR) & imm[6]))
        a_mem = (oa.space == Space.SRAM) | (oa.space == Space.XBUF)
        a_col = oa.space == Space.COLOR
        b_mem = (ob.space == Space.SRAM) | (ob.space == Space.XBUF)
        b_col = ob.space == Space.COLOR
        b_early = v_bused & ~v_c2      # b read or popped in S0, beside a
        b_late = v_bused & v_c2        # b read or popped in S1 (a's port is busy in S0)
        v_issuing = Signal()
        s1v, s2v, s3v, s4v = (Signal(name=f"s{k}v") for k in range(1, 5))
        s1_lane, s2_lane, s3_lane, s4_lane = (Signal(2, name=f"s{k}_lane") for k in range(1, 5))
        s1_first, s2_first, s3_first = (Signal(name=f"s{k}_first") for k in range(1, 4))
        s1_last, s2_last, s3_last, s4_last = (Signal(name=f"s{k}_last") for k in range(1, 5))
        a_pre, b_pre = Signal(signed(32)), Signal(signed(32))
        a2, b2, a3, b3 = (Signal(signed(32), name=nm) for nm in ("a2", "b2", "a3", "b3"))
        r4 = Signal(signed(32))

        with m.FSM(name="seq"):
            with m.State("IDLE"):
                with m.If(acts.r_rdy):
                    m.d.comb += acts.r_en.eq(1)
                    m.d.sync += [pc.eq(task_pc[acts.r_data[32:37]]),
                                 regs[isa.ARG_REG].eq(acts.r_data[:32])]
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += [busy.eq(1), s_addr.eq(pc), s_en.eq(1), ev_insn.eq(1)]
                m.next = "DECODE"
            with m.State("DECODE"):
                m.d.comb += [busy.eq(1), decoding.eq(1)]
                m.d.sync += [w0_r.eq(w0), od_r.eq(od), oa_r.eq(oa), ob_r.eq(ob)]
                m.d.sync += [i.eq(0), pa.eq(oa.base), pb.eq(ob.base), pd.eq(od.base),
                             qa.eq(qa_d), qb.eq(qb_d), qx.eq(qx_d), pc.eq(pc + isa.INSN_WORDS),
                             g_row.eq(0), g_k.eq(0), g_issuing.eq(1), have.eq(0),
                             v_issuing.eq(1), s1v.eq(0), s2v.eq(0), s3v.eq(0), s4v.eq(0)]
                with m.If(~valid | ~a_found | ~b_found | ~x_found):
                    m.d.comb += ev_err.eq(1)
                    m.next = "IDLE"
                with m.Elif(op == Op.END):
                    m.d.comb += ev_done.eq(1)
                    m.next = "IDLE"
                with m.Elif((n == 0) & (op < Op.SLI)):
                    next_insn(pc + isa.INSN_WORDS)
                with m.Else():
                    with m.Switch(op):
                        with m.Case(Op.RECV):
                            m.next = "RECV"
                        with m.Case(Op.SEND):
                            m.next = "SEND"
                        with m.Case(Op.GEMV, Op.GEMVX):
                            m.next = "GEMV"
                        with m.Case(*isa.VEC_OPS):
                            m.next = "VEC"
                        with m.Case(Op.SLD, Op.SLDR):
                            # the load's read now, beside the decode: its word is on the
                            # port next cycle, which also reads the next instruction
                            m.d.comb += [s_addr.eq(Mux(op == Op.SLDR, regs[oa.base[:4]],
                                                       bword)), s_en.eq(1)]
                            m.next = "SLD"
                        with m.Default():          # a scalar op: done in its decode
                            with m.If(op == Op.SST):
                                m.d.comb += [sw_en.eq(1), sw_addr.eq(bword),
                                             sw_data.eq(s_av)]
                            with m.Else():
                                m.d.sync += regs[od.base[:4]].eq(s_res)
                            next_insn(pc + isa.INSN_WORDS)

            with m.State("RECV"):
                m.d.comb += busy.eq(1)
                with m.If(q_rdy[qa]):
                    m.d.comb += q_pop.bit_select(qa, 1).eq(1)
                    mem_write(od.space, pd, q_data[qa])
                    m.d.sync += [pd.eq(pd + od.stride), i.eq(i + 1)]
                    with m.If(last):
                        next_insn(pc)
                with m.Else():
                    m.d.comb += ev_in.eq(1)

            with m.State("SEND"):
                m.d.comb += busy.eq(1)
                with m.If(have & ~out_free):
                    m.d.comb += ev_out.eq(1)
                with m.Else():
                    with m.If(have):
                        send(mem_data(oa.space), od.base[:5])
                    with m.If(i != n):
                        mem_read(oa.space, pa)
                        m.d.sync += [pa.eq(pa + oa.stride), i.eq(i + 1), have.eq(1)]
                    with m.Else():
                        m.d.sync += have.eq(0)
                        next_insn(pc)

            with m.State("GEMV"):
                m.d.comb += busy.eq(1)
                # With x streaming in, the first row takes each x word from its queue as it
                # issues (and keeps it in XBUF for the other rows): no RECV before the GEMV.
                g_xrow = g_issuing & g_xin & (g_row == 0)
                in_stall = (v4 & g_addend & ~q_rdy[qb]) | (g_xrow & ~q_rdy[qx])
                out_stall = v4 & (od.space == Space.COLOR) & ~out_free & ~in_stall
                adv = ~in_stall & ~out_stall
                m.d.comb += [ev_in.eq(in_stall), ev_out.eq(out_stall)]
                g_res = g_acc + Mux(g_addend, q_data[qb], 0)
                with m.If(adv):
                    # issue: weight word and x word
                    with m.If(g_issuing):
                        m.d.comb += [s_addr.eq(pa), s_en.eq(1), xr_addr.eq(pb + g_k),
                                     xr_en.eq(1), ev_mac.eq(1)]
                        m.d.sync += [pa.eq(pa + 1), f1.eq(g_k == 0),
                                     l1.eq(g_k + 1 == g_words)]
                        with m.If(g_xrow):
                            m.d.comb += [q_pop.bit_select(qx, 1).eq(1), x_wr.en.eq(1),
                                         x_wr.addr.eq(pb + g_k), x_wr.data.eq(q_data[qx])]
                            m.d.sync += g_xq.eq(q_data[qx])
                        with m.If(g_k + 1 == g_words):
                            m.d.sync += [g_k.eq(0), g_row.eq(g_row + 1)]
                            with m.If(g_row + 1 == n):
                                m.d.sync += g_issuing.eq(0)
                        with m.Else():
                            m.d.sync += g_k.eq(g_k + 1)
                    m.d.sync += [v1.eq(g_issuing), x1.eq(g_xrow), v2.eq(v1), v3.eq(v2),
                                 v4.eq(v3 & l3),
                                 f2.eq(f1), l2.eq(l1), f3.eq(f2), l3.eq(l2)]
                    with m.If(v1):
                        m.d.sync += [g_w.eq(s_word), g_x.eq(Mux(x1, g_xq, x_rd.data))]
                    with m.If(v2):
                        for lane_i in range(4):
                            m.d.sync += g_p[lane_i].eq(g_w.word_select(lane_i, 8).as_signed() *
                                                       g_x.word_select(lane_i, 8).as_signed())
                    with m.If(v3):
                        dot = (g_p[0] + g_p[1]) + (g_p[2] + g_p[3])
                        m.d.sync += g_acc.eq(Mux(f3, 0, g_acc) + dot)
                    with m.If(v4):
                        m.d.comb += q_pop.bit_select(qb, 1).eq(g_addend)
                        with m.If(od.space == Space.COLOR):
                            send(g_res, od.base[:5])
                        with m.Else():
                            mem_write(od.space, pd, g_res)
                        m.d.sync += pd.eq(pd + od.stride)
                        with m.If(~g_issuing & ~v1 & ~v2 & ~v3):
                            next_insn(pc)

            # ---- element-wise ops and REDUCE: a five-stage pipeline ------------------------
            with m.State("VEC"):
                m.d.comb += busy.eq(1)
                # S4 cannot send: everything freezes (the block-RAM ports hold their data).
                packed = (Mux(s4_lane == 0, 0, pack_reg) |
                          (r4.as_unsigned()[:8] << (s4_lane * 8))[:32])
                puts = (od.fmt != Fmt.I8X4) | (s4_lane == 3) | s4_last
                frozen = (s4v & (od.space == Space.COLOR) & (op != Op.REDUCE) & puts &
                          ~out_free)
                # S0 issues element i: a's read (a memory read, a pop, a register) and b's when
                # it uses another port than a; with the 2-cycle interval it waits for S1 to
                # empty, so that S1 has the ports for b's read or pop (or VLUT's table entry).
                go0 = v_issuing & ~frozen & ~(v_c2 & s1v)
                block0 = (a_col & ~q_rdy[qa]) | (b_early & b_col & ~q_rdy[qb])
                fire0 = go0 & ~block0
                block1 = b_late & b_col & ~q_rdy[qb]
                adv1 = s1v & ~frozen & ~block1
                m.d.comb += [ev_out.eq(frozen),
                             ev_in.eq((go0 & block0) | (s1v & ~frozen & block1))]
                with m.If(fire0):
                    issue(a_col, qa, a_pre, oa, pa, i[:2])
                    with m.If(b_early):
                        issue(b_col, qb, b_pre, ob, pb, i[:2])
                    m.d.sync += [i.eq(i + 1), s1_lane.eq(i[:2]), s1_first.eq(i == 0),
                                 s1_last.eq(last)]
                    with m.If(last):
                        m.d.sync += v_issuing.eq(0)
                with m.If(~frozen):
                    m.d.sync += [s1v.eq(fire0 | (s1v & block1)), s2v.eq(adv1), s3v.eq(s2v),
                                 s4v.eq(s3v)]
                # S1: register a (and an early b); issue a late b's read or pop, or VLUT's
                # table entry at b + (a + 128) % 256 (the index's low byte, top bit flipped).
                a_val = Mux(a_mem, element(mem_data(oa.space), oa.fmt, s1_lane), a_pre)
                with m.If(adv1):
                    m.d.sync += [a2.eq(a_val),
                                 b2.eq(Mux(b_mem, element(mem_data(ob.space), ob.fmt, s1_lane),
                                           b_pre)),
                                 s2_lane.eq(s1_lane), s2_first.eq(s1_first),
                                 s2_last.eq(s1_last)]
                    with m.If(b_late):
                        issue(b_col, qb, b_pre, ob, pb, s1_lane)
                    with m.If(op == Op.VLUT):
                        m.d.comb += [s_addr.eq(ob.base + (a_val[:8] ^ 0x80)), s_en.eq(1)]
                # S2: register the late b (or the table entry).
                with m.If(s2v & ~frozen):
                    b_late_val = Mux(b_mem, element(mem_data(ob.space), ob.fmt, s2_lane), b_pre)
                    m.d.sync += [a3.eq(a2),
                                 b3.eq(Mux(op == Op.VLUT, s_word,
                                           Mux(b_late, b_late_val, b2))),
                                 s3_lane.eq(s2_lane), s3_first.eq(s2_first),
                                 s3_last.eq(s2_last)]
                # S3: compute (REDUCE accumulates here, one element a cycle).
                with m.If(s3v & ~frozen):
                    a, b = a3, b3
                    res = Signal(signed(32))
                    with m.Switch(op):
                        with m.Case(Op.VADD):
                            s = Signal(signed(33))
                            m.d.comb += s.eq(a + b)
                            sat = Mux(s > (1 << 31) - 1, (1 << 31) - 1,
                                      Mux(s < -(1 << 31), -(1 << 31), s))
                            m.d.comb += res.eq(Mux(imm[0] == FLAG_SAT, sat, s))
                        with m.Case(Op.VMUL):
                            m.d.comb += res.eq(a * b)
                        with m.Case(Op.VSHR):
                            m.d.comb += res.eq(_shift_round(a, Mux(imm[6], b[:6], imm[:6])))
                        with m.Case(Op.VMULSR):
                            # a (signed, or unsigned with FLAG_UA) times b: 65 bits; the rounding
                            # shift by imm or by register imm[3:0] (FLAG_VAR); saturate to int32.
                            ax = Signal(signed(33), name="mulsr_a")
                            m.d.comb += ax.eq(Mux(imm[7], a.as_unsigned(), a))
                            sh = Mux(imm[6], regs[imm[:4]][:6], imm[:6])
                            y = Signal(signed(67), name="mulsr_y")
                            m.d.comb += y.eq(_shift_round(ax * b, sh))
                            m.d.comb += res.eq(Mux(y > (1 << 31) - 1, (1 << 31) - 1,
                                                   Mux(y < -(1 << 31), -(1 << 31), y)))
                        with m.Case(Op.VMAX):
                            m.d.comb += res.eq(Mux(a > b, a, b))
                        with m.Case(Op.VREQ):
                            q = data.View(ReqWord, b.as_unsigned())
                            prod = Signal(signed(50), name="req_p")
                            m.d.comb += prod.eq(Mux(q.neg, -(a * q.mult), a * q.mult))
                            y = Signal(signed(64))
                            m.d.comb += y.eq(_shift_round(prod, q.shift))
                            m.d.comb += res.eq(Mux(y > 127, 127, Mux(y < -128, -128, y)))
                        with m.Case(Op.VLUT):
                            m.d.comb += res.eq(b)
                        with m.Case(Op.REDUCE):
                            mx = Mux(a > racc, a, racc)
                            m.d.sync += racc.eq(Mux(s3_first, a,
                                                    Mux(imm[0] == FLAG_MAX, mx, racc + a)))
                    m.d.sync += [r4.eq(res), s4_lane.eq(s3_lane), s4_last.eq(s3_last)]
                # S4: write, send, or (REDUCE) the register after the last element.
                with m.If(s4v & ~frozen):
                    with m.If(op == Op.REDUCE):
                        with m.If(s4_last):
                            m.d.sync += regs[od.base[:4]].eq(racc)
                    with m.Else():
                        # int8 results are packed four to a word, which is written (or sent)
                        # after lane 3 or the last element.
                        m.d.sync += pack_reg.eq(packed)
                        with m.If(puts):
                            word = Mux(od.fmt == Fmt.I8X4, packed, r4)
                            with m.If(od.space == Space.COLOR):
                                send(word, od.base[:5])
                            with m.Else():
                                mem_write(od.space, pd, word)
                    step_ptr(pd, od, s4_lane)
                    with m.If(s4_last):
                        next_insn(pc)

            with m.State("SLD"):
                m.d.comb += busy.eq(1)
                m.d.sync += regs[od.base[:4]].eq(s_word)
                next_insn(pc)

        count_events(m, self.mac_busy, ev_mac)
        count_events(m, self.stall_in, ev_in)
        count_events(m, self.stall_out, ev_out)
        count_events(m, self.task_errors, ev_err, drop, reg_err,
                     self.sram_write.en & busy)
        count_events(m, self.vectors, ev_done)
        count_events(m, self.instructions, ev_insn)
        count_events(m, self.task_cycles, busy)
        return m
