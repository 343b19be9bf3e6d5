"""Column strips: a GEMV cut by rows over independent strips of the mesh, no long reduction.

The chain mapping (:func:`~sparktile.compiler.mapping.compile_gemv` on the whole mesh) cuts
``W`` by rows over the mesh rows and by columns over the mesh columns, so every output row's
partial sums run along a chain of ``C`` PEs: ``P_HOP * (C - 1)`` cycles (28 on an 8x8 mesh)
that do not shrink with the matrix. A decode token's matrices are small (on 8x8 a k or v
matrix leaves each PE 32 MAC cycles), so that chain, not the MACs, sets their time.

Here the mesh's columns are grouped into *strips* of ``width`` adjacent columns (one column
unless the colors run out, below). Strip ``s`` is an independent GEMV engine: it holds a
contiguous block of ``W``'s rows, all of its columns, and computes them as the chain mapping
does on its own regions (:func:`strip_parts`): the upper half of the strip takes ``x`` from
the north edge and the lower half from the south, each multicast along the strip's columns;
the partial sums run along the strip's ``width`` PEs (none for a width of one: the
descriptor is FIRST and LAST, and each PE requantizes its own rows); the strip's last PE
sends ``y`` on the strip's own color out of the west edge (one-column strips in the west half
of the mesh) or the east edge (the others), through the strips between. The rows of ``W`` are
shared by the strips, so the MAC work per PE is the chain mapping's (``M N / (4 R C)``
cycles) while the reduction is gone; the cost moves to ``x``, which each strip needs whole
(``N / 4 / width`` words per column instead of ``N / 4 / C``): the MAC task consumes a word in
``rows`` cycles, so that costs nothing while every PE has at least one row.

Colors. Every strip sends ``y`` on its own color (a router cannot take a color from the west
and also send it east from its ramp), ``STRIP_Y0 + s``; ``x`` and the two partial-sum colors
are shared (a strip's routes stay inside its columns). A mesh with more than
``ROUTABLE_COLORS - STRIP_Y0`` columns uses strips of two (or more) columns. Because a strip's
colors and routes do not depend on the matrix, every matrix of a model can use any set of
strips without reconfiguring routes or PE registers: several independent matrices (q, k and
v, or gate and up) run at once on disjoint strips (:func:`compile_gemv_strips` with
``strips``).

Deadlock freedom: ``x`` goes only south or only north inside its column, ``y`` only east or
only west along its row, partial sums only east inside a strip: no route turns, so the
channel-dependency graph has no cycle (:mod:`~sparktile.compiler.routes`;
``tests/test_strips.py`` checks it).

:func:`layout_words` and :func:`layout_cycles` give one matrix's SRAM words per PE and
predicted cycles in either layout (:data:`LAYOUTS`), for the benches, the CLI's fit checks and
the wave-size estimates.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..hdl.formats import CC_COLOR, ROUTABLE_COLORS
from ..hdl.mesh import MeshShape
from .cycle_model import gemv_cycles, timing_for
from .mapping import (
    Colors,
    GemvMapping,
    MappingError,
    Region,
    compile_gemv,
    gemv_words,
    int8_matrix,
)
from .program import ConfigProgram

__all__ = ["LAYOUTS", "layout_words", "layout_cycles", "STRIP_Y0", "strip_width", "strip_count",
           "strip_rows", "strip_parts", "strip_words", "split_strips", "StripGemv",
           "compile_gemv_strips", "strip_gemv_cycles", "strips_cycles"]

#: How a matrix is placed on the fixed-function mesh: over column strips, or along one
#: reduction chain across every column (:func:`~sparktile.compiler.mapping.compile_gemv`).
LAYOUTS = ("strips", "chain")

#: The first strip's y color; x and the partial sums use colors 0, 1 and 2.
STRIP_Y0 = 3
_COLORS = Colors(x=0, p0=1, p1=2, y=STRIP_Y0)


def strip_width(shape: MeshShape) -> int:
    """Columns per strip: the smallest divisor of the mesh's columns for which every strip
    has its own y color."""
    for w in range(1, shape.cols + 1):
        if shape.cols % w == 0 and shape.cols // w <= ROUTABLE_COLORS - STRIP_Y0:
            return w
    raise MappingError(f"a {shape} mesh cannot be cut into strips")  # unreachable: 32 cols


def strip_count(shape: MeshShape) -> int:
    """Strips of the mesh."""
    return shape.cols // strip_width(shape)


def strip_rows(m: int, strips: int) -> list[tuple[int, int]]:
    """``(row0, rows)`` of ``W`` for each of ``strips`` strips: blocks as even as they go,
    the first ``m % strips`` one row longer; empty blocks (``m < strips``) are left out."""
    base, extra = divmod(m, strips)
    out, row0 = [], 0
    for s in range(strips):
        rows = base + (s < extra)
        if rows:
            out.append((row0, rows))
        row0 += rows
    return out


def strip_words(shape: MeshShape, m: int, n: int, strips: int | None = None) -> int:
    """SRAM words per PE an M x N GEMV needs cut over ``strips`` strips (all by default)."""
    strips = strips or strip_count(shape)
    rows = max(r for _, r in strip_rows(m, strips))
    return max(gemv_words(part, n, region, shape.acc_depth)["words"]
               for _off, part, region, _x, _y in strip_parts(shape, 0, rows))


def split_strips(shape: MeshShape, sizes: list[int]) -> list[range]:
    """Share the mesh's strips between independent matrices run at once, in proportion to
    ``sizes`` (their MACs), each getting at least one: a list of strip ranges, in order."""
    total = strip_count(shape)
    if not sizes or min(sizes) <= 0:
        raise MappingError(f"split_strips needs positive sizes, not {sizes}")
    if len(sizes) > total:
        raise MappingError(f"{len(sizes)} matrices at once need {len(sizes)} strips; the "
                           f"{shape} mesh has {total}")
    share = [max(1, round(total * s / sum(sizes))) for s in sizes]
    while sum(share) > total:           # take from the largest share above one
        share[max(range(len(share)), key=lambda i: share[i])] -= 1
    while sum(share) < total:           # give to the one with most MACs per strip
        share[max(range(len(share)), key=lambda i: sizes[i] / share[i])] += 1
    out, s0 = [], 0
    for k in share:
        out.append(range(s0, s0 + k))
        s0 += k
    return out


def strip_parts(shape: MeshShape, s: int, rows: int) -> list[tuple[int, int, Region, str, str]]:
    """How strip ``s`` holds a block of ``rows`` rows of ``W``: a list of ``(offset in the
    block, rows, region, x_from, y_to)``. The strip's upper half takes ``x`` from the north
    edge and its lower half from the south (so ``x`` crosses half the rows, not all of them),
    each PE holding ``ceil(rows / R)`` rows as in one region; a one-column strip in the west
    half of the mesh sends ``y`` out of the west edge, the others out of the east (so ``y``
    crosses at most half the columns and the two edges share the results)."""
    width, total = strip_width(shape), strip_count(shape)
    y_to = "W" if width == 1 and s < total // 2 else "E"
    col = s * width
    if shape.rows == 1:
        return [(0, rows, Region(0, col, 1, width), "N", y_to)]
    top = -(-shape.rows // 2)
    m_pe = -(-rows // shape.rows)
    upper = min(rows, m_pe * top)
    out = [(0, upper, Region(0, col, top, width), "N", y_to)]
    if rows > upper:
        out.append((upper, rows - upper, Region(top, col, shape.rows - top, width), "S", y_to))
    return out


@dataclass
class StripGemv:
    """A GEMV compiled over strips: one :class:`GemvMapping` per part of a strip used
    (:func:`strip_parts`), and how to put their results back together."""

    shape: MeshShape
    m: int
    n: int
    out_int32: bool
    base: int
    words: int
    parts: list[tuple[int, GemvMapping]] = field(default_factory=list)  # (row0 of W, mapping)
    program: ConfigProgram | None = None

    @property
    def m_pe(self) -> int:
        """Most rows of ``W`` a PE holds."""
        return max(mp.m_pe for _, mp in self.parts)

    @property
    def nw_pe(self) -> int:
        """Packed words of ``x`` a PE takes per vector."""
        return max(mp.nw_pe for _, mp in self.parts)

    @property
    def strips(self) -> list[int]:
        """The strips it uses."""
        w = strip_width(self.shape)
        return sorted({mp.region.col // w for _, mp in self.parts})

    def x_ports(self, x: np.ndarray) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
        """``(edge, column) -> (payloads, cc)``: every part gets all of ``x`` from its edge."""
        out = {}
        for _, mp in self.parts:
            out.update(mp.x_ports(x))
        return out

    def expected(self, batch: int) -> int:
        """Wavelets the east and west edges receive for ``batch`` vectors."""
        return sum(mp.expected(batch) for _, mp in self.parts)

    def decode_edge(self, per_row: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]],
                    batch: int) -> np.ndarray:
        """The ``(payloads, cc)`` each ``(edge, mesh row)`` received -> ``y`` (B x M), each
        strip's wavelets told apart by their color."""
        dtype = np.int32 if self.out_int32 else np.int8
        y = np.zeros((batch, self.m), dtype=dtype)
        for row0, mp in self.parts:
            mine = {}
            for (side, r), (pay, ccs) in per_row.items():
                if side != mp.y_to or not mp.region.row <= r < mp.region.row + mp.region.rows:
                    continue
                sel = (np.asarray(ccs, dtype=np.uint8) & CC_COLOR) == mp.colors.y
                mine[r] = np.asarray(pay, dtype=np.uint32)[sel]
            y[:, row0:row0 + mp.m] = mp.decode_y(mine, batch)
        return y

    def row_of(self, index: int) -> int | None:
        """The mesh row whose edge carries output ``index`` (for a mismatch message)."""
        for row0, mp in self.parts:
            if row0 <= index < row0 + mp.m:
                return mp.row_of(index - row0)
        return None


