"""Building the virtual board: the FPGA top Verilated with a bit-level UART model.

The same :class:`~sparktile.hdl.fpga.top.FpgaTop` that goes into a bitstream (mesh, bridge,
UART) is converted to Verilog and compiled by Verilator together with ``vboard.cpp``, which
drives ``uart_rx`` and samples ``uart_tx`` bit by bit and connects them to its stdin and
stdout. The build is cached like the mesh simulators (:mod:`.build`): by a hash of the
Verilog, the C++ model, the flags and the Verilator version, under
:func:`sparktile.toolchain.cache_dir` ``/vboard``.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from ..hdl import fpga as _fpga_pkg
from ..hdl.fpga.top import FPGA_TOP, FpgaTop
from ..hdl.mesh import MeshShape
from ..toolchain import apply_verilator_env, cache_dir
from .build import BuildError, _hdl_fingerprint, _locked, cached_text

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
    """Verilog of the FPGA top (module ``sparktile_fpga``), cached by configuration."""
    args = {**VBOARD_BRIDGE, **bridge}
    fp = _hdl_fingerprint()
    h = hashlib.sha256(f"{shape.key()}:{divisor}:{sorted(args.items())}:{fp}".encode())
    # _hdl_fingerprint covers hdl/*.py; the FPGA package is one level down.
    for src in sorted(Path(_fpga_pkg.__file__).resolve().parent.glob("*.py")):
        h.update(src.read_bytes())
    key = h.hexdigest()[:20]
    path = cache_dir() / "verilog" / f"fpga_{shape.rows}x{shape.cols}_{key}.v"

    def produce():
        from amaranth.back import verilog
        return verilog.convert(FpgaTop(shape, divisor=divisor, **args), name=FPGA_TOP,
                               emit_src=False)

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
    h = hashlib.sha256()
    for part in (text, VBOARD_SOURCE.read_text(), " ".join(_FLAGS), version("verilator")):
        h.update(part.encode())
        h.update(b"\0")
    key = h.hexdigest()[:20]
    directory = cache_dir() / "vboard" / f"{shape.rows}x{shape.cols}_{key}"
    exe = directory / "vboard"
    stamp = directory / ".built"
    if stamp.exists():
        return VBoardBuild(shape, exe, divisor, 0.0)
    with _locked(directory.with_suffix(".lock")):
        if stamp.exists():
            return VBoardBuild(shape, exe, divisor, 0.0)
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        (directory / "top.v").write_text(text)
        shutil.copy(VBOARD_SOURCE, directory / "vboard.cpp")
        log = directory / "build.log"
        cmd = ["verilator", "--cc", "--exe", "--build", "-j", "2", *_FLAGS,
               "--top-module", FPGA_TOP, "-Mdir", str(directory / "obj"), "-o", str(exe),
               # The wheel's verilated.mk leaves the precompiled-header include flag empty.
               "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O2",
               str(directory / "top.v"), str(directory / "vboard.cpp")]
        t0 = time.monotonic()
        with open(log, "w") as fd:
            proc = subprocess.run(cmd, stdout=fd, stderr=subprocess.STDOUT, cwd=directory)
        if proc.returncode != 0 or not exe.exists():
            raise BuildError(f"Verilator build of the {shape} virtual board failed; see {log}")
        seconds = time.monotonic() - t0
        stamp.write_text(f"{seconds:.1f}\n")
        print(f"[sparktile] built {shape} virtual board in {seconds:.0f} s "
              f"(cache {directory})", file=sys.stderr)
        return VBoardBuild(shape, exe, divisor, seconds)
