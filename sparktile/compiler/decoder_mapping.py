"""The whole decoder on a mesh of programmable cores: one task per token on every PE.

:func:`compile_decoder` turns the golden model's integer path
(:mod:`sparktile.golden_model.intpath`, static activation scales) into a program, an SRAM
image, a task table, queue bindings and routes for every tile of a ``pe="core"`` mesh. The
host's part per token is one control wavelet (the activation: the position and the token id)
into the hub's north edge; the next token (greedy argmax) comes back out of its west edge, or,
for a host that samples, the logits (``logits=True``). Every op of the decoder runs on the
mesh; the sampling's draw, when there is one, on the host.

Roles. Tile (0, 0) is the *hub*: the root of both trees, it runs the ``p . v``
requantization and the RMSNorm's Newton rsqrt (once, for all workers). Every other tile is a
*worker*, numbered ``k`` of ``W`` by its distance from the hub (``row + col``, then the
column), so what only the first workers hold sits near the hub:

* **the residual stream** is split by channel: worker ``k`` holds channels ``[k m, (k+1) m)``
  (``m = ceil(d / W)`` up to a multiple of 4), with their embedding columns of every token, and
  runs its part of every RMSNorm (the row's max and sums exchanged through the trees);
* **matmuls** are split by output rows: worker ``k`` holds rows ``[k m, (k+1) m)`` of every
  weight matrix whole, runs one GEMV over the broadcast input (streamed in: GEMVX), and
  requantizes its rows (VREQ into int8, or VMULSR into the residual format: o's and down's
  rows are its channels, so the residual adds are local); q/k/v's rows are split in RoPE
  pairs instead (:func:`_qkv_plan`, on the workers :func:`summed_workers` picks), so each
  worker applies RoPE to its own q and k rows (the RoPE row of ``p`` goes up the KV workers'
  tree behind the first norm's sums and reaches every worker behind its h) and turns its
  value rows into the transposed cache's words (with one slot a worker, int8 words as they
  are);
* **the KV cache** is spread by position over ``Wk`` workers (those a context compiled for
  needs at ``S`` slots each; :func:`summed_workers`: the nearest of the hub's east subtree
  where it holds them, else the first ``Wk``): position ``p`` lives in slot ``p // Wk`` of
  ``kv_tiles[p % Wk]``, for every layer (keys row-major, by kv group, values transposed,
  int8; with one slot the row of values); each worker also holds the RoPE table rows of its
  positions;
* **attention** runs on every worker over its slots, all heads in one element-wise pass: the
  score GEMV against its group's keys, the exponentials, and its part of ``p . v`` (int8
  GEMVs over the transposed values, one per digit of ``p - 256`` a head and one a KV group
  against ones for the 256; with one slot a worker, the slot's values times its
  probability, one pass a head); the heads' maxima, sums and
  weighted sums meet at the hub; the first ``nh`` workers compute a head's softmax
  reciprocal each;
* **argmax** is split by vocabulary rows (two max exchanges); the hub sends the index.

Communication is two trees, both rooted at the hub, so every input FIFO carries one kind of
traffic:

* the *broadcast tree* (color :data:`B`, and the activation :data:`A`): east along row 0, then
  south down every column; every worker receives every broadcast word in the same order;
* the *reduction tree*: north up every column (colors :data:`RC`, alternating by row), then
  west along row 0 (:data:`RR`, alternating by column); a worker combines the stream from its
  child with its own vector element by element (a VADD or VMAX from one color to another) and
  passes it on; zeros where a worker has nothing make the sum a gather. Each exchange's tree
  is *pruned* to the workers with a share of it (a prefix of the workers: the channels'
  holders for a norm, the KV workers for the attention, the rows' holders for a matmul's
  gather); the others send nothing and only take the broadcast back. A gather whose words
  each belong to one worker (a norm's h, the FFN's product) is *span-limited* instead: a
  tile sends its own words, then forwards its subtrees', so the hub takes one stream at a
  time, one word a cycle; the words arrive in the tree's preorder and the weight columns
  that read the vector are permuted to match. What the hub sums (the attention's exchanges,
  the q/k/v gather) sits on its east subtree (:func:`summed_workers`): one child's stream.

The routes are dimension-ordered, so their channel-dependency graph has no cycle
(:func:`~sparktile.compiler.routes.check_deadlock_free` is run on them); the argument for the
programs (every PE performs the same sequence of broadcasts and reductions; every FIFO carries
one color at run time) is in ``docs/architecture.md``.

Position-dependent addresses. A program has no branches, so the few operands that depend on
the position (the KV slot a worker appends to, or a scratch area when the position is not its
own; its RoPE table row) are *patched*: at the start of each token a worker computes
``slot = p // Wk`` (a multiply by a reciprocal, exact for ``p < 2**16``) and whether it owns
``p``, and stores the operand words of those instructions (SST) before it reaches them. The
attention instructions run over all ``S`` slots of a worker; a slot not yet written is masked
(its score plus ``-2**31``, its exponential times 0), which is what ``arith.softmax_int`` does
with positions beyond the current one.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from ..golden_model import arith
from ..golden_model.arith import LANES, pack_int8
from ..hdl import isa
from ..hdl.formats import Port, cc
from ..hdl.isa import FLAG_MAX, FLAG_SAT, FLAG_UA, FLAG_VAR, Fmt, Ins, Op, reg, sram, xbuf
from ..hdl.mesh import MeshShape
from ..hdl.tile import CORE_QUEUES, CORE_XBUF_WORDS
from . import kernels
from .kernels import Region, _li
from .mapping import MappingError
from .program import ConfigProgram
from .routes import check_deadlock_free

__all__ = ["DecoderMapping", "compile_decoder", "A", "B", "OUT", "RC", "RR", "DBG",
           "MAX_SLOTS", "Tap", "check_taps", "golden_logits", "golden_next", "HostSampler",
           "score_position", "slot_reduction", "slot_reduction_size", "one_stream_slots"]

#: The task color (the per-token activation), the broadcast color, the output token, the
#: column and row reduction colors (alternating).
A, B, OUT = 1, 2, 4
RC = (5, 6)
RR = (7, 8)
#: The hub's check taps (``taps=True``): its intermediate vectors, out of its west edge.
DBG = 9
#: Slots per worker at most: a head's slots padded to whole words (``4 ceil(S / 4)``) are the
#: stride of the one RECV that marks p's slot valid in every head, and a stride is 8 bits.
MAX_SLOTS = 252
WORD = 0xFFFFFFFF
INT32_MIN_WORD = 0x80000000

#: Placeholder colors the split kernels are built with (their exchanges are emitted by the
#: mapping's trees instead, so these never reach the fabric).
_KERNEL_REDUCE = (28, 29)

# Worker registers kept across the token: 0 holds 0, SLOT the slot of p, OWNER 1 if p is ours.
_ZERO, _SLOT, _OWNER = 0, 1, 6


class _Pe:
    """One PE's SRAM layout and program: data regions from word 0, the program after them
    (``code_base``, known once every region is placed); ``fixups`` are SSTs whose target is
    an instruction's operand word, resolved when the program is placed."""

    def __init__(self, name: str):
        self.name, self.top, self.prog, self.fixups = name, 0, [], []
        self.image = []         # (address, words) in the order written: a later write wins
        self.shared = {}        # kernel scratch and tables, bound after their first use
        self.tag, self.tags = "other", []      # the op each instruction belongs to

    def alloc(self, n: int, kind: str = "i32", init=None) -> Region:
        r = Region(self.top, n, kind)
        self.top += r.words
        if init is not None:
            self.write(r, init)
        return r

    def write(self, r: Region, words) -> None:
        self.image.append((r.base, np.asarray(words, dtype=np.int64) & WORD))

    def __call__(self, *insns) -> int:
        self.prog.extend(insns)
        self.tags.extend([self.tag] * len(insns))
        return len(self.prog) - 1

    def kernel(self, fn, *args, kw=None, exchange=None, **bind):
        """Emit kernel ``fn(*args, **kw)`` with its regions ``bind`` (plus the shared scratch
        and tables of earlier kernels of the same kind), its exchanges through ``exchange``,
        without its END."""
        shared = self.shared.setdefault(fn.__name__, {})
        kw = dict(kw or {})
        if exchange is not None:
            kw["reduce"] = _KERNEL_REDUCE
        try:
            k = fn(*args, **kw, place=(self.top, {**shared, **bind}, exchange))
        except kernels.KernelSpaceError:
            # the data regions alone leave no room for a program below the task limit
            raise _Overflow(self.name, self.top,
                            f"its data alone take {self.top} words, and a program must start "
                            f"below word {isa.TASK_ADDR_LIMIT} (a task's entry address)") from None
        for name, words in k.consts.items():
            self.write(k.regions[name], words)
        for name, r in k.regions.items():
            if name not in bind:
                shared.setdefault(name, r)
        self.top = k.data_end
        self.prog.extend(k.program[:-1])
        self.tags.extend([self.tag] * (len(k.program) - 1))
        return k

    def on(self, tag: str) -> _Pe:
        self.tag = tag
        return self

    def patch(self, target: int, slot: int, value_reg: int) -> None:
        """SST register ``value_reg`` into operand ``slot`` (1 dst, 2 a, 3 b) of instruction
        ``target`` (emitted later)."""
        self.fixups.append((self(Ins(Op.SST, a=reg(value_reg), b=0)), target, slot))

    def finish(self, sram_words: int) -> tuple[int, np.ndarray]:
        """``(code_base, image)`` with END appended and the fixups resolved."""
        self(Ins(Op.END))
        base = isa.align_insn(self.top)     # a program starts on an SRAM row
        if base + isa.INSN_WORDS * len(self.prog) > min(sram_words, 1 << 16):
            raise _Overflow(self.name, base + isa.INSN_WORDS * len(self.prog))
        for at, target, slot in self.fixups:
            self.prog[at] = dataclasses.replace(self.prog[at],
                                                b=base + isa.INSN_WORDS * target + slot)
        code = isa.assemble(self.prog)
        end = base + len(code)
        if end > sram_words:
            raise _Overflow(self.name, end)
        if base >= isa.TASK_ADDR_LIMIT:
            raise _Overflow(self.name, end, f"its program would start at word {base}, and a "
                            f"program must start below word {isa.TASK_ADDR_LIMIT} (a task's "
                            f"entry address)")
        img = np.zeros(end, np.uint32)
        for a, w in self.image:
            img[a:a + len(w)] = w
        img[base:] = code
        return base, img


class _Overflow(Exception):
    def __init__(self, name, words, beyond=None):
        # beyond: the limit it hit when that is not the SRAM's size
        self.name, self.words, self.beyond = name, words, beyond
        self.what = ("the norm, RoPE and requantization constants, the reciprocal and argmax "
                     "tables, its program" if "hub" in name else
                     "its rows of every weight matrix, tables, KV slots, its program")


def _limit(exc: _Overflow, shape: MeshShape) -> str:
    """What an overflowing PE ran into: the SRAM's size, or the limit ``exc.beyond`` names."""
    return exc.beyond or f"a PE has {shape.sram_words} ({shape.sram_kb} KiB)"


def _req_words(mult, shift) -> list[int]:
    return [isa.req_word(int(m), int(s)) for m, s in zip(np.ravel(mult), np.ravel(shift),
                                                          strict=True)]


def _operand(src: isa.Src) -> int:
    return src.word("patch")


@dataclasses.dataclass
class _Matrix:
    """A weight matrix split by rows over the workers, with what follows its GEMV."""

    name: str
    w: np.ndarray             # (M, K) int8
    out: str                  # "i8" (VREQ by req) or "i32" (VMULSR by mult, shift)
    mult: np.ndarray
    shift: np.ndarray
    bias: np.ndarray | None = None

    @property
    def m(self) -> int:
        return self.w.shape[0]

    @property
    def kw(self) -> int:
        return self.w.shape[1] // LANES


def slot_reduction(slots: int, heads: int) -> str:
    """How a worker takes each head's max (or sum) over its ``slots`` KV positions before the
    reduction tree: ``"none"`` with one slot (the tree reads the slots in place),
    ``"elementwise"`` with a few (one element-wise op over all heads per further slot), else
    ``"reduce"`` (one REDUCE instruction per head). The choice compares the two programs'
    cycles on the core (an element-wise op of ``heads`` elements, about ``11 + 2 heads``; a
    REDUCE of ``slots`` elements, about ``18 + slots``)."""
    if slots <= 1:
        return "none"
    return "elementwise" if (slots - 1) * (11 + 2 * heads) < heads * (18 + slots) else "reduce"


def slot_reduction_size(slots: int, heads: int) -> tuple[int, int]:
    """``(instructions, elements)`` of a worker's max (or sum) over its slots
    (:func:`slot_reduction`): ``slots - 1`` element-wise ops of ``heads`` elements, or
    ``heads`` REDUCEs of ``slots``, or nothing with one slot; the quantities of the decoder
    cycle terms' ``per_slot_reduction_op`` and ``per_slot_reduction_element``."""
    how = slot_reduction(slots, heads)
    if how == "none":
        return 0, 0
    if how == "elementwise":
        return slots - 1, (slots - 1) * heads
    return heads, heads * slots


