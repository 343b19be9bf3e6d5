"""A mesh of instruction-set simulators: a whole ``pe="core"`` mesh run without the RTL.

:class:`MeshIss` loads a :class:`~sparktile.compiler.program.ConfigProgram` (SRAM images, task
tables, queue bindings, routes) into one :class:`~sparktile.compiler.iss.PEState` per tile and
moves every word a program sends along the route tables, hop by hop, to the input queues,
activation queues and mesh edges it reaches. Each core executes with
:func:`sparktile.compiler.iss.step` (the ISS the RTL core is proven equal to, cycle for cycle);
an instruction that reads a color waits until its queue holds the words it needs.

Timing. The values come from the ISS; the cycles from a model of the RTL's timing, element by
element (:func:`_timing`): an instruction's fetch and decode, then its elements as the core's
pipelines issue them, each waiting for its input-queue word the cycle after the word was
written; a word sent enters the router's ramp FIFO the cycle after the core's output register
took it and moves one router a cycle (each router's input FIFO is one register); the ramp into
a core delivers one word a cycle, round-robin among the router inputs that offer one, and only
while its color's queue (two words) has room (:class:`_Ramp`). What it leaves out: a full
router FIFO downstream never holds a sender back (the words a core sends are never delayed
by the receivers), so a sender's own stall is missing where its receiver is busy, and an
activation does not take a ramp cycle (one a token); the
decoder's programs wait on the hub's broadcast right after such a send, so the token's cycles
do not see it. Measured against the RTL's counter (``tests/test_mesh_iss_timing.py``): equal
on the 2x2, 2x3 and 3x1 core meshes. This model is also the quick reference for values (the
decoder tests run it on many models and meshes in seconds), and names a PE that waits forever
with the color it waits on.
"""

from __future__ import annotations

from bisect import insort
from collections import defaultdict, deque

import numpy as np

from ..hdl import isa
from ..hdl.formats import NUM_PORTS, Port
from ..hdl.isa import FLAG_ADDEND, Op, Space
from ..hdl.tile import CORE_XBUF_WORDS
from . import iss
from .program import ConfigProgram
from .routes import OPPOSITE, STEP

__all__ = ["MeshIss", "MeshStall"]


#: The RTL bench's window of a token (:mod:`sparktile.cosim.sim.bfm`): its source offers the
#: first wavelet the cycle after the bench arms the fabric, and the completion of a wait is seen
#: two cycles after the sink took the last expected wavelet (read off a waveform of the 2x2
#: decode: armed at cycle A, activation taken at A + 1, token at the west edge at A + 7410,
#: ``done`` at A + 7412 = A + token_cycles).
SOURCE_DELAY = 1
SINK_DELAY = 2


class MeshStall(RuntimeError):
    """Every unfinished task waits for words that will never come (or the run hit its limit)."""


def _decode(st: iss.PEState, pc: int):
    words = [int(st.sram[(pc + j) % len(st.sram)]) for j in range(isa.INSN_WORDS)]
    insn, ops, valid = iss.decoded(words)
    return (insn, ops) if valid else (None, None)


def _needs(st: iss.PEState, pc: int) -> dict[int, int]:
    """Input-queue words (per color) the instruction at ``pc`` consumes."""
    insn, ops = _decode(st, pc)
    if insn is None:
        return {}
    op, n = Op(insn["op"]), insn["n"]
    need: dict[int, int] = defaultdict(int)
    if op is Op.RECV:
        need[ops[1]["base"] & 31] += n
    elif op in isa.GEMV_OPS:
        if op is Op.GEMVX and n:        # x streams in during the first row
            need[ops[1]["aux"]] += insn["imm"] & isa.MAX_GEMV_WORDS
        if insn["imm"] & FLAG_ADDEND:
            need[ops[2]["aux"]] += n
    elif op in isa.VEC_OPS:
        if ops[1]["space"] == Space.COLOR:
            need[ops[1]["base"] & 31] += n
        if op is not Op.REDUCE and op is not Op.VLUT and isa.b_used(op, insn["imm"]) and \
                ops[2]["space"] == Space.COLOR:
            need[ops[2]["base"] & 31] += n
    return need


