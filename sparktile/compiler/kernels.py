"""The integer decoder ops as programs of the programmable core (issue 13).

For each op of :mod:`sparktile.golden_model.arith` that the decoder strings together
(:func:`~sparktile.golden_model.intpath.forward`), a function that emits the core's program
and its SRAM layout for given sizes: the data regions (inputs, outputs, scratch) from word 0,
the tables the kernel owns (the exp2 table, the Newton seeds, argmax's index vector), then the
program. Run on one core (the ISS :mod:`sparktile.compiler.iss`, or the RTL
:class:`~sparktile.hdl.core.Core`), a kernel computes exactly the arith function on that PE's
data; ``tests/test_kernels.py`` checks it element for element against arith (the reference:
arith is never changed to suit a kernel).

Every kernel is one task: an activation on its color runs it to END; its inputs are in SRAM
(put there by :meth:`Kernel.image`, as the fabric's RECV or the configuration path would),
its outputs are left in SRAM (:meth:`Kernel.read`). How the cross-PE reductions (the norm's
max and sum of squares, the softmax's max and sum, argmax) are split over the mesh is the
mapping's business; each kernel here reduces over the vector one PE holds.

Element formats: int32 vectors one word per element; int8 vectors four lanes per word
(``Fmt.I8X4``); per-channel requantizations one :class:`~sparktile.hdl.isa.ReqWord` per
channel (signed multipliers); tables one int32 word per entry (there is no int16 format: the
RoPE row and the SiLU table take twice the words a 16-bit format would).

The ops the kernels needed that the first ISA lacked (``docs/architecture.md``, the core
section): VMULSR (a 64-bit product and a rounding shift by an immediate or a register, the
norm's ``x r >> (k + e - 30)`` and the softmax's ``e r >> (k - 15)`` and ``(max - s) mult``),
VSHR by ``b[i]`` (the exp2's per-element shift, the norm's per-token shift), SMULSH with an
unsigned b (the rsqrt Newton step's Q30 factors reach 2**31) and VREQ's signed multiplier
(a negative RMSNorm weight folded into the requantization).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sparktile.golden_model import arith
from sparktile.hdl import isa
from sparktile.hdl.isa import (
    FLAG_MAX,
    FLAG_SAT,
    FLAG_UA,
    FLAG_UB,
    FLAG_VAR,
    Fmt,
    Ins,
    Op,
    reg,
    sram,
)

from . import iss

__all__ = ["Region", "Kernel", "KernelError", "KernelSpaceError", "residual_add", "requantize",
           "argmax", "rsqrt", "rms_norm", "rms_norm_root", "softmax", "rope", "gate_up",
           "norm_eps_part", "eps_table", "TASK_COLOR", "RSQRT_MAX_N", "MAX_NORM_WIDTH",
           "MAX_EPS_Q", "shipped_table", "run_row"]

WORD = 0xFFFFFFFF
#: The color a kernel's task is bound to in the tests and benchmarks.
TASK_COLOR = 5
#: Largest argument of the :func:`rsqrt` kernel: ``N = q 2**8 + r`` with ``q < 2**31``.
RSQRT_MAX_N = (1 << 39) - 1
#: Widest row :func:`rms_norm` takes on one PE (``N < d 2**30 + 2**31`` must stay below
#: :data:`RSQRT_MAX_N`).
MAX_NORM_WIDTH = 256
#: Largest ``eps_q`` + 1 :func:`rms_norm` takes (with d <= 256, ``N < 2**39``).
MAX_EPS_Q = 1 << 38
#: The largest normalization shift of a row: ``bit_length(2**31) - 15``.
MAX_E = 17


class KernelError(ValueError):
    """A size or constant a kernel cannot take: names the value and what is allowed."""


class KernelSpaceError(KernelError):
    """The kernel's data regions leave no room for its program below the task-address limit
    (a layout that places kernels after other data can run out of it)."""


@dataclasses.dataclass(frozen=True)
class Region:
    """A named SRAM region: ``n`` elements of ``kind`` at word ``base`` (``words`` words).

    kind: ``i32`` (int32 words), ``i8`` (int8, four lanes a word), ``req`` (a
    :class:`~sparktile.hdl.isa.ReqWord` per element, from ``(mult, shift)``), ``words``
    (raw words the kernel owns: tables, constants).
    """

    base: int
    n: int
    kind: str

    @property
    def words(self) -> int:
        return -(-self.n // 4) if self.kind == "i8" else self.n

    def fmt(self) -> Fmt:
        return Fmt.I8X4 if self.kind == "i8" else Fmt.I32

    def at(self, element: int = 0) -> isa.Src:
        """The SRAM operand starting at ``element`` (int8: a multiple of four)."""
        if self.kind == "i8":
            if element % 4:
                raise KernelError(f"an int8 operand must start on a word (element % 4 == 0), "
                                  f"not element {element}")
            return sram(self.base + element // 4, 1, Fmt.I8X4)
        return sram(self.base + element)

    def encode(self, value) -> list[int]:
        if self.kind == "req":
            mult, shift = (np.broadcast_to(np.asarray(v, np.int64), (self.n,)) for v in value)
            return [isa.req_word(int(m), int(s)) for m, s in zip(mult, shift, strict=True)]
        v = np.asarray(value, np.int64).reshape(-1)
        if v.size != self.n:
            raise KernelError(f"a {self.kind} region of {self.n} elements, not {v.size}")
        if self.kind == "i8":
            pad = np.zeros(self.words * 4, np.int64)
            pad[:self.n] = v
            return [int(w) for w in arith.pack_int8(pad)]
        return [int(w) & WORD for w in v]

    def decode(self, sram_words) -> np.ndarray:
        w = np.asarray([int(sram_words[(self.base + k) % len(sram_words)])
                        for k in range(self.words)], np.uint32)
        if self.kind == "i8":
            return arith.unpack_int8(w)[:self.n].astype(np.int64)
        return w.view(np.int32).astype(np.int64)


@dataclasses.dataclass
class Kernel:
    """A decoder op as one core task: its program, where it lives and its SRAM layout."""

    name: str
    program: list
    code_base: int
    regions: dict
    inputs: tuple
    outputs: tuple
    consts: dict          #: region name -> words the kernel writes (tables, index vectors)
    elements: int         #: the elements the op produces (for cycles per element)
    transforms: dict = dataclasses.field(default_factory=dict)  #: input -> layout function
    #: The kernel's exchanges with the rest of its row, in order: for each, how the mesh
    #: combines the words every PE sends (``"max"`` or ``"sum"`` per word); the combined
    #: words come back on :attr:`reduce`'s receive color.
    exchanges: list = dataclasses.field(default_factory=list)
    reduce: tuple | None = None   #: (send color, receive color) of the exchanges
    #: The end of the kernel's data (regions and tables): where a mapping that strings
    #: kernels together places the next one's data. The program starts at the next
    #: instruction row, :attr:`code_base`.
    data_end: int | None = None

    @property
    def words(self) -> int:
        """SRAM words the kernel uses: data, tables and program."""
        return self.code_base + isa.INSN_WORDS * len(self.program)

    def image(self, **values) -> dict:
        """``{address: word}``: the inputs (named as :attr:`inputs`), the tables, the
        program. A missing or unknown input is an error naming it."""
        missing = set(self.inputs) - set(values)
        extra = set(values) - set(self.inputs)
        if missing or extra:
            raise KernelError(f"kernel {self.name} takes inputs {', '.join(self.inputs)}; "
                              f"missing {sorted(missing)}, unknown {sorted(extra)}")
        img = {}
        for name in self.inputs:
            v = values[name]
            if name in self.transforms:
                v = self.transforms[name](v)
            r = self.regions[name]
            img.update({r.base + k: w for k, w in enumerate(r.encode(v))})
        for name, words in self.consts.items():
            r = self.regions[name]
            img.update({r.base + k: int(w) & WORD for k, w in enumerate(words)})
        img.update({self.code_base + k: w for k, w in enumerate(isa.assemble(self.program))})
        return img

    def read(self, name: str, sram_words) -> np.ndarray:
        return self.regions[name].decode(sram_words)

    def run_iss(self, sram_words: int | None = None, received=(), **values):
        """Run on the ISS; returns ``({output: array}, stats)``. ``received``: the words
        the exchanges receive (all of them, in order), queued before the task starts."""
        st = self._run(sram_words, received, values)
        return {o: self.read(o, st.sram) for o in self.outputs}, st.stats

    def _run(self, sram_words, received, values):
        size = sram_words or 1 << max(6, (self.words - 1).bit_length())
        st = iss.PEState.new(size, 64)
        for a, w in self.image(**values).items():
            st.sram[a] = w
        st.tasks = {TASK_COLOR: self.code_base}
        if self.reduce is not None:
            st.bind_queue(self.reduce[1])
            st.queues[self.reduce[1]].extend(int(w) & WORD for w in received)
        iss.run_tasks(st, [(TASK_COLOR, 0)])
        if st.stats.task_errors or st.stats.tasks != 1:
            raise RuntimeError(f"kernel {self.name}: the task did not end cleanly "
                               f"({st.stats})")
        return st


def run_row(parts, sram_words: int | None = None):
    """Run the kernels of one row split over PEs (``parts``: ``[(kernel, inputs)]``, each
    with the same exchanges) on the ISS, with the mesh's combining modelled by its
    definition: exchange ``j``'s combined words are the max or the sum (int32, wrapping) over
    the PEs of the words each sent. Each PE runs once per exchange plus once, each run with
    the combined words known so far (a PE's ``j``-th partial depends only on the first
    ``j - 1`` combined words). Returns ``([({output: array}, stats, sent words)], the
    combined words)``."""
    phases = {len(k.exchanges) for k, _ in parts}
    if len(phases) != 1:
        raise KernelError(f"the parts of a row must have the same exchanges, not {phases}")
    combined = []
    for how in parts[0][0].exchanges:
        sent = []
        for k, values in parts:
            st = k._run(sram_words, combined + [0] * (_words(k) - len(combined)), values)
            sent.append(st.sent.get(k.reduce[0], [])[len(combined):len(combined) + len(how)])
        for w, op in enumerate(how):
            vals = [int(iss._s32(s[w])) for s in sent]
            combined.append(max(vals) if op == "max" else int(arith.wrap_int32(sum(vals))))
    out = []
    for k, values in parts:
        st = k._run(sram_words, combined, values)
        out.append(({o: k.read(o, st.sram) for o in k.outputs}, st.stats,
                    [int(iss._s32(w)) for w in st.sent.get(k.reduce[0], [])]))
    return out, combined


def _words(k):
    return sum(len(h) for h in k.exchanges)


class _Builder:
    """Regions from word 0, then the program."""

    def __init__(self, name, reduce=None, place=None):
        self.name, self.top, self.regions, self.consts, self.prog = name, 0, {}, {}, []
        self.transforms, self.exchanges = {}, []
        # ``place = (top, bind)``: allocate from word ``top`` and use the regions of ``bind``
        # (name -> Region) instead of new ones: how a mapping strings kernels into one
        # program over one SRAM (its inputs, outputs, shared scratch and tables).
        # ``place = (top, bind, exchange)``: ``exchange(builder, region, n, how)`` emits an
        # exchange's traffic (the mapping's reduction tree and broadcast) instead of the
        # SEND and RECV on ``reduce``'s colors.
        self.bind, self.xhook = {}, None
        if place is not None:
            self.top, self.bind = place[0], dict(place[1])
            self.xhook = place[2] if len(place) > 2 else None
        if reduce is not None:
            if (not isinstance(reduce, tuple) or len(reduce) != 2
                    or any(not isinstance(c, int) or not 0 <= c < 32 for c in reduce)
                    or reduce[0] == reduce[1] or TASK_COLOR in reduce):
                raise KernelError(f"{name}: reduce must be (send color, receive color), two "
                                  f"different colors in 0..31 other than the task's "
                                  f"{TASK_COLOR}, not {reduce!r}")
            self.xchg = self.region("xchg", 2)
        self.reduce = reduce

    def exchange(self, regs, how):
        """With ``reduce``: send registers ``regs`` on the send color, receive the row's
        combined words (``how``: ``"max"``/``"sum"`` each) on the receive color back into
        them (a PE's partial reductions meet the rest of its row; RECV waits for them).
        Without ``reduce``: nothing (the PE holds the whole row)."""
        if self.reduce is None:
            return
        x = self.xchg.base
        self(*[Ins(Op.SST, a=reg(r), b=x + i) for i, r in enumerate(regs)])
        if self.xhook is not None:
            self.xhook(self, self.xchg, len(regs), tuple(how))
        else:
            self(Ins(Op.SEND, n=len(regs), dst=isa.color(self.reduce[0]), a=sram(x)),
                 Ins(Op.RECV, n=len(regs), dst=sram(x), a=isa.color(self.reduce[1])))
        self(*[Ins(Op.SLD, dst=reg(r), b=x + i) for i, r in enumerate(regs)])
        self.exchanges.append(tuple(how))

    def region(self, name, n, kind="i32"):
        if name in self.bind:
            r = self.bind[name]
            if r.n < n or (r.kind == "i8") != (kind == "i8"):
                raise KernelError(f"{self.name}: region {name!r} bound to {r}, which cannot "
                                  f"hold {n} elements of kind {kind}")
            self.regions[name] = r
            return r
        r = Region(self.top, n, kind)
        self.regions[name] = r
        self.top += r.words
        return r

    def const(self, name, words):
        bound = name in self.bind
        r = self.region(name, len(words), "words")
        if not bound:       # a bound table was written by whoever placed it
            self.consts[name] = [int(w) for w in words]
        return r

    def __call__(self, *insns):
        self.prog.extend(insns)

    def done(self, inputs, outputs, elements) -> Kernel:
        code_base = isa.align_insn(self.top)
        if code_base >= isa.TASK_ADDR_LIMIT:
            raise KernelSpaceError(f"kernel {self.name}: {self.top} data words leave no room for "
                              f"the program below word {isa.TASK_ADDR_LIMIT}")
        return Kernel(self.name, self.prog + [Ins(Op.END)], code_base,
                      self.regions, tuple(inputs), tuple(outputs), self.consts, elements,
                      self.transforms, self.exchanges, self.reduce, self.top)


def _size(name, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise KernelError(f"{name} must be an integer in {lo}..{hi}, not {value!r}")


# Registers: r0 holds 0 in every kernel that needs it; the others are named where used.
ZERO = 0


def _li(r, value):
    return Ins(Op.SLI, dst=reg(r), b=int(value) & WORD)


# ---- element-wise kernels ---------------------------------------------------------------

def residual_add(n: int) -> Kernel:
    """``arith.residual_add(x, y)`` of two int32 vectors: one saturating VADD."""
    _size("residual_add length", n, 1, 0xFFFF)
    k = _Builder("residual_add")
    x, y, out = k.region("x", n), k.region("y", n), k.region("out", n)
    k(Ins(Op.VADD, n=n, imm=FLAG_SAT, dst=out.at(), a=x.at(), b=y.at()))
    return k.done(("x", "y"), ("out",), n)


def requantize(n: int) -> Kernel:
    """``arith.requantize_to(acc, mult, shift, 8)`` per channel (signed ``mult``): VREQ of
    int32 ``acc`` by one ReqWord per channel into int8 lanes."""
    _size("requantize length", n, 1, 0xFFFF)
    k = _Builder("requantize")
    acc, q, out = k.region("acc", n), k.region("q", n, "req"), k.region("out", n, "i8")
    k(Ins(Op.VREQ, n=n, dst=out.at(), a=acc.at(), b=q.at()))
    return k.done(("acc", "q"), ("out",), n)


def gate_up(n: int) -> Kernel:
    """``arith.gate_up_int(gate, up, table, mult, shift)`` over ``n`` channels: the SiLU
    table by the int8 gate (VLUT), times the int8 up (VMUL, |p| < 2**22), requantized per
    channel (VREQ) into int8 lanes."""
    _size("gate_up length", n, 1, 0xFFFF)
    k = _Builder("gate_up")
    gate, up = k.region("gate", n, "i8"), k.region("up", n, "i8")
    table, q = k.region("table", 256), k.region("q", n, "req")
    out, p = k.region("out", n, "i8"), k.region("p", n)
    k(Ins(Op.VLUT, n=n, dst=p.at(), a=gate.at(), b=table.at()),
      Ins(Op.VMUL, n=n, dst=p.at(), a=p.at(), b=up.at()),
      Ins(Op.VREQ, n=n, dst=out.at(), a=p.at(), b=q.at()))
    return k.done(("gate", "up", "table", "q"), ("out",), n)


def rope(head_dim: int, *, place=None) -> Kernel:
    """``arith.rope_int`` of one head (int8 ``x``, ``head_dim`` channels) by one table row.

    The row is stored as int32 words ``cos[j]`` and ``sin'[j]``, with the rotation's sign
    folded into the table (``sin'[j] = -sin[j]`` for ``j < head_dim / 2``, the layout the
    compiler writes: :meth:`Kernel.image` takes the golden ``sin`` row), so that
    ``acc[j] = x[j] cos[j] + x[j +- h] sin'[j]`` is three VMULs (int8 x Q1.14, exact) and a
    VADD, then VREQ per channel. ``head_dim`` must be a multiple of 8 (the half starts on an
    int8x4 word)."""
    _size("rope head_dim", head_dim, 8, 0xFFFF)
    if head_dim % 8:
        raise KernelError(f"rope head_dim must be a multiple of 8 (each half starts on a "
                          f"word of four int8 lanes), not {head_dim}")
    h = head_dim // 2
    k = _Builder("rope", place=place)
    x, cos, sin = k.region("x", head_dim, "i8"), k.region("cos", head_dim), \
        k.region("sin", head_dim)
    q, out = k.region("q", head_dim, "req"), k.region("out", head_dim, "i8")
    acc, rot = k.region("acc", head_dim), k.region("rot", head_dim)

    def fold(s):
        s = np.asarray(s, np.int64).copy()
        s[:h] = -s[:h]
        return s
    k.transforms["sin"] = fold
    k(Ins(Op.VMUL, n=head_dim, dst=acc.at(), a=x.at(), b=cos.at()),
      Ins(Op.VMUL, n=h, dst=rot.at(), a=x.at(h), b=sin.at()),
      Ins(Op.VMUL, n=h, dst=rot.at(h), a=x.at(), b=sin.at(h)),
      Ins(Op.VADD, n=head_dim, dst=acc.at(), a=acc.at(), b=rot.at()),
      Ins(Op.VREQ, n=head_dim, dst=out.at(), a=acc.at(), b=q.at()))
    return k.done(("x", "cos", "sin", "q"), ("out",), head_dim)


# ---- argmax ---------------------------------------------------------------------------

def argmax(n: int, *, offset: int = 0, total: int | None = None,
           reduce: tuple | None = None, place=None) -> Kernel:
    """``arith.argmax_int(z)`` of ``n`` int32 logits, ties to the lowest index.

    ``M = max z`` (REDUCE), ``t = z - M`` wrapping (0 exactly where ``z == M``, else
    ``2**32 - (M - z)`` read unsigned), ``s = sat32(t_unsigned * -2**20)`` (VMULSR: 0 where
    equal, at most ``-2**20`` elsewhere), ``key = s + (n - i)`` (an index vector the kernel
    owns), ``K = max key`` (REDUCE): the index is ``n - K``. Output: one word.

    Split over PEs (``reduce``: send and receive colors): this PE holds logits
    ``offset .. offset + n - 1`` of ``total``; ``M`` and ``K`` are exchanged (both combined
    by max) and the index vector is ``total - (offset + i)``, so every PE ends with the
    row's index."""
    _size("argmax length", n, 1, 0xFFFF)
    total = n if total is None else total
    _size("argmax total", total, n, 0xFFFF)
    _size("argmax offset", offset, 0, total - n)
    k = _Builder("argmax", reduce, place)
    z, out = k.region("z", n), k.region("out", 1)
    idx = k.const("idx", [total - offset - i for i in range(n)])
    t = k.region("t", n)
    m_, negm, big, kk, nn = 1, 2, 3, 4, 5
    k(_li(ZERO, 0),
      Ins(Op.REDUCE, n=n, imm=FLAG_MAX, dst=reg(m_), a=z.at()))
    k.exchange([m_], ["max"])
    k(Ins(Op.SSUB, dst=reg(negm), a=reg(ZERO), b=reg(m_)),
      Ins(Op.VADD, n=n, dst=t.at(), a=z.at(), b=reg(negm)),
      _li(big, -(1 << 20)),
      Ins(Op.VMULSR, n=n, imm=FLAG_UA, dst=t.at(), a=t.at(), b=reg(big)),
      Ins(Op.VADD, n=n, dst=t.at(), a=t.at(), b=idx.at()),
      Ins(Op.REDUCE, n=n, imm=FLAG_MAX, dst=reg(kk), a=t.at()))
    k.exchange([kk], ["max"])
    k(_li(nn, total),
      Ins(Op.SSUB, dst=reg(nn), a=reg(nn), b=reg(kk)),
      Ins(Op.SST, a=reg(nn), b=out.base))
    return k.done(("z",), ("out",), n)


# ---- the Newton iterations ----------------------------------------------------------------

def _select(k, dst, c, a, b, tmp):
    """``dst = c ? a : b`` for ``c`` in {0, 1}, branch-free: ``b + c (a - b)`` (wrapping,
    exact because the result fits)."""
    k(Ins(Op.SSUB, dst=reg(tmp), a=reg(a), b=reg(b)),
      Ins(Op.SMULSH, dst=reg(tmp), a=reg(c), b=reg(tmp)),
      Ins(Op.SADD, dst=reg(dst), a=reg(b), b=reg(tmp)))


def _rsqrt_steps(k, q, r, seed_base, mant, shift):
    """``arith.rsqrt_int(N)`` for ``N = q 2**8 + r`` (registers; ``0 <= q < 2**31``,
    ``0 <= r < 256``) into registers ``mant`` and ``shift``; uses r0 (= 0) and r1..r14
    except ``q``, ``r`` (overwritten) and the outputs, which must be r13 and r14.

    * ``N = max(N, 1)``: ``r = max(r, 1 - [q > 0])``.
    * ``b = bit_length(N)``: ``bit_length(q) + 8`` if ``q > 0`` else ``bit_length(r)``.
    * ``s = b - 31`` made even (``2 shift_round(s, 1)``), at most 8 (``N < 2**39``).
    * ``m = N >> s`` (floor) or ``N << -s``, in ``[2**29, 2**31)``: for ``b <= 31`` N fits a
      register (``(q << 8) + r``, shifted left); else ``(q << (8 - s)) + floor(r / 2**s)``
      (exact: ``s <= 8``); the two computed and one selected (no branches).
    * the seed by ``m >> 24``; two Newton steps ``y (3 - a y^2) / 2`` in Q30 with 64-bit
      products floored: ``y^2`` reaches 2**31 and ``3 - a y^2`` 2**31 + err, so both are
      used as unsigned factors (SMULSH with FLAG_UB); ``mant = shift_round(y, 14)``,
      ``shift = 31 + s / 2``.
    """
    assert (mant, shift) == (13, 14) and q not in (13, 14) and r not in (13, 14)
    c, t, bq, br, bn, s, ma, mb, u, one = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
    assert not {c, t, bq, br, bn, s, ma, mb, u, one} & {q, r}
    k(Ins(Op.SLT, dst=reg(c), a=reg(ZERO), b=reg(q)),          # c = q > 0
      _li(one, 1),
      Ins(Op.SSUB, dst=reg(t), a=reg(one), b=reg(c)),
      Ins(Op.SMAX, dst=reg(r), a=reg(r), b=reg(t)),              # N = max(N, 1)
      Ins(Op.SBITLEN, dst=reg(bq), a=reg(q)),
      Ins(Op.SADD, dst=reg(bq), a=reg(bq), b=8),
      Ins(Op.SBITLEN, dst=reg(br), a=reg(r)))
    _select(k, bn, c, bq, br, t)                                 # b = bit_length(N)
    k(Ins(Op.SSUB, dst=reg(s), a=reg(bn), b=31),
      Ins(Op.SSHR, imm=1, dst=reg(s), a=reg(s)),
      Ins(Op.SSHL, imm=1, dst=reg(s), a=reg(s)),                  # s even
      # case b <= 31: N in a register, shifted left by -s
      Ins(Op.SSHL, imm=8, dst=reg(ma), a=reg(q)),
      Ins(Op.SADD, dst=reg(ma), a=reg(ma), b=reg(r)),
      Ins(Op.SSUB, dst=reg(t), a=reg(ZERO), b=reg(s)),
      Ins(Op.SSHLV, dst=reg(ma), a=reg(ma), b=reg(t)),
      # case b > 31: (q << (8 - s)) + floor(r * 2**(30 - s) / 2**30)
      _li(t, 8),
      Ins(Op.SSUB, dst=reg(t), a=reg(t), b=reg(s)),
      Ins(Op.SSHLV, dst=reg(mb), a=reg(q), b=reg(t)),
      _li(t, 30),
      Ins(Op.SSUB, dst=reg(t), a=reg(t), b=reg(s)),
      Ins(Op.SSHLV, dst=reg(u), a=reg(one), b=reg(t)),
      Ins(Op.SMULSH, imm=30, dst=reg(u), a=reg(r), b=reg(u)),
      Ins(Op.SADD, dst=reg(mb), a=reg(mb), b=reg(u)),
      Ins(Op.SLT, dst=reg(c), a=reg(bn), b=32))
    m = bq          # bq is free again
    _select(k, m, c, ma, mb, t)
    y, y2, three = br, bn, ma
    k(Ins(Op.SMULSH, imm=24, dst=reg(t), a=reg(m), b=1),
      Ins(Op.SADD, dst=reg(t), a=reg(t), b=seed_base - 32),
      Ins(Op.SLDR, dst=reg(y), a=reg(t)),
      _li(three, 3 << 30))
    for _ in range(2):
        k(Ins(Op.SMULSH, imm=30, dst=reg(y2), a=reg(y), b=reg(y)),           # y^2, Q30
          Ins(Op.SMULSH, imm=30 | FLAG_UB, dst=reg(y2), a=reg(m), b=reg(y2)),  # a y^2
          Ins(Op.SSUB, dst=reg(y2), a=reg(three), b=reg(y2)),                # 3 - a y^2
          Ins(Op.SMULSH, imm=31 | FLAG_UB, dst=reg(y), a=reg(y), b=reg(y2)))
    k(Ins(Op.SSHR, imm=14, dst=reg(mant), a=reg(y)),
      Ins(Op.SMULSH, imm=1, dst=reg(shift), a=reg(s), b=1),
      Ins(Op.SADD, dst=reg(shift), a=reg(shift), b=31))


def _recip_steps(k, n, seed_base, mant, shift):
    """``arith.recip_int(n)`` for ``1 <= n < 2**31`` (register ``n``) into ``mant`` and
    ``shift`` (the 25-instruction program of ``tests/test_core_sim.py``): normalize by the
    leading-one count, seed by the top bits, two Newton steps ``y (2 - a y)`` floored to Q30,
    round to 16 bits. Uses r1..r12."""
    b, s, t, m, idx, y, ay, two = 1, 2, 3, 4, 5, 6, 7, 8
    assert n not in (b, s, t, m, idx, y, ay, two, mant, shift)
    k(Ins(Op.SBITLEN, dst=reg(b), a=reg(n)),
      Ins(Op.SSUB, dst=reg(s), a=reg(b), b=31),
      _li(t, 31),
      Ins(Op.SSUB, dst=reg(t), a=reg(t), b=reg(b)),
      Ins(Op.SSHLV, dst=reg(m), a=reg(n), b=reg(t)),
      Ins(Op.SMULSH, imm=24, dst=reg(idx), a=reg(m), b=1),
      Ins(Op.SADD, dst=reg(idx), a=reg(idx), b=seed_base - 64),
      Ins(Op.SLDR, dst=reg(y), a=reg(idx)),
      _li(two, 2 << 30))
    for _ in range(2):
        k(Ins(Op.SMULSH, imm=30, dst=reg(ay), a=reg(m), b=reg(y)),
          Ins(Op.SSUB, dst=reg(ay), a=reg(two), b=reg(ay)),
          Ins(Op.SMULSH, imm=30, dst=reg(y), a=reg(y), b=reg(ay)))
    k(Ins(Op.SSHR, imm=14, dst=reg(mant), a=reg(y)),
      Ins(Op.SADD, dst=reg(shift), a=reg(s), b=46))


def rsqrt() -> Kernel:
    """``arith.rsqrt_int(N)`` for ``0 <= N <= RSQRT_MAX_N`` (2**39 - 1), N given as two
    words ``(q, r) = (N >> 8, N & 255)`` (the norm's sum of squares arrives in this form);
    outputs ``mant`` and ``shift`` (one word each)."""
    k = _Builder("rsqrt")
    n, mant, shift = k.region("n", 2), k.region("mant", 1), k.region("shift", 1)
    seed = k.const("seed", arith.RSQRT_SEED)
    k.transforms["n"] = _split_n
    q, r = 11, 12
    k(_li(ZERO, 0), Ins(Op.SLD, dst=reg(q), b=n.base), Ins(Op.SLD, dst=reg(r), b=n.base + 1))
    _rsqrt_steps(k, q, r, seed.base, 13, 14)
    k(Ins(Op.SST, a=reg(13), b=mant.base), Ins(Op.SST, a=reg(14), b=shift.base))
    return k.done(("n",), ("mant", "shift"), 1)


def _split_n(n):
    n = int(n)
    if not 0 <= n <= RSQRT_MAX_N:
        raise KernelError(f"rsqrt kernel argument must be in 0..{RSQRT_MAX_N}, not {n}")
    return [n >> 8, n & 255]


# ---- RMSNorm ----------------------------------------------------------------------------

def _eps_table(eps_q: int) -> list[int]:
    """``eps_q >> 2e`` for every ``e`` a row can need (``bit_length(max|x|) <= 32``: ``e <=
    17``), split as the sum of squares is: build-time constants of the model's eps_q."""
    if not isinstance(eps_q, int) or not 0 <= eps_q < MAX_EPS_Q:
        raise KernelError(f"rms_norm eps_q must be an integer in 0..{MAX_EPS_Q - 1} (the sum "
                          f"of squares plus eps_q must stay below 2**39), not {eps_q!r}")
    return [w for e_ in range(MAX_E + 1)
            for w in ((eps_q >> 2 * e_) >> 8, (eps_q >> 2 * e_) & 255)]


def _eps_words(k, e, hi, lo, eps_base):
    """``E = eps_q >> 2e`` from the eps table of its 18 possible values (register ``e``),
    as ``(E >> 8, E & 255)`` into registers ``hi`` and ``lo``. Uses r8."""
    p = 8
    k(Ins(Op.SSHL, imm=1, dst=reg(p), a=reg(e)),
      Ins(Op.SADD, dst=reg(p), a=reg(p), b=eps_base),
      Ins(Op.SLDR, dst=reg(hi), a=reg(p)),
      Ins(Op.SADD, dst=reg(p), a=reg(p), b=1),
      Ins(Op.SLDR, dst=reg(lo), a=reg(p)))


def _norm_rsqrt(k, e, hi, sm, eps_base, seed_base):
    """The norm's step 3-4 from the row's combined ``(Hi, Lo)`` (registers ``hi``, ``sm``)
    and its ``e`` (register): ``E = eps_q >> 2e`` from the eps table (none with
    ``eps_base=None``: the sums carry it already), ``N = q 2**8 + r``, ``(mant, shift) =
    rsqrt(N)`` into r13, r14. Uses r7, r8, r11, r12 and the rsqrt's."""
    ep, p = 7, 8
    if eps_base is not None:
        _eps_words(k, e, ep, 11, eps_base)
        k(Ins(Op.SADD, dst=reg(hi), a=reg(hi), b=reg(ep)),
          Ins(Op.SADD, dst=reg(sm), a=reg(sm), b=reg(11)))                  # Lo'
    k(Ins(Op.SMULSH, imm=8, dst=reg(p), a=reg(sm), b=1),
      Ins(Op.SADD, dst=reg(11), a=reg(hi), b=reg(p)),                     # q
      Ins(Op.SSHL, imm=8, dst=reg(p), a=reg(p)),
      Ins(Op.SSUB, dst=reg(12), a=reg(sm), b=reg(p)))                     # r
    _rsqrt_steps(k, 11, 12, seed_base, 13, 14)


def _norm_e(k, mx, e):
    """``e = max(0, bit_length(M) - 14)`` from the row's max ``M`` of ``floor(|x| / 2)``."""
    k(Ins(Op.SBITLEN, dst=reg(e), a=reg(mx)),
      Ins(Op.SSUB, dst=reg(e), a=reg(e), b=14),
      Ins(Op.SMAX, dst=reg(e), a=reg(e), b=0))


def rms_norm_root(eps_q: int, *, place=None, eps_in_sums: bool = False) -> Kernel:
    """The root's part of a :func:`rms_norm` split with ``rsqrt_at_root``: from the row's
    combined max ``m`` (one word) and sums ``hilo`` (two words), the rsqrt ``out = (mant,
    shift)`` that every part receives instead of the sums: the Newton steps run once, on the
    PE that combines, instead of on every part (and their ~60 instructions are not in every
    part's SRAM). ``eps_in_sums``: one of the parts added ``eps_q >> 2e`` to the sums
    (:func:`norm_eps_part`), so the root neither needs ``m`` nor adds it."""
    k = _Builder("rms_norm_root", place=place)
    m, hilo, out = k.region("m", 1), k.region("hilo", 2), k.region("out", 2)
    seed = k.const("seed", arith.RSQRT_SEED)
    eps = None if eps_in_sums else k.const("eps", _eps_table(eps_q))
    mx, e, hi, sm = 2, 3, 5, 6
    k(_li(ZERO, 0),
      Ins(Op.SLD, dst=reg(hi), b=hilo.base),
      Ins(Op.SLD, dst=reg(sm), b=hilo.base + 1))
    if eps is not None:
        k(Ins(Op.SLD, dst=reg(mx), b=m.base))
        _norm_e(k, mx, e)
    _norm_rsqrt(k, e, hi, sm, None if eps is None else eps.base, seed.base)
    k(Ins(Op.SST, a=reg(13), b=out.base), Ins(Op.SST, a=reg(14), b=out.base + 1))
    return k.done(("m", "hilo"), ("out",), 1)


def norm_eps_part(k, mx_addr: int, out_addr: int, eps_base: int) -> None:
    """Emit, into program ``k``, the share of a split RMSNorm's sums that a part without
    channels can carry: from the row's max (word ``mx_addr``, as every part receives it),
    ``e`` and then ``(eps_q >> 2e >> 8, eps_q >> 2e & 255)`` (the eps table at ``eps_base``,
    :func:`eps_table`) into words ``out_addr``, ``out_addr + 1``, which it sends instead of
    zeros: the sums then reach the root with the epsilon in them (``rms_norm_root`` with
    ``eps_in_sums``), off the root's serial path. Uses r2, r3, r5, r6, r8."""
    mx, e, hi, lo = 2, 3, 5, 6
    k(Ins(Op.SLD, dst=reg(mx), b=mx_addr))
    _norm_e(k, mx, e)
    _eps_words(k, e, hi, lo, eps_base)
    k(Ins(Op.SST, a=reg(hi), b=out_addr), Ins(Op.SST, a=reg(lo), b=out_addr + 1))


def eps_table(eps_q: int) -> list[int]:
    """The table :func:`norm_eps_part` reads (``eps_q >> 2e`` split, for every ``e``)."""
    return _eps_table(eps_q)


def _norm_max_scalar(k, x, d, mx):
    """Step 1 of :func:`rms_norm` channel by channel: ``M = max_i max(floor(x_i / 2),
    floor(-x_i / 2))`` (SMULSH by 1 and by -1 with a flooring shift of 1: a 64-bit product,
    so ``-x`` does not wrap at -2**31) into register ``mx``. Uses r7, r8."""
    t, u = 7, 8
    k(_li(mx, 0))
    for i in range(d):
        k(Ins(Op.SLD, dst=reg(t), b=x.base + i),
          Ins(Op.SMULSH, imm=1, dst=reg(u), a=reg(t), b=1),
          Ins(Op.SMAX, dst=reg(mx), a=reg(mx), b=reg(u)),
          Ins(Op.SMULSH, imm=1, dst=reg(u), a=reg(t), b=0xFFFFFFFF),         # times -1
          Ins(Op.SMAX, dst=reg(mx), a=reg(mx), b=reg(u)))


def _norm_sums_scalar(k, x, d, e, hi, sm):
    """Steps 2 and 3 of :func:`rms_norm` channel by channel: ``xs = floor(x 2**(31-e) /
    2**31)`` (SMULSH by the unsigned ``2**(31 - e)`` with a flooring shift of 31: exact for
    every int32 ``x``), ``sq = xs^2``, ``S += sq`` (wrapping), ``Hi += floor(sq / 256)``:
    ``Hi`` into register ``hi``, ``S`` into ``sm`` (the caller forms ``Lo``). Uses r4, r7,
    r8."""
    f, t, u = 4, 7, 8
    k(_li(f, 31),
      Ins(Op.SSUB, dst=reg(f), a=reg(f), b=reg(e)),
      _li(t, 1),
      Ins(Op.SSHLV, dst=reg(f), a=reg(t), b=reg(f)),                     # 2**(31 - e)
      _li(hi, 0), _li(sm, 0))
    for i in range(d):
        k(Ins(Op.SLD, dst=reg(t), b=x.base + i),
          Ins(Op.SMULSH, imm=31 | FLAG_UB, dst=reg(t), a=reg(t), b=reg(f)),   # xs
          Ins(Op.SMULSH, dst=reg(t), a=reg(t), b=reg(t)),                      # sq
          Ins(Op.SADD, dst=reg(sm), a=reg(sm), b=reg(t)),
          Ins(Op.SMULSH, imm=8, dst=reg(u), a=reg(t), b=1),                    # sq // 256
          Ins(Op.SADD, dst=reg(hi), a=reg(hi), b=reg(u)))


def rms_norm(d: int, eps_q: int, *, width: int | None = None,
             reduce: tuple | None = None, place=None, rsqrt_at_root: bool = False,
             scalar: bool = False) -> Kernel:
    """``arith.rms_norm_int(x, eps_q, mult, shift)`` of one token's int32 row of ``d``
    channels (``d <= 256``; ``0 <= eps_q < 2**38``, a model constant: the kernel stores
    ``eps_q >> 2e`` for the 18 possible ``e``).

    1. ``M = max_i floor(|x_i| / 2)`` = ``max(-shift_round(x, 1), -shift_round(-x, 1))``
       over both halves (VSHR, VMULSR for ``-x`` without wrapping, a negating VMUL, REDUCE
       max over 2d); ``bit_length(max|x|) = bit_length(M) + 1``, so
       ``e = max(0, bit_length(M) - 14)``.
    2. ``xs = floor(x / 2**e)`` = ``shift_round(sat32(x - 2**(e-1)), e)`` (saturating VADD,
       VSHR by the register e: exact also where the subtraction saturates).
    3. ``sq = xs^2`` (<= 2**30); ``Hi = sum floor(sq / 256)``, ``S = sum sq`` wrapping, so
       ``Lo = S - 256 Hi`` (mod 2**32, exact: ``0 <= Lo < 256 d``); with
       ``E = eps_q >> 2e`` (SLDR from the kernel's table by ``e``) carried in,
       ``N = q 2**8 + r``.
    4. ``(r, k) = rsqrt(N)`` (:func:`_rsqrt_steps`).
    5. ``t = shift_round(x r, k + e - 30)`` (VMULSR by the register shift; a negative shift
       is folded into ``r << -shift``, < 2**31), then VREQ per channel into int8 lanes.

    ``rsqrt_at_root`` (split only): the second exchange brings back ``(mant, shift)``,
    computed from the combined sums by the root (:func:`rms_norm_root`), not the sums.

    ``scalar``: steps 1 to 3 channel by channel in scalar ops (:func:`_norm_max_scalar`,
    :func:`_norm_sums_scalar`), which take one cycle each where a vector op pays its
    pipeline's five: for the few channels of one PE of a split row (at 4 channels about 25
    and 35 cycles for the two parts against 44 and 70), at about eleven instructions a
    channel of program.
    """
    _size("rms_norm width d", d, 1, MAX_NORM_WIDTH)
    width = d if width is None else width
    _size("rms_norm row width", width, d, MAX_NORM_WIDTH)
    eps_words = _eps_table(eps_q)
    if rsqrt_at_root and reduce is None:
        raise KernelError("rms_norm: rsqrt_at_root needs a split row (reduce)")
    k = _Builder("rms_norm", reduce, place)
    x, q, out = k.region("x", d), k.region("q", d, "req"), k.region("out", d, "i8")
    a, b = k.region("a", 2 * d), k.region("b", d)
    if not rsqrt_at_root:
        seed = k.const("seed", arith.RSQRT_SEED)
        eps = k.const("eps", eps_words)
    neg1, mx, e, off, hi, sm, p = 1, 2, 3, 4, 5, 6, 8
    k(_li(ZERO, 0))
    if scalar:
        _norm_max_scalar(k, x, d, mx)
    else:
        k(_li(neg1, -1),
          Ins(Op.VSHR, n=d, imm=1, dst=a.at(), a=x.at()),                  # sr(x, 1)
          Ins(Op.VMULSR, n=d, imm=1, dst=a.at(d), a=x.at(), b=reg(neg1)),  # sr(-x, 1)
          Ins(Op.VMUL, n=2 * d, dst=a.at(), a=a.at(), b=reg(neg1)),
          Ins(Op.REDUCE, n=2 * d, imm=FLAG_MAX, dst=reg(mx), a=a.at()))
    k.exchange([mx], ["max"])
    _norm_e(k, mx, e)
    if scalar:
        _norm_sums_scalar(k, x, d, e, hi, sm)
    else:
        k(_li(off, 1),
          Ins(Op.SSHLV, dst=reg(off), a=reg(off), b=reg(e)),
          Ins(Op.SMULSH, imm=1, dst=reg(off), a=reg(off), b=1),           # 2**(e-1) or 0
          Ins(Op.SSUB, dst=reg(off), a=reg(ZERO), b=reg(off)),
          Ins(Op.VADD, n=d, imm=FLAG_SAT, dst=b.at(), a=x.at(), b=reg(off)),
          Ins(Op.VSHR, n=d, imm=FLAG_VAR, dst=b.at(), a=b.at(), b=reg(e)),  # xs
          Ins(Op.VMUL, n=d, dst=b.at(), a=b.at(), b=b.at()),              # sq
          _li(off, -128),
          Ins(Op.VADD, n=d, dst=a.at(), a=b.at(), b=reg(off)),
          Ins(Op.VSHR, n=d, imm=8, dst=a.at(), a=a.at()),                 # floor(sq/256)
          Ins(Op.REDUCE, n=d, dst=reg(hi), a=a.at()),
          Ins(Op.REDUCE, n=d, dst=reg(sm), a=b.at()))
    k(Ins(Op.SSHL, imm=8, dst=reg(p), a=reg(hi)),
      Ins(Op.SSUB, dst=reg(sm), a=reg(sm), b=reg(p)))                     # Lo
    if rsqrt_at_root:
        # the combined words are (mant, shift) already; e stays in its register (an
        # exchange moves words through SRAM and the fabric, not through registers)
        k.exchange([hi, sm], ["sum", "sum"])
        mant, shift = hi, sm
    else:
        k(Ins(Op.SST, a=reg(e), b=b.base))                                # keep e
        k.exchange([hi, sm], ["sum", "sum"])
        _norm_rsqrt(k, e, hi, sm, eps.base, seed.base)
        mant, shift = 13, 14
        k(Ins(Op.SLD, dst=reg(e), b=b.base))
    sh, neg, rr = 1, 2, 7
    k(Ins(Op.SADD, dst=reg(sh), a=reg(shift), b=reg(e)),
      Ins(Op.SSUB, dst=reg(sh), a=reg(sh), b=30),                         # k + e - 30
      Ins(Op.SSUB, dst=reg(neg), a=reg(ZERO), b=reg(sh)),
      Ins(Op.SMAX, dst=reg(neg), a=reg(neg), b=0),
      Ins(Op.SSHLV, dst=reg(rr), a=reg(mant), b=reg(neg)),                # r << max(-sh, 0)
      Ins(Op.SMAX, dst=reg(sh), a=reg(sh), b=0),
      Ins(Op.VMULSR, n=d, imm=FLAG_VAR | sh, dst=a.at(), a=x.at(), b=reg(rr)),   # t
      Ins(Op.VREQ, n=d, dst=out.at(), a=a.at(), b=q.at()))
    return k.done(("x", "q"), ("out",), d)


# ---- softmax ----------------------------------------------------------------------------

def softmax(n: int, mult: int, shift: int, *, reduce: tuple | None = None) -> Kernel:
    """``arith.softmax_int(scores, mult, shift)`` over one row of ``n`` int32 scores (all
    visible; ``mult`` in 0..65535 and ``shift`` in 0..47 are model constants in the
    program); output ``n`` probabilities (Q0.15, int32 words).

    1. ``M = max s`` (REDUCE); ``d = M - s`` wrapping (a negating VMUL, VADD): exact read
       unsigned, ``0 <= d < 2**32``;
    2. ``u = sat32(shift_round(d mult, shift))`` (VMULSR, a unsigned), ``u = min(u, 17 *
       256)`` (``-max(-u, -4352)``: three passes, the ISA has no min);
    3. ``exp2 = shift_round(T[u & 255], u >> 8)``: VLUT by ``u`` into the exp2 table stored
       rotated by 128 (VLUT indexes ``(a + 128) & 255``), ``u >> 8`` as
       ``shift_round(u - 128, 8)``, VSHR by ``b[i]`` (a shift of 17 gives 0 exactly as
       ``exp2_neg_int``'s cut-off: the table is below 2**16);
    4. ``S = sum`` (REDUCE, < 2**31 for n < 65536), ``(r, k) = recip(S)``;
    5. ``p = shift_round(e r, k - 15)`` (VMULSR by the register shift: ``e r`` reaches
       2**31).
    """
    _size("softmax length", n, 1, 0xFFFF)
    _size("softmax mult", mult, 0, 0xFFFF)
    _size("softmax shift", shift, 0, 47)
    k = _Builder("softmax", reduce)
    s, p = k.region("s", n), k.region("p", n)
    u, ex = k.region("u", n), k.region("e", n)
    table = k.const("exp2", np.roll(arith.EXP2_TABLE, 128))
    seed = k.const("seed", arith.RECIP_SEED)
    neg1, mx, ml, lim, c128, tot = 9, 10, 11, 12, 13, 14
    k(_li(neg1, -1),
      Ins(Op.REDUCE, n=n, imm=FLAG_MAX, dst=reg(mx), a=s.at()))
    k.exchange([mx], ["max"])
    k(Ins(Op.VMUL, n=n, dst=u.at(), a=s.at(), b=reg(neg1)),
      Ins(Op.VADD, n=n, dst=u.at(), a=u.at(), b=reg(mx)),                 # d = M - s
      _li(ml, mult),
      Ins(Op.VMULSR, n=n, imm=FLAG_UA | shift, dst=u.at(), a=u.at(), b=reg(ml)),
      Ins(Op.VMUL, n=n, dst=u.at(), a=u.at(), b=reg(neg1)),
      _li(lim, -(17 << arith.EXP_FRAC)),
      Ins(Op.VMAX, n=n, dst=u.at(), a=u.at(), b=reg(lim)),
      Ins(Op.VMUL, n=n, dst=u.at(), a=u.at(), b=reg(neg1)),               # min(u, 4352)
      Ins(Op.VLUT, n=n, dst=ex.at(), a=u.at(), b=table.at()),
      _li(c128, -128),
      Ins(Op.VADD, n=n, dst=u.at(), a=u.at(), b=reg(c128)),
      Ins(Op.VSHR, n=n, imm=arith.EXP_FRAC, dst=u.at(), a=u.at()),        # u >> 8
      Ins(Op.VSHR, n=n, imm=FLAG_VAR, dst=ex.at(), a=ex.at(), b=u.at()),  # exp2
      Ins(Op.REDUCE, n=n, dst=reg(tot), a=ex.at()))
    k.exchange([tot], ["sum"])
    _recip_steps(k, tot, seed.base, 10, 11)
    k(Ins(Op.SSUB, dst=reg(11), a=reg(11), b=arith.PROB_FRAC),
      Ins(Op.VMULSR, n=n, imm=FLAG_VAR | 11, dst=p.at(), a=ex.at(), b=reg(10)))
    return k.done(("s",), ("p",), n)



# ---- the shipped model's sizes ------------------------------------------------------------

def shipped_table(seed: int = 0) -> list[dict]:
    """Each kernel at the shipped model's per-PE sizes (d_model 128 over 8 mesh rows: 16
    channels a PE; head_dim 32; contexts of 32 and 256 scores; the 352-wide FFN over 8 rows:
    44; the 256-token vocabulary over 8 rows: 32, and whole), run once on the ISS on random
    inputs: ``{op, size, kernel, instructions, cycles, words}`` (instructions and cycles from
    the ISS's counters; the programs have no branches and the inputs are in SRAM, so they do
    not depend on the data)."""
    rng = np.random.default_rng(seed)

    def r8(n):
        return rng.integers(-128, 128, n)

    def r32(n):
        return rng.integers(-(1 << 20), 1 << 20, n)

    def rq(n):
        return rng.integers(-65535, 65536, n), rng.integers(16, 40, n)

    cases = [
        ("residual_add", 16, residual_add(16), dict(x=r32(16), y=r32(16))),
        ("requantize", 16, requantize(16), dict(acc=r32(16), q=rq(16))),
        ("rms_norm (a row of 16)", 16, rms_norm(16, 22517998137), dict(x=r32(16), q=rq(16))),
        ("rms_norm (the row of 128 on one PE)", 128, rms_norm(128, 22517998137),
         dict(x=r32(128), q=rq(128))),
        ("rsqrt", 1, rsqrt(), dict(n=int(rng.integers(1, 1 << 38)))),
        ("rope (one head)", 32, rope(32), dict(x=r8(32), cos=r8(32) * 128, sin=r8(32) * 128,
                                               q=rq(32))),
        ("softmax (32 scores on one PE)", 32, softmax(32, 46000, 18), dict(s=r32(32))),
        ("softmax (256 scores on one PE)", 256, softmax(256, 46000, 18), dict(s=r32(256))),
        ("gate_up", 44, gate_up(44), dict(gate=r8(44), up=r8(44), table=r32(256) >> 5,
                                          q=rq(44))),
        ("argmax (32 logits)", 32, argmax(32), dict(z=r32(32))),
        ("argmax (256 logits on one PE)", 256, argmax(256), dict(z=r32(256))),
    ]
    rows = []
    for op, size, k, values in cases:
        _, stats = k.run_iss(**values)
        rows.append({"op": op, "size": size, "kernel": k, "instructions": stats.instructions,
                     "cycles": stats.cycles, "words": k.words})
    # Split over 8 PEs (a mesh column for the norm, 8 PEs of positions or of the vocabulary),
    # exchanging partials; PE 0's counters (every PE runs the same program).
    x, m, sh = r32(128), *rq(128)
    split = [
        ("rms_norm, 16 channels of 128 (split over 8 PEs)", [
            (rms_norm(16, 22517998137, width=128, reduce=(6, 7)),
             dict(x=x[a:a + 16], q=(m[a:a + 16], sh[a:a + 16]))) for a in range(0, 128, 16)]),
        ("softmax, 32 scores of 256 (split over 8 PEs)", [
            (softmax(32, 46000, 18, reduce=(6, 7)), dict(s=r32(32))) for _ in range(8)]),
        ("argmax, 32 logits of 256 (split over 8 PEs)", [
            (argmax(32, offset=a, total=256, reduce=(6, 7)), dict(z=r32(32)))
            for a in range(0, 256, 32)]),
    ]
    for op, parts in split:
        res, _ = run_row(parts)
        k, stats = parts[0][0], res[0][1]
        rows.append({"op": op, "size": k.elements, "kernel": k,
                     "instructions": stats.instructions, "cycles": stats.cycles,
                     "words": k.words})
    return rows
