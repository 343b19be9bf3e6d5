# amaranth: UnusedElaboratable=no
"""The programmable core (``hdl/core.py``) against its instruction-set simulator and arith.

Bench: the driver configures the task table and queue bindings (``reg_write``) and loads the
SRAM image (``sram_write``), then plays the router on the ramp: it offers the next wavelet of
one ordered stream only while its color's ``accept`` bit is set, with seeded random gaps, and
sinks ``ramp_out`` with seeded random ``ready`` stalls, checking the stream rule every cycle.
The monitor collects the words sent on each color; the model is the ISS
(:mod:`sparktile.compiler.iss`) run on the same SRAM image and streams; the scoreboard compares
every SRAM and XBUF word, every scalar register, the words on every color, and the counters --
the program's cycles (``task_cycles - stall_in - stall_out``) cycle for cycle -- and names
the first difference and the seed. The op tests also compare the ISS results with the
``golden_model/arith.py`` function of the op.
"""

import random
from collections import deque

import numpy as np
import pytest
from amaranth.hdl import Cat
from amaranth.sim import Simulator
from sparktile.golden_model import arith
from sparktile.hdl import isa
from sparktile.hdl.core import Core
from sparktile.hdl.formats import (
    NUM_COLORS,
    WAVELET_BITS,
    RequantWord,
    Wavelet,
    cat_bits,
    pack,
    split_bits,
    unpack,
)
from sparktile.hdl.isa import FLAG_MAX, FLAG_SAT, Fmt, Ins, Op, color, reg, sram, xbuf

from sparktile.compiler import iss

SRAM_WORDS = 256
XBUF_WORDS = 64
N_QUEUES = 4
WORD = 0xFFFFFFFF
COUNTERS = ("mac_busy", "stall_in", "stall_out", "task_errors", "vectors", "instructions",
            "task_cycles")


def data_w(word, c):
    return pack(Wavelet, payload=int(word) & WORD, color=c, ctrl=0)


def act_w(payload, c):
    return pack(Wavelet, payload=int(payload) & WORD, color=c, ctrl=1)


class Setup:
    """One bench run's configuration: SRAM image, tasks, queue colors, the input stream."""

    def __init__(self, sram_words=SRAM_WORDS, xbuf_words=XBUF_WORDS):
        self.sram_words, self.xbuf_words = sram_words, xbuf_words
        self.image = {}
        self.tasks = {}          # color -> address
        self.raw_regs = {}       # register -> value, written as given (RTL only)
        self.queues = []         # colors bound to queues 0..
        self.stream = []         # wavelets in order

    def load(self, base, words):
        for k, w in enumerate(words):
            self.image[(base + k) % self.sram_words] = int(w) & WORD

    def program(self, c, base, insns):
        self.load(base, isa.assemble(insns))
        self.tasks[c] = base

    def model(self):
        """The ISS run on this setup."""
        st = iss.PEState.new(self.sram_words, self.xbuf_words)
        for a, w in self.image.items():
            st.sram[a] = w
        st.tasks = dict(self.tasks)
        for c in self.queues:
            st.bind_queue(c)
        acts, drops = [], 0
        for w in self.stream:
            f = unpack(Wavelet, w)
            if f["ctrl"]:
                acts.append((f["color"], f["payload"]))
            elif f["color"] in st.queues:
                st.queues[f["color"]].append(f["payload"])
            else:
                drops += 1
        iss.run_tasks(st, acts)
        st.stats.task_errors += drops
        return st


