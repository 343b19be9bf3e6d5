"""The boards sparktile builds for, with the mesh that fits each (from ``amaranth-boards``).

Each entry names the Amaranth platform, the oscillator the fabric runs from, the UART baud rate
(chosen so that ``clk_hz / baud`` is an integer: no rate error), the default mesh and memory
sizes, whether the routers register their mesh outputs (``link_regs``: on FPGAs they do, which
costs a cycle per hop and shortens the clock period), and the Yosys options (iCE40 needs
``-dsp`` to put multipliers in its DSPs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Board", "BOARDS", "get_board"]


@dataclass(frozen=True)
class Board:
    name: str
    platform: str                   # "module:Class" in amaranth_boards
    family: str                     # "ecp5" or "ice40"
    clk_hz: int                     # the oscillator the fabric runs from
    baud: int
    mesh: str                       # default mesh (docs/fpga.md: the largest that fits)
    sram_kb: int
    acc_depth: int
    max_payload: int
    east_depth: int
    synth_opts: str = ""
    link_regs: bool = True          # registered router outputs: 2 cycles/hop, a faster clock
    route_colors: int = 30          # route-table entries per router (a GEMV needs 4)
    counter_bits: int = 32          # tile counters; the bridge's STATUS counters likewise
    demo_gemv: tuple = (64, 128)    # the GEMV `fpga demo` runs (M, N): fits the default mesh
    program: str = ""               # openFPGALoader command (``{bit}`` = bitstream)
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def shape(self, mesh: str | None = None, *, sram_kb: int | None = None):
        """The :class:`~sparktile.hdl.mesh.MeshShape` built for this board (``mesh`` as
        ``"RxC"``, default the board's)."""
        from ..mesh import parse_mesh
        return parse_mesh(mesh or self.mesh, sram_kb=sram_kb or self.sram_kb,
                          acc_depth=self.acc_depth, link_regs=self.link_regs,
                          route_colors=self.route_colors, counter_bits=self.counter_bits)

    def vboard_bridge(self) -> dict:
        """Bridge parameters for this board's virtual board (those that differ from the
        virtual board's defaults, so that equal configurations share one cached build)."""
        args = {"max_payload": self.max_payload, "east_depth": self.east_depth}
        if self.counter_bits != 32:
            args["status_bits"] = self.counter_bits
        return args

    def platform_class(self):
        import importlib
        mod, cls = self.platform.split(":")
        try:
            module = importlib.import_module(mod)
        except ImportError as exc:
            raise ImportError(f"board {self.name} needs amaranth-boards: "
                              f"pip install 'sparktile[fpga]'") from exc
        return getattr(module, cls)


BOARDS = {
    "ulx3s-85f": Board(
        "ulx3s-85f", "amaranth_boards.ulx3s:ULX3S_85F_Platform", "ecp5", 25_000_000,
        1_000_000, mesh="2x2", sram_kb=16, acc_depth=256, max_payload=1024, east_depth=512,
        # ECP5: multipliers go to MULT18X18D by default; -abc9 gives better timing.
        synth_opts="-abc9",
        program="openFPGALoader --board ulx3s {bit}"),
    "icebreaker": Board(
        "icebreaker", "amaranth_boards.icebreaker:ICEBreakerPlatform", "ice40", 12_000_000,
        1_000_000, mesh="1x1", sram_kb=4, acc_depth=64, max_payload=256, east_depth=64,
        # At the 12 MHz oscillator the links need no registers; the logic cells are the limit.
        synth_opts="-dsp -abc9", link_regs=False, route_colors=8, counter_bits=16,
        demo_gemv=(32, 64),
        program="openFPGALoader --board icebreaker {bit}"),
}


def get_board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"board must be one of {', '.join(sorted(BOARDS))}, not "
                         f"{name!r}") from None