def _timing(insn, ops, start: int, ramp: _Ramp,
            fetch: int = isa.FETCH_CYCLES) -> tuple[int, list[int]]:
    """The core's cycles for one instruction, element by element, as :mod:`~sparktile.hdl.
    core` runs it: ``(end, sends)``, ``end`` the first cycle after the instruction (its next
    fetch) and ``sends`` the cycle each word it sends enters the router's ramp FIFO (the cycle
    after the core's output register took it).

    ``start`` is the instruction's first fetch cycle (its decode when ``fetch`` is
    ``isa.PREFETCH_CYCLES``: the row was read in the last cycle before it); ``ramp``
    (:class:`_Ramp`) says when the next word of an input queue can be popped (the cycle after
    it was written) and takes it.
    The waits modelled are those on input queues: RECV pops one word a cycle as it comes; a
    GEMVX's first row issues each weight word with its x word; a GEMV's addend is popped as a
    row leaves its fourth stage, and an empty addend queue freezes the whole GEMV pipeline
    (so every later row is late by the same cycles); an element-wise op issues element ``i``
    (stage S0) once its a (and an early b) word is there and ``isa.elem_interval`` cycles after
    element ``i - 1``, pops a late b in S1 (held there until it comes, S0 waiting for S1 to
    empty), and writes or sends in S4, three cycles after S1: the elements already issued
    drain while the next one waits. A busy ramp out of this core (a full router FIFO
    downstream) is not modelled: the words it sends are never held back.
    """
    x0 = start + fetch
    if insn is None:
        return x0, []
    op, n, imm = Op(insn["op"]), insn["n"], insn["imm"]
    dst, a, b = ops
    if op is Op.END:
        return x0, []
    if op is Op.RECV:
        c = x0
        q = a["base"] & 31
        for _ in range(n):
            c = ramp.avail(q, c)
            ramp.take(q, c)
            c += 1
        return c, []
    if op is Op.SEND:
        return (x0 + n + 1 if n else x0), [x0 + i + 2 for i in range(n)]
    if op in isa.GEMV_OPS:
        if not n:
            return x0, []
        w = imm & isa.MAX_GEMV_WORDS
        delay = 0
        if op is Op.GEMVX:
            for k in range(w):
                t = ramp.avail(a["aux"], x0 + k + delay)
                ramp.take(a["aux"], t)
                delay = t - (x0 + k)
        sends = []
        for r in range(n):
            v4 = x0 + (r + 1) * w - 1 + 4
            if imm & FLAG_ADDEND:
                t = ramp.avail(b["aux"], v4 + delay)
                ramp.take(b["aux"], t)
                delay = t - v4
            sends.append(v4 + delay + 1)
        return x0 + n * w + isa.GEMV_LATENCY + delay, sends
    if op in isa.VEC_OPS:
        if not n:
            return x0, []
        interval = isa.elem_interval(op, imm, a, b)
        a_col = a["space"] == Space.COLOR
        b_col = (op not in (Op.REDUCE, Op.VLUT) and isa.b_used(op, imm)
                 and b["space"] == Space.COLOR)
        b_late = interval == 2 and b_col
        qa, qb = a["base"] & 31, b["base"] & 31
        s0 = x0
        s4 = []
        for _ in range(n):
            if a_col:
                s0 = ramp.avail(qa, s0)
            if b_col and not b_late:
                s0 = ramp.avail(qb, s0)
                if a_col:
                    s0 = ramp.avail(qa, s0)
                ramp.take(qb, s0)
            if a_col:
                ramp.take(qa, s0)
            s1 = s0 + 1
            if b_late:
                s1 = ramp.avail(qb, s1)
                ramp.take(qb, s1)
            s4.append(s1 + 3)
            s0 = s1 + 1 if interval == 2 else s0 + 1
        sends = [t + 1 for t in s4]
        if op is not Op.REDUCE and dst["fmt"] == isa.Fmt.I8X4:
            sends = [t for i, t in enumerate(sends) if i % 4 == 3 or i == n - 1]
        return s4[-1] + 1, sends
    return x0 + isa.exec_cycles(op, n, imm, a, b), []


