# amaranth: UnusedElaboratable=no
"""PE unit tests in Amaranth's simulator, against the numpy arithmetic of the golden model.

The bench programs the colour registers through ``reg_write`` and the weights, descriptor and
requantization words through ``sram_write``, then plays the router's part on the ramp: it
offers the PE a wavelet of a colour only while that colour's ``accept`` bit is set (with seeded
random gaps), and sinks ``ramp_out`` with seeded random ``ready`` stalls, checking the stream
rule every cycle. Results are compared with :func:`pe_model`, which calls
:mod:`sparktile.golden_model.arith` (``matmul_int8``, ``wrap_int32``, ``requantize``,
``pack_int8``) and nothing else.

(The first line silences Amaranth's "created but never used" warning, which a constructor that
raises on a bad parameter would otherwise turn into an error under ``filterwarnings = error``.)
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pytest
from amaranth.hdl import Cat
from amaranth.sim import Simulator
from sparktile.golden_model.arith import (
    matmul_int8,
    pack_int8,
    requant_params,
    requantize,
    unpack_int8,
    wrap_int32,
)
from sparktile.hdl.formats import (
    FLAG_FIRST,
    FLAG_INT32,
    FLAG_LAST,
    NUM_COLORS,
    PAYLOAD_BITS,
    WAVELET_BITS,
    DescWord0,
    DescWord1,
    DescWord2,
    PeReg,
    RequantWord,
    Wavelet,
    cat_bits,
    pack,
    split_bits,
    unpack,
)
from sparktile.hdl.pe import PE

SRAM_WORDS = 256
ACC_DEPTH = 16
X_COLOR, PSUM_COLOR, OUT_COLOR = 3, 4, 6
DESC_ADDR = 200          # descriptor: three words
W_BASE = 0               # weights: up to 16 rows x 8 words
Q_BASE = 160             # requantization words: up to 16
ALL_COLORS = (1 << NUM_COLORS) - 1
WORD = (1 << PAYLOAD_BITS) - 1


def wavelet(payload: int, color: int, ctrl: int = 0) -> int:
    return pack(Wavelet, payload=int(payload) & WORD, color=color, ctrl=ctrl)


def color_of(w: int) -> int:
    return unpack(Wavelet, w)["color"]


# ---- one PE job: operands, SRAM image, streams, expected output ----------------------------

@dataclass
class Job:
    w: np.ndarray                   # (m, 4 * n_words) int8
    x: np.ndarray                   # (batch, 4 * n_words) int8
    flags: int
    psum: np.ndarray | None = None  # (batch, m) int32, when not FIRST
    mult: np.ndarray | None = None  # (m,) uint16
    shift: np.ndarray | None = None  # (m,) 0..47
    desc: int = DESC_ADDR
    w_base: int = W_BASE
    q_base: int = Q_BASE

    @property
    def m(self):
        return self.w.shape[0]

    @property
    def n_words(self):
        return self.w.shape[1] // 4

    @property
    def batch(self):
        return self.x.shape[0]

    def sram(self) -> dict[int, int]:
        image = {self.desc: pack(DescWord0, w_base=self.w_base, n_words=self.n_words),
                 self.desc + 1: pack(DescWord1, rows=self.m, flags=self.flags),
                 self.desc + 2: pack(DescWord2, q_base=self.q_base)}
        for i in range(self.m):
            for k, word in enumerate(pack_int8(self.w[i])):
                image[self.w_base + i * self.n_words + k] = int(word)
            if self.mult is not None:
                image[self.q_base + i] = pack(RequantWord, mult=self.mult[i],
                                              shift=self.shift[i])
        return image

    def x_stream(self, with_selector=True) -> list[int]:
        sel = [wavelet(self.desc, X_COLOR, 1)] if with_selector else []
        return sel + [wavelet(word, X_COLOR) for v in self.x for word in pack_int8(v)]

    def p_stream(self) -> list[int]:
        if self.flags & FLAG_FIRST:
            return []
        return [wavelet(int(p) & WORD, PSUM_COLOR) for v in self.psum for p in v]


def pe_model(job: Job) -> list[int]:
    """Payloads the PE must send for ``job``, in order (golden-model arithmetic only)."""
    acc = matmul_int8(job.w, job.x.T).T                    # (batch, m), wrapped int32
    if not job.flags & FLAG_FIRST:
        acc = wrap_int32(acc.astype(np.int64) + job.psum.astype(np.int64))
    if job.flags & FLAG_LAST and not job.flags & FLAG_INT32:
        y = requantize(acc, job.mult[None, :], job.shift[None, :])
        pad = -job.m % 4
        return [int(word) for v in y for word in pack_int8(np.concatenate([v, np.zeros(pad, int)]))]
    return [int(v) for v in acc.astype(np.int32).view(np.uint32).reshape(-1)]


def make_job(rng: np.random.Generator, *, m, n_words, batch=1, flags=FLAG_FIRST | FLAG_LAST,
             w=None, x=None, psum=None, mult=None, shift=None, **where) -> Job:
    if w is None:
        w = rng.integers(-128, 128, size=(m, 4 * n_words))
    if x is None:
        x = rng.integers(-128, 128, size=(batch, 4 * n_words))
    if psum is None and not flags & FLAG_FIRST:
        psum = rng.integers(-(1 << 31), 1 << 31, size=(batch, m))
    if mult is None and flags & FLAG_LAST and not flags & FLAG_INT32:
        # Scales around the spread of the sums: most results in range, a few saturate.
        spread = 16384 * 4 * n_words ** 0.5 / 4 + (0 if psum is None else 2 ** 31)
        mult, shift = requant_params(rng.uniform(0.25, 4.0, size=m) * 100 / spread)
    w, x = np.asarray(w, dtype=np.int64), np.asarray(x, dtype=np.int64)
    return Job(w=w, x=x, flags=flags, psum=None if psum is None else np.asarray(psum),
               mult=None if mult is None else np.asarray(mult),
               shift=None if shift is None else np.asarray(shift), **where)


# ---- bench ---------------------------------------------------------------------------------

@dataclass
class PERun:
    out: list[int]                      # wavelets taken from ramp_out, in order
    out_cycles: list[int]
    counters: dict[str, int]
    accept: list[int] = field(default_factory=list)   # accept, per streaming cycle
    blocked: list[tuple[int, int]] = field(default_factory=list)  # (cycle, color) ready == 0


COUNTERS = ("mac_busy", "stall_in", "stall_out", "task_errors", "vectors")


def run_pe(*, sram, streams, n_out, seed, p_valid=0.7, p_ready=0.7, regs=None,
           respect_accept=True, tail=12, max_cycles=4000, ramp_reg=False) -> PERun:
    """Configure the PE, then play ``streams`` ({name: (wavelets, first_cycle)}) on the ramp.

    Stops ``tail`` cycles after every wavelet is sent and ``n_out`` outputs have been taken, so
    that extra outputs and late error counts are seen.
    """
    dut = PE(sram_words=SRAM_WORDS, acc_depth=ACC_DEPTH, ramp_reg=ramp_reg,
             queue_depth=3 if ramp_reg else 2)
    rng = random.Random(seed)
    regs = regs if regs is not None else {PeReg.X_COLOR: X_COLOR, PeReg.PSUM_COLOR: PSUM_COLOR,
                                          PeReg.OUT_COLOR: OUT_COLOR}
    queues = {name: (deque(items), start) for name, (items, start) in streams.items()}
    before = Cat(dut.accept, dut.ramp_out.valid, dut.ramp_out.payload.as_value())
    drive = Cat(dut.ramp_in.valid, dut.ramp_in.payload.as_value(), dut.ramp_out.ready)
    reg_w = Cat(dut.reg_write.en, dut.reg_write.addr, dut.reg_write.data)
    sram_w = Cat(dut.sram_write.en, dut.sram_write.addr, dut.sram_write.data)
    a_bits, d_bits = len(dut.sram_write.addr), len(dut.sram_write.data)
    run = PERun(out=[], out_cycles=[], counters={})

    async def bench(ctx):
        for addr, value in regs.items():
            ctx.set(reg_w, cat_bits((1, 1), (int(addr), a_bits), (value, d_bits)))
            await ctx.tick()
        ctx.set(reg_w, 0)
        for addr, word in sram.items():
            ctx.set(sram_w, cat_bits((1, 1), (addr, a_bits), (word, d_bits)))
            await ctx.tick()
        ctx.set(sram_w, 0)

        holding, waiting, cycle, done_at = None, None, 0, None
        while done_at is None or cycle < done_at + tail:
            seen = ctx.get(before)
            accept, out_valid, out_w = split_bits(seen, NUM_COLORS, 1, WAVELET_BITS)
            run.accept.append(accept)
            if holding is None and rng.random() < p_valid:
                ready_q = [name for name, (q, start) in queues.items()
                           if q and cycle >= start
                           and (not respect_accept or accept >> color_of(q[0]) & 1)]
                if ready_q:
                    holding = rng.choice(ready_q)
            w = queues[holding][0][0] if holding is not None else 0
            ready = int(rng.random() < p_ready)
            ctx.set(drive, cat_bits((holding is not None, 1), (w, WAVELET_BITS), (ready, 1)))
            if holding is not None:
                color = color_of(w)
                in_ready = ctx.get(dut.ramp_in.ready)
                # Without the ramp register ``ready`` follows the color's queue (= accept); with
                # it the PE takes everything and ``accept`` reserves the room.
                want_ready = 1 if ramp_reg else accept >> color & 1
                assert in_ready == want_ready, (
                    f"seed={seed}: cycle {cycle}: ramp_in.ready={in_ready} for color {color} "
                    f"(accept bit {accept >> color & 1}, ramp_reg={ramp_reg})")
                if in_ready:
                    queues[holding][0].popleft()
                    holding = None
                else:
                    run.blocked.append((cycle, color))
            if waiting is not None:
                assert out_valid and out_w == waiting, (
                    f"seed={seed}: ramp_out broke the stream rule at cycle {cycle}: "
                    f"{waiting:#x} -> valid={out_valid} {out_w:#x}")
            if out_valid and ready:
                run.out.append(out_w)
                run.out_cycles.append(cycle)
            waiting = out_w if out_valid and not ready else None
            await ctx.tick()
            cycle += 1
            if done_at is None and len(run.out) >= n_out and \
                    not any(q for q, _ in queues.values()):
                done_at = cycle
            assert cycle < max_cycles, (
                f"seed={seed}: {len(run.out)} of {n_out} outputs after {cycle} cycles; "
                f"left to send: { {n: len(q) for n, (q, _) in queues.items()} }")
        run.counters.update({name: ctx.get(getattr(dut, name)) for name in COUNTERS})

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return run


def check_job(job: Job, *, seed, p_valid=0.7, p_ready=0.7, extra=None, task_errors=0,
              x_stream=None, extra_mac=0, ramp_reg=False) -> PERun:
    """Run ``job`` (plus ``extra`` streams) and compare with the model and the counters."""
    want = pe_model(job)
    streams = {"x": (x_stream if x_stream is not None else job.x_stream(), 0),
               "psum": (job.p_stream(), 0), **(extra or {})}
    run = run_pe(sram=job.sram(), streams=streams, n_out=len(want), seed=seed,
                 p_valid=p_valid, p_ready=p_ready, ramp_reg=ramp_reg)
    got = [unpack(Wavelet, w)["payload"] for w in run.out]
    kinds = [(color_of(w), unpack(Wavelet, w)["ctrl"]) for w in run.out]
    assert all(k == (OUT_COLOR, 0) for k in kinds), (
        f"seed={seed}: outputs must be data wavelets on OUT_COLOR {OUT_COLOR}: {kinds}")
    assert got == want, (
        f"seed={seed}: m={job.m} n_words={job.n_words} batch={job.batch} flags={job.flags}: "
        f"got {[hex(v) for v in got]}, expected {[hex(v) for v in want]}")
    c = run.counters
    assert c["mac_busy"] == job.batch * job.m * job.n_words + extra_mac, (
        f"seed={seed}: mac_busy {c['mac_busy']}, expected {job.batch} x {job.m} x {job.n_words}")
    assert c["vectors"] == job.batch, f"seed={seed}: vectors {c['vectors']}"
    assert c["task_errors"] == task_errors, f"seed={seed}: task_errors {c['task_errors']}"
    return run


STALLS = {"no_stall": (1.0, 1.0), "both": (0.6, 0.6)}


# ---- results -------------------------------------------------------------------------------

@pytest.mark.parametrize("stall", list(STALLS))
@pytest.mark.parametrize("m", [6, 8])
def test_first_last_int8(m, stall):
    seed = 10 + m
    job = make_job(np.random.default_rng(seed), m=m, n_words=3)
    check_job(job, seed=seed, p_valid=STALLS[stall][0], p_ready=STALLS[stall][1])


@pytest.mark.parametrize("stall", list(STALLS))
def test_first_last_int32(stall):
    seed = 20
    job = make_job(np.random.default_rng(seed), m=5, n_words=2,
                   flags=FLAG_FIRST | FLAG_LAST | FLAG_INT32)
    check_job(job, seed=seed, p_valid=STALLS[stall][0], p_ready=STALLS[stall][1])


@pytest.mark.parametrize("stall", list(STALLS))
def test_middle_of_chain_adds_partial_sums(stall):
    # Not FIRST: partial sums on PSUM_COLOR are added (wrapping: they span all of int32);
    # not LAST: the int32 sums go out.
    seed = 30
    job = make_job(np.random.default_rng(seed), m=5, n_words=2, flags=0)
    job.psum[0, :2] = [(1 << 31) - 1, -(1 << 31)]
    check_job(job, seed=seed, p_valid=STALLS[stall][0], p_ready=STALLS[stall][1])


def test_last_of_chain_int8_adds_partial_sums():
    seed = 31
    job = make_job(np.random.default_rng(seed), m=7, n_words=2, flags=FLAG_LAST)
    check_job(job, seed=seed, p_valid=0.6, p_ready=0.6)


def test_last_of_chain_int32():
    seed = 32
    job = make_job(np.random.default_rng(seed), m=3, n_words=1, flags=FLAG_LAST | FLAG_INT32)
    check_job(job, seed=seed)


@pytest.mark.parametrize("flags", [FLAG_FIRST | FLAG_LAST, FLAG_FIRST | FLAG_LAST | FLAG_INT32,
                                   0], ids=["int8", "int32", "middle"])
def test_batch_of_three_vectors_one_descriptor(flags):
    seed = 40 + flags
    job = make_job(np.random.default_rng(seed), m=7, n_words=2, batch=3, flags=flags)
    check_job(job, seed=seed, p_valid=0.7, p_ready=0.6)


@pytest.mark.parametrize("m,n_words", [(1, 1), (1, 3), (5, 1)])
@pytest.mark.parametrize("flags", [FLAG_FIRST | FLAG_LAST, FLAG_FIRST | FLAG_LAST | FLAG_INT32,
                                   0], ids=["int8", "int32", "middle"])
def test_small_shapes(m, n_words, flags):
    # m = 1 with n_words > 1 accumulates into the row just written (read-after-write through
    # the transparent accumulator port); batch 2 checks the accumulator is restarted.
    seed = 50 + 10 * m + n_words + flags
    job = make_job(np.random.default_rng(seed), m=m, n_words=n_words, batch=2, flags=flags)
    check_job(job, seed=seed, p_valid=1.0, p_ready=1.0)


def test_full_accumulator_depth():
    seed = 60
    job = make_job(np.random.default_rng(seed), m=ACC_DEPTH, n_words=2)
    check_job(job, seed=seed, p_valid=0.8, p_ready=0.7)


@pytest.mark.parametrize("wv,xv", [(-128, -128), (127, 127), (-128, 127), (127, -128)])
@pytest.mark.parametrize("flags", [FLAG_FIRST | FLAG_LAST | FLAG_INT32,
                                   FLAG_FIRST | FLAG_LAST], ids=["int32", "int8"])
def test_extreme_inputs(wv, xv, flags):
    seed = 70
    m, n_words = 5, 4
    job = make_job(np.random.default_rng(seed), m=m, n_words=n_words, flags=flags,
                   w=np.full((m, 4 * n_words), wv), x=np.full((1, 4 * n_words), xv),
                   mult=np.array([1, 3, 1 << 15, 65535, 0]), shift=np.array([8, 16, 23, 31, 0]))
    check_job(job, seed=seed)


def requant_job(acc, mult, shift, seed) -> Job:
    """A LAST (not FIRST) job with zero weights: each row's sum is exactly its partial sum."""
    m = len(acc)
    return make_job(np.random.default_rng(seed), m=m, n_words=1, flags=FLAG_LAST,
                    w=np.zeros((m, 4)), psum=np.array([acc]), mult=np.array(mult),
                    shift=np.array(shift))