def worker_order(rows: int, cols: int) -> list[tuple[int, int]]:
    """The workers of a ``rows`` x ``cols`` mesh in the decoder's order: nearest the hub
    (0, 0) first (``row + col`` hops), then by column. The reduction trees are rooted at the
    hub and an exchange's tree is pruned to the workers with a share of it, always a prefix
    of this order, so data that only the first workers hold (the residual channels, the
    reciprocals, the LM head's rows, a short context) meets at the hub after the fewest
    levels."""
    return sorted(((r, c) for r in range(rows) for c in range(cols) if (r, c) != (0, 0)),
                  key=lambda t: (t[0] + t[1], t[1]))


def summed_workers(rows: int, cols: int, n: int) -> list[tuple[int, int]]:
    """The ``n`` workers of a part whose exchange the hub sums (the KV cache's, the q/k/v
    rows'): the first ``n`` of :func:`worker_order` east of column 0 (the hub's east
    subtree) if it has that many, else the first ``n`` of all. Every tile between one of
    them and the hub is one of them too (a prefix of a subtree in depth order). Summing at
    the hub the streams of both its children takes two cycles a word (one ramp); one
    child's, one: on the 8x8 at context 32 the weighted sum's 128 words a layer cost 484
    cycles a token fewer and the q/k/v gather's 112, 420 (mesh ISS), for one more level on
    the trees of 32 workers (8 hops, not 7)."""
    east = [t for t in worker_order(rows, cols) if t[1] >= 1]
    return east[:n] if len(east) >= n else worker_order(rows, cols)[:n]


