"""A rows x cols mesh of tiles with all four edges exposed as wavelet streams.

Tile ``(r, c)`` sits at row ``r`` (0 = north) and column ``c`` (0 = west). Its east output feeds
the west input of ``(r, c + 1)``, its south output the north input of ``(r + 1, c)``, and so on;
links that leave the mesh become edge ports: ``north_in[c]``/``north_out[c]`` on row 0,
``south_in[c]``/``south_out[c]`` on the last row, ``west_in[r]``/``west_out[r]`` on column 0 and
``east_in[r]``/``east_out[r]`` on the last column. Configuration enters through ``west_in[r]``.
"""

from amaranth.hdl import ClockSignal, Const, Instance, Module, ResetSignal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .formats import MAX_MESH_DIM, ROUTABLE_COLORS, Port, Wavelet
from .tile import Tile

__all__ = ["Mesh", "MeshShape", "parse_mesh", "mesh_tile", "PE_KINDS"]

#: Smallest and largest PE SRAM in KiB (WSE-3 has 48 KB per PE).
SRAM_KB_RANGE = (1, 256)
#: What each tile's processing element is: ``gemv`` the fixed-function GEMV engine
#: (:class:`~sparktile.hdl.pe.PE`), ``core`` the programmable core
#: (:class:`~sparktile.hdl.core.Core`).
PE_KINDS = ("gemv", "core")


class MeshShape:
    """Validated configuration of a mesh: rows, columns, per-PE memory sizes, and the options
    FPGA builds use.

    ``link_regs`` registers the routers' mesh outputs (two cycles per hop instead of one, for
    FPGA clock rates; see :class:`~sparktile.hdl.router.Router`). ``route_colors`` (route-table
    entries, default all 30 routable colors) and ``counter_bits`` (default 32) shrink a tile
    for small FPGAs. ``cover_points`` adds the functional coverage points of
    :mod:`~sparktile.hdl.cover` to every tile (the coverage build sets it; see
    :meth:`with_cover_points`). ``pe`` (:data:`PE_KINDS`) puts the fixed-function GEMV PE
    (``gemv``, the default) or the programmable core (``core``) in every tile; the core needs
    a power-of-two SRAM (its addresses wrap modulo the size) and has neither the registered
    ramp (``link_regs``) nor coverage points yet, so those combinations are refused.

    Raises
    ------
    ValueError
        Naming the bad value and the allowed range.
    """

    def __init__(self, rows: int, cols: int, *, sram_kb: int = 16, acc_depth: int = 256,
                 link_regs: bool = False, route_colors: int = ROUTABLE_COLORS,
                 counter_bits: int = 32, cover_points: bool = False, pe: str = "gemv"):
        for name, v in (("rows", rows), ("cols", cols)):
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_MESH_DIM:
                raise ValueError(f"mesh {name} must be an integer in [1, {MAX_MESH_DIM}], "
                                 f"not {v!r}")
        lo, hi = SRAM_KB_RANGE
        if isinstance(sram_kb, bool) or not isinstance(sram_kb, int) or not lo <= sram_kb <= hi:
            raise ValueError(f"sram_kb must be an integer in [{lo}, {hi}], not {sram_kb!r}")
        if isinstance(acc_depth, bool) or not isinstance(acc_depth, int) or \
                not 1 <= acc_depth <= 4096:
            raise ValueError(f"acc_depth must be an integer in [1, 4096], not {acc_depth!r}")
        if not isinstance(link_regs, bool):
            raise ValueError(f"link_regs must be True or False, not {link_regs!r}")
        if isinstance(route_colors, bool) or not isinstance(route_colors, int) or \
                not 4 <= route_colors <= ROUTABLE_COLORS:
            raise ValueError(f"route_colors must be an integer in [4, {ROUTABLE_COLORS}] (a GEMV "
                             f"uses four colors), not {route_colors!r}")
        if isinstance(counter_bits, bool) or not isinstance(counter_bits, int) or \
                not 16 <= counter_bits <= 32:
            raise ValueError(f"counter_bits must be an integer in [16, 32], not {counter_bits!r}")
        if not isinstance(cover_points, bool):
            raise ValueError(f"cover_points must be True or False, not {cover_points!r}")
        if pe not in PE_KINDS:
            raise ValueError(f"pe must be one of {', '.join(PE_KINDS)}, not {pe!r}")
        if pe == "core":
            if sram_kb & (sram_kb - 1):
                raise ValueError(f"pe='core' needs a power-of-two sram_kb (its addresses wrap "
                                 f"modulo the SRAM size), not {sram_kb}")
            if link_regs:
                raise ValueError("pe='core' has no registered ramp yet: link_regs=True is "
                                 "only for pe='gemv'")
            if cover_points:
                raise ValueError("pe='core' has no functional coverage points yet: "
                                 "cover_points=True is only for pe='gemv'")
        self.rows = rows
        self.cols = cols
        self.sram_kb = sram_kb
        self.acc_depth = acc_depth
        self.link_regs = link_regs
        self.route_colors = route_colors
        self.counter_bits = counter_bits
        self.cover_points = cover_points
        self.pe = pe

    @property
    def sram_words(self) -> int:
        return self.sram_kb * 256

    @property
    def pes(self) -> int:
        return self.rows * self.cols

    def __repr__(self):
        return (f"MeshShape({self.rows}, {self.cols}, sram_kb={self.sram_kb}, "
                f"acc_depth={self.acc_depth}" + "".join(f", {k}={v!r}" for k, v in
                                                        self.options().items()) + ")")

    def __str__(self):
        return f"{self.rows}x{self.cols}"

    def __eq__(self, other):
        return isinstance(other, MeshShape) and self.key() == other.key()

    def __hash__(self):
        return hash(self.key())

    def options(self) -> dict:
        """The options (FPGA options, coverage points, the PE kind) that differ from their
        defaults."""
        opts = {"link_regs": self.link_regs, "route_colors": self.route_colors,
                "counter_bits": self.counter_bits, "cover_points": self.cover_points,
                "pe": self.pe}
        defaults = {"link_regs": False, "route_colors": ROUTABLE_COLORS, "counter_bits": 32,
                    "cover_points": False, "pe": "gemv"}
        return {k: v for k, v in opts.items() if v != defaults[k]}

    def with_cover_points(self) -> "MeshShape":
        """The same mesh with the functional coverage points (what a coverage build
        verilates)."""
        return MeshShape(self.rows, self.cols, sram_kb=self.sram_kb, acc_depth=self.acc_depth,
                         **{**self.options(), "cover_points": True})

    def key(self):
        # With default options the key is what it always was (the Verilator caches use it).
        return (self.rows, self.cols, self.sram_kb, self.acc_depth) + \
            tuple(sorted(self.options().items()))