def test_requant_saturates_both_ways():
    seed = 80
    acc = [1 << 20, -(1 << 20), 200, -200, (1 << 31) - 1, -(1 << 31), 128, -129]
    job = requant_job(acc, [65535, 65535, 1, 1, 65535, 65535, 1, 1], [0, 0, 0, 0, 8, 8, 0, 0],
                      seed)
    assert list(pe_model(job)) == [int(pack_int8([127, -128, 127, -128])[0]),
                                   int(pack_int8([127, -128, 127, -128])[0])]
    check_job(job, seed=seed)


def test_requant_shift_0_and_47():
    seed = 81
    big, small = (1 << 31) - 1, -(1 << 31)
    acc = [5, -7, 127, -128, big, small, big // 3, -(1 << 30),
           # rounding: (acc * mult + 2**46) >> 47, half-way cases round up
           1 << 15, -(1 << 15), 3 << 14, -(3 << 14)]
    mult = [1, 1, 1, 1, 65535, 65535, 65535, 65535, 1 << 15, 1 << 15, 1 << 15, 1 << 15]
    shift = [0, 0, 0, 0, 47, 47, 47, 47, 31, 31, 31, 31]
    job = requant_job(acc, mult, shift, seed)
    assert list(unpack_int8(pe_model(job))) == [5, -7, 127, -128, 1, -1, 0, 0, 1, 0, 1, -1]
    check_job(job, seed=seed)