def one_stream_slots(rows: int, cols: int, positions: int, slots: int,
                     lanes: int = LANES) -> int:
    """The slots a worker a KV cache of ``positions`` takes at ``slots`` a worker or more:
    one slot more where ``ceil(positions / slots)`` workers spill out of the hub's east
    subtree and ``ceil(positions / (slots + 1))`` fit it (:func:`summed_workers`): the hub
    then takes the attention's sums on one stream and requantizes them as they arrive, where
    on two it adds them into XBUF at two cycles a word and requantizes them in a second
    pass. Only where the extra slot adds no word to a head's padded slots (``lanes
    ceil(S / lanes)``, what the element-wise passes and the digits' GEMVs run over), so only
    the score GEMV and the slots' max and sum grow, by a row; not from one slot (whose
    values are kept another way). On the 8x8 at 512 positions: 10 slots on 52 workers, not
    9 on 57 (mesh ISS at 128 KiB, where both fit: 28,016 cycles a token against 28,748).
    The compiler takes it where it fits (:func:`_one_stream`); the wafer estimate places its
    KV cache by it too."""
    east = (cols - 1) * rows
    now = min(-(-positions // slots), rows * cols - 1)      # no more workers than there are
    if slots >= 2 and slots + 1 <= MAX_SLOTS and now > east >= -(-positions // (slots + 1)) \
            and -(-slots // lanes) == -(-(slots + 1) // lanes):
        return slots + 1
    return slots


def _rows(m: int, workers: int) -> int:
    """Rows a worker holds: ``ceil(M / W)`` rounded up to a multiple of 4 (int8 outputs fill
    whole words, so the workers' parts of the gathered vector never share a word)."""
    return LANES * math.ceil(math.ceil(m / LANES) / workers)


def _qkv_plan(nh: int, nkv: int, hd: int, workers: int) -> list[list[tuple]]:
    """The rows of the fused q/k/v matrix each worker holds, as segments: RoPE mixes channel
    ``j`` of a head with channel ``j + hd/2``, so q and k are split in *pairs* (four
    channels of a head's first half and the four half a head later: 8 rows), each pair on one
    worker, which then applies RoPE to its own rows; the values in words of 4 rows. Segments:
    ``("qk", head, first pair, pairs)`` (head ``t < nh`` a query head, else key head
    ``t - nh``) and ``("v", None, first word, words)``. Each worker takes the next pairs in
    order while they fit a row budget, then the next value words; the budget is the smallest
    (a multiple of 4 rows) with which every row finds a worker."""
    pairs = [(t, w) for t in range(nh + nkv) for w in range(hd // 8)]
    vwords = nkv * hd // LANES
    cap = max(8, LANES * math.ceil((8 * len(pairs) + LANES * vwords) / LANES / workers))
    while True:
        plans, ip, iv = [], 0, 0
        for _ in range(workers):
            segs, used = [], 0
            while ip < len(pairs) and used + 8 <= cap:
                t, w = pairs[ip]
                if segs and segs[-1][1] == t:
                    segs[-1][3] += 1
                else:
                    segs.append(["qk", t, w, 1])
                ip, used = ip + 1, used + 8
            nv = min(vwords - iv, (cap - used) // LANES)
            if nv:
                segs.append(["v", None, iv, nv])
                iv += nv
            plans.append([tuple(sg) for sg in segs])
        if ip == len(pairs) and iv == vwords:
            return plans
        cap += LANES


def _seg_words(seg: tuple, nh: int, nkv: int, hd: int) -> list[tuple[int, int]]:
    """``[(word, elements)]`` of a :func:`_qkv_plan` segment in the natural q/k/v layout
    (int8, four channels a word), in the order the segment's rows are stored: a pair
    segment's first halves, then its second halves."""
    kind, t, i, n = seg
    if kind == "qk":
        return [(t * hd // LANES + i, 4 * n), (t * hd // LANES + hd // 8 + i, 4 * n)]
    return [((nh + nkv) * hd // LANES + i, LANES * n)]


def _seg_rows(seg: tuple, nh: int, nkv: int, hd: int) -> list[int]:
    """The q/k/v rows of a :func:`_qkv_plan` segment, in the order the worker stores them."""
    return [LANES * w + j for w, n in _seg_words(seg, nh, nkv, hd) for j in range(n)]


def _merge_pieces(pieces) -> list[tuple[int, int, int, int]]:
    """One int8 output instruction per run: ``pieces`` ``[(first element, elements, word)]``
    (elements a multiple of 4) become ``[(first element, elements, word, stride)]``,
    consecutive pieces joined where their words follow each other, and two one-word pieces
    joined by the stride between their words."""
    out = []
    for a0, n, w in pieces:
        if out:
            pa, pn, pw, ps = out[-1]
            if pa + pn == a0 and ps == 1 and pw + pn // LANES == w:
                out[-1] = (pa, pn + n, pw, 1)
                continue
            if pa + pn == a0 and pn == n == LANES and 0 < w - pw <= 0xFF:
                out[-1] = (pa, 2 * LANES, pw, w - pw)
                continue
        out.append((a0, n, w, 1))
    return out


@dataclasses.dataclass(frozen=True)
class Tap:
    """One intermediate vector the hub sends out per token (``taps=True``): the golden
    trace point ``(layer, name)`` (:data:`~sparktile.golden_model.intpath.TRACE_POINTS`),
    ``n`` elements of ``kind`` (``i8``: four a word; ``i32``), starting at element ``first``
    of the golden vector; ``order``: the vector's words as they arrived at the hub by a
    span-limited gather (word ``j`` sent is word ``order[j]`` of the vector), or ``None`` in
    order."""

    layer: int
    name: str
    kind: str
    n: int
    first: int = 0
    order: tuple | None = None

    @property
    def words(self) -> int:
        return -(-self.n // LANES) if self.kind == "i8" else self.n

    def decode(self, words) -> np.ndarray:
        w = np.asarray(words, np.uint32)
        if self.order is not None and len(w) == len(self.order):
            w = w[np.argsort(self.order)]
        if self.kind == "i8":
            return arith.unpack_int8(w)[:self.n].astype(np.int64)
        return w.view(np.int32).astype(np.int64)

    def word_of(self, element: int) -> int:
        """The word (in the order sent) that carries ``element``."""
        w = element // LANES if self.kind == "i8" else element
        return w if self.order is None else self.order.index(w)


def check_taps(taps, words, times, trace) -> dict | None:
    """Compare one token's tap words (``words``, arrival ``times``) with the golden ``trace``
    of that token; ``None`` if all equal, else the first difference: ``{layer, op, element,
    got, expected, cycle}``."""
    at = 0
    for tap in taps:
        chunk = words[at:at + tap.words]
        got = tap.decode(chunk)
        want = np.asarray(trace[tap.layer, tap.name], np.int64).reshape(-1)
        want = want[tap.first:tap.first + tap.n]
        if len(got) != len(want):
            return {"layer": tap.layer, "op": tap.name, "element": len(got), "got": None,
                    "expected": None, "cycle": None}
        bad = np.flatnonzero(got != want)
        if bad.size:
            e = int(bad[0])
            word = at + tap.word_of(e)
            return {"layer": tap.layer, "op": tap.name, "element": tap.first + e,
                    "got": int(got[e]), "expected": int(want[e]),
                    "cycle": int(times[word]) if word < len(times) else None}
        at += tap.words
    return None


@dataclasses.dataclass
class DecoderMapping:
    """A decoder compiled onto a core mesh (see the module docstring).

    ``program``: routes, task tables, queue bindings and SRAM images. ``slots``: KV slots per
    worker on the ``kv_workers`` tiles ``kv_tiles`` (:func:`summed_workers`; position ``p``
    in slot ``p // kv_workers`` of ``kv_tiles[p % kv_workers]``); ``max_context = slots *
    kv_workers`` (capped by the model's positions).
    ``kv_words_per_pe``: SRAM words of one slot on a worker (keys and values of every layer,
    its RoPE table row). ``words``: SRAM words used per PE (the fullest one), and by whom.
    """

    shape: MeshShape
    program: ConfigProgram
    workers: list
    slots: int
    max_context: int
    kv_workers: int
    kv_words_per_slot: int
    words: dict
    programs: dict
    layout: dict
    vocab: int
    hidden: int
    #: The hub's taps in the order their words leave ``W0`` (empty without ``taps``).
    taps: list = dataclasses.field(default_factory=list)
    #: ``(code base, op of each instruction)`` of the hub's program (for :meth:`by_op`).
    hub_code: tuple = (0, [])
    #: The hub sends the logits (``vocab`` int32 words) for a sampling host, not the argmax.
    logits: bool = False
    #: The tiles holding the KV cache, in the order positions go round them.
    kv_tiles: tuple = ()

    def by_op(self, log) -> dict:
        """Cycles of one token by op, from the hub's timeline ``log`` (``[(pc, start, end)]``
        of its instructions, as :class:`~sparktile.compiler.mesh_iss.MeshIss` records them):
        each instruction's time, waits included, goes to its op, so a reduction's wait counts
        for the op the workers were running (the hub is on every token's critical path; the
        sum is the token's cycles)."""
        base, tags = self.hub_code
        out: dict[str, int] = {}
        prev = None
        for pc, start, end in log:
            tag = tags[(pc - base) // isa.INSN_WORDS]
            out[tag] = out.get(tag, 0) + end - (start if prev is None else prev)
            prev = end
        return out

    @property
    def tap_words(self) -> int:
        """Words the taps send per token."""
        return sum(t.words for t in self.taps)

    @property
    def out_words(self) -> int:
        """Words on :data:`OUT` per token: the next token, or the logits."""
        return self.vocab if self.logits else 1

    @property
    def on_fabric(self) -> tuple:
        """The op kinds the mesh runs: every op of the decoder, the argmax when greedy."""
        ops = ("embedding", "rms_norm", "matmul", "rope", "kv_append", "attention_scores",
               "softmax", "weighted_sum", "residual", "silu")
        return ops if self.logits else ops + ("argmax",)

    @property
    def on_host(self) -> tuple:
        """The op kinds the host runs: nothing when greedy (the host sends the token id and the
        position, and reads the next token); the sampling when the fabric sends the logits."""
        return ("sampling",) if self.logits else ()

    def kv_word(self, layer: int, position: int, word: int) -> tuple[tuple[int, int], int]:
        """``((row, col), address)`` of word ``word`` of ``position``'s key row of ``layer``
        (its worker and SRAM address): where a fault-injection test flips a bit."""
        w = self.kv_workers
        tile = self.kv_tiles[position % w]
        kc = self.layout[tile]["kc"][layer]
        per = kc.n // self.slots
        if not 0 <= word < per:
            raise ValueError(f"a key row has {per} words, not word {word}")
        # the cache is kept by kv group: group g's rows (gw words each), slot by slot
        gw = self.layout[tile]["kc_group_words"]
        g, j = divmod(word, gw)
        return tile, kc.base + (g * self.slots + position // w) * gw + j

    def token_stream(self, token: int, position: int) -> tuple[np.ndarray, np.ndarray]:
        """``(payloads, ccs)`` the host sends into the hub's north edge (port ``N0``) for one
        token: the activation, a control wavelet on :data:`A` whose payload carries the
        position (bits 15:0) and the token id (bits 30:16); the broadcast tree takes it to
        every PE, and the workers holding the token's embedding channels load them."""
        if not 0 <= position < self.max_context:
            raise MappingError(f"position {position} is beyond the mesh's context of "
                               f"{self.max_context} positions ({self.slots} KV slots on each of "
                               f"{self.kv_workers} workers)")
        if not 0 <= token < self.vocab:
            raise MappingError(f"token id {token} is outside the vocabulary [0, {self.vocab})")
        return (np.array([position | token << 16], np.uint32),
                np.array([cc(A, 1)], np.uint8))


def golden_logits(model, token: int, cache, trace: dict | None = None) -> np.ndarray:
    """The golden int path's logits (int32, ``LOGIT_FRAC`` fractional bits) after ``token``
    (appended to ``cache``), recording its intermediate vectors in ``trace`` if given."""
    from ..golden_model import intpath
    return intpath.forward(model, model.int_params(), np.array([int(token)]), cache, trace)[0]


def golden_next(model, token: int, cache, trace: dict | None = None) -> int:
    """The golden int path's greedy next token after ``token`` (see :func:`golden_logits`)."""
    return int(arith.argmax_int(golden_logits(model, token, cache, trace)))


class HostSampler:
    """The host's part when the fabric sends logits: temperature, top-k and top-p sampling
    of each position's logits, as the golden model's ``generate(mode="int", seed=...)`` does
    (``numpy.random.default_rng(seed)``, one draw a generated token).

    The fabric's logits and the golden model's are drawn from by two generators of the same
    seed, so equal logits give equal tokens and the check stays a comparison of two runs.
    ``prompt`` positions draw nothing (their next token is the prompt's).
    """

    def __init__(self, temperature: float, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None):
        from ..golden_model.sampling import check_sampling
        check_sampling(temperature, top_k, top_p)
        if not temperature:
            raise ValueError("HostSampler samples (temperature > 0); greedy decoding is the "
                             "fabric's argmax")
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.rngs = {side: np.random.default_rng(seed) for side in ("fabric", "golden")}

    def pick(self, logits, side: str) -> int:
        """The next token from one row of int32 logits, with ``side``'s generator."""
        from ..golden_model.intpath import LOGIT_FRAC
        from ..golden_model.sampling import next_token
        z = np.asarray(logits, np.int64).astype(np.float64) * 2.0 ** -LOGIT_FRAC
        return next_token(z, self.rngs[side], self.temperature, self.top_k, self.top_p)


def score_position(mapping, model, cache, token: int, position: int, colors, words, times,
                   sampler: HostSampler | None = None, prompt: bool = False):
    """The scoreboard of one position: the golden int path's next token after ``token``
    (appended to ``cache``, its trace recorded) against the hub's west-edge words of that
    position (``colors`` as ``cc`` gives them, payloads, arrival ``times``).

    A greedy mapping sends the token; one with :attr:`DecoderMapping.logits` sends the logits,
    which are compared element by element, and ``sampler`` (None: greedy) picks the token from
    each side's logits unless the position is in the ``prompt``. Returns ``(got, want,
    first_diff)``: the fabric's token (None unless exactly one token or a whole row of logits
    came), the golden one, and the first difference (the taps in order, then the logits or the
    token) with its position, or None."""
    trace = {}
    want_z = golden_logits(model, token, cache, trace)
    colors = np.asarray(colors) & 31
    words, times = np.asarray(words), np.asarray(times)
    out, out_t = words[colors == OUT], times[colors == OUT]
    first = None
    if mapping.taps:
        first = check_taps(mapping.taps, words[colors == DBG], times[colors == DBG], trace)

    def choose(z, side):
        if sampler is None or prompt:
            return int(arith.argmax_int(z))
        return sampler.pick(z, side)

    if mapping.logits:
        want = choose(want_z, "golden")
        got = None
        if len(out) == mapping.vocab:
            got_z = out.astype(np.uint32).view(np.int32).astype(np.int64)
            bad = np.flatnonzero(got_z != want_z)
            if bad.size and first is None:
                e = int(bad[0])
                first = {"layer": -1, "op": "logits", "element": e, "got": int(got_z[e]),
                         "expected": int(want_z[e]), "cycle": int(out_t[e])}
            got = choose(got_z, "fabric")
        elif first is None:
            first = {"op": "logits", "got": f"{len(out)} words", "expected": f"{mapping.vocab}",
                     "cycle": int(out_t[-1]) if len(out) else None}
    else:
        want = int(arith.argmax_int(want_z))
        got = int(out[0]) if len(out) == 1 else None
    if first is None and got != want:
        first = {"op": "next_token", "got": got, "expected": want,
                 "cycle": int(out_t[0]) if len(out) else None}
    if first is not None:
        first["position"] = position
    return got, want, first


def _model_checks(model):
    c = model.config
    p = model.int_params()
    if p.dynamic:
        raise MappingError(f"model {c.name!r} uses per-token activation scales "
                           f"({model.act_scales_used}); the on-fabric decoder runs static "
                           f"scales only: use --act-scales static, or --on-fabric matmuls")
    for name, v, mult in (("hidden_size", c.hidden_size, 4),
                          ("intermediate_size", c.intermediate_size, 4),
                          ("head_dim", c.head_dim, 8)):
        if v % mult:
            raise MappingError(f"model {c.name!r}: {name} {v} must be a multiple of {mult} "
                               f"for the on-fabric decoder (int8 vectors fill whole words; "
                               f"each RoPE half starts on a word)")
    if c.vocab_size > 1 << 15:
        raise MappingError(f"model {c.name!r}: vocab_size {c.vocab_size} exceeds the 32768 "
                           f"token ids the activation wavelet carries (bits 30:16)")
    if c.hidden_size > kernels.MAX_NORM_WIDTH:
        raise MappingError(f"model {c.name!r}: hidden_size {c.hidden_size} exceeds the "
                           f"{kernels.MAX_NORM_WIDTH} channels the hub's RMSNorm takes on one "
                           f"PE")
    if p.eps_q >= kernels.MAX_EPS_Q:
        raise MappingError(f"model {c.name!r}: rms_norm_eps gives eps_q {p.eps_q}, beyond the "
                           f"norm kernel's {kernels.MAX_EPS_Q - 1}")
    return c, p


def _matrices(c, p) -> dict:
    mats = {}
    for i, L in enumerate(p.layers):
        ws, mult, shift, bias = [], [], [], []
        for lin in (L.q, L.k, L.v):
            ws.append(lin.op.w_q)
            if lin.op.out == "int8":
                mult.append(lin.op.mult)
                shift.append(lin.op.shift)
                bias.append(np.zeros(lin.op.w_q.shape[0], np.int64))
            else:
                mult.append(lin.mult)
                shift.append(lin.shift)
                bias.append(lin.bias_q if lin.bias_q is not None
                            else np.zeros(lin.op.w_q.shape[0], np.int64))
        b = np.concatenate(bias)
        mats[i, "qkv"] = _Matrix("qkv", np.concatenate(ws), "i8", np.concatenate(mult),
                                 np.concatenate(shift), b if b.any() else None)
        for key, lin, rq in (("o", L.o, L.o_res), ("down", L.down, L.down_res)):
            if lin.op.out != "int32" or lin.mult is not None:
                raise MappingError(f"layer {i} {key}: expected an int32 matmul into the "
                                   f"residual stream")
            mats[i, key] = _Matrix(key, lin.op.w_q, "i32", rq[0], rq[1], lin.bias_q)
        for key, lin in (("gate", L.gate), ("up", L.up)):
            if lin.op.out != "int8":
                raise MappingError(f"layer {i} {key}: expected an int8 matmul")
            mats[i, key] = _Matrix(key, lin.op.w_q, "i8", lin.op.mult, lin.op.shift)
    mats[-1, "head"] = _Matrix("head", p.head.op.w_q, "i32", p.head_rq[0], p.head_rq[1],
                               p.head.bias_q)
    return mats


def compile_decoder(model, shape: MeshShape, context: int | None = None, *,
                    taps: bool = False, logits: bool = False) -> DecoderMapping:
    """Compile the whole decoder of ``model`` onto ``shape`` (a ``pe="core"`` mesh).

    ``context``: the positions the KV cache must hold; ``None`` takes the largest that fits
    (at most :data:`MAX_SLOTS` slots per worker and the model's ``max_position_embeddings``).
    ``taps``: the hub also sends each intermediate vector it holds out of its west edge on
    :data:`DBG` (:attr:`DecoderMapping.taps`), for ``--check every-op``.
    ``logits``: the token's logits leave the hub (``vocab`` int32 words on :data:`OUT`, the
    workers' rows gathered through the reduction tree) instead of the greedy argmax, for a
    host that samples (:class:`HostSampler`).

    Raises
    ------
    MappingError
        Naming what does not fit: a mesh of one tile or not of cores, a model shape the
        kernels do not take, per-token activation scales, a PE's SRAM (words needed against
        words there, and by what), or a context beyond what the mesh holds.
    """
    if shape.pe != "core":
        raise MappingError(f"the on-fabric decoder needs a mesh of programmable cores "
                           f"(pe='core'), not pe={shape.pe!r}")
    if shape.pes < 2:
        raise MappingError(f"the on-fabric decoder needs at least 2 PEs (a hub and a worker); "
                           f"the {shape} mesh has {shape.pes}")
    if max(RR + RC + (A, B, OUT, DBG)) >= shape.route_colors:
        raise MappingError(f"the on-fabric decoder routes colors up to {max(RR)}; the mesh has "
                           f"{shape.route_colors} route colors")
    c, p = _model_checks(model)
    workers = shape.pes - 1
    npos = min(c.max_position_embeddings, p.cos_q.shape[0])
    cap = min(MAX_SLOTS, math.ceil(npos / workers))
    if context is not None:
        if not isinstance(context, int) or isinstance(context, bool) or context < 1:
            raise MappingError(f"context must be a positive integer, not {context!r}")
        if context > npos:
            raise MappingError(f"a context of {context} positions exceeds the model's "
                               f"max_position_embeddings ({npos})")
        need = math.ceil(context / workers)
        if need > MAX_SLOTS:
            raise MappingError(f"a context of {context} positions needs {need} KV slots on each "
                               f"of {workers} workers; a worker takes at most {MAX_SLOTS}")
        try:
            # the fewest workers that hold the context at that many slots each
            return _one_stream(model, shape, context, taps, logits, _compile(
                model, shape, need, taps, logits, kv_workers=math.ceil(context / need)))
        except _Overflow as exc:
            one = _slot_words(c)
            raise MappingError(
                f"a context of {context} positions needs {need} KV slots per worker: PE "
                f"{exc.name} then needs {exc.words} SRAM words (weights, tables, programs and "
                f"{one} words a slot), but {_limit(exc, shape)}; "
                f"{_largest(model, shape, taps, logits)}") from None

    # The search for the most slots compiles with the norms' sums in vector ops everywhere
    # (the scalar ones' longer programs go where room is left, and would bend the linear
    # growth the search relies on); the count found is compiled as any other.
    def fits_at(slots: int) -> bool:
        try:
            _compile(model, shape, slots, taps, logits, scalar_norms=False)
        except _Overflow:
            return False
        return True

    # Where the most slots the model's positions can use fit, they are the answer (a
    # worker's words only grow with its slots): three compiles instead of the search's six
    # or more (the 8x8's 9 slots for the shipped model's 512 positions).
    if cap >= 4 and fits_at(cap):
        return _one_stream(model, shape, npos, taps, logits,
                           _compile(model, shape, cap, taps, logits))
    try:
        one = _compile(model, shape, 1, taps, logits)
    except _Overflow as exc:
        raise MappingError(
            f"model {c.name!r} does not fit the {shape} mesh even with one KV slot per worker: "
            f"PE {exc.name} needs {exc.words} SRAM words ({exc.what}) but "
            f"{_limit(exc, shape)}; use a larger mesh or more SRAM per PE") from None
    samples = [one]             # one, two and three slots, while they fit
    for slots in (2, 3):
        if cap < slots:
            break
        try:
            samples.append(_compile(model, shape, slots, taps, logits, scalar_norms=False))
        except _Overflow:
            break
    if len(samples) < 3:
        return samples[0] if len(samples) == 1 else _compile(model, shape, 2, taps, logits)
    _one, two, three = samples
    # From two slots on, a worker's words grow at least linearly with its slots (one slot
    # has its own, shorter p . v; the padding of slots to whole words only adds steps): the
    # largest count that fits, from the samples at two and three, then checked by compiling
    # it (stepping down where a step says no).
    fits = min((shape.sram_words - w2) // max(1, three.words["per_pe"][key] - w2) + 2
               for key, w2 in two.words["per_pe"].items()
               if three.words["per_pe"][key] > w2)

    n = max(3, min(cap, fits))
    if n == 3 or fits_at(n):        # three fits (it compiled above)
        # a slot's words can also grow less than from two to three (a per-slot step whose
        # form changes with the count, the padding of slots to whole words): then the next
        # count fits too, and the largest is further up
        while n < cap and fits_at(n + 1):
            n += 1
    else:
        n -= 1
        while n > 3 and not fits_at(n):
            n -= 1
    return _one_stream(model, shape, npos, taps, logits, _compile(model, shape, n, taps, logits))


def _one_stream(model, shape, positions: int, taps, logits, mapping) -> DecoderMapping:
    """``mapping`` (of ``positions``), or, where :func:`one_stream_slots` takes one slot
    more a worker and that fits, the mapping at that many on fewer workers."""
    slots = one_stream_slots(shape.rows, shape.cols, positions, mapping.slots)
    if slots == mapping.slots:
        return mapping
    try:
        return _compile(model, shape, slots, taps, logits, kv_workers=-(-positions // slots))
    except _Overflow:
        return mapping


def _largest(model, shape, taps, logits) -> str:
    try:
        return (f"the largest context of this mesh is "
                f"{compile_decoder(model, shape, taps=taps, logits=logits).max_context}")
    except MappingError as exc:
        return str(exc)


def _slot_words(c) -> int:
    wk = c.num_kv_heads * c.head_dim // LANES
    # keys and (transposed) values of every layer, int8, and the RoPE row; the per-slot
    # scores, exponentials and digits (3 + 4 heads words) come on top
    return c.num_layers * 2 * wk + 2 * c.head_dim


def _compile(model, shape: MeshShape, slots: int, taps: bool = False,
             logits: bool = False, kv_workers: int | None = None,
             scalar_norms: bool = True) -> DecoderMapping:
    """The mapping at ``slots`` KV slots a worker (raises :class:`_Overflow` where a PE's
    SRAM does not hold it). ``scalar_norms``: each worker's norm sums in scalar ops where
    its SRAM has room for them (else, and with False everywhere, in vector ops)."""
    c, p = _model_checks(model)
    R, C = shape.rows, shape.cols
    workers = worker_order(R, C)
    W = len(workers)
    # The KV cache on the first Wk workers (all of them unless the context, or the model's
    # positions, need fewer): the attention's exchanges meet at the hub after fewer levels.
    npos = min(c.max_position_embeddings, p.cos_q.shape[0])
    Wk = min(W, -(-npos // slots)) if kv_workers is None else kv_workers
    if not 1 <= Wk <= W:
        raise ValueError(f"kv_workers must be in [1, {W}], not {kv_workers}")
    d, nh, nkv, hd, F, V = (c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim,
                            c.intermediate_size, c.vocab_size)
    grp = c.kv_group
    wk, wv = nkv * hd // LANES, nkv * hd
    m_qkv = (nh + 2 * nkv) * hd
    if max(d // LANES, nh * hd // LANES, F // LANES) > CORE_XBUF_WORDS:
        widest = max(d // 4, nh * hd // 4, F // 4)
        raise MappingError(
            f"model {c.name!r}: a broadcast vector takes {widest}"
            f" words of XBUF (hidden {d // 4}, the queries {nh * hd // 4}, the FFN {F // 4}); "
            f"a core has {CORE_XBUF_WORDS}")
    mats = _matrices(c, p)
    S = slots
    prog = ConfigProgram(shape)
    programs, layout, used = {}, {}, {}

    # ---- shared helpers -----------------------------------------------------------------
    # The gathered q/k/v of a layer, RoPE applied by the workers: the keys, the queries
    # (``qw`` words a head), the values as they enter the transposed cache (int32, ``(v &
    # 255) << 8 lane``; with one slot int8, four a word: ``vw`` words), then, with ``taps``,
    # q/k/v before RoPE. The values come last: the workers append them while their scores'
    # max goes up the tree, off the path to the scores. The key cache is kept by kv group
    # (group g's S rows of ``qw`` words, then the next group's), so a head's score GEMV
    # reads just its group's keys, S rows of ``qw`` words, against its query as it is.
    qw = hd // LANES
    vw = wv if S > 1 else wv // LANES

    def q_at(t: int) -> int:
        """Offset of query head ``t`` in the gathered q/k/v."""
        return g_q + t * qw

    g_k, g_q, g_v, g_pre = 0, wk, wk + nh * qw, wk + nh * qw + vw
    g_size = g_pre + (m_qkv // LANES if taps else 0)
    # The first norm's gather also carries the RoPE row of the position (cos, then sin with
    # the rotation's sign folded in), which only its owner holds.
    sizes = {"qkv": g_size, "max": nh, "sum": nh, "att": nh * hd, "d": d,
             "h": d // LANES + 2 * hd, "ffn": F // LANES, "vocab": V, "x": 2, "m": 1,
             "rsqrt": 2}
    d_rows = _rows(d, W)        # residual channels (and o / down rows) per worker
    # The first worker without channels, if any, adds the norms' epsilon to the sums
    # (kernels.norm_eps_part) while the others compute theirs: the hub's rsqrt starts sooner.
    eps_k = next((k for k in range(W) if k * d_rows >= d), None)
    eps_worker = eps_k is not None
    qkv_plan = _qkv_plan(nh, nkv, hd, W)
    # The exchanges whose words are summed or zero-padded at the hub (the attention's, and
    # the q/k/v gather) on the hub's east subtree where it holds their workers
    # (summed_workers): the hub then takes one stream, not two through its one ramp.
    kv_tiles = summed_workers(R, C, Wk)
    nq = sum(1 for s_ in qkv_plan if s_)
    q_tiles = summed_workers(R, C, nq)
    q_tiles += [t for t in workers if t not in q_tiles]
    kv_index = {t: i for i, t in enumerate(kv_tiles)}
    q_index = {t: i for i, t in enumerate(q_tiles)}
    spread_recip = -(-nh // W) < nh

    def holding(m: int) -> frozenset:
        """The workers holding rows of a matrix of ``m`` rows split by :func:`_rows`."""
        n = _rows(m, W)
        return frozenset(workers[k] for k in range(W) if k * n < m)

    # Who contributes to each exchange (the tiles whose words are not all the identity):
    # its tree is pruned to them (each a prefix of the workers, so every tile between one
    # of them and the hub is one of them too).
    parts = {"d": holding(d),
             "qkv": frozenset(w for w, s_ in zip(q_tiles, qkv_plan, strict=True) if s_),
             "kv": frozenset(kv_tiles), "head": holding(V),
             "recip": frozenset(workers[:nh]) if spread_recip else frozenset()}
    parts["norm_sum"] = parts["d"] | ({workers[eps_k]} if eps_worker else frozenset())

    # Span-limited gathers (a norm's h, the FFN's product): a tile of
    # the pruned tree sends its own words, then forwards the words of its column below it,
    # then (on row 0) those of the columns east of it, so a link carries only its subtree's
    # words and the hub takes one stream at a time, one word a cycle (a zero-padded sum
    # takes both children's streams through one ramp: two cycles a word). The words reach
    # the hub in the column-major order of the tiles (the tree's preorder), which the hub
    # sends on as it is: the weight columns of the GEMVs that read the vector are permuted
    # to match (`order`).
    def spans_of(m: int) -> dict:
        """Each holder's words ``(first, count)`` of a vector of ``m`` int8 rows split by
        :func:`_rows`."""
        n = _rows(m, W)
        return {workers[k]: (k * n // LANES, (min(m, (k + 1) * n) - k * n) // LANES)
                for k in range(W) if k * n < m}

    spans = {"h": spans_of(d), "ffn": spans_of(F)}
    order = {key: tuple(w for t in sorted(span, key=lambda t: (t[1], t[0]))
                        for w in range(span[t][0], span[t][0] + span[t][1]))
             for key, span in spans.items()}

    def under(t: tuple[int, int], rr_: int, cc_: int) -> bool:
        """Whether tile ``t`` is in the subtree of the reduction tree rooted at ``(rr_,
        cc_)``: a column's tiles below it; on row 0 every column from ``cc_`` on."""
        return t[1] == cc_ and t[0] >= rr_ if rr_ >= 1 else t[1] >= cc_

    def words_below(span: dict, rr_: int, cc_: int) -> int:
        """The words of ``span`` in the subtree rooted at ``(rr_, cc_)``."""
        return sum(n for t, (_, n) in span.items() if under(t, rr_, cc_))

    def gather(pe: _Pe, rr_: int, cc_: int, span: dict, base: int, zero=None):
        """This PE's part of a span-limited gather of ``span`` (tile: its words): the hub
        receives the words at ``base`` in the tree's preorder; a worker sends its words (at
        ``base`` plus their first) and forwards its subtrees' (a VADD of ``zero``, a word
        0 read at stride 0)."""
        south = words_below(span, rr_ + 1, cc_)
        east = words_below(span, 0, cc_ + 1) if rr_ == 0 else 0
        if (rr_, cc_) == (0, 0):
            for n, col, at in ((south, RC[1], base), (east, RR[1], base + south)):
                if n:
                    pe(Ins(Op.RECV, n=n, dst=sram(at), a=isa.color(col)))
            return
        if (rr_, cc_) not in span:
            assert not south and not east, (rr_, cc_)
            return
        out = isa.color(RC[rr_ % 2] if rr_ >= 1 else RR[cc_ % 2])
        first, n = span[rr_, cc_]
        pe(Ins(Op.SEND, n=n, dst=out, a=sram(base + first)))
        for kid, n in ((RC[(rr_ + 1) % 2], south), (RR[(cc_ + 1) % 2], east)):
            if n:
                pe(Ins(Op.VADD, n=n, dst=out, a=isa.color(kid), b=zero))

    def permuted(mat: _Matrix, words) -> _Matrix:
        """``mat`` reading its input vector's words in the order ``words``."""
        return dataclasses.replace(
            mat, w=np.ascontiguousarray(mat.w.reshape(mat.m, -1, LANES)[:, list(words)]
                                        .reshape(mat.m, -1)))

    for key, mat in mats.items():
        if key[1] in ("qkv", "gate", "up", "head"):           # the norms' h
            mats[key] = permuted(mat, order["h"])
        elif key[1] == "down":
            mats[key] = permuted(mat, order["ffn"])

    @functools.cache
    def in_tree(part: frozenset, rr_: int, cc_: int) -> bool:
        """Whether the subtree of the reduction tree rooted at ``(rr_, cc_)`` holds a tile
        of ``part`` (:func:`under`)."""
        return rr_ < R and cc_ < C and any(under(t, rr_, cc_) for t in part)

    def kid_colors(part: frozenset, rr_: int, cc_: int) -> list[int]:
        """The colors on which tile ``(rr_, cc_)`` takes its children's streams of a
        reduction over the tree pruned to ``part``: the tile below's first, then (on row 0)
        the tile east's."""
        col = in_tree(part, rr_ + 1, cc_)                   # the tile below
        row = rr_ == 0 and in_tree(part, 0, cc_ + 1)        # row 0: the tile east
        return ([RC[(rr_ + 1) % 2]] if col else []) + ([RR[(cc_ + 1) % 2]] if row else [])

    def combine(pe: _Pe, rr_: int, cc_: int, vec: Region, n: int, how: str, tmp=None, *,
                part: frozenset):
        """This PE's part of a reduction of ``n`` words (``vec``) to the hub over the tree
        pruned to ``part`` (the tiles that contribute): at the hub the combined words land
        in ``vec`` (a region, or an operand: at the hub XBUF, at a worker a strided
        vector). A tile outside the pruned tree emits nothing. ``part`` is always a prefix
        of the workers (they are in depth order), so every tile of the pruned tree
        contributes: none only relays its children's words."""
        if not in_tree(part, rr_, cc_):
            return
        if (rr_, cc_) != (0, 0) and (rr_, cc_) not in part:
            raise AssertionError(f"tile ({rr_},{cc_}) would relay a tree pruned to tiles "
                                 f"that are not a prefix of the workers in depth order")
        vop = Op.VMAX if how == "max" else Op.VADD
        src = vec if isinstance(vec, isa.Src) else sram(vec.base)
        kids = kid_colors(part, rr_, cc_)
        if (rr_, cc_) == (0, 0):
            if len(kids) == 2:
                pe(Ins(vop, n=n, dst=src, a=isa.color(kids[0]), b=isa.color(kids[1])))
            else:
                pe(Ins(Op.RECV, n=n, dst=src, a=isa.color(kids[0])))
            return
        out = isa.color(RC[rr_ % 2] if rr_ >= 1 else RR[cc_ % 2])
        if len(kids) == 2:                  # row 0: the column below first, into tmp
            pe(Ins(vop, n=n, dst=sram(tmp.base), a=isa.color(kids[0]), b=src))
            src, kids = sram(tmp.base), kids[1:]
        if kids:
            pe(Ins(vop, n=n, dst=out, a=isa.color(kids[0]), b=src))
        else:
            pe(Ins(Op.SEND, n=n, dst=out, a=src))

    # p // Wk for p < 2**16: a multiply by a reciprocal (exact: Granlund-Montgomery)
    s_div = 16 + max(1, Wk - 1).bit_length()
    magic = -(-(1 << s_div) // Wk)
    sw = -(-S // LANES)          # words of a transposed value row (four slots a word)
    # a head's slots padded to whole words (the digits of p fill whole words of the GEMVs'
    # input); with one slot there are no digit GEMVs, and a head is its one slot
    S4 = 1 if S == 1 else LANES * sw
    nS = nh * S4            # all heads
    # the digits of p of hc heads at once in XBUF (two digit vectors of sw words a head),
    # then sw words of ones (int8 lanes of 1: the GEMV that sums a group's values), then,
    # where it fits beside them, the GEMV sums of the high digit
    hc = max(1, min(nh, (CORE_XBUF_WORDS - sw) // (2 * sw)))
    x_ones = 2 * hc * sw
    xg1 = x_ones + sw if x_ones + sw + nh * hd <= CORE_XBUF_WORDS else None

    # ---- the hub ------------------------------------------------------------------------
    hub = _Pe("(0,0) (the hub)")
    z = {k: hub.alloc(n) for k, n in sizes.items()}
    valid2 = hub.alloc(2 * nh, init=[1] * nh + [0] * nh)     # p's slot: valid, not masked
    rk = hub.alloc(2 * nh)
    ai8 = hub.alloc(nh * hd, "i8")
    outw = hub.alloc(1)
    # The softmax reciprocals (one Newton iteration per head): on the workers, one head each,
    # where at least two then run at once; else here (one tree round trip fewer).
    if not spread_recip:
        recip_seed = hub.alloc(len(arith.RECIP_SEED), "words", init=arith.RECIP_SEED)
    tap_list = []

    def tap(layer, name, base, kind, n, first=0, order=None):
        """With ``taps``: send ``n`` elements at ``base`` (an SRAM address, or an operand)
        out of the hub's west edge (``order``: its words as a span-limited gather left
        them)."""
        if taps:
            t = Tap(layer, name, kind, n, first, order)
            tag, hub.tag = hub.tag, "check"
            hub(Ins(Op.SEND, n=t.words, dst=isa.color(DBG),
                    a=base if isinstance(base, isa.Src) else sram(base)))
            tap_list.append(t)
            hub.tag = tag

    def bcast(n: int, src: Region | isa.Src):
        s = src if isinstance(src, isa.Src) else sram(src.base)
        tag, hub.tag = hub.tag, "data_movement"
        hub(Ins(Op.SEND, n=n, dst=isa.color(B), a=s))
        hub.tag = tag

    def hub_exchanges(kinds, part):
        """The hub's side of a split kernel's exchanges: each combined at the root and sent
        back to every worker."""
        for n, how in kinds:
            combine(hub, 0, 0, z["x"], n, how, part=part)
            bcast(n, z["x"])

    ARGMAX_X = [(1, "max"), (1, "max")]      # argmax's

    def hub_norm(layer, name, rope_row=False):
        """The root of a split RMSNorm: the row's max back to the workers, the Newton rsqrt
        of the combined sums (once, here) back to them, then their channels of h gathered
        and sent back whole (with ``rope_row``, followed by the position's RoPE row)."""
        combine(hub, 0, 0, z["m"], 1, "max", part=parts["d"])
        bcast(1, z["m"])
        combine(hub, 0, 0, z["x"], 2, "sum", part=parts["norm_sum"])
        hub.kernel(kernels.rms_norm_root, int(p.eps_q), kw={"eps_in_sums": eps_worker},
                   m=z["m"], hilo=z["x"], out=z["rsqrt"])
        bcast(2, z["rsqrt"])
        if rope_row:
            # the RoPE row of p from its owner (the KV workers' tree, zeros from the others),
            # sent up behind the sums: taken while the workers scale their channels by the
            # rsqrt, which went out first (their h follows the row on the tree's queues, so
            # the hub takes the row before the gather, as the words come)
            combine(hub, 0, 0, Region(z["h"].base + d // LANES, 2 * hd, "i32"), 2 * hd, "sum",
                    part=parts["kv"])
        nw = d // LANES + (2 * hd if rope_row else 0)
        # (a gather is received whole before it is sent on: the hub sending while the
        # workers still stream into the tree would fill their broadcast queues and stop them)
        # the workers' channels of h (the RoPE row is in z["h"] behind them already)
        gather(hub, 0, 0, spans["h"], z["h"].base)
        tap(layer, name, z["h"].base, "i8", d, order=order["h"])
        bcast(nw, z["h"])
        if rope_row:
            bcast(2 * nh, valid2)       # p's slot valid in every head

    def hub_gather_tap(layer, name, vec, n, part):
        """Check mode: the workers' int32 channels of a vector gathered for a tap."""
        if taps:
            combine(hub.on("check"), 0, 0, vec, n, "sum", part=part)
            tap(layer, name, vec.base, "i32", n)

    zq = z["qkv"]
    for li, L in enumerate(p.layers):
        hub.on("norm")
        hub_norm(li, "attn_norm", rope_row=li == 0)
        # q/k/v with RoPE applied and the values' cache words, from the workers
        # (the keys for the owner of p, the queries, the value words for the owner)
        combine(hub.on("matmul"), 0, 0, zq, g_size, "sum", part=parts["qkv"])
        tap(li, "q", zq.base + g_pre, "i8", nh * hd)
        tap(li, "k", zq.base + g_pre + nh * hd // LANES, "i8", nkv * hd)
        tap(li, "v", zq.base + g_pre + (nh + nkv) * hd // LANES, "i8", nkv * hd)
        for hh in range(nh):
            tap(li, "q_rope", zq.base + q_at(hh), "i8", hd, hh * hd)
        tap(li, "k_rope", zq.base + g_k, "i8", nkv * hd)
        bcast(g_v, zq)
        # the value words go out as the workers score (their append waits for the scores'
        # max exchange): the scores' time, as the keys' append is
        hub.on("attention_scores")(Ins(Op.SEND, n=vw, dst=isa.color(B), a=sram(zq.base + g_v)))
        combine(hub, 0, 0, z["max"], nh, "max", part=parts["kv"])
        if S4 == 1:                 # each head's max once: one SEND
            bcast(nh, z["max"])
        else:
            for hh in range(nh):    # each head's max S4 times: the workers' softmax layout
                bcast(S4, sram(z["max"].base + hh, stride=0))
        combine(hub.on("softmax"), 0, 0, z["sum"], nh, "sum", part=parts["kv"])
        if spread_recip:
            # the heads' sums back to the workers, whose first ones compute a head's
            # reciprocal each (in parallel, not one after another here), gathered, sent back
            bcast(nh, z["sum"])
            combine(hub, 0, 0, rk, 2 * nh, "sum", part=parts["recip"])
        else:
            for hh in range(nh):
                hub(Ins(Op.SLD, dst=reg(14), b=z["sum"].base + hh))
                kernels._recip_steps(hub, 14, recip_seed.base, 10, 11)
                hub(Ins(Op.SSUB, dst=reg(11), a=reg(11), b=arith.PROB_FRAC),
                    Ins(Op.SST, a=reg(10), b=rk.base + 2 * hh),
                    Ins(Op.SST, a=reg(11), b=rk.base + 2 * hh + 1))
        bcast(2 * nh, rk)
        # the heads' sums into XBUF where they fit: the VREQ reads them beside its
        # requantization words, one element a cycle
        att = xbuf(0) if nh * hd <= CORE_XBUF_WORDS else sram(z["att"].base)
        pv = hub.alloc(nh * hd, "req", init=_req_words(
            np.broadcast_to(L.pv[0], (nh, 1, hd)), np.broadcast_to(L.pv[1], (nh, 1, hd))))
        kv_kids = kid_colors(parts["kv"], 0, 0)
        if not taps and len(kv_kids) == 1:
            # one child: its sums are requantized as they arrive, into int8 words here,
            # then sent whole (not onto the broadcast tree as they come: the workers still
            # streaming into the reduction tree could not take them, see combine)
            hub.on("weighted_sum")(
                Ins(Op.VREQ, n=nh * hd, dst=sram(ai8.base, fmt=Fmt.I8X4),
                    a=isa.color(kv_kids[0]), b=sram(pv.base)))
            bcast(nh * hd // LANES, ai8)
        elif not taps:      # two children: summed here, then int8 onto the broadcast tree
            combine(hub.on("weighted_sum"), 0, 0, att, nh * hd, "sum", part=parts["kv"])
            hub(Ins(Op.VREQ, n=nh * hd, dst=isa.color(B, Fmt.I8X4), a=att, b=sram(pv.base)))
        else:               # the sums and the int8 output kept for their taps
            combine(hub.on("weighted_sum"), 0, 0, att, nh * hd, "sum", part=parts["kv"])
            tap(li, "attn_sum", att, "i32", nh * hd)
            hub(Ins(Op.VREQ, n=nh * hd, dst=sram(ai8.base, fmt=Fmt.I8X4), a=att,
                    b=sram(pv.base)))
            bcast(nh * hd // LANES, ai8)
            tap(li, "attn_out", ai8.base, "i8", nh * hd)
        hub_gather_tap(li, "o", z["d"], d, parts["d"])
        hub_gather_tap(li, "resid_attn", z["d"], d, parts["d"])
        hub.on("norm")
        hub_norm(li, "mlp_norm")
        gather(hub.on("matmul"), 0, 0, spans["ffn"], z["ffn"].base)
        bcast(F // LANES, z["ffn"])
        tap(li, "silu_up", z["ffn"].base, "i8", F, order=order["ffn"])
        hub_gather_tap(li, "down", z["d"], d, parts["d"])
        hub_gather_tap(li, "resid_mlp", z["d"], d, parts["d"])
    hub.on("norm")
    hub_norm(-1, "final_norm")
    if logits:
        # the host samples: the workers' rows of the logits gathered, and sent out whole
        combine(hub.on("data_movement"), 0, 0, z["vocab"], V, "sum", part=parts["head"])
        hub(Ins(Op.SEND, n=V, dst=isa.color(OUT), a=sram(z["vocab"].base)))
    else:
        hub_gather_tap(-1, "logits", z["vocab"], V, parts["head"])
        hub.on("argmax")
        hub_exchanges(ARGMAX_X, parts["head"])
        hub(Ins(Op.SLD, dst=reg(1), b=z["x"].base),
            Ins(Op.SLI, dst=reg(2), b=V),
            Ins(Op.SSUB, dst=reg(2), a=reg(2), b=reg(1)),         # the index: V - K
            Ins(Op.SST, a=reg(2), b=outw.base))
        hub.on("data_movement")(Ins(Op.SEND, n=1, dst=isa.color(OUT), a=sram(outw.base)))
    base, img = hub.finish(shape.sram_words)
    programs[0, 0] = hub.prog
    hub_code = (base, list(hub.tags))
    prog.write_sram(0, 0, 0, img)
    prog.set_reg(0, 0, isa.task_reg(A), isa.task_entry(base))
    used[0, 0] = len(img)
    layout[0, 0] = {"z": z}

    # ---- the workers --------------------------------------------------------------------
    exp_table = np.roll(arith.EXP2_TABLE, 128)

    def emit_worker(k: int, r: int, q: int, scalar_norm: bool) -> None:
        """Worker ``k`` at tile ``(r, q)``: its SRAM image, program, task and layout.
        ``scalar_norm``: its channels' norm sums in scalar ops (``kernels.rms_norm``'s
        ``scalar``: faster, about eleven instructions a channel of program in every norm)."""
        pe = _Pe(f"({r},{q})")
        rows = {}
        for key, mat in mats.items():
            if key[1] == "qkv":
                continue            # split in RoPE pairs: qkv_segs
            n = _rows(mat.m, W)
            lo = min(mat.m, k * n)
            rows[key] = (lo, min(mat.m, lo + n), n)
        segs = qkv_plan[q_index[r, q]]
        kk = kv_index.get((r, q), W)
        qrows = [row for seg in segs for row in _seg_rows(seg, nh, nkv, hd)]
        c_lo, c_hi = min(d, k * d_rows), min(d, (k + 1) * d_rows)
        nc = c_hi - c_lo                         # residual channels of this worker
        maxrows = max([hi - lo for lo, hi, _ in rows.values()] + [len(qrows)])
        acc = pe.alloc(max(maxrows, 1))
        acc2 = pe.alloc(max(maxrows, 1))
        y = {"qkv": pe.alloc(sizes["qkv"], init=[0] * sizes["qkv"]),
             "d": pe.alloc(d, init=[0] * d),
             "x": pe.alloc(d, init=[0] * d),
             "h": pe.alloc(sizes["h"], init=[0] * sizes["h"]),
             "ffn": pe.alloc(F // LANES, init=[0] * (F // LANES)),
             "vocab": pe.alloc(V, init=[0] * V)}
        x_own = Region(y["x"].base + c_lo, nc, "i32")
        zero_w = pe.alloc(1, init=[0])
        ml, tl = pe.alloc(nh), pe.alloc(nh)
        keep = pe.alloc(3)          # SLOT, OWNER, 2**(8 lane): the kernels use every register
        al = pe.alloc(nh * hd)
        tmp = pe.alloc(max(sizes.values()))
        # attention over all heads at once: head hh's slots at [hh S4, hh S4 + S) of each
        # vector (S4 = 4 sw: a head's digits fill whole words of the GEMV input; 1 with one
        # slot); the padding is masked like a slot not yet written
        rka = pe.alloc(2 * nh)
        if k == eps_k:
            epsv = pe.alloc(2)
            eps_tab = pe.alloc(2 * (kernels.MAX_E + 1), "words",
                               init=kernels.eps_table(int(p.eps_q)))
        mine = list(range(k, nh, W)) if spread_recip else []    # heads whose 1/sum it makes
        rkv = pe.alloc(2 * nh, init=[0] * (2 * nh)) if spread_recip else None
        if mine:
            recip_seed = pe.alloc(len(arith.RECIP_SEED), "words", init=arith.RECIP_SEED)
        sc = pe.alloc(nS, init=[0] * nS)
        ex, u, pr = pe.alloc(nS), pe.alloc(nS), pe.alloc(nS)
        if S > 1:       # the weighted sum's digits: scratch, p - 256, their GEMVs' sums, the
            # groups' value sums and the word of ones they are taken against
            tt = pe.alloc(nS)
            rm, g0, gv = pe.alloc(nS), pe.alloc(nh * hd), pe.alloc(nkv * hd)
            ones_w = pe.alloc(1, init=[0x01010101])
            g1 = xbuf(xg1) if xg1 is not None else sram(pe.alloc(nh * hd).base)
        ma = xbuf(0) if nS <= CORE_XBUF_WORDS else sram(pe.alloc(nS).base)
        valid = pe.alloc(nS, init=[0] * nS)
        negmask = pe.alloc(nS, init=[INT32_MIN_WORD] * nS)     # right behind valid
        sm_mult = {}
        for i, L in enumerate(p.layers):
            mult = np.asarray(L.sm[0]).reshape(-1)[:nh].astype(np.int64)
            shift = np.asarray(L.sm[1]).reshape(-1)[:nh].astype(np.int64)
            top = int(shift.max())
            scaled = mult << (top - shift)
            if top <= 63 and (scaled < 1 << 31).all():
                sm_mult[i] = (pe.alloc(nS, init=np.repeat(scaled, S4)), top)
        scratch = pe.alloc(max(wk, wv, S + 1))
        table = pe.alloc(256, "words", init=exp_table)
        rope_tab = pe.alloc(S * 2 * hd)
        for s_ in range(S):
            pos = s_ * Wk + kk
            if kk < Wk and pos < npos:
                sn = p.sin_q[pos].astype(np.int64).copy()
                sn[:hd // 2] = -sn[:hd // 2]
                pe.write(Region(rope_tab.base + s_ * 2 * hd, 2 * hd, "i32"),
                         np.concatenate([p.cos_q[pos].astype(np.int64), sn]))
        kc = [pe.alloc(S * wk, init=[0] * (S * wk)) for _ in range(c.num_layers)]
        # values transposed: row (g, j) of kv head g's channel j, four slots a word (int8)
        vc = [pe.alloc(wv * sw, init=[0] * (wv * sw)) if S > 1
              else pe.alloc(wv, "i8", init=[0] * vw) for _ in range(c.num_layers)]
        gq, uq = pe.alloc(maxrows, "i8"), pe.alloc(maxrows, "i8")
        pm = pe.alloc(max(maxrows, 1))
        ew = -(-nc // LANES) + 2                   # an embedding entry: channels, mult, shift
        if nc:
            etab = pe.alloc(V * ew, "words", init=np.concatenate([
                np.concatenate([pack_int8(p.embed_q[t, c_lo:c_hi]),
                                [int(p.embed_rq[0][t]) & WORD, int(p.embed_rq[1][t]) & WORD]])
                for t in range(V)]))
            ecur = pe.alloc(ew)
        wts = {}
        for key, mat in mats.items():
            if key[1] == "qkv":
                sel = np.asarray(qrows, np.int64)
            else:
                lo, hi, _n = rows[key]
                sel = np.arange(lo, hi)
            if not sel.size:
                continue
            wr = pe.alloc(sel.size * mat.kw, "words",
                          init=pack_int8(np.ascontiguousarray(mat.w[sel]).reshape(-1)))
            if mat.out == "i8":
                rq = pe.alloc(sel.size, "req", init=_req_words(mat.mult[sel], mat.shift[sel]))
            else:
                rq = pe.alloc(sel.size, "i32", init=np.asarray(mat.mult[sel], np.int64))
            bias = None
            if mat.bias is not None:
                bias = pe.alloc(sel.size, init=np.asarray(mat.bias[sel], np.int64))
            wts[key] = (wr, rq, bias)
        # RoPE on this worker's rows of q and k: the received RoPE row of p, the products,
        # the requantization of each segment's rows (in the order the segment's VREQ reads)
        rope_r = pe.alloc(2 * hd)
        pre = (Region(y["qkv"].base + g_pre, m_qkv, "i8") if taps
               else pe.alloc(m_qkv, "i8", init=[0] * (m_qkv // LANES)))
        rope_q = {}
        for i, L in enumerate(p.layers):
            for seg in segs:
                if seg[0] == "qk":
                    _, t, w0, b = seg
                    mult, shift = L.q_rope if t < nh else L.k_rope
                    hr = np.asarray(_seg_rows(seg, nh, nkv, hd)) - t * hd
                    rope_q[i, seg] = pe.alloc(8 * b, "req", init=_req_words(
                        np.asarray(mult)[t if t < nh else t - nh][hr],
                        np.asarray(shift)[t if t < nh else t - nh][hr]))
        silu = {i: pe.alloc(256, "words", init=np.asarray(L.silu, np.int64))
                for i, L in enumerate(p.layers)}
        gu = {}
        for i, L in enumerate(p.layers):
            lo, hi, _n = rows[i, "gate"]
            if hi > lo:
                gu[i] = pe.alloc(hi - lo, "req", init=_req_words(
                    np.broadcast_to(L.gu[0], (F,))[lo:hi], np.broadcast_to(L.gu[1], (F,))[lo:hi]))

        def exchanges(*trees, between=None):
            """A split kernel's exchanges on this worker, the i-th over the tree pruned to
            ``trees[i]``: its words into the reduction tree, (``between[i]``, if any, emits
            more into the program), the combined words back from the hub's broadcast."""
            it = iter(enumerate(trees))

            def exchange(kb, region, n, how):
                assert len(set(how)) == 1
                i, part = next(it)
                combine(kb, r, q, region, n, how[0], tmp, part=part)
                if between and i in between:
                    between[i](kb)
                kb(Ins(Op.RECV, n=n, dst=sram(region.base), a=isa.color(B)))
            return exchange

        def idle_exchanges(*sizes):
            """The exchanges of a split kernel this worker has no share of: their trees are
            pruned to the workers that have one (a prefix of the workers, this one not in
            it), so only the combined words come back, into scratch (``sizes``: the words
            of each)."""
            for n in sizes:
                pe(Ins(Op.RECV, n=n, dst=sram(scratch.base), a=isa.color(B)))

        def over_slots(base, how, out):
            """Each head's max or sum over this worker's slots (head ``hh``'s at ``base + hh
            S4``), as the operand the reduction tree reads: with one slot the slots
            themselves, S4 apart; with a few, element-wise ops over the heads, one per slot
            (into ``out``); else a REDUCE per head (into ``out``)."""
            kind = slot_reduction(S, nh)
            if kind == "none":
                return sram(base, stride=S4)
            vop, flag = (Op.VMAX, FLAG_MAX) if how == "max" else (Op.VADD, 0)
            if kind == "elementwise":
                pe(Ins(vop, n=nh, dst=sram(out.base), a=sram(base, S4), b=sram(base + 1, S4)))
                for s_ in range(2, S):
                    pe(Ins(vop, n=nh, dst=sram(out.base), a=sram(out.base),
                           b=sram(base + s_, S4)))
            else:
                for hh in range(nh):
                    pe(Ins(Op.REDUCE, n=S, imm=flag, dst=reg(2), a=sram(base + hh * S4)),
                       Ins(Op.SST, a=reg(2), b=out.base + hh))
            return sram(out.base)

        def norm(ms, rope_row=False, stream=False):
            """This worker's channels of the RMSNorm (split; exchanges through the trees),
            into its words of the gathered h (span-limited), which the hub sends back whole;
            with ``rope_row`` the RoPE row of p (the owner's, zeros from the other KV
            workers) goes up the KV workers' tree behind the sums, and comes back behind h,
            kept for the token's RoPE. ``stream``: h is left on the broadcast
            queue for the GEMV that follows (it streams x in: GEMVX), which calls
            :func:`norm_tail` after it."""
            pe.on("norm")

            def rope_up(kb):
                """The first norm's RoPE row of p (ours, or zeros) up the KV workers' tree,
                right behind the sums."""
                if rope_row:
                    combine(kb, r, q, Region(y["h"].base + d // LANES, 2 * hd, "i32"), 2 * hd,
                            "sum", tmp, part=parts["kv"])
            if nc:
                qreg = pe.alloc(nc, "req", init=_req_words(
                    np.asarray(ms[0])[c_lo:c_hi], np.asarray(ms[1])[c_lo:c_hi]))
                pe.kernel(kernels.rms_norm, nc, int(p.eps_q),
                          kw={"width": d, "rsqrt_at_root": True, "scalar": scalar_norm},
                          exchange=exchanges(parts["d"], parts["norm_sum"], between={1: rope_up}),
                          x=x_own, q=qreg, out=Region(y["h"].base + c_lo // LANES, nc, "i8"))
            elif k == eps_k:
                idle_exchanges(1)
                kernels.norm_eps_part(pe, scratch.base, epsv.base, eps_tab.base)
                combine(pe, r, q, epsv, 2, "sum", tmp, part=parts["norm_sum"])
                rope_up(pe)
                recv(2, sram(scratch.base))
            else:
                idle_exchanges(1)
                rope_up(pe)
                idle_exchanges(2)
            gather(pe, r, q, spans["h"], y["h"].base, sram(zero_w.base, 0))
            if not stream:
                recv(d // LANES, xbuf(0))
                norm_tail(rope_row)

        def norm_tail(rope_row):
            """What the first norm's broadcast carries after h: the RoPE row of p, then p's
            slot marked valid."""
            if rope_row:
                recv(2 * hd, sram(rope_r.base))
                # p's slot valid in every head: one RECV at stride S4 (or into scratch)
                reload()
                own = _operand(sram(valid.base, stride=S4))
                junk = _operand(sram(scratch.base, stride=0))
                pe(Ins(Op.SADD, dst=reg(7), a=reg(_SLOT), b=own - junk),
                   Ins(Op.SMULSH, dst=reg(7), a=reg(_OWNER), b=reg(7)),
                   Ins(Op.SADD, dst=reg(7), a=reg(7), b=junk))
                pe.patch(len(pe.prog) + 1, 1, 7)
                recv(2 * nh, sram(scratch.base, stride=0))

        def x_in(n, words, **kw):
            """A GEMV of ``n`` rows of ``words`` words whose x (``words`` words at XBUF 0) is
            the next broadcast: streamed in during the first row (GEMVX), no RECV."""
            return isa.gemv(n, words, x=xbuf(0), x_from=B, **kw)

        def qkv_rope(li):
            """This worker's rows of q, k and v (:func:`_qkv_plan`): one GEMV, requantized
            into their places of q/k/v before RoPE; RoPE on its q and k rows (each row and its
            partner half a head away are both here), into the gathered keys and padded
            queries; its values as the transposed cache's words, ``(v & 255) << 8 lane``."""
            if not qrows:
                recv(d // LANES, xbuf(0))
                norm_tail(li == 0)
                return
            mat, (wr, rq, bias) = mats[li, "qkv"], wts[li, "qkv"]
            n = len(qrows)
            pe.on("matmul")(x_in(n, mat.kw, dst=sram(acc.base), w=sram(wr.base)))
            norm_tail(li == 0)
            if bias is not None:
                pe(Ins(Op.VADD, n=n, imm=FLAG_SAT, dst=sram(acc.base), a=sram(acc.base),
                       b=sram(bias.base)))
            pieces, off = [], 0
            for seg in segs:
                for at, m_ in _seg_words(seg, nh, nkv, hd):
                    pieces.append((off, m_, pre.base + at))
                    off += m_
            for a0, m_, at, stride in _merge_pieces(pieces):
                pe(Ins(Op.VREQ, n=m_, dst=sram(at, stride, Fmt.I8X4), a=sram(acc.base + a0),
                       b=sram(rq.base + a0)))
            pe.on("rope")
            h, hw = hd // 2, hd // 8
            racc, rrot = pm, acc2           # free until the FFN
            for seg in segs:
                if seg[0] != "qk":
                    continue
                _, t, w0, b = seg
                xf = sram(pre.base + t * hd // LANES + w0, fmt=Fmt.I8X4)
                xs = sram(pre.base + t * hd // LANES + hw + w0, fmt=Fmt.I8X4)
                cf, cs = rope_r.base + 4 * w0, rope_r.base + h + 4 * w0
                m_ = 4 * b
                if b == hw:     # a whole head: its halves (and cos's) follow each other
                    pe(Ins(Op.VMUL, n=2 * m_, dst=sram(racc.base), a=xf, b=sram(cf)))
                else:
                    pe(Ins(Op.VMUL, n=m_, dst=sram(racc.base), a=xf, b=sram(cf)),
                       Ins(Op.VMUL, n=m_, dst=sram(racc.base + m_), a=xs, b=sram(cs)))
                pe(Ins(Op.VMUL, n=m_, dst=sram(rrot.base), a=xs, b=sram(cf + hd)),
                   Ins(Op.VMUL, n=m_, dst=sram(rrot.base + m_), a=xf, b=sram(cs + hd)),
                   Ins(Op.VADD, n=2 * m_, dst=sram(racc.base), a=sram(racc.base),
                       b=sram(rrot.base)))
                out = y["qkv"].base + (q_at(t) if t < nh else g_k + (t - nh) * hd // LANES)
                rqr = rope_q[li, seg]
                for a0, m2, at, stride in _merge_pieces([(0, m_, out + w0),
                                                         (m_, m_, out + hw + w0)]):
                    pe(Ins(Op.VREQ, n=m2, dst=sram(at, stride, Fmt.I8X4),
                           a=sram(racc.base + a0), b=sram(rqr.base + a0)))
            pe.on("kv_append")
            vsegs = [seg for seg in segs if seg[0] == "v"]
            if vsegs:
                pe(Ins(Op.SLD, dst=reg(9), b=keep.base + 2), _li(7, 1 << 24), _li(8, 1))
            for _, _t, u0, nu in vsegs:
                src = sram(pre.base + (nh + nkv) * hd // LANES + u0, fmt=Fmt.I8X4)
                m_ = 4 * nu
                if S == 1:
                    # one slot: the values as they are (int8, four a word), which the
                    # weighted sum reads as int8 elements
                    pe(Ins(Op.VADD, n=nu, dst=sram(y["qkv"].base + g_v + u0),
                           a=sram(src.base), b=sram(zero_w.base, 0)))
                    continue
                pe(Ins(Op.VMUL, n=m_, dst=sram(acc2.base), a=src, b=reg(7)),
                   Ins(Op.VMULSR, n=m_, imm=FLAG_UA | 24, dst=sram(acc2.base),
                       a=sram(acc2.base), b=reg(8)),                       # v & 255
                   Ins(Op.VMUL, n=m_, dst=sram(y["qkv"].base + g_v + 4 * u0),
                       a=sram(acc2.base), b=reg(9)))

        def matmul(key, dst_vec: Region, stream=False):
            """GEMV of this worker's rows of ``key`` over XBUF (``stream``: x is the next
            broadcast, received here), then its rows into ``dst_vec`` (int8 words or int32
            words at the rows' place)."""
            lo, hi, _n = rows[key]
            mat = mats[key]
            if hi <= lo:
                if stream:
                    recv(mat.kw, xbuf(0))
                return
            wr, rq, bias = wts[key]
            w_ = {"dst": sram(acc.base), "w": sram(wr.base)}
            pe(x_in(hi - lo, mat.kw, **w_) if stream
               else isa.gemv(hi - lo, mat.kw, x=xbuf(0), **w_))
            if bias is not None:
                pe(Ins(Op.VADD, n=hi - lo, imm=FLAG_SAT, dst=sram(acc.base), a=sram(acc.base),
                       b=sram(bias.base)))
            if mat.out == "i8":
                pe(Ins(Op.VREQ, n=hi - lo, dst=sram(dst_vec.base + lo // LANES, fmt=Fmt.I8X4),
                       a=sram(acc.base), b=sram(rq.base)))
                return
            shifts = np.asarray(mat.shift[lo:hi], np.int64)
            i0 = 0
            while i0 < hi - lo:      # one VMULSR per run of rows with the same shift
                i1 = i0 + 1
                while i1 < hi - lo and shifts[i1] == shifts[i0]:
                    i1 += 1
                pe(Ins(Op.VMULSR, n=i1 - i0, imm=int(shifts[i0]),
                       dst=sram(dst_vec.base + lo + i0), a=sram(acc.base + i0),
                       b=sram(rq.base + i0)))
                i0 = i1

        def residual(key):
            """This worker's rows of o / down (its residual channels) into the stream; x
            streams in from the broadcast."""
            pe.on("matmul")
            matmul(key, y["d"], stream=True)
            if nc:
                pe.on("residual")(Ins(Op.VADD, n=nc, imm=FLAG_SAT, dst=sram(x_own.base),
                                      a=sram(x_own.base), b=sram(y["d"].base + c_lo)))

        def gather_tap(vec, n, part):
            if taps:
                combine(pe.on("check"), r, q, vec, n, "sum", tmp, part=part)

        def recv(n, dst):
            return pe(Ins(Op.RECV, n=n, dst=dst, a=isa.color(B)))

        # The token's prologue: the token and the position from the activation, the
        # embedding of our channels, the slot and ownership of the position, the patches.
        pe.on("embedding")(
            Ins(Op.SLI, dst=reg(_ZERO), b=0),
            Ins(Op.SMULSH, imm=16, dst=reg(8), a=reg(isa.ARG_REG), b=1),      # the token
            Ins(Op.SSHL, imm=16, dst=reg(3), a=reg(8)),
            Ins(Op.SSUB, dst=reg(isa.ARG_REG), a=reg(isa.ARG_REG), b=reg(3)))  # the position
        if nc:
            pe(Ins(Op.SMULSH, dst=reg(7), a=reg(8), b=ew),
               Ins(Op.SADD, dst=reg(7), a=reg(7), b=_operand(sram(etab.base))))
            pe.patch(len(pe.prog) + 1, 2, 7)
            pe(Ins(Op.VADD, n=ew, dst=sram(ecur.base), a=sram(etab.base), b=reg(_ZERO)),
               Ins(Op.SLD, dst=reg(1), b=ecur.base + ew - 2),
               Ins(Op.SLD, dst=reg(2), b=ecur.base + ew - 1),
               Ins(Op.VMULSR, n=nc, imm=FLAG_VAR | 2, dst=sram(x_own.base),
                   a=sram(ecur.base, fmt=Fmt.I8X4), b=reg(1)))
        pe.on("kv_append")(
            Ins(Op.SMULSH, imm=s_div, dst=reg(_SLOT), a=reg(isa.ARG_REG), b=magic),
            Ins(Op.SMULSH, dst=reg(3), a=reg(_SLOT), b=Wk),
            Ins(Op.SSUB, dst=reg(2), a=reg(isa.ARG_REG), b=reg(3)),
            Ins(Op.SSUB, dst=reg(2), a=reg(2), b=kk),                   # p % Wk - k
            Ins(Op.SLT, dst=reg(4), a=reg(2), b=0),
            Ins(Op.SLT, dst=reg(5), a=reg(_ZERO), b=reg(2)),
            Ins(Op.SLI, dst=reg(_OWNER), b=1),
            Ins(Op.SSUB, dst=reg(_OWNER), a=reg(_OWNER), b=reg(4)),
            Ins(Op.SSUB, dst=reg(_OWNER), a=reg(_OWNER), b=reg(5)),
            Ins(Op.SST, a=reg(_SLOT), b=keep.base),
            Ins(Op.SST, a=reg(_OWNER), b=keep.base + 1),
            # 2**(8 lane), the lane of p's slot in the transposed value words
            Ins(Op.SMULSH, imm=2, dst=reg(5), a=reg(_SLOT), b=1),
            Ins(Op.SSHL, imm=2, dst=reg(5), a=reg(5)),
            Ins(Op.SSUB, dst=reg(5), a=reg(_SLOT), b=reg(5)),
            Ins(Op.SSHL, imm=3, dst=reg(5), a=reg(5)),
            _li(7, 1),
            Ins(Op.SSHLV, dst=reg(7), a=reg(7), b=reg(5)),
            Ins(Op.SST, a=reg(7), b=keep.base + 2))
        # The RoPE row of p (ours, or zeros): the table row of our slot times OWNER, behind
        # our channels of the first norm's h (its gather takes it to the hub).
        pe.on("rope")
        pe(Ins(Op.SMULSH, dst=reg(7), a=reg(_SLOT), b=2 * hd),
           Ins(Op.SADD, dst=reg(7), a=reg(7), b=_operand(sram(rope_tab.base))))
        pe.patch(len(pe.prog) + 1, 2, 7)
        pe(Ins(Op.VMUL, n=2 * hd, dst=sram(y["h"].base + d // LANES), a=sram(rope_tab.base),
               b=reg(_OWNER)))

        def reload():
            pe(Ins(Op.SLD, dst=reg(_SLOT), b=keep.base),
               Ins(Op.SLD, dst=reg(_OWNER), b=keep.base + 1),
               Ins(Op.SLI, dst=reg(_ZERO), b=0))

        def owned(owner_base, per_slot, template: isa.Src, fresh=False):
            """The operand word of the next instruction's dst: ``owner_base + slot *
            per_slot`` if the position is ours, else the template's base (scratch).
            ``fresh``: SLOT, OWNER and ZERO are in their registers already."""
            if not fresh:
                reload()
            pe(Ins(Op.SMULSH, dst=reg(7), a=reg(_SLOT), b=per_slot),
               Ins(Op.SADD, dst=reg(7), a=reg(7), b=owner_base - template.base),
               Ins(Op.SMULSH, dst=reg(7), a=reg(_OWNER), b=reg(7)),
               Ins(Op.SADD, dst=reg(7), a=reg(7), b=_operand(template)))
            pe.patch(len(pe.prog) + 1, 1, 7)

        def append_values(li):
            """The values into lane slot % 4 of word slot // 4 of every row of the transposed
            cache (an add: the lane is zero until then); a worker that does not own p adds
            them to a zero word and writes one scratch word (no element reads what an
            earlier one wrote). SLOT and OWNER are in their registers (since the keys'
            append only GEMVs, element-wise ops and REDUCEs into r2 ran)."""
            own = _operand(sram(vc[li].base, stride=sw))
            zero, junk = _operand(sram(zero_w.base, 0)), _operand(sram(scratch.base, 0))
            pe(Ins(Op.SMULSH, imm=2, dst=reg(2), a=reg(_SLOT), b=1),           # slot // 4
               Ins(Op.SADD, dst=reg(7), a=reg(2), b=own - junk),
               Ins(Op.SMULSH, dst=reg(7), a=reg(_OWNER), b=reg(7)),
               Ins(Op.SADD, dst=reg(7), a=reg(7), b=junk),
               Ins(Op.SADD, dst=reg(3), a=reg(2), b=own - zero),
               Ins(Op.SMULSH, dst=reg(3), a=reg(_OWNER), b=reg(3)),
               Ins(Op.SADD, dst=reg(3), a=reg(3), b=zero))
            at = len(pe.prog) + 2
            pe.patch(at, 1, 7)
            pe.patch(at, 2, 3)
            pe(Ins(Op.VADD, n=wv, dst=sram(scratch.base, 0), a=sram(zero_w.base, 0),
                   b=isa.color(B)))

        for li, L in enumerate(p.layers):
            norm(L.n1, rope_row=li == 0, stream=True)
            qkv_rope(li)
            combine(pe.on("matmul"), r, q, y["qkv"], g_size, "sum", tmp, part=parts["qkv"])
            pe.on("kv_append")
            if S == 1:      # one slot: the groups' rows follow each other, one RECV
                owned(kc[li].base, wk, sram(scratch.base))
                recv(wk, sram(scratch.base))
            else:           # each group's row of the key into its block, at the slot
                for g in range(nkv):
                    owned(kc[li].base + g * S * qw, qw, sram(scratch.base))
                    recv(qw, sram(scratch.base))
            pe.on("attention_scores")
            for hh in range(nh):    # each head's query streams in (GEMVX): its group's keys
                pe(isa.gemv(S, qw, dst=sram(sc.base + hh * S4),
                            w=sram(kc[li].base + (hh // grp) * S * qw),
                            x=xbuf(hh * qw), x_from=B))
            pe(Ins(Op.VADD, n=nS, dst=sram(sc.base), a=sram(sc.base), b=sram(negmask.base)))
            combine(pe, r, q, over_slots(sc.base, "max", ml), nh, "max", tmp, part=parts["kv"])
            # the values (behind the queries on the broadcast) while the maxima meet at the hub
            pe.on("kv_append")
            if S == 1:      # one slot: the owner's value row, as the keys
                owned(vc[li].base, vw, sram(scratch.base))
                recv(vw, sram(scratch.base))
            else:
                append_values(li)
            pe.on("softmax")
            recv(nS, ma)            # each head's max, S4 times
            pe(Ins(Op.SLI, dst=reg(9), b=WORD),
               Ins(Op.SLI, dst=reg(12), b=(-(17 << arith.EXP_FRAC)) & WORD),
               Ins(Op.SLI, dst=reg(13), b=(-128) & WORD),
               Ins(Op.VMUL, n=nS, dst=sram(u.base), a=sram(sc.base), b=reg(9)),
               Ins(Op.VADD, n=nS, dst=sram(u.base), a=sram(u.base), b=ma))    # M - s
            if li in sm_mult:       # one shift for every head, the multipliers scaled
                mv, top = sm_mult[li]
                pe(Ins(Op.VMULSR, n=nS, imm=FLAG_UA | top, dst=sram(u.base), a=sram(u.base),
                       b=sram(mv.base)))
            else:
                for hh in range(nh):
                    g, j = divmod(hh, grp)
                    pe(_li(11, np.asarray(L.sm[0])[g, j].reshape(-1)[0]),
                       Ins(Op.VMULSR, n=S4,
                           imm=FLAG_UA | int(np.asarray(L.sm[1])[g, j].reshape(-1)[0]),
                           dst=sram(u.base + hh * S4), a=sram(u.base + hh * S4), b=reg(11)))
            e_ = sram(ex.base)
            pe(Ins(Op.VMUL, n=nS, dst=sram(u.base), a=sram(u.base), b=reg(9)),
               Ins(Op.VMAX, n=nS, dst=sram(u.base), a=sram(u.base), b=reg(12)),
               Ins(Op.VMUL, n=nS, dst=sram(u.base), a=sram(u.base), b=reg(9)),
               Ins(Op.VLUT, n=nS, dst=e_, a=sram(u.base), b=sram(table.base)),
               Ins(Op.VADD, n=nS, dst=sram(u.base), a=sram(u.base), b=reg(13)),
               Ins(Op.VSHR, n=nS, imm=arith.EXP_FRAC, dst=sram(u.base), a=sram(u.base)),
               Ins(Op.VSHR, n=nS, imm=FLAG_VAR, dst=e_, a=e_, b=sram(u.base)),
               Ins(Op.VMUL, n=nS, dst=e_, a=e_, b=sram(valid.base)))
            combine(pe, r, q, over_slots(ex.base, "sum", tl), nh, "sum", tmp, part=parts["kv"])
            if spread_recip:
                recv(nh, sram(tl.base))         # the heads' sums
                for hh in mine:                 # 1 / sum of the heads of this worker
                    pe(Ins(Op.SLD, dst=reg(14), b=tl.base + hh))
                    kernels._recip_steps(pe, 14, recip_seed.base, 10, 11)
                    pe(Ins(Op.SSUB, dst=reg(11), a=reg(11), b=arith.PROB_FRAC),
                       Ins(Op.SST, a=reg(10), b=rkv.base + 2 * hh),
                       Ins(Op.SST, a=reg(11), b=rkv.base + 2 * hh + 1))
                combine(pe, r, q, rkv, 2 * nh, "sum", tmp, part=parts["recip"])
            pe.on("weighted_sum")
            recv(2 * nh, sram(rka.base))
            for hh in range(nh):    # p = e r >> (k - 15)
                # the head's r read S4 times in place (a second SRAM read an element) where
                # that cost less than loading it into a register with the fetch it was
                # written for (an SLD then took 8 cycles; now 2, so from S4 = 4 on the
                # register would be cheaper by up to S4 - 3 cycles a head: not changed yet,
                # to keep the figures measured at more than one slot)
                r_ = sram(rka.base + 2 * hh, 0) if S4 - 1 < 8 else reg(3)
                if S4 - 1 >= 8:
                    pe(Ins(Op.SLD, dst=reg(3), b=rka.base + 2 * hh))
                pe(Ins(Op.SLD, dst=reg(11), b=rka.base + 2 * hh + 1),
                   Ins(Op.VMULSR, n=S4, imm=FLAG_VAR | 11, dst=sram(pr.base + hh * S4),
                       a=sram(ex.base + hh * S4), b=r_))
            if S == 1:
                # One slot a worker: p . v is p times the slot's values, exact in int32
                # (|p v| <= 2^22): each head's VMULSR (shift 0) of its group's int8 values
                # by its p, one pass a head in place of the digits' GEMVs.
                for hh in range(nh):
                    pe(Ins(Op.SLD, dst=reg(11), b=pr.base + hh * S4),
                       Ins(Op.VMULSR, n=hd, imm=0, dst=sram(al.base + hh * hd),
                           a=sram(vc[li].base + (hh // grp) * hd // LANES, fmt=Fmt.I8X4),
                           b=reg(11)))
            else:
                # p (0..32768) = 256 + d0 + 256 d1: q = p - 256 in -256..32512, d1 =
                # round(q / 2^8) in -1..127 (VSHR rounds half up), d0 = q - 256 d1 in
                # -128..127, both int8 GEMV inputs against the int8 values. Two int8 digits
                # cannot make 0..32768 alone (127 + 127 x 256 < 32768); the 256 every slot
                # carries (a padded or unwritten lane too: its p is 0, its digits 0 and -1)
                # is 256 times the sum of the group's values over the lanes, one GEMV a
                # group against ones. So sum p v = g0 + 256 (g1 + gv), exact in int32.
                pe(_li(4, -256), _li(8, 256),
                   Ins(Op.VADD, n=sw, dst=xbuf(x_ones), a=sram(ones_w.base, 0),
                       b=sram(zero_w.base, 0)))
                for g in range(nkv):
                    pe(isa.gemv(hd, sw, dst=sram(gv.base + g * hd),
                                w=sram(vc[li].base + g * hd * sw), x=xbuf(x_ones)))
                for h0 in range(0, nh, hc):
                    h1 = min(nh, h0 + hc)
                    n_, at = (h1 - h0) * S4, h0 * S4
                    x0, x1 = (xbuf(i * hc * sw, fmt=Fmt.I8X4) for i in range(2))
                    pe(Ins(Op.VADD, n=n_, dst=sram(rm.base), a=sram(pr.base + at), b=reg(4)),
                       Ins(Op.VSHR, n=n_, imm=8, dst=x1, a=sram(rm.base)),                # d1
                       Ins(Op.VMUL, n=n_, dst=sram(tt.base), a=x1, b=reg(4)),
                       Ins(Op.VADD, n=n_, dst=x0, a=sram(rm.base), b=sram(tt.base)))      # d0
                    for hh in range(h0, h1):
                        vt = sram(vc[li].base + (hh // grp) * hd * sw)
                        o_ = hh * hd
                        pe(isa.gemv(hd, sw, dst=sram(g0.base + o_), w=vt,
                                    x=xbuf((hh - h0) * sw)),
                           isa.gemv(hd, sw, dst=dataclasses.replace(g1, base=g1.base + o_), w=vt,
                                    x=xbuf((hc + hh - h0) * sw)))
                # a = g0 + 256 (g1 + gv), g1 in XBUF where it fits (one port each)
                for hh in range(nh):
                    g1h = dataclasses.replace(g1, base=g1.base + hh * hd)
                    pe(Ins(Op.VADD, n=hd, dst=g1h, a=g1h, b=sram(gv.base + (hh // grp) * hd)))
                na = nh * hd
                pe(Ins(Op.VMUL, n=na, dst=g1, a=g1, b=reg(8)),
                   Ins(Op.VADD, n=na, dst=sram(al.base), a=g1, b=sram(g0.base)))
            combine(pe, r, q, al, nh * hd, "sum", tmp, part=parts["kv"])
            residual((li, "o"))
            gather_tap(y["d"], d, parts["d"])
            gather_tap(y["x"], d, parts["d"])
            norm(L.n2, stream=True)
            lo, hi, _n = rows[li, "gate"]
            if hi <= lo:
                recv(d // LANES, xbuf(0))
            else:
                pe.on("matmul")
                wr, rq, _b = wts[li, "gate"]
                pe(x_in(hi - lo, d // LANES, dst=sram(acc.base), w=sram(wr.base)),
                   Ins(Op.VREQ, n=hi - lo, dst=sram(gq.base, fmt=Fmt.I8X4), a=sram(acc.base),
                       b=sram(rq.base)))
                wr, rq, _b = wts[li, "up"]
                pe(isa.gemv(hi - lo, d // LANES, dst=sram(acc2.base), w=sram(wr.base),
                            x=xbuf(0)),
                   Ins(Op.VREQ, n=hi - lo, dst=sram(uq.base, fmt=Fmt.I8X4), a=sram(acc2.base),
                       b=sram(rq.base)))
                pe.on("silu")(
                    Ins(Op.VLUT, n=hi - lo, dst=sram(pm.base), a=sram(gq.base, fmt=Fmt.I8X4),
                        b=sram(silu[li].base)),
                    Ins(Op.VMUL, n=hi - lo, dst=sram(pm.base), a=sram(pm.base),
                        b=sram(uq.base, fmt=Fmt.I8X4)),
                    Ins(Op.VREQ, n=hi - lo, dst=sram(y["ffn"].base + lo // LANES, fmt=Fmt.I8X4),
                        a=sram(pm.base), b=sram(gu[li].base)))
            gather(pe.on("matmul"), r, q, spans["ffn"], y["ffn"].base, sram(zero_w.base, 0))
            residual((li, "down"))
            gather_tap(y["d"], d, parts["d"])
            gather_tap(y["x"], d, parts["d"])
        norm(p.norm)
        pe.on("matmul")
        matmul((-1, "head"), y["vocab"])
        lo, hi, _n = rows[-1, "head"]
        am = None
        if logits:      # our rows of the logits (zeros elsewhere) to the hub, for the host
            combine(pe.on("data_movement"), r, q, y["vocab"], V, "sum", tmp,
                    part=parts["head"])
        elif hi > lo:
            gather_tap(y["vocab"], V, parts["head"])
            am = pe.on("argmax").kernel(
                kernels.argmax, hi - lo, kw={"offset": lo, "total": V},
                exchange=exchanges(parts["head"], parts["head"]),
                z=Region(y["vocab"].base + lo, hi - lo, "i32"), out=Region(scratch.base, 1, "i32"))
        else:
            gather_tap(y["vocab"], V, parts["head"])
            pe.on("argmax")
            idle_exchanges(1, 1)
        base, img = pe.finish(shape.sram_words)
        programs[r, q] = pe.prog
        prog.write_sram(r, q, 0, img)
        prog.set_reg(r, q, isa.task_reg(A), isa.task_entry(base))
        used[r, q] = len(img)
        layout[r, q] = {"kc": kc, "kc_group_words": qw, "vc": vc, "valid": valid, "rows": rows,
                        "channels": (c_lo, c_hi),
                        "argmax_idx": am.regions["idx"] if am is not None else None,
                        # (SRAM address, first vocabulary row) of the LM head's weights here
                        "head_w": ((wts[-1, "head"][0].base, rows[-1, "head"][0])
                                   if (-1, "head") in wts else None)}

    for k, (r, q) in enumerate(workers):
        # The norms' sums in scalar ops where the worker's SRAM holds their longer program
        # (on the 8x8 at context 32 the token takes 513 cycles fewer, for 1,224 words more
        # on the fullest PE), else in vector ops: what does not fit costs no context.
        try:
            emit_worker(k, r, q, scalar_norm=scalar_norms)
        except _Overflow:
            if not scalar_norms:
                raise
            emit_worker(k, r, q, scalar_norm=False)
    _routes_and_queues(prog, R, C)
    if taps:
        prog.add_route(0, 0, DBG, Port.RAMP, [Port.W])
    check_deadlock_free(prog)
    fullest = max(used, key=used.get)
    return DecoderMapping(
        shape=shape, program=prog, workers=workers, slots=S,
        max_context=min(S * Wk, npos), kv_workers=Wk, kv_words_per_slot=_slot_words(c),
        words={"max": used[fullest], "fullest": fullest, "hub": used[0, 0],
               "per_pe": {f"{r},{q}": v for (r, q), v in used.items()}},
        programs=programs, layout=layout, vocab=V, hidden=d,
        taps=tap_list, hub_code=hub_code, logits=logits, kv_tiles=tuple(kv_tiles))


def _routes_and_queues(prog: ConfigProgram, R: int, C: int) -> None:
    """The broadcast tree (A, B), the hub's output (OUT), the reduction tree
    (RC up the columns, RR west along row 0), and each PE's input-queue bindings."""
    for r in range(R):
        for q in range(C):
            onward = ([Port.E] if r == 0 and q < C - 1 else []) + ([Port.S] if r < R - 1 else [])
            src = Port.N if (r, q) == (0, 0) or r > 0 else Port.W
            prog.add_route(r, q, A, src, [Port.RAMP] + onward)
            if (r, q) == (0, 0):
                prog.add_route(0, 0, B, Port.RAMP, onward)
                prog.add_route(0, 0, OUT, Port.RAMP, [Port.W])
            else:
                prog.add_route(r, q, B, src, [Port.RAMP] + onward)
            queues = [] if (r, q) == (0, 0) else [B]
            if r >= 1:
                prog.add_route(r, q, RC[r % 2], Port.RAMP, [Port.N])
            if r < R - 1:
                prog.add_route(r, q, RC[(r + 1) % 2], Port.S, [Port.RAMP])
                queues.append(RC[(r + 1) % 2])
            if r == 0 and q >= 1:
                prog.add_route(0, q, RR[q % 2], Port.RAMP, [Port.W])
            if r == 0 and q < C - 1:
                prog.add_route(0, q, RR[(q + 1) % 2], Port.E, [Port.RAMP])
                queues.append(RR[(q + 1) % 2])
            assert len(queues) <= CORE_QUEUES
            for i, col in enumerate(queues):
                prog.set_reg(r, q, isa.queue_reg(i, CORE_QUEUES), isa.queue_entry(col))
