"""CLI commands that drive the RTL: ``verilog``, ``stress`` (and ``gemv``, ``run``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..hdl.mesh import parse_mesh

__all__ = ["verilog_command", "stress_command", "gemv_command", "run_command", "mesh_option",
           "fail"]


def fail(message: str, code: int = 2):
    """Print a one-line error (no stack trace) and exit."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _compare_plain_option(f):
    return click.option("--compare-plain", is_flag=True,
                        help="Also replay the workload in a plain Verilator C++ harness (no "
                             "Python) and report the speed ratio.")(f)


def _plain_ratio(shape, r, replay) -> dict:
    """Replay ``replay`` in the plain C++ harness; add and print the speed comparison."""
    from ..cosim.build import run_plain
    plain = run_plain(shape, replay)
    mine = r["recorded"]
    if plain["cycles"] != mine["cycles"]:
        click.echo(f"note: plain harness simulated {plain['cycles']} cycles, the cocotb run "
                   f"{mine['cycles']}", err=True)
    ratio = mine["cycles_per_s"] / plain["cycles_per_s"] if plain["cycles_per_s"] else 0.0
    r["plain_harness"] = plain
    r["speed_ratio_vs_plain"] = ratio
    click.echo(f"  {'vs plain C++':<17} cocotb {mine['cycles_per_s']:.3g} cycles/s (Python "
               f"included), plain Verilator harness {plain['cycles_per_s']:.3g} cycles/s: "
               f"ratio {ratio:.2f}")
    return r


def _print_report(r: dict, keys, waves: str | None, json_path: str | None) -> None:
    """Print the report's ``keys`` aligned, name the waveform, and write the JSON."""
    width = max(len(k) for k in keys) + 2
    for k in keys:
        v = r[k]
        click.echo(f"  {k:<{width}} {v:.4g}" if isinstance(v, float) else f"  {k:<{width}} {v}")
    if waves:
        click.echo(f"  {'waves':<{width}} {waves} (VCD; open with surfer or gtkwave)")
    if json_path:
        Path(json_path).write_text(json.dumps(r, indent=2))


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
    _print_report(r, ["mesh", "seed", "sent", "delivered", "lost", "duplicated", "out_of_order",
                      "status", "cycles", "link_utilization", "sim_cycles_per_s"],
                  waves, json_path)
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
@_compare_plain_option
def gemv_command(mesh, sram_kb, m, n, batch, seed, out_int32, fill, stall, json_path, waves,
                 compare_plain):
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
    import tempfile
    replay = Path(tempfile.mkdtemp(prefix="sparktile-replay-")) / "gemv.bin"
    try:
        r = run_job(shape, "sparktile.cosim.gemv:gemv",
                    {"m": m, "n": n, "batch": batch, "seed": seed, "out_int32": out_int32,
                     "fill": fill, "stall": stall,
                     "record": str(replay) if compare_plain else None}, seed=seed, waves=waves)
        if compare_plain:
            r = _plain_ratio(shape, r, replay)
    except (ToolchainError, MappingError, BenchError, BuildError) as exc:
        fail(str(exc))
    _print_report(r, ["mesh", "m", "n", "batch", "seed", "out", "match", "cycles",
                      "ideal_cycles", "model_cycles", "macs", "mac_utilization",
                      "sim_cycles_per_s"], waves, json_path)
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


def _parse_window(ctx, param, value):
    if value is None:
        return None
    try:
        a, b = (int(v) for v in value.split(":"))
    except ValueError:
        raise click.BadParameter(f"must be FIRST:LAST token numbers (e.g. 3:4), not {value!r}")\
            from None
    if not 1 <= a <= b:
        raise click.BadParameter(f"needs 1 <= FIRST <= LAST, not {value!r}")
    return [a, b]


@click.command("run")
@click.option("--prompt", default="def fibonacci(n):", show_default=True)
@click.option("--max-tokens", type=click.IntRange(1, 4096), default=32, show_default=True)
@mesh_option("8x8")
@_sram_option
@click.option("--model", default=None, help="Model path or name (default: the shipped model).")
@click.option("--weights", type=click.Choice(["auto", "stationary", "streaming"]),
              default="auto", show_default=True,
              help="Keep every matrix in SRAM (stationary) or reload before each matmul.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--temperature", type=click.FloatRange(0.0), default=0.8, show_default=True)
@click.option("--top-k", type=click.IntRange(1), default=40, show_default=True)
@click.option("--top-p", type=click.FloatRange(0.0, 1.0), default=None)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the report.")
@click.option("--waves", type=click.Path(dir_okay=False), help="Dump a VCD waveform here.")
@click.option("--waves-tokens", callback=_parse_window, default=None,
              help="Token window FIRST:LAST to dump (generation stops after LAST).")
