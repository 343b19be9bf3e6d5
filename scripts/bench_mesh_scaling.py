"""How the cost of a mesh grows with its size: cold build time, peak build memory and simulated
speed per build style, measured (``python -m sparktile.scripts.bench_mesh_scaling``).

For every mesh size and build style (see :func:`sparktile.cosim.sim.build.build_style`) it

1. builds the cocotb simulator and the plain C++ harness in an empty cache of their own, in a
   child process, and records the wall time and the largest resident set of any process of
   the build (the C++ compiler, as a rule) from ``wait4``;
2. runs a GEMV (``m = 64 * rows``, ``n = 248 * cols``: every PE holds the same 16x62 block, so
   the work per PE is the same on every mesh) and, with ``--run``, ``sparktile run``'s job on
   the shipped model (4 tokens), recording the host's transactions;
3. replays each recording in the plain C++ harness (no Python, no VPI) and prints the cocotb
   run's simulated cycles/s, PE-cycles/s and its ratio against the plain harness.

Nothing here is compared with a constant: the output is a table of measurements (and, with
``--json``, the same figures as a list of records).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import click

__all__ = ["run_child", "measure_build", "measure_speed", "main"]

_BUILD_CHILD = """
import json, sys, time
from sparktile.cosim.sim.build import build_mesh, build_plain
from sparktile.hdl.mesh import MeshShape
shape = MeshShape(int(sys.argv[1]), int(sys.argv[2]))
t0 = time.monotonic()
build_mesh(shape)
t1 = time.monotonic()
build_plain(shape)
print(json.dumps({"sim_s": t1 - t0, "plain_s": time.monotonic() - t1}))
"""


def run_child(code: str, args: list[str], env: dict, folder: Path, what: str):
    """Run ``python -c code args`` with ``env``, its output in files in ``folder``; returns
    the JSON of its last line of output and its ``rusage`` (every process it waited for: the
    compilers of a build). Raises :class:`click.ClickException` naming ``what`` and the end
    of its stderr when it fails."""
    folder.mkdir(parents=True, exist_ok=True)
    # Output goes to files, not pipes: wait4 (for the children's peak memory) must reap the
    # child itself, and a child blocked on a full pipe would never exit.
    with open(folder / "build.out", "w+") as out, open(folder / "build.err", "w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=out,
                                stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise click.ClickException(f"{what} failed:\n{err.read()[-2000:]}")
        return json.loads(out.read().strip().splitlines()[-1]), usage


def measure_build(rows: int, cols: int, style: str, cache: Path) -> dict:
    """Cold builds of the cocotb simulator and then the plain harness in ``cache`` (emptied by
    the caller); returns each build's wall seconds and the peak build memory in MiB."""
    env = {**os.environ, "SPARKTILE_BUILD": style, "SPARKTILE_CACHE": str(cache)}
    times, usage = run_child(_BUILD_CHILD, [str(rows), str(cols)], env, cache,
                             f"the {rows}x{cols} {style} build")
    # ru_maxrss of wait4 is the largest resident set of the child and of any descendant it
    # waited for (Linux reports KiB).
    return {"build_s": round(times["sim_s"], 1), "plain_build_s": round(times["plain_s"], 1),
            # CPU seconds of both builds, every process (the compilers run in parallel): the
            # build's cost on a machine where other jobs stretch the wall time.
            "build_cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "build_peak_mib": round(usage.ru_maxrss / 1024)}


def measure_speed(rows: int, cols: int, style: str, cache: Path, workload: str,
                  tmp: Path) -> dict:
    """Run ``workload`` (``gemv`` or ``run``) under cocotb, replay it in the plain harness."""
    os.environ["SPARKTILE_BUILD"] = style
    os.environ["SPARKTILE_CACHE"] = str(cache)
    from sparktile.cosim.benches.gemv import gemv
    from sparktile.cosim.benches.llm import llm_run
    from sparktile.cosim.sim.build import run_plain
    from sparktile.cosim.sim.session import run_job
    from sparktile.hdl.mesh import MeshShape
    shape = MeshShape(rows, cols)
    replay = tmp / f"{workload}_{rows}x{cols}_{style}.bin"
    if workload == "gemv":
        r = run_job(shape, gemv,
                    {"m": 64 * rows, "n": 248 * cols, "batch": 1, "seed": 3,
                     "record": str(replay)})
        ok = r.match
    else:
        r = run_job(shape, llm_run,
                    {"prompt": "def f(x):", "max_tokens": 4, "seed": 1,
                     "record": str(replay)})
        ok = r.match_golden
    if not ok:
        raise click.ClickException(f"{workload} on {rows}x{cols} ({style}) did not match the "
                                   f"golden model")
    mine = r.recorded
    plain = run_plain(shape, replay)
    if plain["cycles"] != mine["cycles"]:
        raise click.ClickException(f"the plain harness simulated {plain['cycles']} cycles, the "
                                   f"cocotb run {mine['cycles']}: not the same workload")
    return {"cycles": mine["cycles"], "cycles_per_s": round(mine["cycles_per_s"]),
            "pe_cycles_per_s": round(mine["cycles_per_s"] * rows * cols),
            "plain_cycles_per_s": round(plain["cycles_per_s"]),
            "ratio_vs_plain": round(mine["cycles_per_s"] / plain["cycles_per_s"], 3),
            # The same by CPU time, which other jobs on the machine do not inflate.
            "cycles_per_cpu_s": round(mine["cycles_per_cpu_s"]),
            "pe_cycles_per_cpu_s": round(mine["cycles_per_cpu_s"] * rows * cols),
            "plain_cycles_per_cpu_s": round(plain["cycles_per_cpu_s"]),
            "cpu_ratio_vs_plain": round(mine["cycles_per_cpu_s"] / plain["cycles_per_cpu_s"],
                                        3)}


def _sizes(ctx, param, value):
    from sparktile.hdl.mesh import parse_mesh
    try:        # each a shape the mesh takes (1..32 a side), named when it is not
        return [(m.rows, m.cols) for m in map(parse_mesh, value.split(","))]
    except ValueError as exc:
        raise click.BadParameter(f"must be sizes like 2x2,4x4: {exc}") from None


@click.command()
@click.option("--sizes", default="2x2,4x4,8x8", show_default=True, callback=_sizes)
@click.option("--styles", default="shared,tiled", show_default=True,
              help="Build styles to compare (tiled, shared, flat).")
@click.option("--run", "with_run", is_flag=True, help="Also time `sparktile run`'s job.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
def main(sizes, styles, with_run, json_path):
    """Measure build and simulation cost per mesh size and build style."""
    if json_path:
        parent = Path(json_path).resolve().parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise click.BadParameter(f"{parent} is not a writable folder", param_hint="--json")
    records = []
    with tempfile.TemporaryDirectory(prefix="sparktile-scaling-") as tmp:
        tmp = Path(tmp)
        for rows, cols in sizes:
            for style in styles.split(","):
                cache = tmp / f"cache_{rows}x{cols}_{style}"
                rec = {"mesh": f"{rows}x{cols}", "pes": rows * cols, "style": style,
                       **measure_build(rows, cols, style, cache)}
                for workload in ("gemv", "run") if with_run else ("gemv",):
                    rec[workload] = measure_speed(rows, cols, style, cache, workload, tmp)
                records.append(rec)
                w = rec["gemv"]
                click.echo(f"{rec['mesh']:>6} {style:<7} build {rec['build_s']:>6.1f} s "
                           f"(plain {rec['plain_build_s']:.0f} s, CPU {rec['build_cpu_s']:.0f} "
                           f"s) {rec['build_peak_mib']:>5} MiB | gemv "
                           f"{w['cycles_per_s']:>9.3g} cycles/s "
                           f"{w['pe_cycles_per_s']:>9.3g} PE-cycles/s "
                           f"x{w['ratio_vs_plain']:.2f} of plain; per CPU-s "
                           f"{w['cycles_per_cpu_s']:.3g} (plain {w['plain_cycles_per_cpu_s']:.3g}) "
                           f"x{w['cpu_ratio_vs_plain']:.2f}"
                           + (f" | run {rec['run']['cycles_per_s']:.3g} cycles/s "
                              f"x{rec['run']['ratio_vs_plain']:.2f} of plain; per CPU-s "
                              f"{rec['run']['cycles_per_cpu_s']:.3g} (plain "
                              f"{rec['run']['plain_cycles_per_cpu_s']:.3g}) "
                              f"x{rec['run']['cpu_ratio_vs_plain']:.2f}"
                              if with_run else ""), err=False)
                if json_path:
                    Path(json_path).write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
