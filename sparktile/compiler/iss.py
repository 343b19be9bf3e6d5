"""Instruction-set simulator of the programmable core (:mod:`sparktile.hdl.core`).

Executes the ISA of :mod:`sparktile.hdl.isa` on a :class:`PEState` (SRAM and XBUF words, scalar
registers, per-color input queues, the pending activations, the words sent on each color) and
counts cycles with :func:`~sparktile.hdl.isa.exec_cycles` and :func:`~sparktile.hdl.isa.
fetch_cycles`, the rules the RTL implements; the
RTL's stall cycles (an empty input queue, a busy ramp) are counted apart by the RTL and are not
part of this count. Every arithmetic step calls :mod:`sparktile.golden_model.arith`
(``wrap_int32``, ``residual_add``, ``shift_round``, ``requantize_to``,
``matmul_int8``, ``bit_length``): there is no second copy of the arithmetic.

Element-wise ops run element after element, as if not pipelined: the RTL's pipeline gives the
same values for every program the ISA allows, and :func:`step` refuses the others with
:class:`PipelineHazard` (an element reading a word written by one of the
``isa.RAW_DISTANCE - 1`` elements before it in the same instruction, see
:data:`~sparktile.hdl.isa.RAW_DISTANCE`).
"""

from __future__ import annotations

import dataclasses
from collections import deque

import numpy as np

from sparktile.golden_model import arith
from sparktile.hdl import isa
from sparktile.hdl.formats import unpack
from sparktile.hdl.isa import (
    FLAG_ADDEND,
    FLAG_IMM,
    FLAG_MAX,
    FLAG_SAT,
    FLAG_UA,
    FLAG_UB,
    FLAG_VAR,
    Fmt,
    Op,
    Space,
)

__all__ = ["PEState", "TaskError", "PipelineHazard", "run_tasks", "Stats", "step"]

WORD = 0xFFFFFFFF


class TaskError(Exception):
    """A malformed instruction or an operand on a color with no input queue: the task ends."""


class PipelineHazard(isa.IsaError):
    """A program the ISA forbids: inside one element-wise instruction, an element reads a word
    that an element fewer than :data:`~sparktile.hdl.isa.RAW_DISTANCE` before it writes. The
    core's pipeline may not have written it yet, so the value would depend on stalls; the ISS
    refuses it instead of guessing (not a task error: the core has no way to notice)."""


@dataclasses.dataclass
class Stats:
    cycles: int = 0        #: task cycles, stalls excluded
    mac_busy: int = 0      #: GEMV weight-word cycles (four MACs each)
    instructions: int = 0  #: instructions fetched (the failing one included)
    task_errors: int = 0
    tasks: int = 0         #: tasks that reached END


@dataclasses.dataclass
class PEState:
    """Everything a program can see and change."""

    sram: np.ndarray                        # uint32 words
    xbuf: np.ndarray                        # uint32 words
    regs: list = dataclasses.field(default_factory=lambda: [0] * isa.NUM_SREGS)
    tasks: dict = dataclasses.field(default_factory=dict)     # color -> program address
    queues: dict = dataclasses.field(default_factory=dict)    # color -> deque of words
    sent: dict = dataclasses.field(default_factory=dict)      # color -> list of words
    stats: Stats = dataclasses.field(default_factory=Stats)
    #: Fetch and decode cycles of the next instruction (:func:`~sparktile.hdl.isa.
    #: fetch_cycles`), set by :func:`step` for the instruction after the one it ran:
    #: ``isa.FETCH_CYCLES`` at first and after END or a task error, so a task starts with it.
    next_fetch: int = isa.FETCH_CYCLES

    @classmethod
    def new(cls, sram_words: int, xbuf_words: int) -> PEState:
        for name, n in (("sram_words", sram_words), ("xbuf_words", xbuf_words)):
            if n < 1 or n & (n - 1):
                raise ValueError(f"{name} must be a power of two, not {n}")
        return cls(sram=np.zeros(sram_words, np.uint32), xbuf=np.zeros(xbuf_words, np.uint32))

    def bind_queue(self, color: int):
        self.queues.setdefault(color, deque())

    def send(self, color: int, word: int):
        self.sent.setdefault(color, []).append(int(word) & WORD)


