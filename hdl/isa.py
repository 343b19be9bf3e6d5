"""The programmable core's instruction set: bit layouts, opcodes, cycle rules and an assembler.

One module defines the ISA once; the RTL core (:mod:`sparktile.hdl.core`) views SRAM words
through these :class:`~amaranth.lib.data.Struct` layouts, the instruction-set simulator
(:mod:`sparktile.compiler.iss`) decodes them with :func:`~sparktile.hdl.formats.unpack`, and both
take their cycle counts from :func:`exec_cycles` (the ISS) or implement them (the RTL; the tests
compare the two cycle for cycle).

Task model (following the Cerebras PE). A *task* is a program in SRAM, bound to a color through
the task table (:func:`task_reg`, written on the configuration path ``reg_write``). A control
wavelet (``ctrl = 1``) on a bound color *activates* the task: the core starts it when no other
task runs, with the wavelet's payload in scalar register ``r15`` (its argument). Data wavelets
(``ctrl = 0``) go to one of a few input queues, each bound to a color (:func:`queue_reg`); the
RECV instruction (and any operand in the COLOR space) consumes them. A task runs to its END; it
never waits for another task (there are no branches: every program terminates, and a malformed
instruction ends its task, counted as a task error).

Instruction. Four SRAM words: :class:`Insn` (opcode, a 10-bit immediate, a 16-bit length ``n``)
then three :class:`Operand` descriptors ``dst``, ``a``, ``b``. An operand names a *space* (SRAM,
the GEMV input buffer XBUF, a fabric color, a scalar register), a base, a stride in words and an
element format (one int32 per word, or four int8 lanes per word). One instruction is a whole
vector loop of ``n`` elements: element ``i`` of a memory operand is at word
``base + (i * stride)`` (int32) or lane ``i % 4`` of word ``base + (i // 4) * stride`` (int8x4);
addresses wrap modulo the memory's size (a power of two).
"""


import dataclasses
import enum
import functools

from amaranth.lib import data

from .formats import NUM_COLORS, pack, unpack

__all__ = [
    "Op", "Space", "Fmt", "Insn", "Operand", "INSN_WORDS", "NUM_SREGS", "ARG_REG",
    "TASK_REG_BASE", "QUEUE_REG_BASE", "TASK_ADDR_LIMIT", "task_reg", "queue_reg", "task_entry",
    "align_insn", "queue_entry",
    "Ins", "Src", "sram", "xbuf", "color", "reg", "assemble", "decode", "exec_cycles",
    "FETCH_CYCLES", "PREFETCH_CYCLES", "last_sram_write", "fetch_cycles", "program_cycles",
    "ELEM_CYCLES", "VEC_STAGES", "RAW_DISTANCE", "elem_interval",
    "insn_cycles", "GEMV_LATENCY", "IsaError", "VEC_OPS", "SCALAR_OPS",
    "FLAG_SAT", "FLAG_MAX", "FLAG_IMM", "FLAG_ADDEND", "FLAG_VAR", "FLAG_UB", "FLAG_UA",
    "ReqWord", "req_word", "b_used", "gemv", "GEMV_OPS", "MAX_GEMV_WORDS", "valid_insn",
]

#: SRAM words of one instruction.
INSN_WORDS = 4
#: Scalar registers (int32).
NUM_SREGS = 16
#: The register that receives the activating wavelet's payload.
ARG_REG = 15
#: The immediate bits of :class:`Insn`.
IMM_BITS = 10
#: Longest GEMV row in words (the immediate's low nine bits; bit 9 is FLAG_ADDEND).
MAX_GEMV_WORDS = (1 << (IMM_BITS - 1)) - 1

#: Configuration register map of the core (``reg_write.addr``): the task table, one entry per
#: color (program address [14:0], valid [15]), then the input-queue bindings (color [4:0],
#: valid [5]). Both fit the 16-bit value of a configuration header (:class:`CfgHeader`), so the
#: tile's configuration agent can write them.
TASK_REG_BASE = 0x00
QUEUE_REG_BASE = 0x20
#: Programs start in the first 32768 SRAM words (a task entry's address field is 15 bits).
TASK_ADDR_LIMIT = 1 << 15