class _Ramp:
    """The router's ramp output into one core and the core's input queues, in time.

    Every data word bound for the core waits at the head of the router input FIFO it came in
    on (``offer``: the first cycle it is there) until the ramp takes it: one word a cycle into
    the core, only while its color's queue has room (``queue_depth`` words; a pop frees a slot
    the cycle after), the requesting inputs served round-robin (the router's arbiter). Two
    streams popped together by one instruction (a reduction's VADD of two colors) therefore
    share the ramp: one element every two cycles. Deliveries are decided lazily, in time
    order, as the core asks for words (:meth:`avail`) and pops them (:meth:`take`)."""

    def __init__(self, queue_depth: int):
        self.depth = queue_depth
        self.ports: dict[int, list] = defaultdict(list)    # port -> [(offer, seq, color)]
        self.queue: dict[int, deque] = defaultdict(deque)   # color -> write cycles, unpopped
        self.popped: dict[int, list] = defaultdict(list)    # color -> [(write, pop)]
        self.cursor = -1            # deliveries are decided for every cycle <= cursor
        self.last = 0               # the arbiter's last grant
        self.seq = 0

    def offer(self, port: int, color: int, t: int) -> None:
        self.seq += 1
        insort(self.ports[port], (t, self.seq, color))

    def _level(self, color: int, tau: int) -> int:
        n = sum(1 for w in self.queue[color] if w <= tau - 1)
        return n + sum(1 for w, p in self.popped[color] if w <= tau - 1 and p >= tau)

    def _advance(self, until: int) -> None:
        """Decide the ramp's deliveries of cycles ``cursor + 1 .. until``."""
        tau = self.cursor + 1
        while tau <= until:
            want = [p for p in range(NUM_PORTS) if self.ports[p] and self.ports[p][0][0] <= tau
                    and self._level(self.ports[p][0][2], tau) < self.depth]
            if want:
                port = min(want, key=lambda p: (p - self.last - 1) % NUM_PORTS)
                self.last = port
                _, _, color = self.ports[port].pop(0)
                self.queue[color].append(tau)
                tau += 1
                continue
            # nothing can move: jump to the next offer or freed slot
            nxt = [self.ports[p][0][0] for p in range(NUM_PORTS) if self.ports[p]]
            nxt += [p + 1 for c in self.popped for _, p in self.popped[c] if p + 1 > tau]
            later = [t for t in nxt if t > tau]
            tau = min([until + 1, *later])
        self.cursor = max(self.cursor, until)

    def avail(self, color: int, c: int) -> int:
        """The first cycle ``>= c`` at which ``color``'s queue holds a word (written the
        cycle before), nothing being popped meanwhile."""
        self._advance(c - 1)
        while not self.queue[color]:
            heads = [self.ports[p][0][0] for p in range(NUM_PORTS) if self.ports.get(p)]
            if not heads:
                raise MeshStall(f"no word of color {color} will reach the core")
            # no word is delivered before the earliest offer: decide up to it at once (the
            # same deliveries as one cycle at a time, nothing else running meanwhile)
            self._advance(max(self.cursor + 1, min(heads)))
        return max(c, self.queue[color][0] + 1)

    def take(self, color: int, p: int) -> None:
        """Pop ``color``'s oldest word at cycle ``p``."""
        w = self.queue[color].popleft()
        self.popped[color] = [(w_, q) for w_, q in self.popped[color] if q + 1 >= self.cursor]
        self.popped[color].append((w, p))