def compile_gemv_strips(shape: MeshShape, w, mult, shift, *, strips: range | None = None,
                        out_int32: bool = False, base: int = 0,
                        program: ConfigProgram | None = None) -> StripGemv:
    """Place ``W`` (M x N int8) on ``strips`` (all of the mesh's by default), its rows cut in
    blocks as even as they go (:func:`strip_rows`, :func:`strip_parts`); the routes and
    registers are the same for every matrix.

    Raises
    ------
    MappingError
        If a strip is not in the mesh, or the matrix does not fit a strip's SRAM.
    """
    w = int8_matrix(w)
    m, n = w.shape
    total = strip_count(shape)
    strips = range(total) if strips is None else strips
    if len(strips) == 0 or strips.start < 0 or strips.stop > total:
        raise MappingError(f"strips {strips.start}..{strips.stop - 1} are not in the {total} "
                           f"strips of the {shape} mesh")
    if not out_int32:
        mult = np.broadcast_to(np.asarray(mult, dtype=np.int64), (m,))
        shift = np.broadcast_to(np.asarray(shift, dtype=np.int64), (m,))
    prog = program or ConfigProgram(shape)
    gemv = StripGemv(shape, m, n, out_int32, base, 0, program=prog)
    for (row0, rows), s in zip(strip_rows(m, len(strips)), strips, strict=False):
        colors = replace(_COLORS, y=STRIP_Y0 + s)
        for off, part_rows, region, x_from, y_to in strip_parts(shape, s, rows):
            sub = slice(row0 + off, row0 + off + part_rows)
            mp = compile_gemv(shape, w[sub], None if out_int32 else mult[sub],
                              None if out_int32 else shift[sub], region=region, colors=colors,
                              out_int32=out_int32, base=base, program=prog, x_from=x_from,
                              y_to=y_to)
            gemv.parts.append((row0 + off, mp))
            gemv.words = max(gemv.words, mp.words)
    return gemv