@pytest.mark.parametrize("seed", [82, 83])
def test_requant_random_parameters(seed):
    rng = np.random.default_rng(seed)
    m = ACC_DEPTH
    acc = rng.integers(-(1 << 31), 1 << 31, size=m)
    shift = rng.integers(0, 48, size=m)
    shift[:4] = [0, 47, 1, 46]
    mult = rng.integers(0, 1 << 16, size=m)
    check_job(requant_job(acc, mult, shift, seed), seed=seed, p_valid=0.8, p_ready=0.6)


# ---- flow control, errors, counters ---------------------------------------------------------

def test_accept_drops_when_x_queue_is_full():
    # A middle-of-chain PE waits in its reduce task for partial sums that are held back; the
    # activations of the next vectors pile up in the x queue until its accept bit drops. The
    # partial-sum colour (and every other colour) stays accepted meanwhile.
    seed = 90
    job = make_job(np.random.default_rng(seed), m=2, n_words=1, batch=4, flags=0)
    want = pe_model(job)
    hold = 60
    run = run_pe(sram=job.sram(), streams={"x": (job.x_stream(), 0),
                                           "psum": (job.p_stream(), hold)},
                 n_out=len(want), seed=seed, p_valid=1.0, p_ready=1.0)
    assert [unpack(Wavelet, w)["payload"] for w in run.out] == want, f"seed={seed}"
    full = [c for c, a in enumerate(run.accept[:hold]) if not a >> X_COLOR & 1]
    assert full, f"seed={seed}: accept bit of X_COLOR never dropped while the x queue filled"
    assert all(run.accept[c] == ALL_COLORS & ~(1 << X_COLOR) for c in full), (
        f"seed={seed}: only the x colour's accept bit may drop")
    assert run.accept[-1] == ALL_COLORS, f"seed={seed}: accept not restored when drained"