class Op(enum.IntEnum):
    """Opcodes (6 bits). 0 is invalid, so that zeroed SRAM never runs as a program."""

    END = 1      #: the task ends
    RECV = 2     #: dst[i] = next data word of color a (SRAM/XBUF dst): the KV-cache append
    SEND = 3     #: color dst <- a[i] (SRAM/XBUF a), raw words
    GEMV = 4     #: dst[r] = sum_k dot4(a[r*W + k], xbuf[b + k]) (+ addend), W = imm & 511;
    #: dst in SRAM, on a color, or in XBUF beside x (not over it), where a VREQ then reads
    #: the sums and SRAM's requantization words on two ports: one row a cycle
    VADD = 5     #: dst[i] = a[i] + b[i]; wrap, or saturate with FLAG_SAT (residual_add)
    VMUL = 6     #: dst[i] = low 32 bits of a[i] * b[i]
    VSHR = 7     #: dst[i] = shift_round(a[i], imm & 63), or b[i] & 63 with FLAG_VAR
    VMAX = 8     #: dst[i] = max(a[i], b[i])
    VREQ = 9     #: dst[i] = requantize(a[i], b[i].mult, b[i].shift) (RequantWord b, int8 out)
    VLUT = 10    #: dst[i] = SRAM[b.base + ((a[i] + 128) & 255)] (int8 index a)
    REDUCE = 11  #: reg dst = sum (wrapping) or, with FLAG_MAX, max of a[0..n-1]
    VMULSR = 12  #: dst[i] = sat32(shift_round(a[i] * b[i], sh)), a 64-bit product
    #: GEMV whose x streams in on color ``a.aux`` during the first row, each word kept in
    #: XBUF at ``b + k`` for the other rows (:func:`gemv`'s ``x_from``): no RECV before it,
    #: the same cycles as GEMV
    GEMVX = 13
    SLI = 16     #: reg dst = b (the raw word)
    SADD = 17    #: reg dst = reg a + (reg b | imm b), wrapping
    SSUB = 18    #: reg dst = reg a - (reg b | imm b), wrapping
    SMULSH = 19  #: reg dst = low 32 bits of (reg a * (reg b | imm b)) >> (imm & 63), floor;
    #: with FLAG_UB, b is read as unsigned 32 bits
    SSHR = 20    #: reg dst = shift_round(reg a, imm & 63)
    SSHL = 21    #: reg dst = low 32 bits of reg a << (imm & 31)
    SBITLEN = 22  #: reg dst = bit_length(reg a as unsigned 32)
    SLT = 23     #: reg dst = 1 if reg a < (reg b | imm b) (signed) else 0
    SMAX = 24    #: reg dst = max(reg a, reg b | imm b)
    SLD = 25     #: reg dst = SRAM[b] (b raw address word)
    SST = 26     #: SRAM[b] = reg a
    SSHLV = 27   #: reg dst = low 32 bits of reg a << ((reg b | imm b) & 31): normalization
    SLDR = 28    #: reg dst = SRAM[reg a]: a table lookup by a computed index (Newton seeds)


GEMV_OPS = (Op.GEMV, Op.GEMVX)
VEC_OPS = (Op.VADD, Op.VMUL, Op.VSHR, Op.VMAX, Op.VREQ, Op.VLUT, Op.REDUCE, Op.VMULSR)
SCALAR_OPS = (Op.SLI, Op.SADD, Op.SSUB, Op.SMULSH, Op.SSHR, Op.SSHL, Op.SBITLEN, Op.SLT,
              Op.SMAX, Op.SLD, Op.SST, Op.SSHLV, Op.SLDR)

#: Immediate flags.
FLAG_SAT = 1 << 0   #: VADD: saturate to int32 instead of wrapping
FLAG_MAX = 1 << 0   #: REDUCE: max instead of sum
FLAG_IMM = 1 << 6   #: scalar ops: b is the raw 32-bit word, not a register
#: VSHR: the shift of element ``i`` is ``b[i] & 63`` (b a vector, a register or a color),
#: not ``imm & 63`` (the exponent of a table-and-shift exp2, a per-token normalization);
#: VMULSR: the shift is the low six bits of scalar register ``imm & 15``.
FLAG_VAR = 1 << 6
#: SMULSH: b is read as an unsigned 32-bit word (a Newton step's Q30 factor that reaches 2**31).
FLAG_UB = 1 << 7
#: VMULSR: a is read as an unsigned 32-bit word (a difference ``max - s`` that reaches 2**32 - 1).
FLAG_UA = 1 << 7
#: GEMV: add to each row's sum the next word of color ``b.aux`` (the partial sum of the
#: previous PE of a reduction chain), in the cycle the row leaves: no extra cycle.
FLAG_ADDEND = 1 << 9


