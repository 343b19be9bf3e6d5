"""Building the virtual board: the FPGA top Verilated with a bit-level UART model.

The same :class:`~sparktile.hdl.fpga.top.FpgaTop` that goes into a bitstream (mesh, bridge,
UART) is converted to Verilog and compiled by Verilator together with ``vboard.cpp``, which
drives ``uart_rx`` and samples ``uart_tx`` bit by bit and connects them to its stdin and
stdout. The build is cached like the mesh simulators (:mod:`.build`): by a hash of the
Verilog, the C++ model, the flags and the Verilator version, under
:func:`sparktile.toolchain.cache_dir` ``/vboard``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from ...hdl.fpga.top import FPGA_TOP, FpgaTop
from ...hdl.mesh import MeshShape, mesh_tile
from ...toolchain import apply_verilator_env, cache_dir
from ..sim.build import (
    TILE_MODULE,
    build_executable,
    build_style,
    hdl_fingerprint,
    style_flags,
    vlt_text,
)
from ..sim.build_cache import cached_text, key_of, notice

__all__ = ["VBoardBuild", "build_vboard", "VBOARD_DIVISOR", "fpga_verilog"]

_HERE = Path(__file__).resolve().parent
VBOARD_SOURCE = _HERE / "vboard.cpp"
#: UART clocks per bit in the virtual board: the smallest the receiver supports, so that CI
#: moves bytes quickly (40 cycles a byte).
VBOARD_DIVISOR = 4
#: Bridge sizes in the virtual board (as on the ULX3S).
VBOARD_BRIDGE = {"max_payload": 1024, "east_depth": 512}
_FLAGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-lint", "-O3",
          "--x-assign", "fast", "--x-initial", "fast"]


@dataclass
class VBoardBuild:
    shape: MeshShape
    executable: Path
    divisor: int
    seconds: float      # 0 when found in the cache


def fpga_verilog(shape: MeshShape, divisor: int = VBOARD_DIVISOR, **bridge) -> str:
    """Verilog of the FPGA top (module ``sparktile_fpga``) with its one tile module, cached by
    configuration (the tile is compiled once, as in the mesh simulators)."""
    args = {**VBOARD_BRIDGE, **bridge}
    key = key_of([repr(shape.key()), str(divisor), repr(sorted(args.items())),
                  hdl_fingerprint(), "tiled"])
    path = cache_dir() / "verilog" / f"fpga_{shape.rows}x{shape.cols}_{key}.v"

    def produce():
        from amaranth.back import verilog
        tile = verilog.convert(mesh_tile(shape), name=TILE_MODULE, emit_src=False)
        top = verilog.convert(FpgaTop(shape, divisor=divisor, tile_module=TILE_MODULE, **args),
                              name=FPGA_TOP, emit_src=False)
        return tile + top

    return cached_text(path, produce)


def build_vboard(shape: MeshShape, *, divisor: int = VBOARD_DIVISOR, **bridge) -> VBoardBuild:
    """Verilate the virtual board for ``shape`` (cached).

    Raises
    ------
    BuildError
        When Verilator or the C++ compiler fails; the message names the log.
    """
    apply_verilator_env()
    text = fpga_verilog(shape, divisor, **bridge)
    # The board's Verilog always has the one tile module; "flat" has no meaning here.
    style = "tiled" if build_style(shape) == "tiled" else "shared"
    flags = _FLAGS + style_flags(style)
    vlt = vlt_text(style)
    key = key_of([text, VBOARD_SOURCE.read_text(), vlt, " ".join(flags),
                  version("verilator")])
    directory = cache_dir() / "vboard" / f"{shape.rows}x{shape.cols}_{key}"
    what = f"the {shape} virtual board"

    def sources(directory: Path) -> list[Path]:
        (directory / "top.v").write_text(text)
        shutil.copy(VBOARD_SOURCE, directory / "vboard.cpp")
        (directory / "tile.vlt").write_text(vlt)
        notice(f"building {what}: first use of this configuration; cached in {directory}")
        return [directory / "tile.vlt", directory / "top.v", directory / "vboard.cpp"]

    seconds = build_executable(directory, "vboard", what, sources, top=FPGA_TOP, flags=flags,
                               mdir=directory / "obj")
    if seconds:
        notice(f"built {what} in {seconds:.0f} s (cache {directory})")
    return VBoardBuild(shape, directory / "vboard", divisor, seconds)
