"""The mapping compiler: a weight-stationary int8 GEMV/GEMM placed on a mesh region.

Pure Python and numpy (no simulator). Given ``W`` (M x N int8), per-output-channel
requantization parameters and a region of the mesh, :func:`compile_gemv` produces

* the placement: region row ``r`` holds rows ``[r*m_pe, (r+1)*m_pe)`` of ``W``, region column
  ``c`` holds packed words ``[c*nw_pe, (c+1)*nw_pe)`` of every row (four int8 per word), padded
  with zeros where M or N do not divide evenly;
* the routes: ``x`` enters each region column from the mesh's north edge on color ``X`` and is
  multicast down the column to every PE (passing through tiles above the region); partial sums
  run west to east along each region row on two alternating colors ``P0``/``P1`` (a router
  cannot accept a color from the west and also send it east from its ramp); the east-most PE of
  each row requantizes and sends ``y`` on color ``Y``, which passes east to the mesh's edge;
* the SRAM images (weights, requantization words, descriptors) and PE registers, as a
  :class:`~sparktile.compiler.program.ConfigProgram`;
* the host's streams: per region column, a descriptor selector then ``nw_pe`` packed words per
  vector (GEMM: vectors back to back); and how to decode the ``y`` wavelets per region row.

Rows beyond the accumulator depth are processed in *passes* of at most ``acc_depth`` rows, each
streaming ``x`` again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import UserError
from ..golden_model.arith import LANES, pack_int8, unpack_int8
from ..hdl.formats import (
    DESC_WORDS,
    ROUTABLE_COLORS,
    DescWord0,
    DescWord1,
    DescWord2,
    PeReg,
    Port,
    RequantWord,
    cc,
    pack,
    pack_array,
)
from ..hdl.mesh import MeshShape
from .program import ConfigProgram

__all__ = ["Region", "Colors", "GemvMapping", "MappingError", "compile_gemv", "gemv_words"]



class MappingError(ValueError, UserError):
    """The matrix does not fit the region, or the region does not fit the mesh. A
    :class:`UserError`: the fix is the user's (a larger mesh, more SRAM, another model)."""


@dataclass(frozen=True)
class Region:
    """A rectangle of the mesh: rows ``[row, row + rows)``, columns ``[col, col + cols)``."""

    row: int
    col: int
    rows: int
    cols: int

    @classmethod
    def whole(cls, shape: MeshShape) -> Region:
        return cls(0, 0, shape.rows, shape.cols)

    def check(self, shape: MeshShape) -> None:
        if self.rows < 1 or self.cols < 1 or self.row < 0 or self.col < 0 or \
                self.row + self.rows > shape.rows or self.col + self.cols > shape.cols:
            raise MappingError(f"region rows {self.row}..{self.row + self.rows - 1}, cols "
                               f"{self.col}..{self.col + self.cols - 1} is not inside the "
                               f"{shape} mesh")

    @property
    def pes(self) -> int:
        return self.rows * self.cols


@dataclass(frozen=True)
class Colors:
    """The four colors a GEMV mapping uses."""

    x: int = 0
    p0: int = 1
    p1: int = 2
    y: int = 3

    def check(self):
        vals = (self.x, self.p0, self.p1, self.y)
        if len(set(vals)) != 4 or not all(0 <= v < ROUTABLE_COLORS for v in vals):
            raise MappingError(f"a GEMV needs four distinct colors in [0, {ROUTABLE_COLORS - 1}]"
                               f", not {vals}")


def gemv_words(m: int, n: int, region: Region, acc_depth: int) -> dict:
    """Per-PE geometry and SRAM words of an M x N GEMV on ``region``."""
    m_pe = math.ceil(m / region.rows)
    nw_pe = math.ceil(math.ceil(n / LANES) / region.cols)
    passes = max(1, math.ceil(m_pe / acc_depth))
    return {"m_pe": m_pe, "nw_pe": nw_pe, "passes": passes,
            "words": m_pe * nw_pe + m_pe + DESC_WORDS * passes}


