"""The GEMV mapping for a mesh of programmable cores (``MeshShape(..., pe="core")``).

The placement, the routes and the requantization words are those of :mod:`.mapping` (the
fixed-function PE's mapping): region row ``r`` holds output rows ``[r*m_pe, (r+1)*m_pe)``,
region column ``c`` a run of packed input words of every row; x enters each column from the
north edge on color X and is multicast down it. What runs in each PE is a *program*
(:mod:`sparktile.hdl.isa`), started once per vector by an activation (a control wavelet on X),
with the task table and the queue bindings written as configuration registers.

Two reduction chains per region row, in opposite directions: each PE's first
``ha = ceil(m_pe / 2)`` rows reduce west to east (partial sums on P0/P1 alternately, the
east-most PE ends them and sends y east on Y), the other ``hb`` rows east to west (on
:data:`WEST_COLORS`, the west-most PE ends them and sends y west on Y). The core requantizes
after its GEMV, one row a cycle (the sums in XBUF after x, the requantization words in SRAM:
one read on each port, :func:`~sparktile.hdl.isa.elem_interval`); two chain ends requantize
half the rows each, so the tail after the last GEMV halves. x is not received before the
GEMV: the first GEMV takes it from color X during its first row (``isa.gemv(...,
x_from=X)``), keeping it in XBUF for the other rows and the second GEMV (4x4 256 x 992 GEMV:
4,064 cycles, 97.6 %; docs/architecture.md has the history).
A one-column region, or one row per PE, has the eastward chain only.

=======================  ===========================================================
every PE                 ``GEMVX ha x nw`` to the east neighbour, x streaming in on
                         color X into XBUF[0..nw) during the first row, adding (except
                         the west-most) one partial sum per row from the west neighbour
                         (``FLAG_ADDEND``, no extra cycle); the east-most to Y (int32)
                         or into its sums (int8: XBUF after x, or SRAM)
every PE (two chains)    ``GEMV hb x nw`` mirrored: to the west neighbour, adding the
                         east neighbour's; the west-most to Y or into its sums
chain ends, int8 out     ``VREQ`` (``RequantWord`` per row, the sums from XBUF, or from
                         SRAM when XBUF has no room after x) sending the int8 results
                         on Y packed four to a word (a COLOR dst in ``Fmt.I8X4``)
every PE                 ``END``
=======================  ===========================================================

Every PE runs the eastward rows first: the west-most PE heads the eastward chain and never
waits for it, and the east-most PE, the westward chain's head, starts its westward rows after
the eastward chain has passed it. SRAM of each PE, from ``base``: the program, the weights
(row-major, ``m_pe * nw`` words: the eastward rows, then the westward), then at a chain end
the requantization words of its rows (and their int32 sums when XBUF, after x, has no room
for them).

Column widths. Every column takes ``nw = ceil(ceil(n / 4) / cols)`` words of each row, like
the fixed-function mapping, unless the east-most PE's SRAM (which also holds requantization
words and sums) is then too small: words move from the east-most column to the others, as few
as make it fit. The chain is as slow as its widest PE, so this costs a cycle per row and moved
word.

A batch is one activation per vector: the task runs once per vector (there are no branches,
so a program cannot loop over the batch), and the activation queue holds the next while the
current one runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..golden_model.arith import LANES, pack_int8, unpack_int8
from ..hdl import isa
from ..hdl.formats import Port, RequantWord, cc, pack_array
from ..hdl.mesh import MeshShape
from ..hdl.tile import CORE_QUEUES, CORE_XBUF_WORDS
from .mapping import (
    Colors,
    GemvMapping,
    MappingError,
    Region,
    edge_routes,
    int8_matrix,
    pe_routes,
)
from .program import ConfigProgram

__all__ = ["CoreGemvMapping", "compile_core_gemv", "check_core_gemv", "core_gemv_words",
           "core_task_cycles", "core_gemv_cycles", "core_gemv_bound"]

DEFAULT_COLORS = Colors()
#: The activation's payload (the task's argument in r15; the GEMV program does not use it).
ACTIVATION_ARG = 0
#: Input queues the GEMV program binds: x, the eastward and the westward chain's partial sums.
X_QUEUE, PSUM_QUEUE, WEST_QUEUE = 0, 1, 2
#: Colors of the westward chain's partial sums (alternating, like P0/P1 eastward).
WEST_COLORS = (4, 5)


def _west_routes(prog: ConfigProgram, region: Region, colors: Colors, rr: int,
                 cc_: int) -> tuple[int | None, int]:
    """Routes of the westward chain at region column ``cc_``: its partial sums arrive from
    the east (not at the east-most PE) and leave west on the alternate color, or, at the
    west-most PE, on Y; returns ``(b_in, b_out)``."""
    r, c = region.row + rr, region.col + cc_
    last = cc_ == region.cols - 1
    b_in = None if last else WEST_COLORS[(cc_ + 1) % 2]
    b_out = colors.y if cc_ == 0 else WEST_COLORS[cc_ % 2]
    if b_in is not None:
        prog.add_route(r, c, b_in, Port.E, [Port.RAMP])
    prog.add_route(r, c, b_out, Port.RAMP, [Port.W])
    return b_in, b_out


def _halves(m_pe: int, cols: int) -> tuple[int, int]:
    """Rows of the eastward chain (the first ``ha``) and of the westward one (the rest):
    two chains when the region has two columns or more and a PE has two rows or more."""
    if cols < 2 or m_pe < 2:
        return m_pe, 0
    ha = math.ceil(m_pe / 2)
    return ha, m_pe - ha


def _req_rows(cc_: int, cols: int, m_pe: int, out_int32: bool) -> int:
    """Rows the PE at region column ``cc_`` requantizes (int8 out): the east-most the
    eastward chain's, the west-most the westward chain's (the same PE with one column)."""
    if out_int32:
        return 0
    ha, hb = _halves(m_pe, cols)
    return (ha if cc_ == cols - 1 else 0) + (hb if cc_ == 0 else 0)


def _n_insns(cc_: int, cols: int, m_pe: int, out_int32: bool) -> int:
    ha, hb = _halves(m_pe, cols)
    n = 1 + (1 if hb else 0) + 1                    # GEMV A (x streamed in), [GEMV B], END
    if not out_int32:
        n += (cc_ == cols - 1) + (hb > 0 and cc_ == 0)          # a VREQ per chain end
    return n


def _layout(m_pe: int, nw_pe: int, cc_: int, cols: int, out_int32: bool, base: int) -> dict:
    """SRAM (and XBUF) layout of one PE. A chain end's int32 sums go to XBUF after x when
    they fit there (``sums_in_xbuf``): VREQ then reads each sum from XBUF and its
    requantization word from SRAM in one cycle (one row a cycle; two with both in SRAM, which
    has one read port, see :func:`~sparktile.hdl.isa.elem_interval`); else to SRAM after the
    requantization words."""
    prog_words = _n_insns(cc_, cols, m_pe, out_int32) * isa.INSN_WORDS
    w_base = base + prog_words
    q_base = w_base + m_pe * nw_pe
    req = _req_rows(cc_, cols, m_pe, out_int32)
    in_xbuf = nw_pe + req <= CORE_XBUF_WORDS
    acc_base = nw_pe if in_xbuf else q_base + req
    return {"prog": base, "w_base": w_base, "q_base": q_base, "acc_base": acc_base,
            "sums_in_xbuf": in_xbuf, "words": q_base + req + (0 if in_xbuf else req) - base}


def _program(*, cc_: int, cols: int, out_int32: bool, m_pe: int, nw: int, colors: Colors,
             a_in: int, a_out: int, b_in: int | None, b_out: int | None, lay: dict
             ) -> list[isa.Ins]:
    """One PE's GEMV program (see the module docstring): the eastward chain's rows, x
    streaming into XBUF during the first (to the east neighbour, or at the east-most PE to Y
    or the sums area); the westward chain's rows (likewise to the west); the VREQ of each
    chain this PE ends, sending packed int8 on Y; END."""
    ha, hb = _halves(m_pe, cols)
    east, west = cc_ == cols - 1, cc_ == 0
    x = isa.xbuf(0)
    acc, q = lay["acc_base"], lay["q_base"]
    sums_at = isa.xbuf if lay["sums_in_xbuf"] else isa.sram
    prog = []
    ends = []           # (rows, sums area, requantization words) of the chains ending here
    a_dst = isa.color(a_out)
    if east and not out_int32:
        a_dst = sums_at(acc)
        ends.append((ha, acc, q))
    prog.append(isa.gemv(ha, nw, dst=a_dst, w=isa.sram(lay["w_base"]), x=x,
                         addend=None if west else a_in, x_from=colors.x))
    if hb:
        b_dst = isa.color(b_out)
        if west and not out_int32:
            b_dst = sums_at(acc + len(ends) * ha)
            ends.append((hb, acc + len(ends) * ha, q + len(ends) * ha))
        prog.append(isa.gemv(hb, nw, dst=b_dst, w=isa.sram(lay["w_base"] + ha * nw), x=x,
                             addend=None if east else b_in))
    for rows, sums, qw in ends:
        prog.append(isa.Ins(isa.Op.VREQ, n=rows, dst=isa.color(colors.y, isa.Fmt.I8X4),
                            a=sums_at(sums), b=isa.sram(qw)))
    prog.append(isa.Ins(isa.Op.END))
    return prog


def core_gemv_words(m: int, n: int, region: Region, out_int32: bool = False,
                    sram_words: int | None = None, base: int = 0) -> dict:
    """Per-PE geometry of an M x N GEMV on ``region`` of a core mesh: ``m_pe`` rows,
    ``widths`` (packed words of each row per region column, see the module docstring; the
    east-most narrower when its SRAM needs it), ``nw_pe`` (the widest) and ``words``, the SRAM
    words of the fullest PE (what must fit ``sram_words``)."""
    m_pe = math.ceil(m / region.rows)
    even = math.ceil(math.ceil(n / LANES) / region.cols)
    cols = region.cols

    def need(widths):
        return max(_layout(m_pe, wd, c, cols, out_int32, 0)["words"]
                   for c, wd in enumerate(widths))

    widths = [even] * cols
    if sram_words is not None and cols > 1:
        for k in range(even):
            more = math.ceil(k / (cols - 1))
            trial = [even + more] * (cols - 1) + [even - k]
            if base + need(trial) <= sram_words:
                widths = trial
                break
    return {"m_pe": m_pe, "nw_pe": max(widths), "widths": widths, "passes": 1,
            "words": need(widths)}


@dataclass
class CoreGemvMapping(GemvMapping):
    """A compiled GEMV for a core mesh: one pass of all ``m_pe`` rows, one activation per
    vector. ``programs[(r, c)]`` is each PE's program (for the ISS and the cycle model)."""

    programs: dict | None = None
    widths: list | None = None      # packed words of each row per region column

    def _offsets(self):
        return np.concatenate([[0], np.cumsum(self.widths)])

    def y_ports(self) -> list[tuple[str, int, int, int]]:
        """``(side, mesh row, first row, rows)`` of every edge port y leaves by: each region
        row's eastward chain (its first ``ha`` rows) east, its westward chain (the rest) west."""
        ha, hb = _halves(self.m_pe, self.region.cols)
        out = []
        for rr in range(self.region.rows):
            r = self.region.row + rr
            out.append(("E", r, 0, ha))
            if hb:
                out.append(("W", r, ha, hb))
        return out

    def _per_vector(self, rows: int) -> int:
        return rows if self.out_int32 else math.ceil(rows / LANES)

    def y_wavelets(self, batch: int) -> dict[tuple[str, int], int]:
        """Wavelets each ``(side, mesh row)`` port delivers for ``batch`` vectors."""
        return {(side, r): self._per_vector(rows) * batch
                for side, r, _row0, rows in self.y_ports()}

    def decode_y_ports(self, per_port: dict, batch: int) -> np.ndarray:
        """Payloads per ``(side, mesh row)`` -> ``y`` (B x M; int8, or int32 with INT32)."""
        dtype = np.int32 if self.out_int32 else np.int8
        y = np.zeros((batch, self.region.rows * self.m_pe), dtype=dtype)
        for side, r, row0, rows in self.y_ports():
            words = np.asarray(per_port[side, r], dtype=np.uint32)
            k = self._per_vector(rows)
            for b in range(batch):
                chunk = words[b * k:(b + 1) * k]
                vals = chunk.view(np.int32) if self.out_int32 else unpack_int8(chunk)[:rows]
                start = (r - self.region.row) * self.m_pe + row0
                y[b, start:start + rows] = vals
        return y[:, : self.m]

    def x_streams(self, x: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """North-edge column -> ``(payloads, cc)``: per vector, an activation (a control
        wavelet on X) then the column's ``nw_pe`` packed words."""
        x = np.atleast_2d(np.asarray(x))
        if x.shape[1] != self.n:
            raise MappingError(f"x has {x.shape[1]} elements per vector; W has {self.n} "
                               f"columns")
        b = x.shape[0]
        offs = self._offsets()
        xp = np.zeros((b, int(offs[-1]) * LANES), dtype=np.int8)
        xp[:, : self.n] = x
        words = np.stack([pack_int8(v) for v in xp])
        out = {}
        for c, wd in enumerate(self.widths):
            pay = np.empty((b, 1 + wd), dtype=np.uint32)
            ccs = np.full((b, 1 + wd), cc(self.colors.x), dtype=np.uint8)
            pay[:, 0] = ACTIVATION_ARG
            ccs[:, 0] = cc(self.colors.x, 1)
            pay[:, 1:] = words[:, offs[c]:offs[c + 1]]
            out[self.region.col + c] = (pay.reshape(-1), ccs.reshape(-1))
        return out


def core_task_cycles(program: list[isa.Ins], base: int = 0) -> int:
    """Cycles of one run of ``program`` (at word ``base``) on the core without stalls: fetch
    and decode plus :func:`~sparktile.hdl.isa.exec_cycles` per instruction
    (:func:`~sparktile.hdl.isa.program_cycles`: what the RTL's ``task_cycles`` counts less its
    ``stall_in`` and ``stall_out``)."""
    return isa.program_cycles(program, base)


def check_core_gemv(shape: MeshShape, m: int, n: int, region: Region, out_int32: bool = False,
                    base: int = 0) -> dict:
    """The geometry of :func:`core_gemv_words`, or :class:`MappingError` naming what does not
    fit (a PE's share of a row beyond one GEMV or XBUF, more than 65535 rows, the SRAM):
    what the CLI checks before it builds or simulates anything."""
    if not isinstance(base, int) or base % isa.INSN_WORDS:
        raise MappingError(f"the GEMV program's SRAM base must be a multiple of "
                           f"{isa.INSN_WORDS} (an instruction row), not {base!r}")
    geo = core_gemv_words(m, n, region, out_int32, shape.sram_words, base)
    m_pe, nw_pe, widths = geo["m_pe"], geo["nw_pe"], geo["widths"]
    limit = min(isa.MAX_GEMV_WORDS, CORE_XBUF_WORDS)
    if nw_pe > limit:
        raise MappingError(
            f"W ({m}x{n}) gives each PE {nw_pe} words (x{LANES} int8) of every row on "
            f"{region.cols} region columns, but a core GEMV takes at most {limit} (XBUF holds "
            f"{CORE_XBUF_WORDS} words, a GEMV row at most {isa.MAX_GEMV_WORDS}); use more "
            f"columns")
    if m_pe > 0xFFFF:
        raise MappingError(f"W ({m}x{n}) gives each PE {m_pe} rows; a GEMV takes at most "
                           f"65535: use more region rows")
    if base < 0 or base + geo["words"] > shape.sram_words or base >= isa.TASK_ADDR_LIMIT:
        extra = "" if out_int32 else f", {m_pe} requantization words and {m_pe} sums"
        raise MappingError(
            f"W ({m}x{n}) needs {geo['words']} SRAM words in the east-most PEs of a "
            f"{region.rows}x{region.cols} region (program, {m_pe} rows x {widths[-1]} words of "
            f"weights{extra}) from word {base}, but a PE has {shape.sram_words} words "
            f"({shape.sram_kb} KiB); use a larger region or mesh, or more SRAM")
    return geo


def compile_core_gemv(shape: MeshShape, w, mult, shift, *, region: Region | None = None,
                      colors: Colors = DEFAULT_COLORS, out_int32: bool = False, base: int = 0,
                      program: ConfigProgram | None = None) -> CoreGemvMapping:
    """Place ``W`` (M x N int8) on ``region`` of a core mesh: SRAM images (programs,
    weights, requantization words), task tables, queue bindings and routes.

    Raises
    ------
    MappingError
        If the mesh is not a core mesh, W is not a 2-D int8 matrix, a PE's share of a row
        exceeds what one GEMV or XBUF holds, or a PE's SRAM is too small (naming the sizes).
    """
    if shape.pe != "core":
        raise MappingError(f"compile_core_gemv needs a mesh of pe='core', not pe={shape.pe!r} "
                           f"(use sparktile.compiler.mapping.compile_gemv)")
    region = region or Region.whole(shape)
    region.check(shape)
    colors.check()
    w = int8_matrix(w)
    m, n = w.shape
    geo = check_core_gemv(shape, m, n, region, out_int32, base)
    m_pe, nw_pe, widths = geo["m_pe"], geo["nw_pe"], geo["widths"]
    if not out_int32:
        mult = np.broadcast_to(np.asarray(mult, dtype=np.int64), (m,))
        shift = np.broadcast_to(np.asarray(shift, dtype=np.int64), (m,))
    prog = program or ConfigProgram(shape)

    offs = np.concatenate([[0], np.cumsum(widths)]) * LANES
    wp = np.zeros((region.rows * m_pe, int(offs[-1])), dtype=np.int8)
    wp[:m, :n] = w
    q = np.zeros(region.rows * m_pe, dtype=np.uint32)
    if not out_int32:
        try:
            q[:m] = pack_array(RequantWord, mult=mult, shift=shift)
        except ValueError as exc:
            raise MappingError(str(exc)) from None

    mapping = CoreGemvMapping(shape, region, colors, m, n, m_pe, nw_pe, out_int32, base,
                              geo["words"], program=prog, programs={},
                              widths=widths)
    mapping.passes.append((base, 0, m_pe))
    ha, hb = _halves(m_pe, region.cols)
    if hb and (set(WEST_COLORS) & {colors.x, colors.p0, colors.p1, colors.y}
               or max(WEST_COLORS) >= shape.route_colors):
        raise MappingError(f"the westward chain's colors {WEST_COLORS} must differ from the "
                           f"GEMV's {colors} and be below the {shape.route_colors} route "
                           f"colors")
    for rr in range(region.rows):
        for cc_ in range(region.cols):
            r, c = region.row + rr, region.col + cc_
            a_in, a_out = pe_routes(prog, region, colors, rr, cc_)
            b_in, b_out = _west_routes(prog, region, colors, rr, cc_) if hb else (None, None)
            lay = _layout(m_pe, widths[cc_], cc_, region.cols, out_int32, base)
            code = _program(cc_=cc_, cols=region.cols, out_int32=out_int32, m_pe=m_pe,
                            nw=widths[cc_], colors=colors, a_in=a_in, a_out=a_out, b_in=b_in,
                            b_out=b_out, lay=lay)
            mapping.programs[r, c] = code
            block = wp[rr * m_pe:(rr + 1) * m_pe, offs[cc_]:offs[cc_ + 1]]
            parts = [np.array(isa.assemble(code), dtype=np.uint32),
                     np.concatenate([pack_int8(row) for row in block])]
            qr = q[rr * m_pe:(rr + 1) * m_pe]
            if not out_int32 and cc_ == region.cols - 1:
                parts.append(qr[:ha])
            if not out_int32 and cc_ == 0 and hb:
                parts.append(qr[ha:])
            prog.write_sram(r, c, base, np.concatenate(parts))
            prog.set_reg(r, c, isa.task_reg(colors.x), isa.task_entry(lay["prog"]))
            prog.set_reg(r, c, isa.queue_reg(X_QUEUE, CORE_QUEUES), isa.queue_entry(colors.x))
            if cc_ > 0:
                prog.set_reg(r, c, isa.queue_reg(PSUM_QUEUE, CORE_QUEUES),
                             isa.queue_entry(a_in))
            if hb and cc_ < region.cols - 1:
                prog.set_reg(r, c, isa.queue_reg(WEST_QUEUE, CORE_QUEUES),
                             isa.queue_entry(b_in))
    if hb:
        # The westward chain's y passes west through the tiles west of the region.
        for r in range(region.row, region.row + region.rows):
            for c in range(region.col):
                prog.add_route(r, c, colors.y, Port.E, [Port.W])
    edge_routes(prog, shape, region, colors)
    return mapping


def core_gemv_bound(mapping: CoreGemvMapping, batch: int) -> int:
    """A hard lower bound of a core GEMV's cycles: ``batch`` runs of the longest PE program
    without stalls (each PE runs its task once per vector, one after the other)."""
    return batch * max(core_task_cycles(p) for p in mapping.programs.values())


def core_gemv_cycles(mapping: CoreGemvMapping, batch: int) -> float:
    """An estimate of a core GEMV's cycles, first x wavelet in to last y out, from the cycle
    rules of :mod:`sparktile.hdl.isa` and the fixed-function model's fabric terms
    (:data:`~sparktile.compiler.cycle_model.DEFAULT_TIMING`): the fill and the x multicast
    down the region; per vector the longest PE program, its GEMVs paced by the widest PE of
    the chains; the partial sums' hops along the eastward chain, then back along the westward
    one; the drain. Not exact: the benchmark reports it beside the RTL's count, and the tests
    check only :func:`core_gemv_bound`."""
    from .cycle_model import DEFAULT_TIMING as t
    region = mapping.region
    _ha, hb = _halves(mapping.m_pe, region.cols)
    pace = mapping.m_pe * (mapping.nw_pe - min(mapping.widths))
    hops = t.p_hop * (region.cols - 1) * (2 if hb else 1)
    longest = max(core_task_cycles(p) for p in mapping.programs.values())
    return t.fill + t.x_hop * (region.rows - 1) + batch * (longest + pace) + hops + t.drain