def test_ramp_ready_follows_accept_when_pushed_anyway():
    # A producer that ignores ``accept`` holds its wavelet until there is room: ready is low
    # exactly while the accept bit is low, and nothing is lost.
    seed = 91
    job = make_job(np.random.default_rng(seed), m=ACC_DEPTH, n_words=3, batch=3)
    want = pe_model(job)
    run = run_pe(sram=job.sram(), streams={"x": (job.x_stream(), 0)}, n_out=len(want),
                 seed=seed, p_valid=1.0, p_ready=1.0, respect_accept=False)
    assert run.blocked, f"seed={seed}: the x queue never filled"
    assert [unpack(Wavelet, w)["payload"] for w in run.out] == want, f"seed={seed}"


def test_unbound_colours_are_accepted_and_counted():
    seed = 92
    job = make_job(np.random.default_rng(seed), m=4, n_words=2)
    junk = [wavelet(0xDEAD_0000 + c, c, c & 1) for c in (0, 1, 5, 7, 29, 30, 31)]
    run = check_job(job, seed=seed, extra={"junk": (junk, 0)}, task_errors=len(junk))
    assert all(a >> c & 1 for a in run.accept for c in (0, 1, 5, 7, 29, 30, 31)), (
        f"seed={seed}: an unbound colour was not accepted")