@dataclass
class GemvMapping:
    """A compiled GEMV: configuration, host streams and the decoding of results."""

    shape: MeshShape
    region: Region
    colors: Colors
    m: int
    n: int
    m_pe: int
    nw_pe: int
    out_int32: bool
    base: int                       # first SRAM word used in every PE
    words: int                      # SRAM words used in every PE
    passes: list[tuple[int, int, int]] = field(default_factory=list)  # (desc addr, row0, rows)
    program: ConfigProgram | None = None
    x_from: str = "N"               # the mesh edge x enters by (N, or S)
    y_to: str = "E"                 # the mesh edge y leaves by (E, or W)

    def x_ports(self, x: np.ndarray) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
        """``(edge, column) -> (payloads, cc)``: :meth:`x_streams` on the edge x enters by."""
        return {(self.x_from, c): v for c, v in self.x_streams(x).items()}

    # ---- host side -----------------------------------------------------------------------
    def x_streams(self, x: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """North-edge column -> ``(payloads, cc)`` for a batch ``x`` (N or B x N int8)."""
        x = np.atleast_2d(np.asarray(x))
        if x.shape[1] != self.n:
            raise MappingError(f"x has {x.shape[1]} elements per vector; W has {self.n} "
                               f"columns")
        b = x.shape[0]
        total = self.nw_pe * self.region.cols * LANES
        xp = np.zeros((b, total), dtype=np.int8)
        xp[:, : self.n] = x
        words = np.stack([pack_int8(v) for v in xp]).reshape(b, self.region.cols, self.nw_pe)
        out = {}
        for c in range(self.region.cols):
            pays, ccs = [], []
            for desc, _row0, _rows in self.passes:
                pays.append(np.array([desc], dtype=np.uint32))
                ccs.append(np.array([cc(self.colors.x, 1)], dtype=np.uint8))
                pays.append(words[:, c, :].reshape(-1))
                ccs.append(np.full(b * self.nw_pe, cc(self.colors.x), dtype=np.uint8))
            out[self.region.col + c] = (np.concatenate(pays), np.concatenate(ccs))
        return out

    def y_wavelets_per_row(self, batch: int) -> int:
        """Wavelets each region row sends out of the east edge for ``batch`` vectors."""
        per_vec = 0
        for _desc, _row0, rows in self.passes:
            per_vec += rows if self.out_int32 else math.ceil(rows / LANES)
        return per_vec * batch

    def expected(self, batch: int) -> int:
        """Wavelets the east edge receives for ``batch`` vectors."""
        return self.y_wavelets_per_row(batch) * self.region.rows

    def row_of(self, index: int) -> int:
        """The mesh row whose east edge carries output ``index`` (for a mismatch message)."""
        return self.region.row + index // self.m_pe

    def decode_edge(self, per_row: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]],
                    batch: int) -> np.ndarray:
        """:meth:`decode_y` from the ``(payloads, cc)`` each ``(edge, mesh row)`` received
        (one color arrives on the edge y leaves by: the cc is not needed)."""
        return self.decode_y({r: pc[0] for (side, r), pc in per_row.items()
                              if side == self.y_to}, batch)

    def decode_y(self, per_row: dict[int, np.ndarray], batch: int) -> np.ndarray:
        """East-edge payloads per mesh row -> ``y`` (B x M; int8, or int32 with INT32)."""
        dtype = np.int32 if self.out_int32 else np.int8
        y = np.zeros((batch, self.region.rows * self.m_pe), dtype=dtype)
        for r in range(self.region.rows):
            words = np.asarray(per_row[self.region.row + r], dtype=np.uint32)
            pos = 0
            for _desc, row0, rows in self.passes:
                for b in range(batch):
                    if self.out_int32:
                        vals = words[pos:pos + rows].view(np.int32)
                        pos += rows
                    else:
                        nwd = math.ceil(rows / LANES)
                        vals = unpack_int8(words[pos:pos + nwd])[:rows]
                        pos += nwd
                    start = r * self.m_pe + row0
                    y[b, start:start + rows] = vals
        return y[:, : self.m]


