"""CLI commands that drive the RTL: ``verilog``, ``stress`` (and ``gemv``, ``run``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..hdl.mesh import parse_mesh

__all__ = ["verilog_command", "stress_command", "gemv_command", "mesh_option", "fail"]


def fail(message: str, code: int = 2):
    """Print a one-line error (no stack trace) and exit."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _parse_mesh(ctx, param, value):
    try:
        return parse_mesh(value, **(ctx.meta.get("mesh_kwargs") or {}))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def mesh_option(default: str = "4x4"):
    return click.option("--mesh", default=default, show_default=True, callback=_parse_mesh,
                        help="Mesh shape ROWSxCOLS, each 1..32.")


def _sram_option(f):
    return click.option("--sram-kb", type=int, default=16, show_default=True,
                        help="SRAM per PE in KiB (1..256).")(f)


def _shape(mesh, sram_kb):
    from ..hdl.mesh import MeshShape
    try:
        return MeshShape(mesh.rows, mesh.cols, sram_kb=sram_kb)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("verilog")
@mesh_option()
@_sram_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="Verilog file to write.")
def verilog_command(mesh, sram_kb, output):
    """Write the Verilog of a mesh configuration (top module sparktile_mesh)."""
    from ..cosim.build import mesh_verilog
    shape = _shape(mesh, sram_kb)
    text = mesh_verilog(shape)
    Path(output).write_text(text)
    click.echo(f"wrote {output}: {shape} mesh, {shape.sram_kb} KiB SRAM per PE, "
               f"{text.count(chr(10))} lines")


@click.command("stress")
@mesh_option("3x5")
@_sram_option
@click.option("--wavelets", type=click.IntRange(1, 10_000_000), default=20000, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--max-stall", type=click.FloatRange(0.0, 0.95), default=0.5, show_default=True,
              help="Upper bound of each edge port's random stall probability.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the report.")
@click.option("--waves", type=click.Path(dir_okay=False), help="Dump a VCD waveform here.")
def stress_command(mesh, sram_kb, wavelets, seed, max_stall, json_path, waves):
    """Random multicast traffic with random stalls on every edge, checked by a scoreboard.

    Exits non-zero if any wavelet was lost, duplicated or reordered.
    """
    from ..cosim.build import BuildError
    from ..cosim.session import BenchError, run_job
    from ..toolchain import ToolchainError
    shape = _shape(mesh, sram_kb)
    try:
        r = run_job(shape, "sparktile.cosim.stress:stress",
                    {"wavelets": wavelets, "seed": seed, "max_stall": max_stall},
                    seed=seed, waves=waves)
    except (ToolchainError, BenchError, BuildError) as exc:
        fail(str(exc))
    keys = ["mesh", "seed", "sent", "delivered", "lost", "duplicated", "out_of_order", "status",
            "cycles", "link_utilization", "sim_cycles_per_s"]
    for k in keys:
        v = r[k]
        click.echo(f"  {k:<18} {v:.4g}" if isinstance(v, float) else f"  {k:<18} {v}")
    if waves:
        click.echo(f"  {'waves':<18} {waves} (VCD; open with surfer or gtkwave)")
    if json_path:
        Path(json_path).write_text(json.dumps(r, indent=2))
    bad = r["lost"] or r["duplicated"] or r["out_of_order"] or r["status"] != "complete"
    if bad:
        click.echo(f"FAIL: {r['first_error'] or r['status']} (seed {seed}; rerun with "
                   f"`sparktile stress --mesh {mesh} --wavelets {wavelets} --seed {seed} "
                   f"--waves fail.vcd`)", err=True)
        sys.exit(1)
    click.echo("PASS: every wavelet delivered exactly once, in order per color")


@click.command("gemv")
@mesh_option("4x4")
@_sram_option
@click.option("--m", "m", type=click.IntRange(1, 1 << 20), default=128, show_default=True,
              help="Rows of W (outputs).")
@click.option("--n", "n", type=click.IntRange(1, 1 << 20), default=256, show_default=True,
              help="Columns of W (inputs).")
@click.option("--batch", type=click.IntRange(1, 4096), default=1, show_default=True,
              help="Vectors streamed back to back through the stationary weights (GEMM).")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--int32", "out_int32", is_flag=True, help="Return int32 sums, not int8.")
@click.option("--fill", type=click.Choice(["random", "min", "max", "saturate"]),
              default="random", show_default=True)
@click.option("--stall", type=click.FloatRange(0.0, 0.95), default=0.0, show_default=True,
              help="Upper bound of the random stall probability on every edge stream.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the report.")
@click.option("--waves", type=click.Path(dir_okay=False), help="Dump a VCD waveform here.")
def gemv_command(mesh, sram_kb, m, n, batch, seed, out_int32, fill, stall, json_path, waves):
    """Run an int8 GEMV/GEMM on the RTL mesh and check it bit-exactly against numpy."""
    from ..cosim.build import BuildError
    from ..cosim.mapping import MappingError, gemv_words
    from ..cosim.session import BenchError, run_job
    from ..toolchain import ToolchainError
    shape = _shape(mesh, sram_kb)
    from ..cosim.mapping import Region
    geo = gemv_words(m, n, Region.whole(shape), shape.acc_depth)
    if geo["words"] > shape.sram_words:
        fail(f"W ({m}x{n}) needs {geo['words']} SRAM words per PE on the {shape} mesh, but a "
             f"PE has {shape.sram_words} ({shape.sram_kb} KiB): use a larger --mesh or "
             f"--sram-kb")
    try:
        r = run_job(shape, "sparktile.cosim.gemv:gemv",
                    {"m": m, "n": n, "batch": batch, "seed": seed, "out_int32": out_int32,
                     "fill": fill, "stall": stall}, seed=seed, waves=waves)
    except (ToolchainError, MappingError, BenchError, BuildError) as exc:
        fail(str(exc))
    for k in ("mesh", "m", "n", "batch", "seed", "out", "match", "cycles", "ideal_cycles",
              "model_cycles", "macs", "mac_utilization", "sim_cycles_per_s"):
        v = r[k]
        click.echo(f"  {k:<17} {v:.4g}" if isinstance(v, float) else f"  {k:<17} {v}")
    if waves:
        click.echo(f"  {'waves':<17} {waves} (VCD; open with surfer or gtkwave)")
    if json_path:
        Path(json_path).write_text(json.dumps(r, indent=2))
    if not r["match"]:
        d = r["first_diff"]
        where = (f"first difference at y[{d['vector']}][{d['index']}]: got {d['got']}, "
                 f"expected {d['expected']} (mesh row {d['mesh_row']}, cycle {d['cycle']})"
                 if d else f"the run did not complete: {r['status']}")
        click.echo(f"MISMATCH: {where}; seed {seed}. Reproduce with `sparktile gemv --mesh "
                   f"{mesh} --m {m} --n {n} --batch {batch} --seed {seed} --waves fail.vcd`",
                   err=True)
        sys.exit(1)
    click.echo("PASS: bit-exact with numpy (sparktile.golden_model.arith)")