def test_data_before_descriptor_counts_errors():
    seed = 93
    job = make_job(np.random.default_rng(seed), m=3, n_words=2)
    early = [wavelet(0x0101_0101 * k, X_COLOR) for k in range(1, 4)]
    check_job(job, seed=seed, x_stream=early + job.x_stream(), task_errors=3)


@pytest.mark.parametrize("m,n_words", [(0, 2), (ACC_DEPTH + 1, 1), (4, 0)],
                         ids=["m0", "m_too_big", "n_words0"])
def test_bad_descriptor_counts_error_then_data_is_dropped(m, n_words):
    seed = 94
    sram = {DESC_ADDR: pack(DescWord0, w_base=W_BASE, n_words=n_words),
            DESC_ADDR + 1: pack(DescWord1, rows=m, flags=FLAG_FIRST | FLAG_LAST),
            DESC_ADDR + 2: pack(DescWord2, q_base=Q_BASE)}
    x = [wavelet(DESC_ADDR, X_COLOR, 1)] + [wavelet(k, X_COLOR) for k in range(3)]
    run = run_pe(sram=sram, streams={"x": (x, 0)}, n_out=0, seed=seed)
    assert run.out == [], f"seed={seed}"
    assert run.counters["task_errors"] == 1 + 3, f"seed={seed}: {run.counters}"
    assert run.counters["mac_busy"] == 0 and run.counters["vectors"] == 0, f"seed={seed}"