def _s32(w) -> int:
    """``w`` modulo 2**32 as a signed int32 (:func:`arith.wrap_int32` of one value, in plain
    integer arithmetic: the ISS calls it for every element it reads)."""
    return ((int(w) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


class _Vec:
    """Element access of one operand (read or write), as the RTL walks it."""

    def __init__(self, st: PEState, d: dict, n: int):
        self.st, self.space, self.fmt = st, Space(d["space"]), Fmt(d["fmt"])
        self.base, self.stride, self.n = d["base"], d["stride"], n
        self.mem = st.sram if self.space is Space.SRAM else st.xbuf
        self.pack = 0

    def addr(self, i):
        step = i >> 2 if self.fmt is Fmt.I8X4 else i
        return (self.base + step * self.stride) % len(self.mem)

    def raw_addr(self, i):
        """Word ``i`` ignoring the format (RECV, SEND and GEMV move whole words)."""
        return (self.base + i * self.stride) % len(self.mem)

    def read(self, i) -> int:
        if self.space is Space.REG:
            return _s32(self.st.regs[self.base & 15])
        if self.space is Space.COLOR:
            return _s32(self.st.queues[self.base & 31].popleft())
        w = int(self.mem[self.addr(i)])
        if self.fmt is Fmt.I8X4:        # lane i & 3 of the word (arith.unpack_int8's order)
            b = (w >> (8 * (i & 3))) & 0xFF
            return b - 256 if b & 0x80 else b
        return _s32(w)

    def write(self, i, v: int) -> int | None:
        """Write element ``i``; returns the word address written (None: sent, or an int8
        lane kept for its word's later write)."""
        if self.fmt is Fmt.I8X4:
            lane = i & 3
            if lane == 0:
                self.pack = 0
            self.pack |= (int(v) & 0xFF) << (8 * lane)
            if lane != 3 and i != self.n - 1:
                return None
            v = self.pack
        if self.space is Space.COLOR:
            self.st.send(self.base & 31, v)
            return None
        self.mem[self.addr(i)] = int(v) & WORD
        return self.addr(i)


def _needs_queue(op, slot, d, insn):
    """Whether operand ``slot`` reads an input queue (a COLOR source)."""
    if op is Op.VSHR and slot == 2 and not insn["imm"] & FLAG_VAR:
        return False
    return slot != 0 and d["space"] == Space.COLOR and Space.COLOR in (isa.ALLOWED[op][slot]
                                                                        or ())


def _elementwise(st, op, imm, a, b):
    if op is Op.VADD:
        return int(arith.residual_add(a, b)) if imm & FLAG_SAT else _s32(a + b)
    if op is Op.VMUL:
        return _s32(a * b)
    if op is Op.VSHR:
        return int(arith.shift_round(a, (b if imm & FLAG_VAR else imm) & 63))
    if op is Op.VMULSR:
        sh = st.regs[imm & 15] if imm & FLAG_VAR else imm
        av = a & WORD if imm & FLAG_UA else a
        # A 64-bit product and its rounding in Python integers: ``arith.shift_round`` works
        # in int64, and ``(2**32 - 1) * (2**31 - 1) + 2**62`` needs one bit more (the RTL
        # computes it 66 bits wide).
        sh &= 63
        p = av * b + ((1 << (sh - 1)) if sh else 0)
        return int(arith.sat(p >> sh, 32))
    if op is Op.VMAX:
        return max(a, b)
    if op is Op.VREQ:
        q = unpack(isa.ReqWord, b & WORD)
        mult = -q["mult"] if q["neg"] else q["mult"]
        return int(arith.requantize_to(a, mult, q["shift"], 8))
    raise AssertionError(op)


def _scalar(st: PEState, op, imm, dst, a, b_word):
    r = st.regs
    av = _s32(r[a["base"] & 15])
    bv = _s32(b_word) if imm & FLAG_IMM else _s32(r[unpack(isa.Operand, b_word)["base"] & 15])
    if op is Op.SMULSH and imm & FLAG_UB:
        bv &= WORD
    if op is Op.SLI:
        v = b_word
    elif op is Op.SADD:
        v = av + bv
    elif op is Op.SSUB:
        v = av - bv
    elif op is Op.SMULSH:
        v = (av * bv) >> (imm & 63)
    elif op is Op.SSHR:
        v = int(arith.shift_round(av, imm & 63))
    elif op is Op.SSHL:
        v = av << (imm & 31)
    elif op is Op.SBITLEN:
        v = int(arith.bit_length(av & WORD))
    elif op is Op.SLT:
        v = int(av < bv)
    elif op is Op.SMAX:
        v = max(av, bv)
    elif op is Op.SLD:
        v = int(st.sram[b_word % len(st.sram)])
    elif op is Op.SSHLV:
        v = av << (bv & 31)
    elif op is Op.SLDR:
        v = int(st.sram[(av & WORD) % len(st.sram)])
    elif op is Op.SST:
        st.sram[b_word % len(st.sram)] = av & WORD
        return
    else:
        raise AssertionError(op)
    r[dst["base"] & 15] = _s32(v)


def decoded(words) -> tuple[dict, list[dict], bool]:
    """``(insn, [dst, a, b], valid)`` of four instruction words (:func:`isa.decode`,
    :func:`isa.valid_insn`), kept by the words: a program runs the same instructions again
    and again, and decoding was a fifth of the ISS's time. The dicts are shared: read them,
    never write them."""
    key = tuple(words)
    hit = _DECODED.get(key)
    if hit is None:
        insn, ops = isa.decode(key)
        hit = (insn, ops, isa.valid_insn(insn, ops))
        if len(_DECODED) >= 1 << 16:
            _DECODED.clear()
        _DECODED[key] = hit
    return hit


_DECODED: dict = {}


def step(st: PEState, pc: int) -> int | None:
    """Execute the instruction at ``pc``; return the next pc, or None at END. Raises
    :class:`TaskError` for an instruction the core refuses (counted by the caller)."""
    if pc % isa.INSN_WORDS:
        raise TaskError(f"program counter {pc} is not on an SRAM row (a multiple of "
                        f"{isa.INSN_WORDS}): the core fetches an instruction as one row")
    words = [int(st.sram[(pc + j) % len(st.sram)]) for j in range(isa.INSN_WORDS)]
    insn, ops, valid = decoded(words)
    b_raw = words[3]
    st.stats.instructions += 1
    st.stats.cycles += st.next_fetch
    st.next_fetch = isa.FETCH_CYCLES      # what follows END or a task error
    if not valid:
        raise TaskError(f"malformed instruction at {pc}: {insn} {ops}")
    op, n, imm = Op(insn["op"]), insn["n"], insn["imm"]
    dst, a, b = ops
    for slot, d in enumerate(ops):
        if _needs_queue(op, slot, d, insn) and (d["base"] & 31) not in st.queues:
            raise TaskError(f"instruction at {pc} reads color {d['base'] & 31}, which has "
                            f"no input queue")
    if op in isa.GEMV_OPS and imm & FLAG_ADDEND and b["aux"] not in st.queues:
        raise TaskError(f"GEMV at {pc} adds color {b['aux']}, which has no input queue")
    if op is Op.GEMVX and a["aux"] not in st.queues:
        raise TaskError(f"GEMV at {pc} takes x from color {a['aux']}, which has no input "
                        f"queue")
    st.stats.cycles += isa.exec_cycles(op, n, imm, a, b)
    if op is Op.END:
        return None
    if op is Op.RECV:
        d = _Vec(st, dst, n)
        q = st.queues[a["base"] & 31]
        for i in range(n):
            d.mem[d.raw_addr(i)] = q.popleft()
    elif op is Op.SEND:
        s = _Vec(st, a, n)
        for i in range(n):
            st.send(dst["base"] & 31, s.mem[s.raw_addr(i)])
    elif op in isa.GEMV_OPS:
        words = imm & isa.MAX_GEMV_WORDS
        if op is Op.GEMVX and n:
            # x streams in during the first row, kept in XBUF for the others.
            q = st.queues[a["aux"]]
            for k in range(words):
                st.xbuf[(b["base"] + k) % len(st.xbuf)] = q.popleft()
        if dst["space"] == Space.XBUF:
            xs = {(b["base"] + k) % len(st.xbuf) for k in range(words)}
            over = sorted(xs & {(dst["base"] + r * dst["stride"]) % len(st.xbuf)
                                for r in range(n)})
            if over:
                raise PipelineHazard(
                    f"GEMV at {pc} writes its sums over its own x (XBUF word {over[0]}): "
                    f"a row's sum would change the x of the rows after it; put the sums "
                    f"beside x")
        rows = np.arange(n)[:, None] * words + np.arange(words)[None, :] + a["base"]
        w = arith.unpack_int8(st.sram[rows.reshape(-1) % len(st.sram)]).reshape(n, 4 * words)
        xw = st.xbuf[(b["base"] + np.arange(words)) % len(st.xbuf)]
        y = arith.matmul_int8(w, arith.unpack_int8(xw)).astype(np.int64)
        if imm & FLAG_ADDEND:
            q = st.queues[b["aux"]]
            y = arith.wrap_int32(y + np.array([_s32(q.popleft()) for _ in range(n)], np.int64))
        st.stats.mac_busy += n * words
        d = _Vec(st, dst, n)
        for i in range(n):
            if d.space is Space.COLOR:
                st.send(dst["base"] & 31, int(y[i]))
            else:
                d.mem[d.raw_addr(i)] = int(y[i]) & WORD
    elif op in isa.VEC_OPS:
        va, vb, d = _Vec(st, a, n), _Vec(st, b, n), _Vec(st, dst, n)
        written = {}       # (space, word) -> the last element of this instruction writing it

        def reads(space, addr, i, what):
            j = written.get((space, addr))
            if j is not None and i - j < isa.RAW_DISTANCE:
                raise PipelineHazard(
                    f"instruction at {pc} ({op.name}, n={n}): element {i} reads {what}, "
                    f"{space.name} word {addr}, which element {j} of the same instruction "
                    f"writes: {i - j} element(s) apart, fewer than isa.RAW_DISTANCE = "
                    f"{isa.RAW_DISTANCE}, so the value would depend on the core's pipeline "
                    f"timing; write to other words or split the instruction")

        acc = 0
        for i in range(n):
            if va.space in (Space.SRAM, Space.XBUF):
                reads(va.space, va.addr(i), i, "its a operand")
            x = va.read(i)
            if op is Op.REDUCE:
                acc = x if i == 0 else (max(acc, x) if imm & FLAG_MAX else _s32(acc + x))
                continue
            if op is Op.VLUT:
                # The table entry of index x (int8 by its low byte): SRAM[b + (x + 128) % 256].
                entry = (b["base"] + ((x + 128) & 255)) % len(st.sram)
                reads(Space.SRAM, entry, i, "its table entry")
                v = _s32(st.sram[entry])
            else:
                y = 0
                if isa.b_used(op, imm):
                    if vb.space in (Space.SRAM, Space.XBUF):
                        reads(vb.space, vb.addr(i), i, "its b operand")
                    y = vb.read(i)
                v = _elementwise(st, op, imm, x, y)
            at = d.write(i, _s32(v))
            if at is not None:
                written[(d.space, at)] = i
        if op is Op.REDUCE:
            st.regs[dst["base"] & 15] = acc
    else:
        _scalar(st, op, imm, dst, a, b_raw)
    nxt = (pc + isa.INSN_WORDS) % len(st.sram)
    st.next_fetch = isa.fetch_cycles(isa.last_sram_write(op, n, imm, dst, b_raw), nxt,
                                     len(st.sram))
    return nxt


def run_tasks(st: PEState, activations, max_instructions: int = 100000) -> PEState:
    """Run the tasks of ``activations`` (``(color, payload)`` in arrival order), each to its
    END or its first malformed instruction. Activations on a color without a task are counted
    as task errors (the core drops them)."""
    for c, payload in activations:
        if c not in st.tasks:
            st.stats.task_errors += 1
            continue
        st.regs[isa.ARG_REG] = _s32(payload)
        pc = st.tasks[c]
        try:
            for _ in range(max_instructions):
                pc = step(st, pc)
                if pc is None:
                    st.stats.tasks += 1
                    break
            else:
                raise RuntimeError(f"task on color {c} ran {max_instructions} instructions")
        except TaskError:
            st.stats.task_errors += 1
    return st
