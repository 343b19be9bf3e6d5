"""What Verilator's ``--threads`` buys: one recorded GEMV replayed by the plain C++ harness
built with 1, 2, ... threads (``python -m sparktile.scripts.bench_threads``).

For every mesh given it records a GEMV (``m = 64 * rows``, ``n = 248 * cols``, the same block
per PE as :mod:`.bench_mesh_scaling`) in the cocotb simulator, then replays the recording in
the plain harness (no Python, no VPI: the Verilated model's own speed) once per thread count,
and prints simulated cycles/s, PE-cycles/s and the speed-up against one thread in the same
run. The replays must end on the same cycle: the model is deterministic whatever its thread
count, and a difference is reported as a failure.

Threads beyond the machine's cores measure contention, not the model; the table says how many
cores there were. Nothing is compared with a constant.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import click

__all__ = ["measure", "main"]


def measure(rows: int, cols: int, threads: list[int], workdir: Path) -> list[dict]:
    """Record the GEMV on a ``rows x cols`` mesh and replay it with each thread count."""
    from sparktile.cosim.benches.gemv import gemv
    from sparktile.cosim.sim.build import build_plain, run_plain
    from sparktile.cosim.sim.session import run_job
    from sparktile.hdl.mesh import MeshShape

    shape = MeshShape(rows, cols)
    replay = workdir / f"gemv_{rows}x{cols}.replay"
    r = run_job(shape, gemv, {"m": 64 * rows, "n": 248 * cols, "batch": 1, "seed": 1,
                              "record": str(replay)})
    if not r.match:
        raise click.ClickException(f"{shape}: the recorded GEMV does not match: {r.first_diff}")
    out = []
    for t in threads:
        t0 = time.monotonic()
        build_plain(shape, t)
        build_s = time.monotonic() - t0
        p = run_plain(shape, replay, t)
        out.append({"mesh": str(shape), "threads": t, "build_s": build_s, **p})
    ends = {rec["cycles"] for rec in out}
    if len(ends) != 1:
        raise click.ClickException(f"{shape}: replays end on different cycles per thread "
                                   f"count: {[(rec['threads'], rec['cycles']) for rec in out]}")
    base = out[0]["cycles_per_s"]
    for rec in out:
        rec["pe_cycles_per_s"] = rec["cycles_per_s"] * shape.pes
        rec["speedup_vs_1"] = rec["cycles_per_s"] / base
    return out


@click.command()
@click.option("--sizes", default="4x4,8x8", show_default=True)
@click.option("--threads", "thread_list", default="1,2", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
def main(sizes, thread_list, json_path):
    from sparktile.hdl.mesh import parse_mesh
    try:
        shapes = [(s.rows, s.cols) for s in map(parse_mesh, sizes.split(","))]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--sizes") from None
    try:
        threads = [int(t) for t in thread_list.split(",")]
    except ValueError:
        raise click.BadParameter(f"thread counts are integers, not {thread_list!r}",
                                 param_hint="--threads") from None
    if any(t < 1 for t in threads) or threads[0] != 1:
        raise click.BadParameter(f"thread counts start with 1 (the baseline) and are >= 1, "
                                 f"not {thread_list!r}", param_hint="--threads")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).touch()
    click.echo(f"{os.cpu_count()} cores")
    click.echo(f"{'mesh':<7} {'threads':>7} {'build':>7} {'cycles':>9} {'cycles/s':>10} "
               f"{'PE-cycles/s':>12} {'vs 1':>6}")
    records = []
    with tempfile.TemporaryDirectory(prefix="sparktile-threads-") as tmp:
        for rows, cols in shapes:
            for rec in measure(rows, cols, threads, Path(tmp)):
                records.append(rec)
                click.echo(f"{rec['mesh']:<7} {rec['threads']:>7} {rec['build_s']:>6.0f}s "
                           f"{rec['cycles']:>9} {rec['cycles_per_s']:>10.3g} "
                           f"{rec['pe_cycles_per_s']:>12.3g} {rec['speedup_vs_1']:>5.2f}x")
    if json_path:
        Path(json_path).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
