"""CLI commands that drive the RTL: ``verilog``, ``stress`` (and ``gemv``, ``run``).

Errors follow the one error path of :mod:`sparktile.errors`: a bad argument is a click usage
error at parse time (ranges that also refuse NaN, seeds numpy and the BFMs accept), a bad
output path a :class:`~sparktile.errors.UserError` *before* anything is built or simulated,
and a failure on the simulator side that is the user's to fix (a model that does not fit, a
missing tool, a failed build, a crashed cached simulator) a ``UserError`` with one line.
"""

from __future__ import annotations

import contextlib
import json
import math
import pickle
import sys
import tempfile
import time
from pathlib import Path

import click

from ..errors import UserError, one_line
from ..hdl.mesh import parse_mesh
from ..report import check_output, save_json, save_text
from . import waves as wv

__all__ = ["verilog_command", "stress_command", "gemv_command", "run_command", "mesh_option",
           "fail", "SEED", "FiniteFloatRange"]

#: Seeds: numpy's generators refuse negative integers (the ``--seed -1`` traceback), the BFMs
#: take a uint64 (ctypes would silently wrap a larger one), and 32 bits is what numpy's legacy
#: ``RandomState`` and most tools take: one range, checked at parse time, for all of them.
SEED = click.IntRange(0, 2**32 - 1)


class FiniteFloatRange(click.FloatRange):
    """:class:`click.FloatRange` that also refuses NaN and infinities.

    NaN compares false with both bounds, so click's own range check lets ``--stall nan``
    through to numpy inside the simulator; an infinite temperature is in ``x >= 0`` but means
    nothing.
    """

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number in the range {self._describe_range()}",
                      param, ctx)
        return rv


def fail(message: str, code: int = 2):
    """Stop the command with a one-line error: a :class:`UserError` for exit status 2 (shown
    by :func:`sparktile.cli.main`), else print and exit with ``code``."""
    if code == 2:
        raise UserError(message)
    click.echo(f"error: {one_line(message)}", err=True)
    sys.exit(code)


def _sim_error(exc: Exception) -> UserError:
    """A failure from the build or the simulator as a one-line user error; the details that
    follow the first line (the simulator log's tail, a bench's traceback) are printed first,
    so a bug inside a bench still shows its traceback."""
    first, _, rest = str(exc).partition("\n")
    if rest.strip():
        click.echo(rest.rstrip(), err=True)
    return UserError(first)


@contextlib.contextmanager
def _replay_file(name: str, wanted: bool):
    """A path for the plain-harness replay, in a temporary folder removed afterwards; None
    when no replay is wanted (then no folder is made)."""
    if not wanted:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="sparktile-replay-") as d:
        yield Path(d) / name


def _outputs(json_path, waves):
    """Check the output paths before anything runs; returns them absolute (or None)."""
    return (check_output(json_path, "--json") if json_path else None,
            check_output(waves, "--waves") if waves else None)


def _compare_plain_option(f):
    return click.option("--compare-plain", is_flag=True,
                        help="Also replay the workload in a plain Verilator C++ harness (no "
                             "Python) and report the speed ratio.")(f)


def _plain_ratio(shape, r, replay):
    """Replay ``replay`` in the plain C++ harness; add and print the speed comparison."""
    from .sim.build import run_plain
    plain = run_plain(shape, replay)
    mine = r.recorded
    if plain["cycles"] != mine["cycles"]:
        click.echo(f"note: plain harness simulated {plain['cycles']} cycles, the cocotb run "
                   f"{mine['cycles']}", err=True)
    ratio = mine["cycles_per_s"] / plain["cycles_per_s"] if plain["cycles_per_s"] else 0.0
    r.plain_harness = plain
    r.speed_ratio_vs_plain = ratio
    click.echo(f"  {'vs plain C++':<17} cocotb {mine['cycles_per_s']:.3g} cycles/s (Python "
               f"included), plain Verilator harness {plain['cycles_per_s']:.3g} cycles/s: "
               f"ratio {ratio:.2f}")
    # By CPU time: what the wall-time ratio is on an idle machine, and the figure to compare
    # on one shared with other jobs (their load inflates the two runs' wall times unequally).
    if plain.get("cycles_per_cpu_s") and mine.get("cycles_per_cpu_s"):
        cpu_ratio = mine["cycles_per_cpu_s"] / plain["cycles_per_cpu_s"]
        click.echo(f"  {'':<17} by CPU time: cocotb {mine['cycles_per_cpu_s']:.3g}, plain "
                   f"{plain['cycles_per_cpu_s']:.3g} cycles per CPU-second: ratio "
                   f"{cpu_ratio:.2f}")
    return r