def int8_matrix(w) -> np.ndarray:
    """``w`` as a non-empty 2-D int8 array; a MappingError for any other shape or range."""
    w = np.asarray(w)
    if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
        raise MappingError(f"W must be a non-empty 2-D matrix, not shape {w.shape}")
    if w.dtype != np.int8:
        if w.size and (w.min() < -128 or w.max() > 127):
            raise MappingError("W must be int8: values in [-128, 127]")
        w = w.astype(np.int8)
    return w


def compile_gemv(shape: MeshShape, w, mult, shift, *, region: Region | None = None,
                 colors: Colors = Colors(), out_int32: bool = False, base: int = 0,
                 program: ConfigProgram | None = None, routes: bool = True,
                 x_from: str = "N", y_to: str = "E") -> GemvMapping:
    """Place ``W`` (M x N int8) and its requantization on ``region`` of a ``shape`` mesh.

    Parameters
    ----------
    mult, shift : array_like
        Per output channel (M,) requantization (see :func:`~sparktile.golden_model.arith.
        requantize`); ignored with ``out_int32``.
    base : int
        First SRAM word to use in every PE (several matrices share the mesh at different bases).
    program : ConfigProgram, optional
        Add to this program instead of a new one.
    routes : bool
        Emit routes and PE registers (a second matrix on the same region and colors needs only
        its SRAM image).
    x_from, y_to : str
        The mesh edge ``x`` enters by (``N``: multicast down the region's columns, or ``S``:
        up them) and the one ``y`` leaves by (``E``, or ``W`` for a one-column region: there
        is no chain to turn round).

    Raises
    ------
    MappingError
        If W is not a 2-D int8 matrix, the region is not in the mesh, or the matrix does not fit
        the region's SRAM (the message gives the sizes and the capacity).
    """
    region = region or Region.whole(shape)
    region.check(shape)
    colors.check()
    if x_from not in ("N", "S") or y_to not in ("E", "W"):
        raise MappingError(f"x enters by N or S and y leaves by E or W, not {x_from!r} and "
                           f"{y_to!r}")
    if y_to == "W" and region.cols != 1:
        raise MappingError(f"y leaves west only from a one-column region, not {region.cols} "
                           f"columns (the partial sums run east)")
    w = int8_matrix(w)
    m, n = w.shape
    geo = gemv_words(m, n, region, shape.acc_depth)
    m_pe, nw_pe = geo["m_pe"], geo["nw_pe"]
    if base < 0 or base + geo["words"] > shape.sram_words:
        raise MappingError(
            f"W ({m}x{n}) needs {geo['words']} SRAM words per PE on a {region.rows}x"
            f"{region.cols} region ({m_pe} rows x {nw_pe} words of weights, {m_pe} "
            f"requantization words, {DESC_WORDS * geo['passes']} descriptor words) from word "
            f"{base}, but a PE has {shape.sram_words} words ({shape.sram_kb} KiB); use a larger "
            f"region or mesh, or more SRAM")
    if not out_int32:
        mult = np.broadcast_to(np.asarray(mult, dtype=np.int64), (m,))
        shift = np.broadcast_to(np.asarray(shift, dtype=np.int64), (m,))
    prog = program or ConfigProgram(shape)

    # Padded weights: (R * m_pe) x (C * nw_pe * 4).
    wp = np.zeros((region.rows * m_pe, region.cols * nw_pe * LANES), dtype=np.int8)
    wp[:m, :n] = w
    q = np.zeros(region.rows * m_pe, dtype=np.uint32)
    if not out_int32:
        try:
            q[:m] = pack_array(RequantWord, mult=mult, shift=shift)
        except ValueError as exc:       # a mult or shift the requantization word cannot hold
            raise MappingError(str(exc)) from None

    w_base = base
    q_base = w_base + m_pe * nw_pe
    desc_base = q_base + m_pe
    mapping = GemvMapping(shape, region, colors, m, n, m_pe, nw_pe, out_int32, base,
                          geo["words"], program=prog, x_from=x_from, y_to=y_to)
    acc = shape.acc_depth
    for p in range(geo["passes"]):
        row0 = p * acc
        rows = min(acc, m_pe - row0)
        mapping.passes.append((desc_base + DESC_WORDS * p, row0, rows))

    for rr in range(region.rows):
        for cc_ in range(region.cols):
            r, c = region.row + rr, region.col + cc_
            block = wp[rr * m_pe:(rr + 1) * m_pe, cc_ * nw_pe * LANES:(cc_ + 1) * nw_pe * LANES]
            # Row after row, four weights a word: the block packed in one call (a row is a
            # whole number of words, so this is the rows' images one after the other).
            words = pack_int8(block.reshape(-1))
            desc = []
            first, last = cc_ == 0, cc_ == region.cols - 1
            for _addr, row0, rows in mapping.passes:
                flags = {"first": first, "last": last, "int32": out_int32 and last}
                desc += [pack(DescWord0, w_base=w_base + row0 * nw_pe, n_words=nw_pe),
                         pack(DescWord1, rows=rows, flags=flags),
                         pack(DescWord2, q_base=q_base + row0)]
            sram = np.concatenate([words, q[rr * m_pe:(rr + 1) * m_pe],
                                   np.array(desc, dtype=np.uint32)])
            prog.write_sram(r, c, w_base, sram)
            if routes:
                psum_in, out = pe_routes(prog, region, colors, rr, cc_, x_from, y_to)
                prog.set_reg(r, c, PeReg.X_COLOR, colors.x)
                prog.set_reg(r, c, PeReg.PSUM_COLOR, psum_in)
                prog.set_reg(r, c, PeReg.OUT_COLOR, out)
    if routes:
        edge_routes(prog, shape, region, colors, x_from, y_to)
    return mapping