class MeshIss:
    """The mesh of ``program.shape`` with ``program`` loaded (see the module docstring)."""

    def __init__(self, program: ConfigProgram, xbuf_words: int = CORE_XBUF_WORDS,
                 queue_depth: int = 2):
        self.shape = shape = program.shape
        self.routes = program.routes
        self.tiles = [(r, c) for r in range(shape.rows) for c in range(shape.cols)]
        self.pes: dict[tuple[int, int], iss.PEState] = {}
        self.ramps: dict[tuple[int, int], _Ramp] = {}
        for t in self.tiles:
            st = iss.PEState.new(shape.sram_words, xbuf_words)
            for addr, words in program.sram.get(t, []):
                st.sram[addr:addr + len(words)] = words
            for reg_, value in program.regs.get(t, {}).items():
                if reg_ < isa.QUEUE_REG_BASE:
                    if value & isa.TASK_ADDR_LIMIT and not value % isa.INSN_WORDS:
                        st.tasks[reg_ - isa.TASK_REG_BASE] = value & (isa.TASK_ADDR_LIMIT - 1)
                elif value & (1 << 5):
                    st.bind_queue(value & 31)
            self.pes[t] = st
            self.ramps[t] = _Ramp(queue_depth)
        self.acts = {t: deque() for t in self.tiles}
        self.pc: dict[tuple[int, int], int | None] = dict.fromkeys(self.tiles)
        self.clock = dict.fromkeys(self.tiles, 0)
        self.edges: dict[tuple[str, int], list] = defaultdict(list)
        self.dropped: list[str] = []
        #: ``(pc, start, end)`` of every instruction of the tiles in :attr:`record`.
        self.record: set = set()
        self.log: dict[tuple[int, int], list] = defaultdict(list)

    # ---- the fabric ----------------------------------------------------------------------
    def inject(self, side: str, pos: int, payloads, ccs, time: int = 0) -> None:
        """Send wavelets into the mesh at edge port ``(side, pos)`` (``ccs`` as
        :func:`~sparktile.hdl.formats.cc` encodes them: color and control bit)."""
        port = Port[side]
        r, c = {"N": (0, pos), "S": (self.shape.rows - 1, pos), "W": (pos, 0),
                "E": (pos, self.shape.cols - 1)}[side]
        for k, (w, x) in enumerate(zip(np.asarray(payloads), np.asarray(ccs), strict=True)):
            self._arrive(r, c, port, int(x) & 31, int(x) >> 5 & 1, int(w), time + k)

    def _arrive(self, r, c, inport, color, ctrl, word, t):
        route = self.routes.get((r, c), {}).get(color)
        if route is None or route.src != inport:
            self.dropped.append(f"color {color} at ({r},{c}) from {Port(inport).name}")
            return
        for out in sorted(route.dst):
            if out == Port.RAMP:
                self._to_pe((r, c), inport, color, ctrl, word, t + 1)
                continue
            dr, dc = STEP[out]
            nr, nc = r + dr, c + dc
            if 0 <= nr < self.shape.rows and 0 <= nc < self.shape.cols:
                self._arrive(nr, nc, OPPOSITE[out], color, ctrl, word, t + 1)
            else:
                pos = nc if Port(out).name in ("N", "S") else nr
                self.edges[Port(out).name, pos].append((color, word, t + 1))

    def _to_pe(self, tile, inport, color, ctrl, word, t):
        st = self.pes[tile]
        if ctrl:
            if color in st.tasks:
                self.acts[tile].append((color, word, t))
            else:
                st.stats.task_errors += 1
        elif color in st.queues:
            st.queues[color].append(word & iss.WORD)
            self.ramps[tile].offer(inport, color, t)
        else:
            st.stats.task_errors += 1
            self.dropped.append(f"data on color {color} at {tile}: no input queue")

    # ---- the cores -----------------------------------------------------------------------
    def _step(self, tile) -> bool:
        st = self.pes[tile]
        pc = self.pc[tile]
        if pc is None:
            if not self.acts[tile]:
                return False
            color, payload, t = self.acts[tile].popleft()
            st.regs[isa.ARG_REG] = int(np.int64(payload).astype(np.int32))
            self.pc[tile] = st.tasks[color]
            # The activation is written into the core's activation FIFO at t, readable at
            # t + 1, when the idle sequencer pops it; the first fetch is the cycle after. An
            # idle sequencer spends at least one cycle in IDLE after a task's END.
            self.clock[tile] = max(self.clock[tile] + 1, t + 2)
            return True
        need = _needs(st, pc)
        for color, n in need.items():
            if color in st.queues and len(st.queues[color]) < n:
                return False
        insn, ops = _decode(st, pc)
        start = self.clock[tile]
        fetch = st.next_fetch
        try:
            nxt = iss.step(st, pc)
        except iss.TaskError:
            st.stats.task_errors += 1
            self.pc[tile] = None
            self.clock[tile] = start + fetch
            return True
        end, sends = _timing(insn, ops, start, self.ramps[tile], fetch)
        for color, words in st.sent.items():
            for w, t in zip(words, sends, strict=True):
                self._arrive(tile[0], tile[1], Port.RAMP, color, 0, w, t)
        st.sent.clear()
        if tile in self.record:
            self.log[tile].append((pc, start, end))
        self.clock[tile] = end
        self.pc[tile] = nxt
        if nxt is None:
            st.stats.tasks += 1
        return True

    def run(self, max_steps: int = 50_000_000) -> None:
        """Run every core until each is idle with no activation pending.

        Raises
        ------
        MeshStall
            When tasks remain that wait on input queues no word will reach, naming each PE,
            its pc and what it waits for.
        """
        steps = 0
        while True:
            moved = False
            for t in self.tiles:
                while self._step(t):
                    moved = True
                    steps += 1
                    if steps > max_steps:
                        raise MeshStall(f"the mesh ran {max_steps} steps without finishing")
            if not moved:
                break
        waiting = [t for t in self.tiles if self.pc[t] is not None]
        if waiting:
            lines = []
            for t in waiting:
                need = _needs(self.pes[t], self.pc[t])
                have = {c: len(self.pes[t].queues.get(c, ())) for c in need}
                lines.append(f"PE {t} at pc {self.pc[t]} waits for {dict(need)} (has {have})")
            raise MeshStall("the mesh stalls: " + "; ".join(lines))

    def take(self, side: str, pos: int) -> list[tuple[int, int, int]]:
        """The ``(color, word, time)`` that left the mesh at ``(side, pos)`` since the last
        call."""
        out = self.edges.pop((side, pos), [])
        return out

    @property
    def time(self) -> int:
        return max(self.clock.values())