class Space(enum.IntEnum):
    """Where an operand's elements live."""

    SRAM = 0    #: the PE's SRAM
    XBUF = 1    #: the GEMV input buffer (a second memory: x is read beside every weight word)
    COLOR = 2   #: a fabric color (base[4:0]): an input queue to read, or the output to send on
    REG = 3     #: scalar register base[3:0] (a broadcast scalar when read element-wise)


class Fmt(enum.IntEnum):
    """Element format of a memory operand."""

    I32 = 0     #: one int32 per word
    I8X4 = 1    #: four int8 lanes per word, lane 0 in the low byte


class Insn(data.Struct):
    """Instruction word 0."""

    op: 6          #: :class:`Op`
    imm: 10        #: shift amount, flags, or GEMV words per row
    n: 16          #: elements (rows for GEMV); 0 does nothing


class Operand(data.Struct):
    """Instruction words 1..3: one operand descriptor."""

    base: 16       #: word address, color, or register
    stride: 8      #: words between consecutive elements (int8x4: between consecutive words)
    space: 2       #: :class:`Space`
    fmt: 1         #: :class:`Fmt`
    aux: 5         #: GEMV's b: the addend's color (with FLAG_ADDEND); GEMVX's a: the
    #: color x streams in on during the first row


class ReqWord(data.Struct):
    """VREQ's per-element requantization word: :class:`~sparktile.hdl.formats.RequantWord`
    (``mult`` bits 15:0, ``shift`` bits 21:16) plus a sign bit 22: ``neg = 1`` multiplies by
    ``-mult`` (the signed multipliers of :func:`arith.signed_params`: a negative RMSNorm
    weight folded into the requantization). With ``neg = 0`` it is the PE's RequantWord."""

    mult: 16
    shift: 6
    neg: 1
    unused: 9


def req_word(mult: int, shift: int) -> int:
    """The :class:`ReqWord` of a signed ``mult`` (``|mult| < 2**16``) and ``shift`` (0..47)."""
    mult, shift = int(mult), int(shift)
    if not -(1 << 16) < mult < 1 << 16:
        raise IsaError(f"requantization mult must be in (-65536, 65536), not {mult}")
    if not 0 <= shift <= 47:
        raise IsaError(f"requantization shift must be 0..47, not {shift}")
    return pack(ReqWord, mult=abs(mult), shift=shift, neg=int(mult < 0))


class IsaError(ValueError):
    """A program the assembler refuses: names the instruction, the field and what is allowed."""


# ---- cycle rules (the RTL implements them; the ISS counts with them) ------------------------

#: Cycles to fetch and decode one instruction: the SRAM is 128 bits wide (four words a row, one
#: read port), so one read brings the whole instruction; the decode uses the row as it leaves
#: the read port, the cycle after. Programs therefore start on a row (:func:`task_entry`
#: refuses another address), and every instruction stays on one. A task's first instruction
#: pays both cycles; the ones after it usually pay :data:`PREFETCH_CYCLES` (see
#: :func:`fetch_cycles`).
FETCH_CYCLES = 2
#: Cycles to fetch and decode an instruction whose row was read in the last cycle of the
#: instruction before it: every state of the core leaves its read port free in its last cycle
#: (the last element has been read; what remains is a write, a send or a register), so the
#: core reads the next row there and decodes it the cycle after. Not when that last cycle
#: writes SRAM in the next instruction's row (the read would see the row before the write):
#: then the fetch takes :data:`FETCH_CYCLES`, as after a program patching the instruction it
#: runs next (``SST``).
PREFETCH_CYCLES = 1
#: Pipeline stages of an element-wise op or REDUCE (the core's S0..S4): S0 issues the element's
#: reads (a memory read, an input-queue pop or a register read of a and, when b uses another
#: port, of b), S1 registers a (and such a b) and issues the reads that need a second turn of a
#: port (b in the same memory, or b from the same input queue, as a) or need a's value (VLUT's
#: table entry), S2 registers those, S3 computes, S4 writes, sends or accumulates. An element
#: issues every :func:`elem_interval` cycles; the last one leaves S4
#: ``VEC_STAGES - 1`` cycles after it issued.
VEC_STAGES = 5
#: Kept for callers of the previous rule (5 cycles per element, not pipelined): the cycles of a
#: one-element vector op, which the pipeline keeps (``exec_cycles(op, 1, ...) == 5``).
ELEM_CYCLES = VEC_STAGES
#: Read-after-write inside one element-wise instruction: element ``i`` may read a word (SRAM or
#: XBUF, a VLUT table entry included) that an earlier element ``j`` of the same instruction
#: writes only if ``i - j >= RAW_DISTANCE``; then it sees the written value, as if the elements
#: ran one after another. Closer than that the word may still be in the pipeline: the ISA
#: forbids it and the ISS refuses it (:class:`~sparktile.compiler.iss.PipelineHazard`). Element
#: ``i`` reading the word that it writes itself (an in-place op: ``dst[i]`` from ``a[i]``, or
#: VREQ's int8 packing into the words it reads) is always allowed: every read of an element
#: happens before its write. Derivation: a write leaves S4 at least 4 cycles after its element
#: issued, a read is issued in S0 (or S1) of its element, elements issue at least one cycle
#: apart and a stall only delays later elements' reads, never earlier elements' writes.
RAW_DISTANCE = VEC_STAGES
#: Cycles after a GEMV's last weight read until its last result is written: weight and x
#: registered, four products, their sum into the accumulator, the write.
GEMV_LATENCY = 4