def pe_routes(prog: ConfigProgram, region: Region, colors: Colors, rr: int,
              cc_: int, x_from: str = "N", y_to: str = "E") -> tuple[int, int]:
    """The routes of the PE at region row ``rr``, column ``cc_`` of a GEMV chain (x down the
    column into the ramp, the partial sums in from the west, its own out east; ``x_from`` S:
    up the column; ``y_to`` W: a one-column region's results out west); returns
    ``(psum_in, out)``, the colors its partial sums arrive and leave on (partial sums
    alternate P0/P1 along a row: a router cannot take a color from the west and also send it
    east from its ramp; the east-most PE sends on Y)."""
    r, c = region.row + rr, region.col + cc_
    first, last = cc_ == 0, cc_ == region.cols - 1
    psum_in = colors.p1 if (cc_ - 1) % 2 else colors.p0
    out = colors.y if last else (colors.p1 if cc_ % 2 else colors.p0)
    if x_from == "N":
        on = [Port.S] if rr + 1 < region.rows else []
        prog.add_route(r, c, colors.x, Port.N, [Port.RAMP, *on])
    else:
        on = [Port.N] if rr > 0 else []
        prog.add_route(r, c, colors.x, Port.S, [Port.RAMP, *on])
    if not first:
        prog.add_route(r, c, psum_in, Port.W, [Port.RAMP])
    prog.add_route(r, c, out, Port.RAMP, [Port.E if y_to == "E" else Port.W])
    return psum_in, out


def edge_routes(prog: ConfigProgram, shape: MeshShape, region: Region, colors: Colors,
                x_from: str = "N", y_to: str = "E") -> None:
    """x passes down through tiles north of the region (up through those south of it, from
    the south edge); y passes east to the mesh edge (west, from the west edge)."""
    for c in range(region.col, region.col + region.cols):
        if x_from == "N":
            for r in range(region.row):
                prog.add_route(r, c, colors.x, Port.N, [Port.S])
        else:
            for r in range(region.row + region.rows, shape.rows):
                prog.add_route(r, c, colors.x, Port.S, [Port.N])
    for r in range(region.row, region.row + region.rows):
        if y_to == "E":
            for c in range(region.col + region.cols, shape.cols):
                prog.add_route(r, c, colors.y, Port.W, [Port.E])
        else:
            for c in range(region.col):
                prog.add_route(r, c, colors.y, Port.E, [Port.W])