def _print_report(r, keys, json_path: Path | None, waves_line: str | None) -> None:
    """Print the result's fields ``keys`` aligned and the waveform's line; write the JSON."""
    width = max(len(k) for k in keys) + 2
    for k in keys:
        v = getattr(r, k)
        click.echo(f"  {k:<{width}} {v:.4g}" if isinstance(v, float) else f"  {k:<{width}} {v}")
    if waves_line:
        click.echo(f"  {'waves':<{width}} {waves_line}")
    if json_path:
        save_json(json_path, r.to_json())


def _waves_line(waves: Path | None, r, shape, limit_mb: int, cycles=None):
    """The waveform's report line, after checking the file is there (else a UserError, raised
    only after the report is saved: see the callers)."""
    if not waves:
        return None, None
    try:
        return wv.check_written(waves, r.job.waves_stopped, shape, limit_mb, cycles), None
    except UserError as exc:
        return None, exc


def _parse_mesh(ctx, param, value):
    try:
        return parse_mesh(value, **(ctx.meta.get("mesh_kwargs") or {}))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def mesh_option(default: str = "4x4"):
    return click.option("--mesh", default=default, show_default=True, callback=_parse_mesh,
                        help="Mesh shape ROWSxCOLS, each 1..32.")


def _sram_option(help_: str = "SRAM per PE in KiB (1..256)."):
    return click.option("--sram-kb", type=int, default=16, show_default=True, help=help_)


def _shape(mesh, sram_kb, pe="gemv"):
    from ..hdl.mesh import MeshShape
    try:
        return MeshShape(mesh.rows, mesh.cols, sram_kb=sram_kb, pe=pe)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("verilog")
@mesh_option()
@_sram_option()
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="Verilog file to write.")
def verilog_command(mesh, sram_kb, output):
    """Write the Verilog of a mesh configuration (top module sparktile_mesh)."""
    from .sim.build import mesh_verilog
    shape = _shape(mesh, sram_kb)
    path = check_output(output, "-o/--output")
    text = mesh_verilog(shape)
    save_text(path, text, "Verilog")
    click.echo(f"wrote {output}: {shape} mesh, {shape.sram_kb} KiB SRAM per PE, "
               f"{text.count(chr(10))} lines")


@click.command("stress")
@mesh_option("3x5")
@_sram_option()
@click.option("--wavelets", type=click.IntRange(1, 10_000_000), default=20000, show_default=True)
@click.option("--seed", type=SEED, default=1, show_default=True)
@click.option("--max-stall", type=FiniteFloatRange(0.0, 0.95), default=0.5, show_default=True,
              help="Upper bound of each edge port's random stall probability.")
@click.option("--routes", "routes_path", type=click.Path(dir_okay=False), default=None,
              help="Route file (JSON, see docs/architecture.md) instead of random XY routes; "
                   "checked for deadlock before the simulator starts.")
@click.option("--cover-goal", type=FiniteFloatRange(0.0, 100.0), default=0.0,
              help="Coverage-driven: rerun with the next seeds until this percentage of the "
                   "functional coverage bins is hit (or --max-runs).")