def _space_of(operand):
    """``(space, color)`` of an operand given as a :class:`Src`, a decoded :class:`Operand`
    dict, or None (absent)."""
    if operand is None:
        return None, None
    if isinstance(operand, Src):
        return operand.space, operand.base & 31
    if isinstance(operand, dict):
        return Space(operand["space"]), operand["base"] & 31
    raise TypeError(f"an operand must be a Src, a decoded Operand dict or None, "
                    f"not {operand!r}")


def elem_interval(op: int, imm: int, a, b) -> int:
    """Cycles between two elements of a pipelined element-wise op or REDUCE: the most accesses
    one port serves per element, at least 1. The ports: the SRAM's one read port (a or b in
    SRAM, VLUT's table entry), the XBUF's one read port, each input queue (one pop a cycle: a
    and b from the same color). Scalar registers need no port. So 1 for ``a`` in SRAM with b
    in XBUF, a register or a color (or unused), 2 for ``a`` and ``b`` both in SRAM (or both
    in XBUF, or both on one color) and for VLUT with its index ``a`` in SRAM.

    ``a`` and ``b``: :class:`Src`, decoded :class:`Operand` dicts (:func:`decode`), or None.
    Without them (``None``, the call of the previous rule), the slow case is assumed: an
    upper bound of 2, exact only when both read one port."""
    op = Op(op)
    if op not in VEC_OPS:
        raise IsaError(f"elem_interval: {op.name} is not an element-wise op "
                       f"({', '.join(o.name for o in VEC_OPS)})")
    (sa, ca), (sb, cb) = _space_of(a), _space_of(b)
    if sa is None:
        return 2
    uses_b = b_used(op, imm)
    if uses_b and sb is None:
        return 2
    sram_reads = int(sa is Space.SRAM) + int(uses_b and sb is Space.SRAM) + int(op is Op.VLUT)
    xbuf_reads = int(sa is Space.XBUF) + int(uses_b and sb is Space.XBUF)
    pops = 1 + int(uses_b and sb is Space.COLOR and ca == cb) if sa is Space.COLOR else 0
    return max(1, sram_reads, xbuf_reads, pops)


def exec_cycles(op: int, n: int, imm: int, a=None, b=None) -> int:
    """Cycles of one instruction after its fetch and decode, without stalls (the RTL counts
    stalls apart: ``stall_in`` for an empty input queue, ``stall_out`` for a busy ramp).

    An element-wise op or REDUCE of ``n >= 1`` elements takes
    ``elem_interval(op, imm, a, b) * (n - 1) + VEC_STAGES`` cycles: one element every 1 or 2
    cycles plus the pipeline's fill and drain. Pass the instruction's ``a`` and ``b`` operands
    (:class:`Src` or decoded dicts; :func:`insn_cycles` does it for an :class:`Ins`); without
    them the 2-cycle interval is assumed (an upper bound). Other ops ignore ``a`` and ``b``.

    A scalar op other than a load takes no cycle after its decode: the core computes it from
    the instruction row as it leaves the read port and reads the next row in that same cycle.
    SLD and SLDR issue their read in the decode cycle and register the word (and read the
    next row) the cycle after: one cycle."""
    op = Op(op)
    if op is Op.END:
        return 0
    if op is Op.RECV:
        return n
    if op is Op.SEND:
        return n + 1 if n else 0
    if op in GEMV_OPS:
        return n * (imm & MAX_GEMV_WORDS) + GEMV_LATENCY if n else 0
    if op in VEC_OPS:
        return elem_interval(op, imm, a, b) * (n - 1) + VEC_STAGES if n else 0
    if op in (Op.SLD, Op.SLDR):
        return 1
    return 0