def run_core(setup: Setup, *, seed, p_valid=0.7, p_ready=0.7, max_cycles=20000, tail=6,
             read_memories=True):
    """Run ``setup`` on the RTL; returns ``(sent, sram, xbuf, regs, counters)``."""
    dut = Core(sram_words=setup.sram_words, xbuf_words=setup.xbuf_words, n_queues=N_QUEUES)
    rng = random.Random(seed)
    stream = deque(setup.stream)
    before = Cat(dut.accept, dut.ramp_out.valid, dut.ramp_out.payload.as_value())
    drive = Cat(dut.ramp_in.valid, dut.ramp_in.payload.as_value(), dut.ramp_out.ready)
    reg_w = Cat(dut.reg_write.en, dut.reg_write.addr, dut.reg_write.data)
    sram_w = Cat(dut.sram_write.en, dut.sram_write.addr, dut.sram_write.data)
    result = {}

    async def bench(ctx):
        regs = {isa.task_reg(c): isa.task_entry(a) for c, a in setup.tasks.items()}
        regs.update({isa.queue_reg(q, N_QUEUES): isa.queue_entry(c)
                     for q, c in enumerate(setup.queues)})
        regs.update(setup.raw_regs)
        for addr, value in regs.items():
            ctx.set(reg_w, cat_bits((1, 1), (addr, 16), (value, 32)))
            await ctx.tick()
        ctx.set(reg_w, 0)
        for addr, word in setup.image.items():
            ctx.set(sram_w, cat_bits((1, 1), (addr, 16), (word, 32)))
            await ctx.tick()
        ctx.set(sram_w, 0)
        sent, sent_at, blocked = {}, {}, 0
        holding, waiting, cycle, quiet, last_busy = False, None, 0, 0, -1
        while True:
            accept, out_valid, out_w = split_bits(ctx.get(before), NUM_COLORS, 1,
                                                  WAVELET_BITS)
            if not holding and stream and rng.random() < p_valid:
                holding = True
            offer = holding and accept >> unpack(Wavelet, stream[0])["color"] & 1
            blocked += holding and not offer
            ready = int(rng.random() < p_ready)
            w = stream[0] if offer else 0
            ctx.set(drive, cat_bits((offer, 1), (w, WAVELET_BITS), (ready, 1)))
            if offer:
                assert ctx.get(dut.ramp_in.ready), (
                    f"seed={seed}: cycle {cycle}: accepted color not ready")
                stream.popleft()
                holding = False
            if waiting is not None:
                assert out_valid and out_w == waiting, (
                    f"seed={seed}: ramp_out broke the stream rule at cycle {cycle}")
            if out_valid and ready:
                f = unpack(Wavelet, out_w)
                sent.setdefault(f["color"], []).append(f["payload"])
                sent_at.setdefault(f["color"], []).append(cycle)
            waiting = out_w if out_valid and not ready else None
            await ctx.tick()
            cycle += 1
            busy = ctx.get(dut.task_cycles)
            quiet = quiet + 1 if busy == last_busy and not stream and not out_valid else 0
            last_busy = busy
            if quiet >= tail:
                break
            assert cycle < max_cycles, (
                f"seed={seed}: no end after {cycle} cycles ({len(stream)} wavelets unsent)")
        result["sent"], result["sent_at"] = sent, sent_at
        result["counters"] = {k: ctx.get(getattr(dut, k)) for k in COUNTERS}
        result["regs"] = [ctx.get(r) for r in dut.regs]
        if read_memories:
            rows = [ctx.get(dut.sram_data[r]) for r in range(setup.sram_words // 4)]
            result["sram"] = [rows[a // 4] >> (32 * (a % 4)) & 0xFFFFFFFF
                              for a in range(setup.sram_words)]
            result["xbuf"] = [ctx.get(dut.xbuf_data[a]) for a in range(setup.xbuf_words)]
        result["cycles"], result["blocked"] = cycle, blocked

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return result


def first_diff(got, want):
    for k, (g, w) in enumerate(zip(got, want, strict=False)):
        if g != w:
            return k, g, w
    if len(got) != len(want):
        return min(len(got), len(want)), len(got), len(want)
    return None


def compare(setup: Setup, *, seed, **kw):
    """RTL vs ISS, word for word and cycle for cycle; returns ``(rtl, iss_state)``."""
    rtl = run_core(setup, seed=seed, **kw)
    st = setup.model()
    where = f"seed={seed}, run of {rtl['cycles']} cycles"
    d = first_diff(rtl["sram"], [int(v) for v in st.sram])
    assert d is None, f"{where}: SRAM word {d[0]}: RTL {d[1]:#x}, ISS {d[2]:#x}"
    d = first_diff(rtl["xbuf"], [int(v) for v in st.xbuf])
    assert d is None, f"{where}: XBUF word {d[0]}: RTL {d[1]:#x}, ISS {d[2]:#x}"
    d = first_diff(rtl["regs"], [v & WORD for v in st.regs])
    assert d is None, f"{where}: register r{d[0]}: RTL {d[1]:#x}, ISS {d[2]:#x}"
    for c in sorted(set(rtl["sent"]) | set(st.sent)):
        d = first_diff(rtl["sent"].get(c, []), st.sent.get(c, []))
        at = rtl["sent_at"].get(c, [])
        assert d is None, (f"{where}: color {c}, word {d[0]} (sent at cycle "
                           f"{at[d[0]] if d[0] < len(at) else 'never'}): RTL {d[1]}, ISS {d[2]}")
    k = rtl["counters"]
    program_cycles = k["task_cycles"] - k["stall_in"] - k["stall_out"]
    got = {"cycles": program_cycles, "mac_busy": k["mac_busy"],
           "instructions": k["instructions"], "task_errors": k["task_errors"],
           "tasks": k["vectors"]}
    want = {"cycles": st.stats.cycles, "mac_busy": st.stats.mac_busy,
            "instructions": st.stats.instructions, "task_errors": st.stats.task_errors,
            "tasks": st.stats.tasks}
    assert got == want, f"{where}: counters RTL {got} != ISS {want} (raw {k})"
    return rtl, st


def requant_words(mult, shift):
    return [pack(RequantWord, mult=int(a), shift=int(b))
            for a, b in zip(mult, shift, strict=True)]


def s32(words):
    return np.asarray(words, np.uint32).view(np.int32).astype(np.int64)


# ---- the ops, each against its arith function ------------------------------------------------

TASK, DATA, OUT = 5, 7, 9


def test_residual_add_saturating_and_wrapping():
    rng = np.random.default_rng(1)
    x = rng.integers(-(1 << 31), 1 << 31, 12)
    y = rng.integers(-(1 << 31), 1 << 31, 12)
    x[:3], y[:3] = (1 << 31) - 5, 1000      # saturate high
    x[3], y[3] = -(1 << 31), -1             # saturate low
    x[4:8] = ((1 << 31) - 2, -(1 << 31) + 1, 1 << 30, -(1 << 30))   # exactly at the bounds,
    y[4:8] = (1, -1, 1 << 20, -(1 << 20))                            # not beyond
    s = Setup()
    s.load(100, arith.wrap_int32(x).view(np.uint32))
    s.load(120, arith.wrap_int32(y).view(np.uint32))
    s.program(TASK, 0, [Ins(Op.VADD, n=12, imm=FLAG_SAT, dst=sram(140), a=sram(100), b=sram(120)),
                        Ins(Op.VADD, n=12, dst=sram(160), a=sram(100), b=sram(120)),
                        Ins(Op.END)])
    s.stream = [act_w(0, TASK)]
    rtl, st = compare(s, seed=1)
    assert (s32(rtl["sram"][140:152]) == arith.residual_add(x, y)).all()
    assert (s32(rtl["sram"][160:172]) == arith.wrap_int32(x + y)).all()


def test_requant_per_element_and_int8_packing():
    rng = np.random.default_rng(2)
    acc = rng.integers(-(1 << 20), 1 << 20, 10)
    mult, shift = arith.requant_params(rng.uniform(1e-5, 1e-3, 10))
    s = Setup()
    s.load(100, arith.wrap_int32(acc).view(np.uint32))
    s.load(120, requant_words(mult, shift))
    s.program(TASK, 0, [Ins(Op.VREQ, n=10, dst=sram(140, fmt=Fmt.I8X4), a=sram(100),
                          b=sram(120)),
                        Ins(Op.END)])
    s.stream = [act_w(0, TASK)]
    rtl, _ = compare(s, seed=2)
    got = arith.unpack_int8(rtl["sram"][140:143])[:10]
    assert (got == arith.requantize(acc, mult, shift)).all()
    assert rtl["sram"][143] == 0


def test_reduce_max_and_sum_into_registers():
    rng = np.random.default_rng(3)
    x = rng.integers(-(1 << 31), 1 << 31, 9)
    s = Setup()
    s.load(100, arith.wrap_int32(x).view(np.uint32))
    s.program(TASK, 0, [Ins(Op.REDUCE, n=9, imm=FLAG_MAX, dst=reg(1), a=sram(100)),
                        Ins(Op.REDUCE, n=9, dst=reg(2), a=sram(100)),
                        Ins(Op.END)])
    s.stream = [act_w(0, TASK)]
    rtl, _ = compare(s, seed=3)
    assert s32([rtl["regs"][1]])[0] == x.max()
    assert s32([rtl["regs"][2]])[0] == int(arith.wrap_int32(x.sum()))


def test_silu_table_lookup_from_int8_lanes():
    rng = np.random.default_rng(4)
    table = arith.silu_table_int8(0.05, 0.01)
    g = rng.integers(-128, 128, 16)
    g[:2] = (-128, 127)
    s = Setup(sram_words=512)
    s.load(0x80, arith.wrap_int32(table).view(np.uint32))     # 256 words: 0x80..0x17f
    s.load(0x180, arith.pack_int8(g))
    s.program(TASK, 0, [Ins(Op.VLUT, n=16, dst=sram(0x190), a=sram(0x180, fmt=Fmt.I8X4),
                          b=sram(0x80)),
                        Ins(Op.END)])
    s.stream = [act_w(0, TASK)]
    rtl, _ = compare(s, seed=4)
    assert (s32(rtl["sram"][0x190:0x1a0]) == arith.lut_int8(g, table)).all()


def test_recv_appends_to_a_kv_cache_and_send_returns_it():
    """Two activations of one task append a key vector each after the ones already there;
    r15 (the activation's payload) is the position, which a later round's task would turn
    into an address; here the append address is static per task."""
    rng = np.random.default_rng(5)
    cache = rng.integers(0, 1 << 32, 8)
    k1, k2 = rng.integers(0, 1 << 32, 6), rng.integers(0, 1 << 32, 6)
    s = Setup()
    s.load(0x60, cache)
    s.queues = [DATA]
    s.program(TASK, 0, [Ins(Op.RECV, n=6, dst=sram(0x68), a=color(DATA)), Ins(Op.END)])
    s.program(TASK + 1, 8, [Ins(Op.RECV, n=6, dst=sram(0x6e), a=color(DATA)),
                            Ins(Op.SEND, n=20, dst=color(OUT), a=sram(0x60)),
                            Ins(Op.END)])
    s.stream = ([act_w(1, TASK)] + [data_w(v, DATA) for v in k1]
                + [act_w(2, TASK + 1)] + [data_w(v, DATA) for v in k2])
    rtl, st = compare(s, seed=5)
    assert rtl["sram"][0x60:0x74] == [int(v) for v in np.concatenate([cache, k1, k2])]
    assert rtl["sent"][OUT] == rtl["sram"][0x60:0x74]
    assert rtl["regs"][isa.ARG_REG] == 2


def _gemv_setup(rng, rows, words, *, dst, addend=False, sram_words=SRAM_WORDS,
                xbuf_words=XBUF_WORDS, stream_x=False):
    """x arrives on DATA (received into XBUF first, or with ``stream_x`` taken by the GEMV's
    first row); with ``addend``, one partial sum per row arrives on DATA + 1 (the previous PE
    of a reduction chain) and is added as the row leaves."""
    w = rng.integers(-128, 128, (rows, 4 * words))
    x = rng.integers(-128, 128, 4 * words)
    psum = rng.integers(-(1 << 31), 1 << 31, rows) if addend else np.zeros(rows, np.int64)
    s = Setup(sram_words, xbuf_words)
    s.queues = [DATA, DATA + 1]
    s.load(0x40, [wd for row in w for wd in arith.pack_int8(row)])
    prog = ([] if stream_x else [Ins(Op.RECV, n=words, dst=xbuf(0), a=color(DATA))]) + [
        isa.gemv(rows, words, dst=dst, w=sram(0x40), x=xbuf(0),
                 addend=DATA + 1 if addend else None, x_from=DATA if stream_x else None),
        Ins(Op.END)]
    s.program(TASK, 0, prog)
    s.stream = ([act_w(0, TASK)] + [data_w(v, DATA) for v in arith.pack_int8(x)]
                + ([data_w(v, DATA + 1) for v in psum] if addend else []))
    want = arith.wrap_int32(arith.gemv_golden(w, x[None], None, None, out_int32=True)[0]
                            .astype(np.int64) + psum)
    return s, want


@pytest.mark.parametrize("seed", [6, 7])
def test_gemv_int32_to_sram_and_to_a_color(seed):
    rng = np.random.default_rng(seed)
    s, want = _gemv_setup(rng, 5, 3, dst=sram(0xd0))
    rtl, _ = compare(s, seed=seed)
    assert (s32(rtl["sram"][0xd0:0xd5]) == want).all()
    s, want = _gemv_setup(rng, 4, 1, dst=color(OUT))
    rtl, _ = compare(s, seed=seed, p_ready=0.4)
    assert (s32(rtl["sent"][OUT]) == want).all()


@pytest.mark.parametrize("seed", [16, 17])
def test_gemv_with_x_streaming_in_during_its_first_row(seed):
    """No RECV: the first row takes each x word from its queue as it issues (stalling while
    the queue is empty) and keeps it in XBUF for the other rows; with a chain's partial sums
    added and an output that stalls; int32 sums into XBUF beside x too."""
    rng = np.random.default_rng(seed)
    s, want = _gemv_setup(rng, 8, 2, dst=color(OUT), addend=True, stream_x=True)
    rtl, _ = compare(s, seed=seed, p_valid=0.25, p_ready=0.3)
    assert (s32(rtl["sent"][OUT]) == want).all()
    assert rtl["counters"]["stall_in"] > 0 and rtl["counters"]["stall_out"] > 0
    s, want = _gemv_setup(rng, 5, 1, dst=xbuf(1), stream_x=True)
    rtl, _ = compare(s, seed=seed, p_valid=0.3)
    assert (s32(rtl["xbuf"][1:6]) == want).all()
    # one instruction: its fetch, the rows, the drain, then END's fetch (read in the GEMV's
    # last cycle)
    k = rtl["counters"]
    assert k["task_cycles"] - k["stall_in"] - k["stall_out"] == \
        isa.FETCH_CYCLES + isa.PREFETCH_CYCLES + 5 + 4


@pytest.mark.parametrize("seed", [12, 13])
def test_gemv_adds_the_partial_sums_of_a_chain(seed):
    """A middle PE of a reduction chain: partial sums in on one color, out on another,
    added as each row leaves; random gaps on the input and stalls on the output."""
    rng = np.random.default_rng(seed)
    s, want = _gemv_setup(rng, 8, 1, dst=color(OUT), addend=True)
    rtl, _ = compare(s, seed=seed, p_valid=0.3, p_ready=0.5)
    assert (s32(rtl["sent"][OUT]) == want).all()
    assert rtl["counters"]["stall_in"] > 0 and rtl["counters"]["stall_out"] > 0


def test_gemv_then_requant_gives_int8_gemv_golden():
    rng = np.random.default_rng(8)
    rows, words = 6, 2
    w = rng.integers(-128, 128, (rows, 4 * words))
    x = rng.integers(-128, 128, 4 * words)
    mult, shift = arith.requant_params(rng.uniform(1e-3, 1e-2, rows))
    s = Setup()
    s.queues = [DATA]
    s.load(0x40, [wd for row in w for wd in arith.pack_int8(row)])
    s.load(0x60, requant_words(mult, shift))
    s.program(TASK, 0, [Ins(Op.RECV, n=words, dst=xbuf(0), a=color(DATA)),
                        Ins(Op.GEMV, n=rows, imm=words, dst=sram(0x80), a=sram(0x40), b=xbuf(0)),
                        Ins(Op.VREQ, n=rows, dst=color(OUT), a=sram(0x80), b=sram(0x60)),
                        Ins(Op.END)])
    s.stream = [act_w(0, TASK)] + [data_w(v, DATA) for v in arith.pack_int8(x)]
    rtl, _ = compare(s, seed=8)
    want = arith.gemv_golden(w, x[None], mult, shift)[0]
    assert (s32(rtl["sent"][OUT]) == want).all()


def test_scalar_ops_and_newton_step_primitives():
    s = Setup()
    s.program(TASK, 0, [
        Ins(Op.SLI, dst=reg(1), b=123456789),
        Ins(Op.SLI, dst=reg(2), b=-987654),
        Ins(Op.SADD, dst=reg(3), a=reg(1), b=reg(2)),
        Ins(Op.SSUB, dst=reg(4), a=reg(2), b=5),
        Ins(Op.SMULSH, imm=20, dst=reg(5), a=reg(1), b=reg(2)),
        Ins(Op.SSHR, imm=7, dst=reg(6), a=reg(2)),
        Ins(Op.SSHL, imm=3, dst=reg(7), a=reg(1)),
        Ins(Op.SBITLEN, dst=reg(8), a=reg(1)),
        Ins(Op.SLT, dst=reg(9), a=reg(2), b=reg(1)),
        Ins(Op.SMAX, dst=reg(10), a=reg(2), b=-5),
        Ins(Op.SST, a=reg(5), b=200),
        Ins(Op.SLD, dst=reg(11), b=200),
        Ins(Op.VSHR, n=1, imm=4, dst=sram(201), a=reg(15)),
        Ins(Op.END)])
    s.stream = [act_w(-1000, TASK)]
    rtl, _ = compare(s, seed=9)
    r = s32(rtl["regs"])
    assert r[3] == 123456789 - 987654 and r[4] == -987659
    assert r[5] == int(arith.wrap_int32((123456789 * -987654) >> 20))
    assert r[6] == int(arith.shift_round(-987654, 7))
    assert r[8] == int(arith.bit_length(123456789)) and r[9] == 1 and r[10] == -5
    assert r[11] == r[5] and s32([rtl["sram"][201]])[0] == int(arith.shift_round(-1000, 4))


@pytest.mark.parametrize("seed", [3, 4])
def test_a_write_into_the_next_instructions_row_delays_its_fetch(seed):
    """The core reads the next instruction's row in the last cycle of the one before it,
    unless that cycle writes SRAM into that row: then the read waits a cycle and sees the
    write. A program patching the instruction it runs next (the decoder's SSTs do) must run
    the patched one: an SST into the next SLI's immediate, a RECV whose last word is that
    immediate, a VADD whose last element is, and an SST two rows ahead (no delay)."""
    rng = np.random.default_rng(seed)
    v = [int(x) for x in rng.integers(-(1 << 31), 1 << 31, 6)]
    s = Setup()
    s.queues = [DATA]
    def row(k):             # instruction k's first word (the program starts at word 0)
        return isa.INSN_WORDS * k

    prog = [Ins(Op.SLI, dst=reg(1), b=v[0]),
            Ins(Op.SST, a=reg(1), b=row(2) + 3),                       # the next SLI's b
            Ins(Op.SLI, dst=reg(2), b=0),
            Ins(Op.RECV, n=2, dst=sram(row(4) + 2), a=color(DATA)),    # last word: its b
            Ins(Op.SLI, dst=reg(3), b=0),
            Ins(Op.VADD, n=2, dst=sram(row(6) + 2), a=sram(0x80), b=reg(1)),   # last element
            Ins(Op.SLI, dst=reg(4), b=0),
            Ins(Op.SST, a=reg(1), b=row(9) + 3),     # two rows ahead: prefetched as usual
            Ins(Op.SLI, dst=reg(5), b=0),
            Ins(Op.SLI, dst=reg(6), b=0),
            Ins(Op.END)]
    # the VADD's elements: the SLI's unused a word, then its b: v[2]
    s.load(0x80, [0, (v[2] - v[0]) & WORD])
    s.program(TASK, 0, prog)
    s.stream = [act_w(0, TASK), data_w(v[3] & WORD, DATA), data_w(v[1] & WORD, DATA)]
    rtl, st = compare(s, seed=seed, p_valid=0.5)
    r = s32(rtl["regs"])
    assert [int(x) for x in r[1:7]] == [v[0], v[0], v[1], v[2], 0, v[0]], r[1:7]
    # 11 instructions: the first, the three after a write into their row at FETCH_CYCLES,
    # the others at PREFETCH_CYCLES; eight SSTs and SLIs none after it (they run in their
    # decode, whose cycle reads, or here must not read, the next row), RECV 2, VADD 1 + 5
    k = rtl["counters"]
    fetch = 4 * isa.FETCH_CYCLES + 7 * isa.PREFETCH_CYCLES
    assert k["task_cycles"] - k["stall_in"] - k["stall_out"] == fetch + 0 + 2 + 6


def test_activations_queue_behind_a_running_task_with_back_pressure():
    """Six activations of a task that sends its argument and three words onto a slow ramp:
    the activation queue (two deep) fills, ``accept`` holds the task's color back, and every
    task runs once, in order, with its own argument."""
    s = Setup()
    s.load(0x80, [11, 22, 33])
    s.program(TASK, 0, [Ins(Op.SST, a=reg(isa.ARG_REG), b=0x7f),
                        Ins(Op.SEND, n=4, dst=color(OUT), a=sram(0x7f)),
                        Ins(Op.END)])
    s.stream = [act_w(100 + k, TASK) for k in range(6)]
    rtl, _ = compare(s, seed=14, p_valid=1.0, p_ready=0.2)
    assert rtl["sent"][OUT] == [v for k in range(6) for v in (100 + k, 11, 22, 33)]
    assert rtl["blocked"] > 0 and rtl["counters"]["vectors"] == 6


# ---- errors: counted, never a hang --------------------------------------------------------

def test_malformed_instructions_unbound_colors_are_task_errors():
    s = Setup()
    s.queues = [DATA]
    good = isa.assemble([Ins(Op.SLI, dst=reg(1), b=7), Ins(Op.END)])
    s.load(0, [0, 0, 0, 0])                            # opcode 0
    s.tasks[1] = 0
    s.load(4, [pack(isa.Insn, op=63), 0, 0, 0])        # unknown opcode
    s.tasks[2] = 4
    bad_space = isa.assemble([Ins(Op.RECV, n=1, dst=sram(50), a=color(DATA))])
    bad_space[2] = pack(isa.Operand, space=int(isa.Space.SRAM))   # RECV from SRAM
    s.load(8, bad_space)
    s.tasks[3] = 8
    s.program(4, 12, [Ins(Op.RECV, n=1, dst=sram(50), a=color(DATA + 1)), Ins(Op.END)])
    s.load(20, good)
    s.tasks[TASK] = 20
    s.stream = [act_w(0, 1), act_w(0, 2), act_w(0, 3), act_w(0, 4),
                act_w(0, 30),                          # no task on color 30
                data_w(5, 11),                         # no queue on color 11
                act_w(0, TASK)]
    rtl, st = compare(s, seed=10)
    assert rtl["counters"]["task_errors"] == 6 and rtl["counters"]["vectors"] == 1
    assert rtl["regs"][1] == 7


def test_a_task_entry_off_an_instruction_row_is_refused():
    """The core fetches an instruction as one 128-bit SRAM row, so a program starts on a row:
    a task-table entry at another address is a task error and leaves the color without a
    task (its activation is the second error), never a fetch of a misaligned instruction;
    the assembler's entry and the ISS refuse it too."""
    s = Setup()
    s.program(TASK, 8, [Ins(Op.SLI, dst=reg(1), b=7), Ins(Op.END)])
    s.raw_regs = {isa.task_reg(3): isa.TASK_ADDR_LIMIT | 9}
    s.stream = [act_w(0, 3), act_w(0, TASK)]
    rtl = run_core(s, seed=4)
    assert rtl["counters"]["task_errors"] == 2 and rtl["counters"]["vectors"] == 1
    assert rtl["regs"][1] == 7
    with pytest.raises(isa.IsaError, match=r"multiple of 4 in 0\.\.32764, not 9"):
        isa.task_entry(9)
    st = iss.PEState.new(64, 16)
    st.sram[8:16] = isa.assemble([Ins(Op.SLI, dst=reg(1), b=7), Ins(Op.END)])
    st.tasks = {TASK: 9}
    with pytest.raises(iss.TaskError, match="program counter 9 is not on an SRAM row"):
        iss.step(st, 9)


def test_assembler_names_bad_fields():
    with pytest.raises(isa.IsaError, match=r"instruction 1 \(GEMV\): imm \(words per row\)"):
        isa.assemble([Ins(Op.END), Ins(Op.GEMV, n=2, imm=0, dst=sram(0), a=sram(0), b=xbuf(0))])
    with pytest.raises(isa.IsaError, match=r"dst must be in SRAM, XBUF, not COLOR"):
        isa.assemble([Ins(Op.RECV, n=2, dst=color(3), a=color(2))])
    with pytest.raises(isa.IsaError, match=r"stride must be 0..255, not 300"):
        isa.assemble([Ins(Op.SEND, n=2, dst=color(3), a=sram(0, 300))])
    with pytest.raises(isa.IsaError, match=r"color must be 0..31, not 40"):
        isa.assemble([Ins(Op.SEND, n=2, dst=color(40), a=sram(0))])
    with pytest.raises(isa.IsaError, match=r"n must be 0..65535, not 70000"):
        isa.assemble([Ins(Op.VADD, n=70000, dst=sram(0), a=sram(0), b=sram(0))])
    with pytest.raises(isa.IsaError, match=r"takes no a operand"):
        isa.assemble([Ins(Op.END, a=sram(0))])
    with pytest.raises(ValueError, match="sram_words must be a power of two in 64..65536"):
        Core(sram_words=100)


@pytest.mark.parametrize("bad", [
    lambda: Ins(Op.VADD, n=4, dst=sram(1.0), a=sram(0), b=sram(0)),             # 1.0 == 1
    lambda: Ins(Op.VADD, n=4, dst=isa.Src(isa.Space.SRAM, 1.0), a=sram(0), b=sram(0)),
    lambda: Ins(Op.VADD, n=4.0, dst=sram(1), a=sram(0), b=sram(0)),
    lambda: Ins(Op.SADD, dst=reg(1), a=reg(1), b=7.0),
    lambda: Ins(Op.SADD, dst=reg(1), a=reg(1.0), b=7),
])
def test_the_assemblers_memo_never_takes_an_equal_instruction_of_other_types(bad):
    """The assembler keeps the words of instructions it has encoded; one that compares equal
    to a kept one (``1.0 == 1``) but has a field of the wrong type must still be refused."""
    good = [Ins(Op.VADD, n=4, dst=sram(1), a=sram(0), b=sram(0)),
            Ins(Op.SADD, dst=reg(1), a=reg(1), b=7)]
    first = isa.assemble(good)
    assert isa.assemble(good) == first      # kept, and the same words
    with pytest.raises(isa.IsaError, match=r"instruction 1 \((VADD|SADD)\): .*not 7?1?\.0|"
                                           r"instruction 1 \((VADD|SADD)\): .* must be"):
        isa.assemble([Ins(Op.END), bad()])


# ---- random programs -------------------------------------------------------------------------

def random_program(rng: random.Random, s: Setup, n_insns: int):
    """A random valid program over small vectors, its input data appended to the stream."""
    def mem(space=None, fmt=None):
        space = space if space is not None else rng.choice([isa.Space.SRAM, isa.Space.XBUF])
        top = 0x40 if space is isa.Space.XBUF else 0xc0
        f = fmt if fmt is not None else rng.choice([Fmt.I32, Fmt.I8X4])
        return isa.Src(space, rng.randrange(0x40 if space is isa.Space.SRAM else 0, top),
                       rng.randrange(0, 3), f)

    data = []
    prog = []
    for _ in range(n_insns):
        kind = rng.choice(["recv", "send", "gemv", "vec", "vec", "reduce", "lut", "scalar"])
        n = rng.randrange(1, 6) if kind not in ("vec", "reduce", "lut") else rng.randrange(1, 13)
        if kind == "recv":
            prog.append(Ins(Op.RECV, n=n, dst=mem(fmt=Fmt.I32), a=color(DATA)))
            data += [data_w(rng.randrange(1 << 32), DATA) for _ in range(n)]
        elif kind == "send":
            prog.append(Ins(Op.SEND, n=n, dst=color(rng.choice([OUT, OUT + 1])), a=mem()))
        elif kind == "gemv":
            addend = rng.choice([None, DATA])
            words = rng.randrange(1, 4)
            x_from = rng.choice([None, DATA])
            prog.append(isa.gemv(n, words, x_from=x_from,
                                 dst=rng.choice([sram(rng.randrange(0xc0, 0xf0)), color(OUT),
                                                 xbuf(rng.randrange(0, 60))]),
                                 w=sram(rng.randrange(0x40, 0xa0)),
                                 x=xbuf(rng.randrange(0, 60)), addend=addend))
            if x_from is not None:          # taken by the first row, before any addend
                data += [data_w(rng.randrange(1 << 32), DATA) for _ in range(words)]
            if addend is not None:
                data += [data_w(rng.randrange(1 << 32), DATA) for _ in range(n)]
        elif kind in ("vec", "reduce", "lut"):
            op = {"vec": rng.choice([Op.VADD, Op.VMUL, Op.VSHR, Op.VMAX, Op.VREQ, Op.VMULSR]),
                  "reduce": Op.REDUCE, "lut": Op.VLUT}[kind]
            a = rng.choice([mem(), mem(), reg(rng.randrange(16)), color(DATA)])
            # The core takes a's element, then b's (in one cycle from two queues, or one
            # after the other from one): a stream with both on colors interleaves them (the
            # driver is in order, the queues are two deep).
            a_data = [data_w(rng.randrange(1 << 32), DATA) for _ in range(n)] \
                if a.space is isa.Space.COLOR else []
            b_data = []
            if op is Op.REDUCE:
                prog.append(Ins(op, n=n, imm=rng.randrange(2), dst=reg(rng.randrange(16)), a=a))
                data += a_data
                continue
            if op is Op.VLUT:
                b = sram(rng.randrange(0, 0x100))
            elif op is Op.VREQ:
                b = rng.choice([mem(isa.Space.SRAM), reg(rng.randrange(16))])
            elif op is Op.VSHR and rng.random() < 0.5:
                b = None
            else:
                # Both in SRAM or both in XBUF (two cycles an element), one in each, a
                # register, the other queue, or a's own color (two pops an element).
                b = rng.choice([mem(), mem(), reg(rng.randrange(16)), color(DATA + 1),
                                color(DATA)])
                if b.space is isa.Space.COLOR:
                    b_data = [data_w(rng.randrange(1 << 32), b.base) for _ in range(n)]
            dst = rng.choice([mem(), mem(), color(OUT, rng.choice([Fmt.I32, Fmt.I8X4]))])
            if a.space in (isa.Space.SRAM, isa.Space.XBUF) and rng.random() < 0.3:
                # In place: dst[i] over a[i] (int8 results packed into the words a reads,
                # VREQ's case, when a holds int32).
                fmt = Fmt.I8X4 if op is Op.VREQ else a.fmt
                dst = isa.Src(a.space, a.base, a.stride, fmt)
            imm = rng.randrange(64) if op is Op.VSHR else rng.randrange(2)
            if op is Op.VSHR and b is not None:
                imm |= isa.FLAG_VAR        # the shift of element i is b[i] & 63
            if op is Op.VMULSR:             # any shift or shift register, a signed/unsigned
                imm = rng.randrange(256)
            prog.append(Ins(op, n=n, imm=imm, dst=dst, a=a, b=b))
            for k in range(n):
                data += a_data[k:k + 1] + b_data[k:k + 1]
        else:
            op = rng.choice(isa.SCALAR_OPS)
            r = lambda: reg(rng.randrange(16))  # noqa: E731
            if op is Op.SLI:
                prog.append(Ins(op, dst=r(), b=rng.randrange(1 << 32)))
            elif op is Op.SLDR:
                prog.append(Ins(op, dst=r(), a=r()))
            elif op in (Op.SLD, Op.SST):
                kw = {"dst": r()} if op is Op.SLD else {"a": r()}
                prog.append(Ins(op, b=rng.randrange(0xc0, 0x100), **kw))
            elif op in (Op.SSHR, Op.SSHL, Op.SBITLEN):
                prog.append(Ins(op, imm=rng.randrange(64), dst=r(), a=r()))
            else:
                b = rng.choice([r(), rng.randrange(-(1 << 31), 1 << 31)])
                imm = rng.randrange(64)
                if op is Op.SMULSH and rng.random() < 0.5:
                    imm |= isa.FLAG_UB
                prog.append(Ins(op, imm=imm, dst=r(), a=r(), b=b))
    return prog + [Ins(Op.END)], data


def random_setup(rng: random.Random) -> Setup:
    """Two random tasks, drawn again while the ISS refuses them: the ISA forbids an element
    reading a word that one of the ``isa.RAW_DISTANCE - 1`` elements before it writes (random
    strides and bases sometimes do that)."""
    for _ in range(50):
        s = Setup()
        s.queues = [DATA, DATA + 1]
        s.load(0x40, [rng.randrange(1 << 32) for _ in range(0xc0)])
        prog1, data1 = random_program(rng, s, 6)
        prog2, data2 = random_program(rng, s, 6)
        s.program(TASK, 0, prog1)
        s.program(TASK + 1, 0x40 - 4 * len(prog2), prog2)
        s.stream = [act_w(rng.randrange(1 << 32), TASK)] + data1 + \
            [act_w(rng.randrange(1 << 32), TASK + 1)] + data2
        try:
            s.model()
        except iss.PipelineHazard:
            continue
        return s
    raise AssertionError("50 random draws in a row read inside the pipeline window")


@pytest.mark.parametrize("seed", range(12))
def test_random_programs_rtl_equals_iss(seed):
    s = random_setup(random.Random(seed))
    compare(s, seed=seed, p_valid=0.6, p_ready=0.5)


# ---- the GEMV's MAC utilization ----------------------------------------------------------

def gemv_utilization(rows=64, words=62, *, seed=11, p_valid=1.0, p_ready=1.0, addend=True,
                     stream_x=False):
    """The 4x4-mesh share of the 256x992 GEMV on one core (``rows`` x ``words``): receive x
    into XBUF, GEMV adding the previous PE's partial sums (``addend``) with the int32 partial
    sums straight onto a color, END. Returns
    ``(mac_busy / task_cycles, counters)`` from the RTL counters, after checking the results
    against ``arith.gemv_golden`` and the whole run against the ISS."""
    rng = np.random.default_rng(seed)
    s, want = _gemv_setup(rng, rows, words, dst=color(OUT), addend=addend, sram_words=4096,
                          xbuf_words=64, stream_x=stream_x)
    rtl, _ = compare(s, seed=seed, p_valid=p_valid, p_ready=p_ready)
    assert (s32(rtl["sent"][OUT]) == want).all(), f"seed={seed}: GEMV result differs"
    k = rtl["counters"]
    return k["mac_busy"] / k["task_cycles"], k


@pytest.mark.parametrize("stream_x", [False, True], ids=["RECV then GEMV", "x streamed"])
def test_gemv_mac_utilization_per_pe_share_of_the_4x4_256x992_gemv(stream_x):
    """Goal: >= 97.6 % (the fixed-function PE's figure on the 4x4 mesh). Measured with a ramp
    that never stalls (the core's own overhead: fetches, the x receive, the pipeline)."""
    util, k = gemv_utilization(stream_x=stream_x)
    print(f"core GEMV 64x62 ({'x streamed' if stream_x else 'RECV then GEMV'}): mac_busy "
          f"{k['mac_busy']} / task_cycles {k['task_cycles']} = {100 * util:.2f} %")
    assert k["mac_busy"] == 64 * 62
    assert util >= 0.976, f"MAC utilization {100 * util:.2f} % < 97.6 %: {k}"


def test_documented_isa_bit_positions():
    # The positions docs/architecture.md gives.
    assert pack(isa.Insn, op=1) == 1 and pack(isa.Insn, imm=1) == 1 << 6
    assert pack(isa.Insn, n=1) == 1 << 16
    assert pack(isa.Operand, stride=1) == 1 << 16 and pack(isa.Operand, space=1) == 1 << 24
    assert pack(isa.Operand, fmt=1) == 1 << 26 and pack(isa.Operand, aux=1) == 1 << 27
    assert isa.FETCH_CYCLES == 2 and isa.PREFETCH_CYCLES == 1
    assert isa.VEC_STAGES == 5 and isa.GEMV_LATENCY == 4
    assert isa.RAW_DISTANCE == 5
    assert isa.exec_cycles(Op.VADD, 8, 0, sram(0), reg(1)) == 7 + 5
    assert isa.exec_cycles(Op.VADD, 8, 0, sram(0), sram(8)) == 2 * 7 + 5
    assert isa.exec_cycles(Op.VADD, 8, 0) == 2 * 7 + 5     # no operands: the upper bound
    assert isa.exec_cycles(Op.VADD, 0, 0, sram(0), reg(1)) == 0
    assert isa.exec_cycles(Op.GEMV, 64, 62 | isa.FLAG_ADDEND) == 64 * 62 + 4


def recip_program(seed_base: int, out: int, color_out: int):
    """``arith.recip_int(n)`` for ``1 <= n < 2**31`` (the softmax's sum) as a program: n is
    the activation's payload (r15); sends ``mant`` and ``shift``. Normalize by the leading-one
    count, seed from :data:`arith.RECIP_SEED` by the top bits, two Newton steps
    ``y <- y (2 - a y)`` with 64-bit products floored to Q30, round to 16 bits."""
    r = reg
    steps = [Ins(Op.SBITLEN, dst=r(1), a=r(15)),              # b = bit_length(n)
             Ins(Op.SSUB, dst=r(2), a=r(1), b=31),            # s = b - 31 (<= 0)
             Ins(Op.SLI, dst=r(4), b=31),
             Ins(Op.SSUB, dst=r(3), a=r(4), b=r(1)),          # -s
             Ins(Op.SSHLV, dst=r(5), a=r(15), b=r(3)),        # m = n << -s, in [2**30, 2**31)
             Ins(Op.SMULSH, imm=24, dst=r(6), a=r(5), b=1),   # m >> 24 (floor)
             Ins(Op.SADD, dst=r(6), a=r(6), b=seed_base - 64),
             Ins(Op.SLDR, dst=r(7), a=r(6)),                  # y = RECIP_SEED[(m >> 24) - 64]
             Ins(Op.SLI, dst=r(9), b=2 << 30)]                # "two" (wraps; the difference fits)
    for _ in range(2):
        steps += [Ins(Op.SMULSH, imm=30, dst=r(8), a=r(5), b=r(7)),    # a y, Q30
                  Ins(Op.SSUB, dst=r(10), a=r(9), b=r(8)),             # 2 - a y
                  Ins(Op.SMULSH, imm=30, dst=r(7), a=r(7), b=r(10))]   # y (2 - a y)
    steps += [Ins(Op.SSHR, imm=14, dst=r(11), a=r(7)),        # mant = shift_round(y, 14)
              Ins(Op.SADD, dst=r(12), a=r(2), b=46),          # shift = 46 + s
              Ins(Op.SST, a=r(11), b=out), Ins(Op.SST, a=r(12), b=out + 1),
              Ins(Op.SEND, n=2, dst=color(color_out), a=sram(out)),
              Ins(Op.END)]
    return steps


def test_recip_int_as_a_program_equals_arith():
    """The Newton iteration of the softmax's reciprocal from the scalar primitives, bit-exact
    with ``arith.recip_int`` on the range's ends, powers of two and random values."""
    rng = np.random.default_rng(15)
    ns = [1, 2, 3, (1 << 31) - 1, 1 << 30, (1 << 30) - 1, 32768, 12345] + \
        [int(v) for v in rng.integers(1, 1 << 31, 6)]
    s = Setup(sram_words=512)
    s.load(0x100, arith.RECIP_SEED)
    prog = recip_program(0x100, 0x1f0, OUT)
    s.program(TASK, 0, prog)
    s.stream = [act_w(n, TASK) for n in ns]
    rtl, _ = compare(s, seed=15)
    mant, shift = arith.recip_int(np.array(ns))
    want = [int(v) for pair in zip(mant, shift, strict=True) for v in pair]
    assert rtl["sent"][OUT] == want


def test_kernel_ops_at_the_int32_extremes():
    """The ops added for the decoder kernels (VMULSR, VSHR by b, SMULSH with an unsigned b,
    VREQ with a negative multiplier) on the int32 extremes, RTL vs ISS, and against arith."""
    rng = np.random.default_rng(21)
    ext = [-(1 << 31), (1 << 31) - 1, -1, 0, 1, (1 << 30), -(1 << 30) - 1, 65535]
    a = np.array(ext + [int(v) for v in rng.integers(-(1 << 31), 1 << 31, 8)], np.int64)
    b = np.array(ext[::-1] + [int(v) for v in rng.integers(-(1 << 31), 1 << 31, 8)], np.int64)
    sh = np.array([0, 1, 63, 31, 17, 5, 62, 40] + [int(v) for v in rng.integers(0, 64, 8)])
    mult = np.array([-65535, 65535, -1, 0, 1, -40000, 30000, -7] +
                    [int(v) for v in rng.integers(-65535, 65536, 8)])
    shift = np.array([0, 47, 1, 16, 31, 20, 5, 47] + [int(v) for v in rng.integers(0, 48, 8)])
    n = len(a)
    A, B, SH, Q = 0x40, 0x50, 0x60, 0x70
    R1, R2, R3, R4 = 0x80, 0x90, 0xa0, 0xb0
    s = Setup()
    s.load(A, a & WORD)
    s.load(B, b & WORD)
    s.load(SH, sh)
    s.load(Q, [isa.req_word(m_, s_) for m_, s_ in zip(mult, shift, strict=True)])
    s.program(TASK, 0, [
        Ins(Op.VMULSR, n=n, imm=isa.FLAG_UA | 3, dst=sram(R1), a=sram(A), b=sram(B)),
        Ins(Op.SLI, dst=reg(2), b=45),
        Ins(Op.VMULSR, n=n, imm=isa.FLAG_VAR | 2, dst=sram(R2), a=sram(A), b=sram(B)),
        Ins(Op.VSHR, n=n, imm=isa.FLAG_VAR, dst=sram(R3), a=sram(A), b=sram(SH)),
        Ins(Op.VREQ, n=n, dst=sram(R4), a=sram(A), b=sram(Q)),
        Ins(Op.SLI, dst=reg(3), b=-1),
        Ins(Op.SMULSH, imm=isa.FLAG_UB | 31, dst=reg(4), a=reg(3), b=reg(3)),
        Ins(Op.END)])
    s.stream = [act_w(0, TASK)]
    rtl, st = compare(s, seed=21)
    got = s32(rtl["sram"])

    def exact(p, k):
        return [max(-(1 << 31), min((1 << 31) - 1, (int(v) + (1 << (int(s_) - 1) if s_ else 0))
                                    >> int(s_))) for v, s_ in zip(p, k, strict=True)]
    au = [int(v) & WORD for v in a]
    checks = {R1: exact([x * int(y) for x, y in zip(au, b, strict=True)], [3] * n),
              R2: exact([int(x) * int(y) for x, y in zip(a, b, strict=True)], [45] * n),
              R3: arith.shift_round(a, sh), R4: arith.requantize_to(a, mult, shift, 8)}
    for base, want in checks.items():
        for k in range(n):
            assert got[base + k] == int(want[k]), (
                f"seed=21: result at {base:#x}, element {k}: {got[base + k]} != {int(want[k])}")
    assert rtl["regs"][4] == ((-1 * 0xFFFFFFFF) >> 31) & WORD


# ---- the element-wise pipeline ---------------------------------------------------------------

I8 = Fmt.I8X4
#: (case, op, imm, dst, a, b, cycles between elements): the documented rule written out
#: (one element a cycle unless a and b share a read port or VLUT's index is in SRAM).
PIPE_CASES = [
    ("a SRAM, b XBUF", Op.VADD, 0, sram(0xa0), sram(0x40), xbuf(0), 1),
    ("a and b in SRAM", Op.VMUL, 0, sram(0xa0), sram(0x40), sram(0x60), 2),
    ("a and b in XBUF", Op.VMAX, 0, sram(0xa0), xbuf(0), xbuf(0x10), 2),
    ("a XBUF, b SRAM int8 lanes, to XBUF", Op.VADD, FLAG_SAT, xbuf(0x20), xbuf(0),
     sram(0x60, fmt=I8), 1),
    ("a SRAM, b a register", Op.VMULSR, 3 | isa.FLAG_UA, sram(0xa0), sram(0x40), reg(2), 1),
    ("a a register, b a color", Op.VADD, 0, sram(0xa0, 2), reg(2), color(DATA), 1),
    ("a and b on two colors, to a color", Op.VMAX, 0, color(OUT), color(DATA),
     color(DATA + 1), 1),
    ("a and b on one color", Op.VMUL, 0, sram(0xa0), color(DATA), color(DATA), 2),
    ("VSHR by b in SRAM", Op.VSHR, isa.FLAG_VAR, sram(0xa0), sram(0x40), sram(0x60), 2),
    ("VSHR by imm, in place", Op.VSHR, 3, sram(0x40), sram(0x40), None, 1),
    ("VREQ packed int8 in place", Op.VREQ, 0, sram(0x40, fmt=I8), sram(0x40), sram(0x60), 2),
    ("VREQ a XBUF, b a register, to a color", Op.VREQ, 0, color(OUT), xbuf(0), reg(3), 1),
    ("VREQ a XBUF, b SRAM, packed int8 to a color", Op.VREQ, 0, color(OUT, I8), xbuf(0),
     sram(0x60), 1),
    ("VMAX of two colors, packed int8 to a color", Op.VMAX, 0, color(OUT, I8), color(DATA),
     color(DATA + 1), 1),
    ("VLUT index in SRAM", Op.VLUT, 0, sram(0xa0), sram(0x40, fmt=I8), sram(0x100), 2),
    ("VLUT index in XBUF, in place", Op.VLUT, 0, xbuf(0), xbuf(0), sram(0x100), 1),
    ("VLUT index on a color, to a color", Op.VLUT, 0, color(OUT), color(DATA), sram(0x100), 1),
    ("REDUCE max of a color", Op.REDUCE, FLAG_MAX, reg(5), color(DATA), None, 1),
    ("REDUCE sum over XBUF", Op.REDUCE, 0, reg(6), xbuf(1, 2), None, 1),
]


@pytest.mark.parametrize("case", PIPE_CASES, ids=[c[0] for c in PIPE_CASES])
def test_pipelined_element_rate_with_stalls_mid_vector(case):
    """Each operand combination of the pipeline, 11 elements with the input queues running
    dry and the ramp stalling mid-vector: RTL equals the ISS word for word, and the program's
    cycles (stalls excluded) are ``interval * (n - 1) + 5`` with the interval written above."""
    name, op, imm, dst, a, b, interval = case
    n, seed = 11, 31 + PIPE_CASES.index(case)
    rng = np.random.default_rng(seed)
    s = Setup(sram_words=512)
    s.queues = [DATA, DATA + 1]
    s.load(0x40, rng.integers(0, 1 << 32, 0xc0))
    s.load(0x100, rng.integers(-(1 << 31), 1 << 31, 256) & WORD)
    # XBUF's data arrives first (RECV) where the op uses XBUF; then the only input stalls
    # are the op's own, mid-vector, wherever it reads a color (no case does both).
    recv = 32 if any(o is not None and o.space is isa.Space.XBUF for o in (dst, a, b)) else 0
    s.program(TASK, 0, [Ins(Op.SLI, dst=reg(2), b=int(rng.integers(-(1 << 31), 1 << 31))),
                        Ins(Op.SLI, dst=reg(3), b=isa.req_word(-1234, 17)),
                        Ins(Op.RECV, n=recv, dst=xbuf(0), a=color(DATA + 1)),
                        Ins(op, n=n, imm=imm, dst=dst, a=a, b=b),
                        Ins(Op.END)])
    words = [data_w(v, DATA + 1) for v in rng.integers(0, 1 << 32, recv)]
    for _ in range(n):
        for opd in (a, b if b is not None and isa.b_used(op, imm) else None):
            if opd is not None and opd.space is isa.Space.COLOR:
                words.append(data_w(int(rng.integers(0, 1 << 32)), opd.base))
    s.stream = [act_w(0, TASK)] + words
    # Packed int8 sends leave a word every four elements: a slow ramp and a faster input
    # stream make them stall (the input still runs dry: two words an element, one a cycle).
    packed_out = dst.space is isa.Space.COLOR and dst.fmt is I8
    # the two SLIs run in their decode (no cycle after it), then RECV and the op
    want = isa.FETCH_CYCLES + 4 * isa.PREFETCH_CYCLES + recv + interval * (n - 1) + 5
    need_in = any(o is not None and o.space is isa.Space.COLOR for o in (a, b))
    assert not (need_in and recv), f"{name}: the input stalls would not all be the op's"
    need_out = dst.space is isa.Space.COLOR
    seen_in = seen_out = False
    for run in range(4):     # every run is checked; more runs only until both stalls happened
        rtl, _ = compare(s, seed=seed + 100 * run, p_valid=0.8 if packed_out else 0.35,
                         p_ready=0.05 if packed_out else 0.4)
        k = rtl["counters"]
        cycles = k["task_cycles"] - k["stall_in"] - k["stall_out"]
        assert cycles == want, (f"{name}, seed {seed + 100 * run}: {cycles} cycles, "
                                f"documented {want}")
        seen_in |= k["stall_in"] > 0
        seen_out |= k["stall_out"] > 0
        if (seen_in or not need_in) and (seen_out or not need_out):
            break
    assert seen_in or not need_in, f"{name}: no input stall mid-vector in {run + 1} runs"
    assert seen_out or not need_out, f"{name}: no output stall mid-vector in {run + 1} runs"


def test_read_inside_the_pipeline_window_is_refused():
    """Element i reading the word element i - 1 (or i - 4) wrote: the ISS names it."""
    s = Setup()
    s.load(0x40, range(1, 40))
    s.program(TASK, 0, [Ins(Op.VADD, n=8, dst=sram(0x41), a=sram(0x40), b=reg(1)),
                        Ins(Op.END)])
    s.stream = [act_w(0, TASK)]
    with pytest.raises(iss.PipelineHazard, match=r"instruction at 0 \(VADD, n=8\): element 1 "
                       r"reads its a operand, SRAM word 65, which element 0 of the same "
                       r"instruction writes: 1 element\(s\) apart, fewer than "
                       r"isa.RAW_DISTANCE = 5"):
        s.model()
    s.program(TASK, 0, [Ins(Op.VMAX, n=8, dst=xbuf(0x14), a=reg(1), b=xbuf(0x10)),
                        Ins(Op.END)])
    with pytest.raises(iss.PipelineHazard, match=r"element 4 reads its b operand, XBUF word "
                       r"20, which element 0 .* 4 element\(s\) apart"):
        s.model()


@pytest.mark.parametrize("b", [reg(1), sram(0x80)], ids=["one cycle", "two cycles"])
def test_read_at_the_pipeline_distance_sees_the_write(b):
    """``dst[i + 5] = a[i] + b``: each element reads what the element five before wrote (a
    recurrence), which the pipeline delivers at either element rate, as if sequential."""
    s = Setup()
    s.load(0x40, range(100, 105))
    s.load(0x80, [7] * 20)
    s.program(TASK, 0, [Ins(Op.SLI, dst=reg(1), b=7),
                        Ins(Op.VADD, n=20, dst=sram(0x45), a=sram(0x40), b=b),
                        Ins(Op.END)])
    s.stream = [act_w(0, TASK)]
    rtl, _ = compare(s, seed=41)
    assert rtl["sram"][0x40:0x59] == [100 + i % 5 + 7 * (i // 5) for i in range(25)]


def test_gemv_sums_into_xbuf_beside_x_and_never_over_it():
    """A chain end's GEMV writes its sums into XBUF after x (VREQ then reads them beside the
    requantization words in SRAM, one row a cycle); sums over x are refused by the ISS."""
    rng = np.random.default_rng(42)
    s, want = _gemv_setup(rng, 6, 3, dst=xbuf(3))
    rtl, _ = compare(s, seed=42)
    assert (s32(rtl["xbuf"][3:9]) == want).all()
    s, _ = _gemv_setup(rng, 6, 3, dst=xbuf(2))
    with pytest.raises(iss.PipelineHazard, match=r"GEMV at 4 writes its sums over its own x "
                       r"\(XBUF word 2\)"):
        s.model()