@click.option("--max-runs", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="With --cover-goal: the most runs.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the report.")
@click.option("--waves", type=click.Path(dir_okay=False), help="Dump a VCD waveform here.")
@wv.limit_option
def stress_command(mesh, sram_kb, wavelets, seed, max_stall, routes_path, cover_goal, max_runs,
                   json_path, waves, waves_limit):
    """Random multicast traffic with random stalls on every edge, checked by a scoreboard.

    Exits non-zero if any wavelet was lost, duplicated or reordered.
    """
    from ..compiler.routes import check_deadlock_free, load_routes, trace_flows
    from .benches.stress import stress
    from .sim import session
    from .sim.build import BuildError
    from .sim.session import BenchError
    shape = _shape(mesh, sram_kb)
    routes = None
    if routes_path:
        # Everything about the routes is checked before a build or a simulation starts.
        program, routes = load_routes(routes_path, shape)
        check_deadlock_free(program)
        flows = trace_flows(program)
        click.echo(f"routes {routes_path}: {len(routes)} entries, {len(flows)} flows, no "
                   f"channel-dependency cycle", err=True)
    json_path, waves = _outputs(json_path, waves)
    if waves:
        wv.announce(waves, shape, wv.stress_job_cycles(shape, wavelets, max_stall), waves_limit)
    from .benches import coverage_bins
    merged, runs = {}, 0
    for k in range(max_runs if cover_goal else 1):
        run_seed = seed + k
        try:
            r = session.run_job(shape, stress,
                                {"wavelets": wavelets, "seed": run_seed,
                                 "max_stall": max_stall, "routes": routes},
                                seed=run_seed, waves=waves and str(waves),
                                waves_limit=waves_limit * 10**6)
        except (BenchError, BuildError) as exc:
            raise _sim_error(exc) from None
        runs += 1
        merged = dict(coverage_bins.merge_bins(merged, r.coverage))
        bad = not r.clean
        if bad:
            break
        hit = coverage_bins.percent_hit(merged)
        if cover_goal:
            click.echo(f"run {runs} (seed {run_seed}): {hit:.1f} % of the bins", err=True)
            if hit >= cover_goal:
                break
    if cover_goal:
        r.coverage = merged
    line, missing = _waves_line(waves, r, shape, waves_limit, r.job.end_cycle)
    _print_report(r, ["mesh", "seed", "sent", "delivered", "lost", "duplicated", "out_of_order",
                      "status", "cycles", "link_utilization", "sim_cycles_per_s"],
                  json_path, line)
    click.echo(coverage_bins.table(merged))
    never = coverage_bins.missing(merged)
    if never:
        click.echo(f"never hit ({len(never)}): {', '.join(never)}")
    if missing:
        raise missing
    if bad:
        click.echo(f"FAIL: {r.first_error or r.status} (seed {run_seed}; rerun with "
                   f"`sparktile stress --mesh {mesh} --wavelets {wavelets} --seed {run_seed} "
                   f"--waves fail.vcd`)", err=True)
        sys.exit(1)
    click.echo("PASS: every wavelet delivered exactly once, in order per color")


@click.command("gemv")
@mesh_option("4x4")
@_sram_option()
@click.option("--m", "m", type=click.IntRange(1, 1 << 20), default=128, show_default=True,
              help="Rows of W (outputs).")
@click.option("--n", "n", type=click.IntRange(1, 1 << 20), default=256, show_default=True,
              help="Columns of W (inputs).")
@click.option("--batch", type=click.IntRange(1, 4096), default=1, show_default=True,
              help="Vectors streamed back to back through the stationary weights (GEMM).")
@click.option("--seed", type=SEED, default=1, show_default=True)
@click.option("--int32", "out_int32", is_flag=True, help="Return int32 sums, not int8.")
@click.option("--fill", type=click.Choice(["random", "min", "max", "saturate"]),
              default="random", show_default=True)
@click.option("--stall", type=FiniteFloatRange(0.0, 0.95), default=0.0, show_default=True,
              help="Upper bound of the random stall probability on every edge stream.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the report.")
@click.option("--waves", type=click.Path(dir_okay=False), help="Dump a VCD waveform here.")
@wv.limit_option
@_compare_plain_option
@click.option("--pe", type=click.Choice(["gemv", "core"]), default="gemv", show_default=True,
              help="The tiles' PE: the fixed-function GEMV engine, or the programmable core "
                   "running a GEMV program.")
@click.option("--layout", type=click.Choice(["chain", "strips"]), default="chain",
              show_default=True,
              help="With --pe gemv: the whole mesh as one region reducing along every column "
                   "(chain), or W's rows over the mesh's column strips (strips).")