def insn_cycles(ins: "Ins", fetch: int = FETCH_CYCLES) -> int:
    """Fetch, decode and execute cycles of one :class:`Ins`, without stalls, its fetch taking
    ``fetch`` cycles (:func:`fetch_cycles`; a task's first instruction: :data:`FETCH_CYCLES`)."""
    b = ins.b if isinstance(ins.b, Src) else None
    return fetch + exec_cycles(ins.op, ins.n, ins.imm, ins.a, b)


#: The ops that write their dst operand element by element (SST writes its b address).
_DST_WRITERS = (Op.RECV, *GEMV_OPS, *(o for o in VEC_OPS if o is not Op.REDUCE))


def last_sram_write(op: int, n: int, imm: int, dst, b_word: int = 0) -> int | None:
    """The SRAM word address (16 bits, before the wrap to the SRAM's size) of the last word an
    instruction writes to SRAM, or None when it writes none. The core writes it in the
    instruction's last cycle (RECV's last word, a GEMV's last row, an element-wise op's last
    element leaving S4, SST), which is what :func:`fetch_cycles` needs. ``dst``: a :class:`Src`
    or a decoded :class:`Operand` dict; ``b_word``: the raw b word (SST's address)."""
    op = Op(op)
    if op is Op.SST:
        return b_word & 0xFFFF
    if isinstance(dst, Src):
        space, base, stride, fmt = dst.space, dst.base, dst.stride, dst.fmt
    elif dst is None:
        return None
    else:
        space, base, stride, fmt = (Space(dst["space"]), dst["base"], dst["stride"],
                                    Fmt(dst["fmt"]))
    if n == 0 or space is not Space.SRAM or op not in _DST_WRITERS:
        return None
    last = n - 1
    if op in VEC_OPS and fmt is Fmt.I8X4:
        last >>= 2
    return (base + last * stride) & 0xFFFF


def fetch_cycles(after_write: int | None, pc: int, sram_words: int) -> int:
    """Fetch and decode cycles of the instruction at ``pc`` that follows another one of the
    same task whose last SRAM write (:func:`last_sram_write`) was ``after_write``:
    :data:`PREFETCH_CYCLES`, or :data:`FETCH_CYCLES` when that write was in ``pc``'s row of an
    SRAM of ``sram_words`` words (the prefetch would read the row before the write). A task's
    first instruction takes :data:`FETCH_CYCLES`."""
    if after_write is not None and \
            (after_write % sram_words) // INSN_WORDS == (pc % sram_words) // INSN_WORDS:
        return FETCH_CYCLES
    return PREFETCH_CYCLES


def program_cycles(program, base: int = 0, sram_words: int = 1 << 16) -> int:
    """Cycles of one run of a branch-free ``program`` (a list of :class:`Ins` run in order to
    its first END) placed at word ``base`` of an SRAM of ``sram_words`` words, without stalls:
    the first fetch at :data:`FETCH_CYCLES`, each later one by :func:`fetch_cycles`, plus
    :func:`exec_cycles`. What the RTL's ``task_cycles`` counts less its ``stall_in`` and
    ``stall_out``."""
    total, after = 0, None
    for k, ins in enumerate(program):
        pc = base + k * INSN_WORDS
        total += insn_cycles(ins, FETCH_CYCLES if k == 0 else fetch_cycles(after, pc, sram_words))
        if Op(ins.op) is Op.END:
            break
        after = last_sram_write(ins.op, ins.n, ins.imm, ins.dst,
                                ins.b if isinstance(ins.b, int) else 0)
    return total


# ---- configuration registers -----------------------------------------------------------------