def strip_gemv_cycles(shape: MeshShape, m: int, n: int, batch: int = 1, *,
                      strips: range | None = None, out_int32: bool = False) -> float:
    """Predicted cycles of an M x N GEMV over ``strips`` (all by default).

    Each part of a strip (:func:`strip_parts`) alone takes the chain mapping's time on its
    region (:func:`~sparktile.compiler.cycle_model.gemv_cycles`), its last PE sending a ``y``
    wavelet as the reduce task passes the last row it holds (every row for int32, every
    fourth for int8); each wavelet then takes one cycle a router (plus the link register)
    through the strips between it and its edge. A mesh row's edge takes one wavelet a cycle,
    so the strips' wavelets queue for it: the prediction is when the last one leaves a queue.
    """
    return strips_cycles(shape, [(m, n, out_int32, strips)], batch)


def strips_cycles(shape: MeshShape, jobs, batch: int = 1) -> float:
    """Predicted cycles of GEMVs run at once, ``jobs`` a list of ``(m, n, out_int32,
    strips)`` on disjoint strips (``strips`` None: all of them): their ``y`` wavelets share
    the east edge's queue (:func:`strip_gemv_cycles`)."""
    width, total = strip_width(shape), strip_count(shape)
    timing = timing_for(shape)
    queues: dict[tuple[str, int], list[float]] = {}
    for m, n, out_int32, strips in jobs:
        strips = range(total) if strips is None else strips
        lanes = 1 if out_int32 else 4
        for (_row0, rows), s in zip(strip_rows(m, len(strips)), strips, strict=False):
            for _off, part, region, _x, y_to in strip_parts(shape, s, rows):
                geo = gemv_words(part, n, region, shape.acc_depth)
                m_pe, nw = geo["m_pe"], geo["nw_pe"]
                beyond = region.col if y_to == "W" else shape.cols - region.col - width
                hops = beyond * (1 + timing.link)
                t = gemv_cycles(part, n, batch, region.rows, width,
                                acc_depth=shape.acc_depth, out_int32=out_int32, timing=timing)
                # The part's first mesh row (it holds the most rows) queues at its edge; walk
                # the passes backwards from the end: each vector's wavelets leave as the reduce
                # task passes their last row, one row a cycle.
                queue = queues.setdefault((y_to, region.row), [])
                for p in reversed(range(geo["passes"])):
                    r = min(shape.acc_depth, m_pe - p * shape.acc_depth)
                    for _b in range(batch):
                        for j in range(-(-r // lanes)):
                            last_row = min(lanes * j + lanes - 1, r - 1)
                            queue.append(t - (r - 1 - last_row) + hops)
                        t -= r * nw + r + timing.vec
                    t -= timing.desc
    worst = 0.0
    for arrivals in queues.values():
        done = 0.0
        for a in sorted(arrivals):      # one wavelet a cycle through the row's edge
            done = max(a, done + 1)
        worst = max(worst, done)
    return worst


def layout_words(shape: MeshShape, m: int, n: int, layout: str) -> int:
    """SRAM words per PE an M x N GEMV needs in ``layout`` (on every strip, or the whole
    mesh as one chain region)."""
    if layout == "strips":
        return strip_words(shape, m, n)
    return gemv_words(m, n, Region.whole(shape), shape.acc_depth)["words"]


def layout_cycles(shape: MeshShape, m: int, n: int, batch: int = 1, *, out_int32: bool = False,
                  layout: str) -> float:
    """Predicted cycles of an M x N GEMV alone on the mesh in ``layout``."""
    if layout == "strips":
        return strip_gemv_cycles(shape, m, n, batch, out_int32=out_int32)
    return gemv_cycles(m, n, batch, shape.rows, shape.cols, acc_depth=shape.acc_depth,
                       out_int32=out_int32, timing=timing_for(shape))
