"""``sparktile fpga``: bitstreams for real boards, and the demo through a board's host link.

``sparktile fpga build --board ulx3s-85f [--mesh 2x2] [--json r.json]`` builds the bitstream
with the YoWASP toolchain and reports resources and post-route Fmax (:mod:`.fpga_build`).
``sparktile fpga demo --port /dev/ttyUSB0`` (a board) or ``--port sim`` (the virtual board: the
same FPGA top in Verilator, UART included) runs a GEMV and one token of the shipped model's
int8 matmuls through the bridge and checks both against the golden model.
"""

from __future__ import annotations

import sys
import time

import click

from ..cosim.cli import SEED, FiniteFloatRange
from ..cosim.report import check_output, save_json

__all__ = ["fpga_group", "run_demo"]


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


def run_demo(board, shape, *, m: int, n: int, batch: int, seed: int, llm: bool,
             echo=print) -> dict:
    """The demo on an open :class:`~sparktile.cosim.board.Board`: GEMV, then (``llm``) one
    token of the shipped model with every int8 matmul on the board. Returns the report."""

    from ..compiler.mapping import compile_gemv
    from ..cosim.gemv import random_problem
    from ..golden_model.arith import first_difference, gemv_golden

    out: dict = {"port": board.t.name, "mesh": str(shape)}
    info = board.ping()
    out["board"] = info
    w, x, mult, shift = random_problem(m, n, batch, seed)
    mapping = compile_gemv(shape, w, mult, shift)
    t0 = time.perf_counter()
    y = board.gemv(mapping, x)
    wall = time.perf_counter() - t0
    diff = first_difference(y, gemv_golden(w, x, mult, shift))
    gemv = {"m": m, "n": n, "batch": batch, "seed": seed, "match": diff is None,
            "wall_s": round(wall, 3)}
    if diff is not None:
        gemv["first_diff"] = diff
    counters = board.read_counters(shape)
    gemv["mac_busy_per_pe"] = counters["mac_busy"].tolist()
    gemv["vectors_per_pe"] = counters["vectors"].tolist()
    out["gemv"] = gemv
    echo(f"GEMV {m}x{n} batch {batch} seed {seed}: "
         f"{'MATCH' if gemv['match'] else 'MISMATCH'} in {wall:.2f} s")
    if llm:
        out["llm"] = _llm_token(board, shape, echo)
    out["status"] = board.status()
    out["ok"] = bool(gemv["match"] and out.get("llm", {}).get("match", True))
    return out


def _llm_token(board, shape, echo) -> dict:
    """One token of the shipped model (int8 path) with the matmuls on the board."""
    import numpy as np

    from ..compiler.mapping import MappingError
    from ..cosim.board import BoardBackend
    from ..golden_model import NumpyBackend, load_model

    model = load_model()
    prompt = model.tokenizer.prompt_ids("def") if model.tokenizer else [1]
    model.set_backend(NumpyBackend())
    ref = model.logits(prompt, mode="int8")
    backend = BoardBackend(board, shape)
    model.set_backend(backend)
    t0 = time.perf_counter()
    try:
        got = model.logits(prompt, mode="int8")
    except MappingError as exc:
        # The whole model's matrices must fit the mesh one at a time; on a small board they
        # do not, and the LLM part cannot run there (the GEMV still proves the board).
        echo(f"LLM skipped: a matmul of the shipped model does not fit the {shape} mesh "
             f"({exc})")
        return {"skipped": str(exc)}
    finally:
        model.set_backend(NumpyBackend())
    wall = time.perf_counter() - t0
    match = bool(np.array_equal(np.asarray(got), np.asarray(ref)))
    nxt = int(np.argmax(np.asarray(got)[-1]))
    echo(f"LLM: {len(prompt)} prompt tokens, {backend.ops} matmuls on the board "
         f"({backend.loads} weight loads): logits {'MATCH' if match else 'MISMATCH'}; "
         f"next token {nxt}; {wall:.1f} s")
    return {"prompt_tokens": len(prompt), "matmuls": backend.ops, "loads": backend.loads,
            "match": match, "next_token": nxt, "wall_s": round(wall, 2)}


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
    from ..cosim.board import Board, BoardError, open_transport
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