def gemv_command(mesh, sram_kb, m, n, batch, seed, out_int32, fill, stall, json_path, waves,
                 waves_limit, compare_plain, pe, layout):
    """Run an int8 GEMV/GEMM on the RTL mesh and check it bit-exactly against numpy."""
    from ..compiler.core_mapping import check_core_gemv
    from ..compiler.mapping import Region
    from ..compiler.strips import layout_words
    from .benches.gemv import gemv
    from .sim import session
    from .sim.build import BuildError
    from .sim.session import BenchError
    shape = _shape(mesh, sram_kb, pe)
    if pe == "core" and layout != "chain":
        raise click.BadParameter("--layout strips is a mapping of --pe gemv (the core has its "
                                 "own GEMV mapping)", param_hint="--layout")
    if pe == "core":
        words = check_core_gemv(shape, m, n, Region.whole(shape), out_int32)["words"]
    else:
        words = layout_words(shape, m, n, layout)
    if words > shape.sram_words:
        raise UserError(f"W ({m}x{n}) needs {words} SRAM words per PE on the {shape} "
                        f"mesh, but a PE has {shape.sram_words} ({shape.sram_kb} KiB): use a "
                        f"larger --mesh or --sram-kb")
    json_path, waves = _outputs(json_path, waves)
    if waves:
        wv.announce(waves, shape, wv.gemv_job_cycles(shape, m, n, batch, out_int32, layout),
                    waves_limit)
    with _replay_file("gemv.bin", compare_plain) as replay:
        try:
            r = session.run_job(shape, gemv,
                                {"m": m, "n": n, "batch": batch, "seed": seed,
                                 "out_int32": out_int32, "fill": fill, "stall": stall,
                                 "layout": layout,
                                 "record": str(replay) if replay else None},
                                seed=seed, waves=waves and str(waves),
                                waves_limit=waves_limit * 10**6)
            if replay:
                r = _plain_ratio(shape, r, replay)
        except (BenchError, BuildError) as exc:
            raise _sim_error(exc) from None
    line, missing = _waves_line(waves, r, shape, waves_limit, r.job.end_cycle)
    _print_report(r, ["mesh", "m", "n", "batch", "seed", "out", "match", "cycles",
                      "ideal_cycles", "model_cycles", "macs", "mac_utilization",
                      "sim_cycles_per_s"] +
                  (["pe", "nw_pe", "mac_busy_cycles", "task_cycles_bound", "config_cycles"]
                   if pe == "core" else ["layout"] if layout != "chain" else []),
                  json_path, line)
    if missing:
        raise missing
    if not r.match:
        d = r.first_diff
        where = (f"first difference at y[{d['vector']}][{d['index']}]: got {d['got']}, "
                 f"expected {d['expected']} (mesh row {d['mesh_row']}, cycle {d['cycle']})"
                 if d else f"the run did not complete: {r.status}")
        click.echo(f"MISMATCH: {where}; seed {seed}. Reproduce with `sparktile gemv --mesh "
                   f"{mesh} --m {m} --n {n} --batch {batch} --seed {seed}"
                   f"{' --pe core' if pe == 'core' else ''}"
                   f"{' --layout strips' if layout == 'strips' else ''} --waves fail.vcd`",
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
@_sram_option(help_="SRAM per PE in KiB (1..256); with --on-fabric all the default is "
                    "64 (the shipped model's weights, programs and 512 positions).")
@click.option("--model", default=None, help="Model path or name (default: the shipped model).")
@click.option("--weights", type=click.Choice(["auto", "stationary", "streaming"]),
              default="auto", show_default=True,
              help="Keep every matrix in SRAM (stationary) or reload before each matmul.")
@click.option("--layout", type=click.Choice(["strips", "chain"]), default="strips",
              show_default=True,
              help="With --on-fabric matmuls: each matrix's rows over the mesh's column strips "
                   "(no reduction chain), or the first slice's reduction chain across every "
                   "column (for comparison).")
@click.option("--seed", type=SEED, default=1, show_default=True)
@click.option("--temperature", type=FiniteFloatRange(0.0, 1e6), default=0.8, show_default=True)
@click.option("--top-k", type=click.IntRange(1), default=40, show_default=True)
@click.option("--top-p", type=FiniteFloatRange(0.0, 1.0), default=None)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the report.")
@click.option("--waves", type=click.Path(dir_okay=False), help="Dump a VCD waveform here.")
@click.option("--waves-tokens", callback=_parse_window, default=None,
              help="Token window FIRST:LAST to dump (generation stops after LAST).")
@wv.limit_option
@_compare_plain_option
@click.option("--on-fabric", "on_fabric", type=click.Choice(["matmuls", "all"]),
              default="all", show_default=True,
              help="What runs on the RTL: the whole decoder on a mesh of programmable cores "
                   "(token in; the greedy token out, or the logits when sampling), or every "
                   "matmul on the GEMV mesh (the host does the rest).")
@click.option("--context", type=click.IntRange(1), default=None,
              help="With --on-fabric all: positions the KV cache must hold (default: the "
                   "largest that fits).")
@click.option("--check", type=click.Choice(["tokens", "every-op"]), default="tokens",
              show_default=True,
              help="With --on-fabric all: compare each next token with the golden int path, "
                   "or also every intermediate vector the hub holds (it sends each out).")
@click.pass_context
def run_command(ctx, prompt, max_tokens, mesh, sram_kb, model, weights, layout, seed,
                temperature, top_k, top_p, json_path, waves, waves_tokens, waves_limit,
                compare_plain, on_fabric, context, check):
    """The main job: the code LLM generates with the whole decoder on the RTL mesh (or, with
    --on-fabric matmuls, every matmul on the GEMV mesh)."""
    if on_fabric == "all":
        if layout != "strips":
            raise click.BadParameter("--layout is for --on-fabric matmuls (the whole decoder "
                                     "has its own mapping)", param_hint="--layout")
        return _run_on_fabric(ctx, prompt, max_tokens, mesh, sram_kb, model, seed, temperature,
                              top_k, top_p, json_path, waves, context, check, compare_plain)
    if context is not None:
        raise click.BadParameter("--context is for --on-fabric all (the matmul mode keeps the "
                                 "KV cache on the host)", param_hint="--context")
    if check != "tokens":
        raise click.BadParameter("--check every-op is for --on-fabric all (the matmul mode "
                                 "checks every matmul already)", param_hint="--check")
    from ..compiler.strips import layout_words
    from ..golden_model import load_model
    from .benches.llm import llm_run, mismatch_message, plan_weights
    from .sim import session
    from .sim.build import BuildError
    from .sim.session import BenchError
    shape = _shape(mesh, sram_kb)
    if waves_tokens and not waves:
        raise click.BadParameter("--waves-tokens needs --waves FILE", param_hint="--waves-tokens")
    json_path, waves = _outputs(json_path, waves)
    if waves_tokens and waves_tokens[1] < max_tokens:
        click.echo(f"note: stopping after token {waves_tokens[1]}, the end of the wave window "
                   f"(Verilator cannot pause a dump)", err=True)
        max_tokens = waves_tokens[1]
    # The loader and the planner raise UserErrors (CheckpointError, MappingError) for what is
    # the user's to fix; an OS error reading the model (permissions, a vanished file) is too.
    # Any other exception is a bug and keeps its traceback.
    try:
        lm = load_model(model)
        # Shapes only: the simulator process quantizes (seconds of calibration), once.
        ops = lm.matmul_shapes()
        mode, words = plan_weights(shape, ops, weights, layout)
    except OSError as exc:
        raise UserError(f"cannot read the model {model or '(shipped)'}: {exc}") from None
    if mode == "streaming":
        # Streaming weights hold one matrix at a time: the figure that must fit is the largest
        # matrix, not the stationary total plan_weights returns.
        largest = max(layout_words(shape, *op.shape, layout) for op in ops)
        usage = f"largest matrix {largest} of {shape.sram_words} words/PE"
    else:
        usage = f"{words} of {shape.sram_words} words/PE"
    click.echo(f"model {lm.config.name}: {len(ops)} matmuls per token; {shape} mesh, "
               f"{shape.sram_kb} KiB SRAM/PE; weights {mode} ({usage}), layout {layout}",
               err=True)
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
            "layout": layout, "wave_tokens": waves_tokens if waves else None}
    if waves and not waves_tokens:
        args["wave_tokens"] = [0, max_tokens]
    if waves:
        first, last = args["wave_tokens"]
        n_prompt = len(lm.tokenizer.prompt_ids(prompt)) if lm.tokenizer else len(prompt)
        cycles = wv.run_job_cycles(shape, ops, mode, n_prompt, first, last, layout)
        wv.announce(waves, shape, cycles, waves_limit)
    with _replay_file("run.bin", compare_plain) as replay:
        if replay:
            args["record"] = str(replay)
        try:
            r = session.run_job(shape, llm_run, args, seed=seed,
                                waves=waves and str(waves), waves_window=bool(waves),
                                progress=progress, waves_limit=waves_limit * 10**6)
        except BenchError as exc:
            click.echo("", err=True)
            info = exc.info
            if info:
                click.echo(f"MISMATCH in {mismatch_message(info)}", err=True)
                click.echo(f"Reproduce: sparktile run --on-fabric matmuls "
                           f"--prompt {json.dumps(prompt)} "
                           f"--max-tokens {max_tokens} --mesh {mesh} --sram-kb {sram_kb} "
                           f"--weights {weights} --layout {layout} --seed {seed}"
                           f"{_sampling_flags(temperature, top_k, top_p, model)} "
                           f"--waves fail.vcd --waves-tokens "
                           f"{max(info['token'], 1)}:{max(info['token'], 1)}", err=True)
                sys.exit(1)
            raise _sim_error(exc) from None
        except BuildError as exc:
            raise _sim_error(exc) from None
        if replay:
            try:
                r = _plain_ratio(shape, r, replay)
            except BuildError as exc:
                raise _sim_error(exc) from None
    click.echo("\n", err=True)
    util = r.mac_utilization
    rows = [
        ("match_golden", r.match_golden),
        ("weights_mode", r.weights_mode),
        ("prefill", f"{r.prefill_tokens} tokens, {r.prefill_cycles} cycles"),
        ("decode cycles/token", f"{r.decode_cycles_per_token:.0f}"
         if r.decode_cycles_per_token else "-"),
        ("  MAC bound / model",
         f"{r.decode_mac_bound_cycles} / {r.decode_model_cycles:.0f}"),
        ("MAC utilization", f"{util['overall']:.1%} overall; " + ", ".join(
            f"{k} {v:.0%}" for k, v in util.items() if k != "overall")),
        ("matmuls on the RTL", r.matmuls),
        ("simulated cycles", r.sim_cycles),
        ("wall: simulation", f"{r.sim_wall_s:.2f} s ({r.sim_cycles_per_s:.3g} cycles/s)"),
        ("wall: python+model", f"{r.python_wall_s:.2f} s"),
        ("wall: load+quantize", f"{r.load_and_quantize_wall_s:.2f} s"),
        ("weight loads", f"{r.config_cycles} cycles, " + (
            f"once before generating ({r.preload_wall_s:.2f} s)"
            if r.weights_mode == "stationary" else
            "before every matmul (inside the simulation time above)")),
    ]
    for k, v in rows:
        click.echo(f"  {k:<20} {v}")
    # The completion once more, whole (the streamed copy above is interleaved with the status
    # lines when stderr is not a terminal).
    click.echo("completion:")
    click.echo(f"{r.prompt}{r.text}")
    line, missing = _waves_line(waves, r, shape, waves_limit)
    if line:
        click.echo(f"  {'waves':<20} {line}")
    if json_path:
        save_json(json_path, r.to_json())
    if missing:
        raise missing
    if not r.match_golden:
        click.echo(f"MISMATCH: no matmul ran on the RTL, nothing was checked; seed {seed}",
                   err=True)
        sys.exit(1)