def decode_on_iss(mapping, model, ids, max_new: int = 0, after=None, sampler=None) -> dict:
    """Run a :class:`~sparktile.compiler.decoder_mapping.DecoderMapping` on a :class:`MeshIss`:
    feed ``ids`` one position at a time, then ``max_new - 1`` greedy tokens fed back, and
    compare every position's next token (and, when the mapping has taps, every tapped vector)
    with the golden int path (its own KV cache). Returns ``{tokens, golden, first_diff,
    token_cycles, task_errors, dropped}`` (``token_cycles`` are this model's estimates); stops
    at the first difference. ``after(mesh, position)`` is called after each position (the
    fault-injection tests change an SRAM word there). A mapping that sends the logits needs a
    ``sampler`` (:class:`~sparktile.compiler.decoder_mapping.HostSampler`) to pick the
    generated tokens, or picks the greedy one.

    A position's cycles are counted as the RTL bench counts them (:func:`~sparktile.cosim.
    benches.decode.decode_run`'s ``token_cycles``): from the bench arming the fabric, one
    cycle (:data:`SOURCE_DELAY`) before the activation enters the hub's north edge, to the
    cycle the bench sees the token, :data:`SINK_DELAY` cycles after it left the west edge;
    the next position is sent then."""
    from .decoder_mapping import score_position
    mesh = MeshIss(mapping.program)
    mesh.record.add((0, 0))
    ids = [int(t) for t in ids]
    total = len(ids) + max(max_new, 1) - 1
    cache = model.new_cache(total + 1, mode="int")
    feed, tokens, golden, cycles, first, by_op = list(ids), [], [], [], None, []
    t0 = 0
    for pos in range(total):
        pay, ccs = mapping.token_stream(feed[pos], pos)
        mesh.log.clear()
        mesh.inject("N", 0, pay, ccs, time=t0 + SOURCE_DELAY)
        mesh.run()
        by_op.append(mapping.by_op(mesh.log[0, 0]))
        out = mesh.take("W", 0)
        got, want, first = score_position(mapping, model, cache, feed[pos], pos,
                                          [o[0] for o in out], [o[1] for o in out],
                                          [o[2] for o in out], sampler=sampler,
                                          prompt=pos + 1 < len(ids))
        golden.append(want)
        tokens.append(got)
        done = (out[-1][2] if out else mesh.time) + SINK_DELAY
        cycles.append(done - t0)
        t0 = done
        if first is not None:
            break
        if pos + 1 >= len(feed):
            feed.append(got)
        if after is not None:
            after(mesh, pos)
    return {"tokens": tokens, "golden": golden, "first_diff": first, "token_cycles": cycles,
            "task_errors": sum(st.stats.task_errors for st in mesh.pes.values()),
            "dropped": mesh.dropped, "mesh": mesh, "by_op": by_op}