def test_selector_mid_vector_abandons_it():
    seed = 95
    job = make_job(np.random.default_rng(seed), m=3, n_words=3)
    stream = job.x_stream()
    # One data wavelet, then a new selector: the partial vector is dropped (one error).
    x = stream[:2] + stream
    check_job(job, seed=seed, x_stream=x, task_errors=1, extra_mac=3)


def test_int32_rows_leave_one_per_cycle():
    # "One row per cycle when the fabric keeps up": with no stalls the m results of a vector
    # leave on consecutive cycles.
    seed = 96
    job = make_job(np.random.default_rng(seed), m=8, n_words=2,
                   flags=FLAG_FIRST | FLAG_LAST | FLAG_INT32)
    run = check_job(job, seed=seed, p_valid=1.0, p_ready=1.0)
    c = run.out_cycles
    assert c == list(range(c[0], c[0] + 8)), f"seed={seed}: output cycles {c}"


def run_two_jobs(a: Job, b: Job, *, seed, p_valid, p_ready) -> PERun:
    """Job ``a`` then job ``b`` (own descriptor and SRAM regions) on one x stream; checks the
    outputs against the model of both in order."""
    want = pe_model(a) + pe_model(b)
    run = run_pe(sram={**a.sram(), **b.sram()},
                 streams={"x": (a.x_stream() + b.x_stream(), 0)}, n_out=len(want), seed=seed,
                 p_valid=p_valid, p_ready=p_ready)
    assert [unpack(Wavelet, w)["payload"] for w in run.out] == want, f"seed={seed}"
    return run


def test_two_descriptors_one_after_the_other():
    # A second selector switches shape, flags and SRAM regions between vectors.
    seed = 97
    rng = np.random.default_rng(seed)
    a = make_job(rng, m=3, n_words=2, batch=2, flags=FLAG_FIRST | FLAG_LAST | FLAG_INT32)
    b = make_job(rng, m=6, n_words=1, batch=1, flags=FLAG_FIRST | FLAG_LAST,
                 desc=240, w_base=100, q_base=180)
    run = run_two_jobs(a, b, seed=seed, p_valid=0.7, p_ready=0.6)
    assert run.counters["mac_busy"] == 2 * 3 * 2 + 6, f"seed={seed}: {run.counters}"
    assert run.counters["vectors"] == 3 and run.counters["task_errors"] == 0, f"seed={seed}"


