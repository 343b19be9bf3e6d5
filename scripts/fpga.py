"""``sparktile fpga``: bitstreams for real boards, and the demo through a board's host link.

``sparktile fpga build --board ulx3s-85f [--mesh 2x2] [--json r.json]`` builds the bitstream
with the YoWASP toolchain and reports resources and post-route Fmax (:mod:`.fpga_build`).
``sparktile fpga demo --port /dev/ttyUSB0`` (a board) or ``--port sim`` (the virtual board: the
same FPGA top in Verilator, UART included) runs :mod:`sparktile.cosim.board.demo`: a GEMV and
one token of the shipped model's int8 matmuls through the bridge, both checked against the
golden model.
"""

from __future__ import annotations

import sys
import time

import click

from ..cosim.cli import SEED, FiniteFloatRange
from ..report import check_output, save_json

__all__ = ["fpga_group"]


def _fail(message: str, code: int = 2):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group("fpga")
def fpga_group():
    """FPGA bring-up: build bitstreams, run the demo on a board or the virtual board."""


@fpga_group.command("build")
@click.option("--board", "board_name", default="ulx3s-85f", show_default=True,
              help="Board: ulx3s-85f or icebreaker.")
@click.option("--mesh", default=None, help="Mesh ROWSxCOLS (default: the board's).")
@click.option("--sram-kb", type=int, default=None, help="SRAM per PE in KiB (default: board's).")
@click.option("--target-mhz", type=FiniteFloatRange(1.0, 2000.0), default=None,
              help="Clock constraint for timing analysis (default: the board's oscillator).")
@click.option("--build-dir", default="build/fpga", show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=1, show_default=True,
              help="nextpnr placer seed.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write the report here.")
@click.option("-v", "--verbose", is_flag=True, help="Show the tools' output.")
def build_command(board_name, mesh, sram_kb, target_mhz, build_dir, seed, json_path, verbose):
    """Build a bitstream and report LUTs, FFs, DSPs, BRAMs and Fmax."""
    from ..hdl.fpga.boards import get_board
    from .fpga_build import FpgaBuildError, build_board, yowasp_cache_state
    if json_path:
        json_path = check_output(json_path, "--json")   # before the build, not after it
    try:
        board = get_board(board_name)
        shape = board.shape(mesh, sram_kb=sram_kb)
    except ValueError as exc:
        _fail(str(exc))
    cold = yowasp_cache_state()
    click.echo(f"building {board.name} with a {shape} mesh ({shape.sram_kb} KiB SRAM per PE); "
               f"YoWASP cache {'empty: the tools compile first (minutes)' if cold else 'warm'}",
               err=True)
    try:
        report = build_board(board, shape, build_dir=build_dir, target_mhz=target_mhz,
                             seed=seed, verbose=verbose)
    except (FpgaBuildError, ImportError) as exc:
        _fail(str(exc), 1)
    report["yowasp_cold"] = cold
    for name, r in report["resources"].items():
        click.echo(f"  {name:<14} {r['used']:>7} / {r['available']:<7} "
                   f"({100 * r['used'] / max(r['available'], 1):.1f} %)")
    for clk, f in report["fmax"].items():
        click.echo(f"  Fmax {clk}: {f['achieved_mhz']:.1f} MHz (constraint "
                   f"{f['constraint_mhz']:.1f} MHz)")
    click.echo(f"  timing {'closed' if report['timing_closed'] else 'NOT closed'} at "
               f"{report['target_mhz']:.1f} MHz; build {report['build_s']:.0f} s")
    click.echo(f"  bitstream {report['bitstream']}\n  program: {report['program']}")
    if json_path:
        save_json(json_path, report)


@fpga_group.command("demo")
@click.option("--port", required=True, help="Serial port of the board, or 'sim'.")
@click.option("--board", "board_name", default="ulx3s-85f", show_default=True,
              help="Board (baud rate; for sim, the mesh and memories it simulates).")
@click.option("--mesh", default=None, help="sim only: mesh ROWSxCOLS (default: the board's).")
@click.option("--m", type=click.IntRange(1, 1 << 16), default=None,
              help="GEMV rows [default: the board's, 64 on the ULX3S, 32 on the iCEBreaker].")
@click.option("--n", type=click.IntRange(1, 1 << 16), default=None,
              help="GEMV columns [default: the board's, 128 on the ULX3S, 64 on the "
                   "iCEBreaker].")
@click.option("--batch", type=click.IntRange(1, 1 << 16), default=2, show_default=True)
@click.option("--seed", type=SEED, default=3, show_default=True)
@click.option("--llm/--no-llm", default=True, show_default=True,
              help="Also run one token of the shipped model's matmuls on the board.")
@click.option("--timeout", type=FiniteFloatRange(0.001, 3600.0), default=2.0, show_default=True,
              help="Seconds to wait for each reply.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
def demo_command(port, board_name, mesh, m, n, batch, seed, llm, timeout, json_path):
    """Run the GEMV (and LLM) demo through a board or the virtual board."""
    from ..compiler.mapping import MappingError
    from ..cosim.board.demo import run_demo
    from ..cosim.board.host import Board, BoardError, open_transport
    from ..hdl.fpga.boards import get_board
    if json_path:
        json_path = check_output(json_path, "--json")   # before the demo, not after it
    try:
        spec = get_board(board_name)
        shape = spec.shape(mesh)
    except ValueError as exc:
        _fail(str(exc))
    m = spec.demo_gemv[0] if m is None else m
    n = spec.demo_gemv[1] if n is None else n
    t0 = time.perf_counter()
    try:
        with open_transport(port, shape=shape, baud=spec.baud,
                            bridge=spec.vboard_bridge()) as t:
            board = Board(t, timeout=timeout)
            if port != "sim":
                shape = board.shape()
            report = run_demo(board, shape, m=m, n=n, batch=batch, seed=seed, llm=llm,
                              echo=click.echo)
    except (BoardError, MappingError) as exc:
        _fail(str(exc))
    report["wall_s"] = round(time.perf_counter() - t0, 2)
    click.echo(f"bridge: {report['status']}")
    if json_path:
        save_json(json_path, report)
    if not report["ok"]:
        sys.exit(1)
