"""Configuration programs: the wavelet streams that configure a mesh through its own fabric.

A :class:`ConfigProgram` collects route-table entries, PE register values, SRAM images and
counter reads per tile and lays them out as one configuration stream per row, to be sent into
the row's west edge on :data:`~sparktile.hdl.formats.CFG_COLOR`. Pure Python: the mapping
compiler, the cocotb benches and the FPGA host all use it.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..hdl.formats import (
    CFG_COLOR,
    HALF_BITS,
    ROUTABLE_COLORS,
    CfgOp,
    Counter,
    Port,
    ReadAddress,
    cc,
    cfg_header,
    decode_response,
    pack,
    route_entry,
    unpack,
)
from ..hdl.mesh import MeshShape

__all__ = ["ConfigProgram", "Route", "read_requests", "counters_from_responses"]


class Route:
    """Route of one color at one router: the input it is accepted from, the outputs it goes to."""

    __slots__ = ("src", "dst")

    def __init__(self, src: Port, dst=()):
        self.src = Port(src)
        self.dst = set(Port(p) for p in dst)

    def __repr__(self):
        return f"Route({self.src.name} -> {'|'.join(sorted(p.name for p in self.dst))})"


class ConfigProgram:
    """Configuration of a mesh, tile by tile, and its encoding as wavelet streams.

    Parameters
    ----------
    shape : MeshShape
        The mesh being configured.
    """

    def __init__(self, shape: MeshShape):
        self.shape = shape
        self.routes: dict[tuple[int, int], dict[int, Route]] = defaultdict(dict)
        self.regs: dict[tuple[int, int], dict[int, int]] = defaultdict(dict)
        self.sram: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = defaultdict(list)

    def _tile(self, r: int, c: int) -> tuple[int, int]:
        if not (0 <= r < self.shape.rows and 0 <= c < self.shape.cols):
            raise ValueError(f"tile ({r}, {c}) is outside the {self.shape} mesh")
        return r, c

    def add_route(self, r: int, c: int, color: int, src: Port, dst) -> None:
        """Route ``color`` at tile ``(r, c)``: accept from ``src``, send to ports ``dst``.

        Adding to an existing entry for the same input merges the outputs (multicast).
        """
        if not 0 <= color < ROUTABLE_COLORS:
            raise ValueError(f"color must be in [0, {ROUTABLE_COLORS - 1}], not {color}")
        tile = self.routes[self._tile(r, c)]
        entry = tile.get(color)
        if entry is None:
            tile[color] = Route(src, dst)
        elif entry.src != Port(src):
            raise ValueError(f"color {color} at tile ({r}, {c}) already comes from "
                             f"{entry.src.name}; it cannot also come from {Port(src).name}")
        else:
            entry.dst |= set(Port(p) for p in dst)

    def set_reg(self, r: int, c: int, reg: int, value: int) -> None:
        self.regs[self._tile(r, c)][int(reg)] = int(value)

    def write_sram(self, r: int, c: int, addr: int, words) -> None:
        words = np.asarray(words, dtype=np.uint32)
        if addr < 0 or addr + len(words) > self.shape.sram_words:
            raise ValueError(f"SRAM write of {len(words)} words at {addr} does not fit tile "
                             f"({r}, {c})'s {self.shape.sram_words} words")
        self.sram[self._tile(r, c)].append((addr, words))

    def row_streams(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per row, the ``(payloads, cc)`` arrays to send into that row's west edge.

        Tiles are programmed from the far (east) end back towards the edge, so a tile's routes
        are in place before any of the traffic the configuration of a nearer tile unblocks.
        """
        out = []
        for r in range(self.shape.rows):
            pay: list[int] = []
            ccs: list[int] = []

            def header(c, op, addr=0, value=0, pay=pay, ccs=ccs):
                pay.append(cfg_header(c, op, addr, value))
                ccs.append(cc(CFG_COLOR, 1))

            chunks_w = []
            chunks_c = []
            for c in reversed(range(self.shape.cols)):
                for color, route in sorted(self.routes.get((r, c), {}).items()):
                    header(c, CfgOp.ROUTE, color, route_entry(route.src, route.dst))
                for reg, value in sorted(self.regs.get((r, c), {}).items()):
                    header(c, CfgOp.PE_REG, reg, value)
                for addr, words in self.sram.get((r, c), []):
                    header(c, CfgOp.SRAM_BURST, 0, addr)
                    chunks_w.append(np.array(pay, dtype=np.uint32))
                    chunks_c.append(np.array(ccs, dtype=np.uint8))
                    pay.clear()
                    ccs.clear()
                    chunks_w.append(words.astype(np.uint32))
                    chunks_c.append(np.full(len(words), cc(CFG_COLOR, 0), dtype=np.uint8))
            chunks_w.append(np.array(pay, dtype=np.uint32))
            chunks_c.append(np.array(ccs, dtype=np.uint8))
            out.append((np.concatenate(chunks_w), np.concatenate(chunks_c)))
        return out


def read_requests(shape: MeshShape, counters=tuple(Counter)) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per row, the READ headers that fetch ``counters`` (both halves) from every tile."""
    out = []
    for _r in range(shape.rows):
        pay = [cfg_header(c, CfgOp.READ, pack(ReadAddress, counter=int(k), half=half), 0)
               for c in range(shape.cols) for k in counters for half in (0, 1)]
        out.append((np.array(pay, dtype=np.uint32),
                    np.full(len(pay), cc(CFG_COLOR, 1), dtype=np.uint8)))
    return out



def counters_from_responses(shape: MeshShape, counters, responses) -> dict[str, np.ndarray]:
    """The counters that :func:`read_requests` asked for, from the READ responses of each
    row (``responses[r]``: payloads on :data:`RSP_COLOR`): name -> (rows, cols) ``uint64``.

    A response naming a column outside the mesh or a counter not asked for raises
    ``ValueError`` (the board host turns it into a ``LinkError``).
    """
    asked = {int(k) for k in counters}
    out = {Counter(k).name.lower(): np.zeros((shape.rows, shape.cols), dtype=np.uint64)
           for k in counters}
    for r, payloads in enumerate(responses):
        for p in payloads:
            col, addr, value = decode_response(p)
            a = unpack(ReadAddress, addr)
            if col >= shape.cols or a["counter"] not in asked:
                raise ValueError(f"READ response 0x{int(p):08x} from row {r} names column "
                                 f"{col}, counter address {addr}; asked for columns 0.."
                                 f"{shape.cols - 1}, counters "
                                 f"{[Counter(k).name for k in counters]}")
            out[Counter(a["counter"]).name.lower()][r, col] |= np.uint64(
                value << (HALF_BITS * a["half"]))
    return out