@pytest.mark.parametrize("seed", range(98, 102))
def test_int32_results_wait_for_the_requantization_pipeline(seed):
    # int8 results leave through the four-stage requantization pipeline, int32 ones straight
    # from stage B; with the output stalled, an int32 vector right behind an int8 one must not
    # overtake the int8 results still in the pipeline.
    rng = np.random.default_rng(seed)
    a = make_job(rng, m=8, n_words=1, batch=2, flags=FLAG_FIRST | FLAG_LAST)
    b = make_job(rng, m=2, n_words=1, batch=2, flags=FLAG_FIRST | FLAG_LAST | FLAG_INT32,
                 desc=240, w_base=100, q_base=180)
    run = run_two_jobs(a, b, seed=seed, p_valid=1.0, p_ready=0.1)
    assert run.counters["vectors"] == 4 and run.counters["task_errors"] == 0, f"seed={seed}"


FLAG_SETS = [FLAG_FIRST | FLAG_LAST, FLAG_FIRST | FLAG_LAST | FLAG_INT32, FLAG_FIRST, 0,
             FLAG_LAST, FLAG_LAST | FLAG_INT32]


@pytest.mark.parametrize("seed", range(200, 208))
def test_random_jobs(seed):
    r = random.Random(seed)
    job = make_job(np.random.default_rng(seed), m=r.randint(1, ACC_DEPTH),
                   n_words=r.randint(1, 4), batch=r.randint(1, 3), flags=r.choice(FLAG_SETS))
    check_job(job, seed=seed, p_valid=r.choice([0.4, 0.8, 1.0]), p_ready=r.choice([0.4, 1.0]))


@pytest.mark.parametrize("seed", range(300, 308))
def test_ramp_register_random_jobs(seed):
    # The FPGA configuration: registered ramp, queues of three. Same results, no losses
    # (task_errors 0: ``accept`` reserved room for every wavelet in the ramp register).
    r = random.Random(seed)
    job = make_job(np.random.default_rng(seed), m=r.randint(1, ACC_DEPTH),
                   n_words=r.randint(1, 4), batch=r.randint(1, 3), flags=r.choice(FLAG_SETS))
    check_job(job, seed=seed, p_valid=r.choice([0.5, 1.0]), p_ready=r.choice([0.4, 1.0]),
              ramp_reg=True)


@pytest.mark.parametrize("m,n_words", [(1, 1), (1, 3), (5, 1)])
def test_ramp_register_keeps_the_rate(m, n_words):
    # Activations and partial sums stream through the ramp register as fast as without it:
    # once the pipeline is full the results leave at the same intervals (the queues of three
    # cover the slot ``accept`` reserves for the register).
    seed = 310 + m + n_words
    job = make_job(np.random.default_rng(seed), m=m, n_words=n_words, batch=16,
                   flags=FLAG_LAST | FLAG_INT32)
    gaps = {}
    for ramp_reg in (False, True):
        run = check_job(job, seed=seed, p_valid=1.0, p_ready=1.0, ramp_reg=ramp_reg)
        gaps[ramp_reg] = [b - a for a, b in zip(run.out_cycles, run.out_cycles[1:],
                                                         strict=False)]
    assert gaps[True][4:] == gaps[False][4:], f"seed={seed}: output gaps {gaps}"


def test_ramp_register_counts_a_producer_that_ignores_accept():
    seed = 311
    job = make_job(np.random.default_rng(seed), m=6, n_words=1, batch=4,
                   flags=FLAG_FIRST | FLAG_LAST)
    run = run_pe(sram=job.sram(), streams={"x": (job.x_stream(), 0)}, n_out=0, seed=seed,
                 p_valid=1.0, p_ready=1.0, respect_accept=False, ramp_reg=True)
    assert run.counters["task_errors"] > 0, f"seed={seed}: {run.counters}"


@pytest.mark.parametrize("kw,bad", [({"sram_words": 8}, "8"), ({"sram_words": 65537}, "65537"),
                                    ({"acc_depth": 0}, "0"), ({"queue_depth": 1}, "1")])
def test_bad_parameters_name_the_value(kw, bad):
    with pytest.raises(ValueError, match=rf"not {bad}$"):
        PE(**kw)
