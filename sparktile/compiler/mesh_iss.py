"""A mesh of instruction-set simulators: a whole ``pe="core"`` mesh run without the RTL.

:class:`MeshIss` loads a :class:`~sparktile.compiler.program.ConfigProgram` (SRAM images, task
tables, queue bindings, routes) into one :class:`~sparktile.compiler.iss.PEState` per tile and
moves every word a program sends along the route tables, hop by hop, to the input queues,
activation queues and mesh edges it reaches. Each core executes with
:func:`sparktile.compiler.iss.step` (the ISS the RTL core is proven equal to, cycle for cycle);
an instruction that reads a color waits until its queue holds the words it needs.

Functional, not cycle-exact: the queues here are unbounded (a full FIFO never stalls a
sender), and the time of each instruction is estimated from the ISS's cycle count and the
arrival time of its last input word (one cycle a router hop). The RTL mesh is the reference for
cycles; this model is the quick reference for values (the decoder tests run it on many models
and meshes in seconds), and names a PE that waits forever with the color it waits on.
"""

from __future__ import annotations

from collections import defaultdict, deque

import numpy as np

from ..hdl import isa
from ..hdl.formats import Port
from ..hdl.isa import FLAG_ADDEND, Op, Space
from ..hdl.tile import CORE_XBUF_WORDS
from . import iss
from .program import ConfigProgram
from .routes import OPPOSITE, STEP

__all__ = ["MeshIss", "MeshStall"]


class MeshStall(RuntimeError):
    """Every unfinished task waits for words that will never come (or the run hit its limit)."""


def _needs(st: iss.PEState, pc: int) -> dict[int, int]:
    """Input-queue words (per color) the instruction at ``pc`` consumes."""
    words = [int(st.sram[(pc + j) % len(st.sram)]) for j in range(isa.INSN_WORDS)]
    insn, ops = isa.decode(words)
    if not isa.valid_insn(insn, ops):
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


class MeshIss:
    """The mesh of ``program.shape`` with ``program`` loaded (see the module docstring)."""

    def __init__(self, program: ConfigProgram, xbuf_words: int = CORE_XBUF_WORDS):
        self.shape = shape = program.shape
        self.routes = program.routes
        self.tiles = [(r, c) for r in range(shape.rows) for c in range(shape.cols)]
        self.pes: dict[tuple[int, int], iss.PEState] = {}
        self.arrivals: dict[tuple[int, int], dict[int, deque]] = {}
        for t in self.tiles:
            st = iss.PEState.new(shape.sram_words, xbuf_words)
            for addr, words in program.sram.get(t, []):
                st.sram[addr:addr + len(words)] = words
            for reg_, value in program.regs.get(t, {}).items():
                if reg_ < isa.QUEUE_REG_BASE:
                    if value & isa.TASK_ADDR_LIMIT:
                        st.tasks[reg_ - isa.TASK_REG_BASE] = value & (isa.TASK_ADDR_LIMIT - 1)
                elif value & (1 << 5):
                    st.bind_queue(value & 31)
            self.pes[t] = st
            self.arrivals[t] = defaultdict(deque)
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
                self._to_pe((r, c), color, ctrl, word, t + 1)
                continue
            dr, dc = STEP[out]
            nr, nc = r + dr, c + dc
            if 0 <= nr < self.shape.rows and 0 <= nc < self.shape.cols:
                self._arrive(nr, nc, OPPOSITE[out], color, ctrl, word, t + 1)
            else:
                pos = nc if Port(out).name in ("N", "S") else nr
                self.edges[Port(out).name, pos].append((color, word, t + 1))

    def _to_pe(self, tile, color, ctrl, word, t):
        st = self.pes[tile]
        if ctrl:
            if color in st.tasks:
                self.acts[tile].append((color, word, t))
            else:
                st.stats.task_errors += 1
        elif color in st.queues:
            st.queues[color].append(word & iss.WORD)
            self.arrivals[tile][color].append(t)
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
            self.clock[tile] = max(self.clock[tile], t)
            return True
        need = _needs(st, pc)
        for color, n in need.items():
            if color in st.queues and len(st.queues[color]) < n:
                return False
        latest = -1
        for color, n in need.items():
            arr = self.arrivals[tile][color]
            for _ in range(min(n, len(arr))):
                latest = max(latest, arr.popleft())
        before = st.stats.cycles
        try:
            nxt = iss.step(st, pc)
        except iss.TaskError:
            st.stats.task_errors += 1
            self.pc[tile] = None
            return True
        cyc = st.stats.cycles - before
        start = self.clock[tile]
        end = start + cyc
        if latest >= 0:
            end = max(end, latest + 2)
        body = max(1, cyc - isa.FETCH_CYCLES)
        for color, words in st.sent.items():
            for i, w in enumerate(words):
                t = end - body + (i + 1) * body // len(words)
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
    generated tokens, or picks the greedy one."""
    from .decoder_mapping import score_position
    mesh = MeshIss(mapping.program)
    mesh.record.add((0, 0))
    ids = [int(t) for t in ids]
    total = len(ids) + max(max_new, 1) - 1
    cache = model.new_cache(total + 1, mode="int")
    feed, tokens, golden, cycles, first, by_op = list(ids), [], [], [], None, []
    for pos in range(total):
        pay, ccs = mapping.token_stream(feed[pos], pos)
        t0 = mesh.time
        mesh.log.clear()
        mesh.inject("N", 0, pay, ccs, time=t0)
        mesh.run()
        by_op.append(mapping.by_op(mesh.log[0, 0]))
        out = mesh.take("W", 0)
        got, want, first = score_position(mapping, model, cache, feed[pos], pos,
                                          [o[0] for o in out], [o[1] for o in out],
                                          [o[2] for o in out], sampler=sampler,
                                          prompt=pos + 1 < len(ids))
        golden.append(want)
        tokens.append(got)
        cycles.append(mesh.time - t0)
        if first is not None:
            break
        if pos + 1 >= len(feed):
            feed.append(got)
        if after is not None:
            after(mesh, pos)
    return {"tokens": tokens, "golden": golden, "first_diff": first, "token_cycles": cycles,
            "task_errors": sum(st.stats.task_errors for st in mesh.pes.values()),
            "dropped": mesh.dropped, "mesh": mesh, "by_op": by_op}