def align_insn(address: int) -> int:
    """``address`` rounded up to the next instruction row (a multiple of :data:`INSN_WORDS`):
    where a program placed after data can start."""
    return -(-address // INSN_WORDS) * INSN_WORDS


def task_reg(color: int) -> int:
    """``reg_write`` address of the task-table entry of ``color``."""
    _check_color(color, "task color")
    return TASK_REG_BASE + color


def queue_reg(queue: int, n_queues: int) -> int:
    """``reg_write`` address of input queue ``queue``'s color binding."""
    if not isinstance(queue, int) or not 0 <= queue < n_queues:
        raise IsaError(f"input queue must be 0..{n_queues - 1}, not {queue!r}")
    return QUEUE_REG_BASE + queue


def task_entry(address: int) -> int:
    """Value of a task-table entry: a program at SRAM word ``address``, valid. The address
    is a multiple of :data:`INSN_WORDS`: the core fetches an instruction as one SRAM row."""
    if (not isinstance(address, int) or not 0 <= address < TASK_ADDR_LIMIT
            or address % INSN_WORDS):
        raise IsaError(f"task program address must be a multiple of {INSN_WORDS} in "
                       f"0..{TASK_ADDR_LIMIT - INSN_WORDS}, not {address!r}")
    return address | TASK_ADDR_LIMIT


def queue_entry(color: int) -> int:
    """Value of an input-queue binding to ``color``, valid."""
    _check_color(color, "queue color")
    return color | 1 << 5


def _check_color(color, what):
    if not isinstance(color, int) or not 0 <= color < NUM_COLORS:
        raise IsaError(f"{what} must be 0..{NUM_COLORS - 1}, not {color!r}")


# ---- the assembler ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Src:
    """An operand descriptor in readable form (see :class:`Operand`)."""

    space: Space
    base: int = 0
    stride: int = 1
    fmt: Fmt = Fmt.I32
    aux: int = 0

    def word(self, where: str) -> int:
        for name, value, hi in (("base", self.base, 0xFFFF), ("stride", self.stride, 0xFF)):
            if not isinstance(value, int) or not 0 <= value <= hi:
                raise IsaError(f"{where}: {name} must be 0..{hi}, not {value!r}")
        if self.space is Space.COLOR:
            _check_color(self.base, f"{where}: color")
        if self.space is Space.REG and not self.base < NUM_SREGS:
            raise IsaError(f"{where}: register must be 0..{NUM_SREGS - 1}, not {self.base}")
        _check_color(self.aux, f"{where}: aux color")
        return pack(Operand, base=self.base, stride=self.stride, space=int(self.space),
                    fmt=int(self.fmt), aux=self.aux)


#: The operand constructors are pure and their results immutable, and a compiler makes the
#: same operands hundreds of thousands of times: kept by argument, types included (``typed``:
#: ``sram(1.0)`` is not ``sram(1)``, and its encoding still fails as it should).
_operand_cache = functools.lru_cache(maxsize=1 << 16, typed=True)


@_operand_cache
def sram(base: int, stride: int = 1, fmt: Fmt = Fmt.I32) -> Src:
    """An SRAM vector operand."""
    return Src(Space.SRAM, base, stride, Fmt(fmt))


@_operand_cache
def xbuf(base: int, stride: int = 1, fmt: Fmt = Fmt.I32) -> Src:
    """An XBUF vector operand."""
    return Src(Space.XBUF, base, stride, Fmt(fmt))


def color(c: int, fmt: Fmt = Fmt.I32) -> Src:
    """A fabric color operand (input queue or output). As an element-wise op's dst,
    ``Fmt.I8X4`` sends the int8 results packed four to a word (lane 0 low), a word after lane 3
    and after the last element, as a memory dst is written: VREQ straight onto the fabric,
    with no SEND after it. Sources and the other ops move whole words."""
    return Src(Space.COLOR, c, 0, Fmt(fmt))


@_operand_cache
def reg(r: int) -> Src:
    """A scalar register operand."""
    return Src(Space.REG, r, 0)


#: Operand spaces each op accepts: (dst, a, b); None = unused (any value, ignored).
_MEM = (Space.SRAM, Space.XBUF)
_VSRC = (Space.SRAM, Space.XBUF, Space.COLOR, Space.REG)
_VDST = (Space.SRAM, Space.XBUF, Space.COLOR)
ALLOWED = {
    Op.END: (None, None, None),
    Op.RECV: (_MEM, (Space.COLOR,), None),
    Op.SEND: ((Space.COLOR,), _MEM, None),
    Op.GEMV: ((Space.SRAM, Space.XBUF, Space.COLOR), (Space.SRAM,), (Space.XBUF,)),
    Op.GEMVX: ((Space.SRAM, Space.XBUF, Space.COLOR), (Space.SRAM,), (Space.XBUF,)),
    Op.VADD: (_VDST, _VSRC, _VSRC),
    Op.VMUL: (_VDST, _VSRC, _VSRC),
    Op.VSHR: (_VDST, _VSRC, _VSRC),        # b read only with FLAG_VAR
    Op.VMAX: (_VDST, _VSRC, _VSRC),
    Op.VREQ: (_VDST, _VSRC, (Space.SRAM, Space.REG)),
    Op.VLUT: (_VDST, _VSRC, (Space.SRAM,)),
    Op.REDUCE: ((Space.REG,), _VSRC, None),
    Op.VMULSR: (_VDST, _VSRC, _VSRC),
}
for _op in SCALAR_OPS:
    ALLOWED[_op] = ((Space.REG,), (Space.REG,), (Space.REG,))
ALLOWED[Op.SLI] = ((Space.REG,), None, None)
ALLOWED[Op.SBITLEN] = ((Space.REG,), (Space.REG,), None)
ALLOWED[Op.SSHR] = ((Space.REG,), (Space.REG,), None)
ALLOWED[Op.SSHL] = ((Space.REG,), (Space.REG,), None)
ALLOWED[Op.SLD] = ((Space.REG,), None, None)
ALLOWED[Op.SST] = (None, (Space.REG,), None)
ALLOWED[Op.SLDR] = ((Space.REG,), (Space.REG,), None)


def b_used(op: int, imm: int) -> bool:
    """Whether an element-wise op reads its b operand (VSHR only with :data:`FLAG_VAR`)."""
    op = Op(op)
    return op in (Op.VADD, Op.VMUL, Op.VMAX, Op.VREQ, Op.VMULSR) or (
        op is Op.VSHR and bool(imm & FLAG_VAR))


#: Ops whose b word is a raw 32-bit value (immediate or address), not a descriptor.
RAW_B = (Op.SLI, Op.SLD, Op.SST)


@dataclasses.dataclass(frozen=True)
class Ins:
    """One instruction in readable form: ``Ins(Op.VADD, n=8, dst=sram(0), a=..., b=...)``.

    For scalar ops with an immediate b, pass ``b`` as an int and set ``imm |= FLAG_IMM``
    (:meth:`word`s does it for you when ``b`` is an int); for SLI/SLD/SST ``b`` is the raw word.
    """

    op: Op
    n: int = 0
    imm: int = 0
    dst: Src | None = None
    a: Src | None = None
    b: Src | int | None = None

    def words(self, where: str = "instruction") -> list[int]:
        try:
            op = Op(self.op)
        except ValueError:
            raise IsaError(f"{where}: unknown opcode {self.op!r}; known: "
                           f"{', '.join(o.name for o in Op)}") from None
        where = f"{where} ({op.name})"
        imm = self.imm
        if isinstance(self.b, int) and not isinstance(self.b, bool) and op in SCALAR_OPS \
                and op not in RAW_B:
            imm |= FLAG_IMM
        for name, value, hi in (("n", self.n, 0xFFFF), ("imm", imm, (1 << IMM_BITS) - 1)):
            if not isinstance(value, int) or not 0 <= value <= hi:
                raise IsaError(f"{where}: {name} must be 0..{hi}, not {value!r}")
        if op in GEMV_OPS and self.n and not 1 <= imm & MAX_GEMV_WORDS:
            raise IsaError(f"{where}: imm (words per row) must be 1..{MAX_GEMV_WORDS}, "
                           f"not {imm & MAX_GEMV_WORDS}")
        if op is Op.REDUCE and self.n == 0:
            raise IsaError(f"{where}: n must be 1..65535 (a reduction of nothing)")
        words = [pack(Insn, op=int(op), imm=imm, n=self.n)]
        for slot, (name, allowed) in enumerate(zip(("dst", "a", "b"), ALLOWED[op], strict=True)):
            value = (self.dst, self.a, self.b)[slot]
            if slot == 2 and (op in RAW_B or imm & FLAG_IMM and op in SCALAR_OPS):
                if not isinstance(value, int) or not -(1 << 31) <= value < 1 << 32:
                    raise IsaError(f"{where}: b must be a 32-bit integer, not {value!r}")
                if op in (Op.SLD, Op.SST) and not 0 <= value < 1 << 16:
                    raise IsaError(f"{where}: b (an SRAM address) must be 0..65535, "
                                   f"not {value}")
                words.append(value & 0xFFFFFFFF)
                continue
            if op is Op.VSHR and slot == 2 and not imm & FLAG_VAR:
                allowed = None
            if allowed is None:
                if value is not None:
                    raise IsaError(f"{where}: takes no {name} operand")
                words.append(0)
                continue
            if not isinstance(value, Src):
                raise IsaError(f"{where}: {name} must be an operand in "
                               f"{', '.join(s.name for s in allowed)}, not {value!r}")
            if value.space not in allowed:
                raise IsaError(f"{where}: {name} must be in "
                               f"{', '.join(s.name for s in allowed)}, not {value.space.name}")
            words.append(value.word(f"{where}: {name}"))
        return words


def gemv(rows: int, words: int, *, dst: Src, w: Src, x: Src, addend: int | None = None,
         x_from: int | None = None) -> Ins:
    """A GEMV: ``rows`` rows of ``words`` weight words at ``w`` (SRAM, row-major) times the
    x vector at ``x`` (XBUF), int32 results to ``dst`` (SRAM, XBUF beside x, or a color as
    partial sums), plus one word per row from color ``addend`` if given. With ``x_from``, x
    arrives on that color during the first row (stored at ``x`` as it passes) instead of
    being in XBUF already."""
    if not isinstance(words, int) or not 1 <= words <= MAX_GEMV_WORDS:
        raise IsaError(f"GEMV words per row must be 1..{MAX_GEMV_WORDS}, not {words!r}")
    imm = words
    op = Op.GEMV
    if x_from is not None:
        _check_color(x_from, "GEMV x color")
        w = dataclasses.replace(w, aux=x_from)
        op = Op.GEMVX
    if addend is not None:
        _check_color(addend, "GEMV addend color")
        x = dataclasses.replace(x, aux=addend)
        imm |= FLAG_ADDEND
    return Ins(op, n=rows, imm=imm, dst=dst, a=w, b=x)


def assemble(program) -> list[int]:
    """SRAM words of ``program`` (a list of :class:`Ins`), four per instruction; a bad field
    raises :class:`IsaError` naming the instruction's index, the field and the allowed range.

    A compiler assembles the same instructions many times (every worker of a mesh, every
    candidate slot count of the decoder's search: 281,583 encodings for one 8x8 compile), so
    the words of an instruction whose fields all have their canonical types are kept
    (:func:`_canonical`: two such instructions that compare equal encode alike; ``1.0 == 1``
    and ``True == 1`` would not), up to :data:`_ENCODED_MAX` of them."""
    out = []
    for index, insn in enumerate(program):
        if not isinstance(insn, Ins):
            raise IsaError(f"instruction {index} must be an Ins(...), not {insn!r}")
        canonical = _canonical(insn)
        words = _ENCODED.get(insn) if canonical else None
        if words is None:
            words = insn.words(f"instruction {index}")
            if canonical:
                if len(_ENCODED) >= _ENCODED_MAX:
                    _ENCODED.clear()
                _ENCODED[insn] = words
        out += words
    return out


#: Encoded canonical instructions (:func:`assemble`), and how many are kept at most.
_ENCODED: dict = {}
_ENCODED_MAX = 1 << 17


def _canonical(insn: Ins) -> bool:
    """Whether every field of ``insn`` has exactly its canonical type (``Op``, ``int``,
    :class:`Src` of ``Space``, ``int`` and ``Fmt``; ``b`` also a plain ``int``): then
    equality means equal encodings."""
    if type(insn.op) is not Op or type(insn.n) is not int or type(insn.imm) is not int:
        return False
    for slot, v in enumerate((insn.dst, insn.a, insn.b)):
        if v is None or (slot == 2 and type(v) is int):
            continue
        if type(v) is not Src or type(v.space) is not Space or type(v.fmt) is not Fmt or \
                type(v.base) is not int or type(v.stride) is not int or type(v.aux) is not int:
            return False
    return True


def decode(words) -> tuple[dict, list[dict]]:
    """``(insn, [dst, a, b])`` of four instruction words, as dicts of fields."""
    return unpack(Insn, words[0]), [unpack(Operand, w) for w in words[1:4]]


def valid_insn(insn: dict, ops: list[dict]) -> bool:
    """Whether the core runs this instruction, or ends its task with a task error: a known
    opcode, operand spaces the op accepts (:data:`ALLOWED`), GEMV rows of 1..1023 words,
    a REDUCE of at least one element. (Colors are checked when used: a COLOR operand whose
    color has no input queue is a task error too.)"""
    try:
        op = Op(insn["op"])
    except ValueError:
        return False
    for slot, allowed in enumerate(ALLOWED[op]):
        if allowed is None or (slot == 2 and (op in RAW_B or
                                              (op in SCALAR_OPS and insn["imm"] & FLAG_IMM))):
            continue
        if Space(ops[slot]["space"]) not in allowed:
            return False
    if op in GEMV_OPS and insn["n"] and insn["imm"] & MAX_GEMV_WORDS == 0:
        return False
    if op is Op.REDUCE and insn["n"] == 0:
        return False
    return True