#: SRAM per PE of the on-fabric decoder unless --sram-kb says otherwise: the shipped model's
#: weights, tables and programs need 40 KiB on the hub and the 8x8 workers (the core needs a
#: power of two; the WSE has 48 KB).
FABRIC_SRAM_KB = 64


def _sampling_flags(temperature, top_k, top_p, model) -> str:
    """The options of a reproducing command that set the sampling and the model (a leading
    space before each): the run draws the same tokens only with the same ones."""
    flags = f" --temperature {temperature:g}"
    if temperature and top_k:
        flags += f" --top-k {top_k}"
    if temperature and top_p is not None:
        flags += f" --top-p {top_p:g}"
    if model:
        flags += f" --model {json.dumps(model)}"
    return flags


def _run_on_fabric(ctx, prompt, max_tokens, mesh, sram_kb, model, seed, temperature, top_k,
                   top_p, json_path, waves, context, check, compare_plain=False):
    """``run --on-fabric all``: compile the decoder, check it fits, run it on the core mesh.
    Greedy (``--temperature 0``): the fabric returns the argmax token; sampling: the fabric
    returns the logits and the host draws the token (the report's ``on_host``)."""
    from click.core import ParameterSource

    from ..compiler.decoder_mapping import compile_decoder
    from .benches.decode import decode_model, decode_run
    from .sim import session
    from .sim.build import BuildError
    from .sim.session import BenchError
    if ctx.get_parameter_source("sram_kb") is ParameterSource.DEFAULT:
        sram_kb = FABRIC_SRAM_KB
    for name in ("weights", "waves_tokens"):
        if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT:
            raise click.BadParameter(f"--{name.replace('_', '-')} is for --on-fabric matmuls",
                                     param_hint=f"--{name.replace('_', '-')}")
    shape = _shape(mesh, sram_kb, pe="core")
    json_path, waves = _outputs(json_path, waves)
    try:
        lm = decode_model(model)
        ids = lm.tokenizer.prompt_ids(prompt) if lm.tokenizer else []
        if not ids:
            raise UserError(f"the prompt {prompt!r} has no tokens")
        mapping = compile_decoder(lm, shape, context, taps=check == "every-op",
                                  logits=bool(temperature))
    except OSError as exc:
        raise UserError(f"cannot read the model {model or '(shipped)'}: {exc}") from None
    need = len(ids) + max_tokens - 1
    if need > mapping.max_context:
        raise UserError(f"{len(ids)} prompt tokens and {max_tokens} new ones need {need} "
                        f"positions; the {shape} mesh's KV cache holds {mapping.max_context} "
                        f"({mapping.slots} slots on each of {mapping.kv_workers} workers at "
                        f"{shape.sram_kb} KiB per PE)")
    how = (f"sampled on the host from the fabric's logits (temperature {temperature:g}, "
           f"top-k {top_k}, top-p {top_p})" if temperature else "greedy on the fabric")
    click.echo(f"model {lm.config.name} on the fabric: {shape} mesh of cores, {shape.sram_kb} "
               f"KiB SRAM/PE ({mapping.words['max']} words on the fullest PE), KV cache "
               f"{mapping.max_context} positions; {len(ids)} prompt tokens, {max_tokens} new, "
               f"{how}", err=True)
    args = {"ids": ids, "max_tokens": max_tokens, "model": model, "context": context,
            "seed": seed, "check": check, "temperature": temperature, "top_k": top_k,
            "top_p": top_p}
    tty = sys.stderr.isatty()

    def progress(p):
        if p["phase"] == "configure":
            rate = p["sim_cycles_per_s"]
            line = (f"configuring the mesh: {p['taken']:,} of {p['wavelets']:,} wavelets in "
                    f"({p['taken'] / max(p['wavelets'], 1):.0%}), {p['cycles']:,} cycles, "
                    f"{rate:.3g} sim cycles/s")
        else:
            line = (f"position {p['i']}/{p['n']} ({p['phase']}): token {p['token']} "
                    f"(golden {p['golden']}), {p['cycles']:,} RTL cycles, "
                    f"{p['sim_cycles_per_s']:.3g} sim cycles/s")
        click.echo(f"\r\x1b[2K{line}" if tty else line, nl=not tty, err=True)

    with _replay_file("decode.bin", compare_plain) as replay, \
            tempfile.TemporaryDirectory(prefix="sparktile-mapping-") as tmp:
        # the job runs the mapping compiled here instead of compiling it again
        args["mapping_file"] = str(Path(tmp) / "mapping.pkl")
        with open(args["mapping_file"], "wb") as f:
            pickle.dump(mapping, f, protocol=pickle.HIGHEST_PROTOCOL)
        if replay:
            args["record"] = str(replay)
        try:
            r = session.run_job(shape, decode_run, args, seed=seed, waves=waves and str(waves),
                                progress=progress)
        except (BenchError, BuildError) as exc:
            raise _sim_error(exc) from None
        if tty:
            click.echo("", err=True)
        if replay:
            try:
                r = _plain_ratio(shape, r, replay)
            except BuildError as exc:
                raise _sim_error(exc) from None
    new_ids = r.tokens[len(ids) - 1:len(r.tokens) - (r.stopped == "eos")]
    text = lm.tokenizer.decode(new_ids) if lm.tokenizer else ""
    rows = [
        ("match_golden", r.match_golden),
        ("on_fabric", ", ".join(r.on_fabric)),
        ("on_host", ", ".join(r.on_host) or "-"),
        ("next token", how + (", stopped at end of sequence" if r.stopped == "eos" else "")),
        ("cycles/token", f"{r.decode_cycles_per_token:.0f} (decode)"
         if r.decode_cycles_per_token else f"{r.token_cycles[-1] if r.token_cycles else '-'}"),
        ("max_context", (f"{r.max_context} positions ({r.slots} slots x "
                         f"{mapping.kv_workers} workers, {r.kv_words_per_slot} words a slot)")),
        ("SRAM words/PE", f"{r.sram_words['max']} fullest, hub {r.sram_words['hub']}"),
        ("configuration", f"{r.config_cycles} cycles"),
        ("simulation", (f"{r.sim_cycles} cycles in {r.sim_wall_s:.2f} s "
                        f"({r.sim_cycles_per_s:.3g} cycles/s)")),
    ]
    for k, v in rows:
        click.echo(f"  {k:<20} {v}")
    click.echo("completion:")
    click.echo(f"{prompt}{text}")
    from .sim.build_cache import notice
    pes = mapping.shape.rows * mapping.shape.cols
    notice(f"the cycles by op: one token on the mesh of ISSs ({pes} PEs; the RTL counts "
           f"only the token's total)...")
    t_iss = time.monotonic()
    by_op = _fabric_by_op(mapping, lm, ids[0])
    notice(f"the cycles by op took {time.monotonic() - t_iss:.0f} s on the mesh of ISSs")
    click.echo(f"  {'by op (mesh ISS)':<20} " + ", ".join(
        f"{k} {v:,}" for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])))
    if json_path:
        report = r.to_json()
        report.update(kv_words_per_pe=r.kv_words_per_slot * r.slots, text=text,
                      prompt=prompt, on_fabric_mode="all", decode_cycles_by_op=by_op,
                      decode_cycles_by_op_source="mesh of ISSs (its cycle model within 1 % of "
                      "the RTL counter on the tested meshes); decode_cycles_per_token is the "
                      "RTL's count")
        save_json(json_path, report)
    if not r.match_golden:
        d = r.first_diff or {}
        if d.get("op", "next_token") == "next_token":
            what = "the next token"
        else:
            what = f"layer {d['layer']} {d['op']} element {d['element']}"
        click.echo(f"MISMATCH at position {d.get('position')}: {what} is {d.get('got')} on the "
                   f"fabric, {d.get('expected')} in the golden int path; cycle "
                   f"{d.get('cycle')}, seed {seed} ({r.status})", err=True)
        click.echo(f"Reproduce: sparktile run --on-fabric all --prompt {json.dumps(prompt)} "
                   f"--max-tokens {max_tokens} --mesh {mesh} --sram-kb {sram_kb} --seed {seed} "
                   f"{_sampling_flags(temperature, top_k, top_p, model)}"
                   + (f" --context {context}" if context else "")
                   + f" --check {check} --waves fail.vcd", err=True)
        sys.exit(1)


def _fabric_by_op(mapping, model, token):
    """A token's cycles by op on the mesh of ISSs (the RTL counts only the token's total)."""
    from ..compiler.mesh_iss import decode_on_iss
    return decode_on_iss(mapping, model, [token], 1)["by_op"][0]