@_compare_plain_option
def run_command(prompt, max_tokens, mesh, sram_kb, model, weights, seed, temperature, top_k,
                top_p, json_path, waves, waves_tokens, compare_plain):
    """The main job: the code LLM generates with every matmul on the RTL mesh."""
    from ..cosim.build import BuildError
    from ..cosim.llm import plan_weights
    from ..cosim.mapping import MappingError
    from ..cosim.session import BenchError, run_job
    from ..golden_model import load_model
    from ..toolchain import ToolchainError
    shape = _shape(mesh, sram_kb)
    if waves_tokens and not waves:
        raise click.BadParameter("--waves-tokens needs --waves FILE", param_hint="--waves-tokens")
    if waves_tokens and waves_tokens[1] < max_tokens:
        click.echo(f"note: stopping after token {waves_tokens[1]}, the end of the wave window "
                   f"(Verilator cannot pause a dump)", err=True)
        max_tokens = waves_tokens[1]
    try:
        lm = load_model(model)
        mode, words = plan_weights(shape, lm.matmul_ops(), weights)
    except (MappingError, ValueError, OSError) as exc:
        fail(str(exc))
    ops = lm.matmul_ops()
    click.echo(f"model {lm.config.name}: {len(ops)} matmuls per token; {shape} mesh, "
               f"{shape.sram_kb} KiB SRAM/PE; weights {mode} ({words} of {shape.sram_words} "
               f"words/PE)", err=True)
    tty = sys.stderr.isatty()
    shown = []

    def progress(p):
        if not shown:  # after any build messages, right before the first generated token
            click.echo(prompt, nl=False)
            shown.append(True)
        click.echo(p["text"], nl=False)
        sys.stdout.flush()
        line = (f"token {p['i']}/{p['n']} ({p['phase']}): {p['cycles']} RTL cycles, MAC util "
                f"{p['mac_utilization']:.1%}, {p['sim_cycles_per_s']:.3g} sim cycles/s")
        if tty:
            click.echo(f"\r\x1b[2K{line}", nl=False, err=True)
        else:
            click.echo(f"\n[{line}]", err=True)

    args = {"prompt": prompt, "max_tokens": max_tokens, "model": model, "seed": seed,
            "temperature": temperature, "top_k": top_k, "top_p": top_p, "weights": weights,
            "wave_tokens": waves_tokens if waves else None}
    if waves and not waves_tokens:
        args["wave_tokens"] = [0, max_tokens]
    import tempfile
    replay = Path(tempfile.mkdtemp(prefix="sparktile-replay-")) / "run.bin"
    if compare_plain:
        args["record"] = str(replay)
    try:
        r = run_job(shape, "sparktile.cosim.llm:llm_run", args, seed=seed, waves=waves,
                    waves_window=bool(waves), progress=progress)
    except BenchError as exc:
        click.echo("", err=True)
        info = exc.info
        if info:
            click.echo(f"MISMATCH in {info['matmul']} (layer {info['layer']}, {info['phase']}, "
                       f"token {info['token']}): element [{info['vector']}][{info['index']}] is "
                       f"{info['got']} on the RTL, {info['expected']} in the golden model; "
                       f"cycle {info['cycle']}, seed {info['seed']}", err=True)
            click.echo(f"Reproduce: sparktile run --prompt {json.dumps(prompt)} --max-tokens "
                       f"{max_tokens} --mesh {mesh} --sram-kb {sram_kb} --weights {weights} "
                       f"--seed {seed} --waves fail.vcd --waves-tokens "
                       f"{max(info['token'], 1)}:{max(info['token'], 1)}", err=True)
            sys.exit(1)
        fail(str(exc).splitlines()[0])
    except (ToolchainError, BuildError) as exc:
        fail(str(exc))
    click.echo("\n", err=True)
    util = r["mac_utilization"]
    rows = [
        ("match_golden", r["match_golden"]),
        ("weights_mode", r["weights_mode"]),
        ("prefill", f"{r['prefill_tokens']} tokens, {r['prefill_cycles']} cycles"),
        ("decode cycles/token", f"{r['decode_cycles_per_token']:.0f}"
         if r["decode_cycles_per_token"] else "-"),
        ("  MAC bound / model",
         f"{r['decode_mac_bound_cycles']} / {r['decode_model_cycles']:.0f}"),
        ("MAC utilization", f"{util['overall']:.1%} overall; " + ", ".join(
            f"{k} {v:.0%}" for k, v in util.items() if k != "overall")),
        ("matmuls on the RTL", r["matmuls"]),
        ("simulated cycles", r["sim_cycles"]),
        ("wall: simulation", f"{r['sim_wall_s']:.2f} s ({r['sim_cycles_per_s']:.3g} cycles/s)"),
        ("wall: python+model", f"{r['python_wall_s']:.2f} s"),
        ("wall: golden run", f"{r['golden_wall_s']:.2f} s"),
        ("wall: load+quantize", f"{r['load_and_quantize_wall_s']:.2f} s"),
        ("weight loads", f"{r['config_cycles']} cycles, " + (
            f"once before generating ({r['preload_wall_s']:.2f} s)"
            if r["weights_mode"] == "stationary" else
            "before every matmul (inside the simulation time above)")),
    ]
    for k, v in rows:
        click.echo(f"  {k:<20} {v}")
    if waves:
        click.echo(f"  {'waves':<20} {waves} (VCD; open with surfer or gtkwave)")
    if compare_plain:
        try:
            r = _plain_ratio(shape, r, replay)
        except BuildError as exc:
            fail(str(exc))
    if json_path:
        Path(json_path).write_text(json.dumps(r, indent=2))
    if not r["match_golden"]:
        click.echo(f"MISMATCH: the token sequence differs from the golden backend's "
                   f"(RTL {r['tokens']}, golden {r['golden_tokens']}); seed {seed}", err=True)
        sys.exit(1)