def parse_mesh(text: str, **kwargs) -> MeshShape:
    """Parse ``"ROWSxCOLS"`` (e.g. ``"3x5"``) into a :class:`MeshShape`."""
    parts = str(text).lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"mesh must be written ROWSxCOLS (e.g. 4x4), not {text!r}")
    return MeshShape(int(parts[0]), int(parts[1]), **kwargs)


def mesh_tile(shape: MeshShape, col: int | None = None, last_col: bool | None = None) -> Tile:
    """A tile of a mesh of ``shape``: at column ``col``, or (both ``None``) with its
    coordinates as ports, the one tile module every position of the mesh instantiates."""
    return Tile(col=col, last_col=last_col, sram_words=shape.sram_words,
                acc_depth=shape.acc_depth, link_regs=shape.link_regs,
                route_colors=shape.route_colors, counter_bits=shape.counter_bits,
                cover_points=shape.cover_points, pe=shape.pe)


_TILE_LINKS = wiring.Signature({
    "inputs": In(stream.Signature(Wavelet)).array(4),
    "outputs": Out(stream.Signature(Wavelet)).array(4),
})


class Mesh(wiring.Component):
    """The fabric: ``shape.rows x shape.cols`` tiles.

    Parameters
    ----------
    shape : MeshShape
        Geometry.
    tile_module : str or None
        ``None`` (default) elaborates every tile as its own Amaranth submodule: Amaranth then
        emits one Verilog module per tile, each with its coordinates folded in (what the
        Amaranth simulator and the FPGA builds use). A module name instead instantiates that
        external module at every position, with the coordinates on its ``col``/``last_col``
        ports: the Verilog of ``mesh_tile(shape)`` converted under that name must be added
        beside this one. Verilator then compiles one tile for the whole mesh, so the build
        time no longer grows with the number of PEs (see ``docs/architecture.md``).

    Members
    -------
    north_in, north_out, south_in, south_out : stream.Signature(Wavelet) arrays of ``cols``
        Edge streams of the first and last rows.
    west_in, west_out, east_in, east_out : stream.Signature(Wavelet) arrays of ``rows``
        Edge streams of the first and last columns.
    """

    def __init__(self, shape: MeshShape, *, tile_module: str | None = None):
        if not isinstance(shape, MeshShape):
            raise TypeError(f"Mesh needs a MeshShape, not {shape!r}")
        if tile_module is not None and (not isinstance(tile_module, str) or
                                        not tile_module.isidentifier()):
            raise ValueError(f"tile_module must be a Verilog identifier or None, "
                             f"not {tile_module!r}")
        self.shape = shape
        self.tile_module = tile_module
        w = stream.Signature(Wavelet)
        super().__init__({
            "north_in": In(w).array(shape.cols), "north_out": Out(w).array(shape.cols),
            "south_in": In(w).array(shape.cols), "south_out": Out(w).array(shape.cols),
            "west_in": In(w).array(shape.rows), "west_out": Out(w).array(shape.rows),
            "east_in": In(w).array(shape.rows), "east_out": Out(w).array(shape.rows),
        })

    def elaborate(self, platform):
        m = Module()
        R, C = self.shape.rows, self.shape.cols
        tiles = {}
        for r in range(R):
            for c in range(C):
                if self.tile_module is None:
                    tiles[r, c] = m.submodules[f"tile_{r}_{c}"] = \
                        mesh_tile(self.shape, c, c == C - 1)
                else:
                    tiles[r, c] = self._instance(m, f"tile_{r}_{c}", c, c == C - 1)
        for r in range(R):
            for c in range(C):
                t = tiles[r, c]
                if c + 1 < C:
                    wiring.connect(m, t.outputs[Port.E], tiles[r, c + 1].inputs[Port.W])
                    wiring.connect(m, tiles[r, c + 1].outputs[Port.W], t.inputs[Port.E])
                if r + 1 < R:
                    wiring.connect(m, t.outputs[Port.S], tiles[r + 1, c].inputs[Port.N])
                    wiring.connect(m, tiles[r + 1, c].outputs[Port.N], t.inputs[Port.S])
        for c in range(C):
            wiring.connect(m, wiring.flipped(self.north_in[c]), tiles[0, c].inputs[Port.N])
            wiring.connect(m, tiles[0, c].outputs[Port.N], wiring.flipped(self.north_out[c]))
            wiring.connect(m, wiring.flipped(self.south_in[c]), tiles[R - 1, c].inputs[Port.S])
            wiring.connect(m, tiles[R - 1, c].outputs[Port.S],
                           wiring.flipped(self.south_out[c]))
        for r in range(R):
            wiring.connect(m, wiring.flipped(self.west_in[r]), tiles[r, 0].inputs[Port.W])
            wiring.connect(m, tiles[r, 0].outputs[Port.W], wiring.flipped(self.west_out[r]))
            wiring.connect(m, wiring.flipped(self.east_in[r]), tiles[r, C - 1].inputs[Port.E])
            wiring.connect(m, tiles[r, C - 1].outputs[Port.E], wiring.flipped(self.east_out[r]))
        return m

    def _instance(self, m: Module, name: str, col: int, last_col: bool):
        """Instantiate the external tile module; returns its links as an interface object
        (the same shape as a :class:`Tile`'s), for the mesh to connect."""
        links = _TILE_LINKS.create(path=(name,))
        ports = {"i_clk": ClockSignal(), "i_rst": ResetSignal(),
                 "i_col": Const(col, 5), "i_last_col": Const(int(last_col), 1)}
        for p in range(4):
            for side, dirs in (("inputs", ("i", "o")), ("outputs", ("o", "i"))):
                s = getattr(links, side)[p]
                fwd, back = dirs
                ports[f"{fwd}_{side}__{p}__valid"] = s.valid
                ports[f"{fwd}_{side}__{p}__payload"] = s.payload.as_value()
                ports[f"{back}_{side}__{p}__ready"] = s.ready
        m.submodules[name] = Instance(self.tile_module, **ports)
        return links
