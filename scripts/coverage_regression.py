"""``make coverage``: a seeded regression on coverage builds, merged into one code-coverage
report (``build/coverage/report.md`` and ``report.json``) and one functional-coverage report
(``build/coverage/functional.md`` and ``functional.json``: the stress bench's bins and the
RTL's coverage points, with the bins never hit).

Runs, on each mesh given (default 2x3 and 1x1): random multicast stress with stalls (three
seeds), GEMVs (int8 and int32, one and two accumulator passes, stalls), malformed
configuration and task input, stray data on unrouted colors, latency and throughput. Each
run writes its own counts; they are merged point by point
(:mod:`sparktile.cosim.sim.coverage`) and the per-module table is printed; the functional
bins come from the same counts (:func:`~sparktile.cosim.sim.coverage.rtl_bins`) and from the
stress runs' results.

    python -m sparktile.scripts.coverage_regression [--meshes 2x3,1x1] [--out build/coverage]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click


def _jobs():
    from sparktile.cosim.benches.gemv import bad_task, gemv
    from sparktile.cosim.benches.stress import (
        bad_config,
        latency,
        stray_wavelets,
        stress,
        throughput,
    )
    jobs = [(stress, {"wavelets": 2000, "seed": s, "max_stall": 0.7}, s) for s in (1, 2, 3)]
    jobs += [(gemv, {"m": 40, "n": 70, "batch": 2, "seed": 4}, 4),
             (gemv, {"m": 300, "n": 24, "batch": 1, "seed": 5, "out_int32": True}, 5),
             (gemv, {"m": 30, "n": 50, "batch": 3, "seed": 6, "stall": 0.5}, 6),
             (gemv, {"m": 16, "n": 16, "batch": 1, "seed": 7, "fill": "saturate"}, 7),
             # Few rows per PE and slow edges: the MAC task starves between wavelets; many
             # rows and a slow east edge: the reduce task's results wait for the router.
             (gemv, {"m": 4, "n": 96, "batch": 2, "seed": 9, "stall": 0.95}, 9),
             (gemv, {"m": 96, "n": 8, "batch": 2, "seed": 10, "stall": 0.95}, 10),
             (gemv, {"m": 96, "n": 8, "batch": 1, "seed": 11, "stall": 0.95,
                     "out_int32": True}, 11),
             (bad_task, {"seed": 12}, 12), (bad_config, {"seed": 8}, 8),
             (stray_wavelets, {"seed": 13, "per_port": 6}, 13), (latency, {}, 1),
             (throughput, {"wavelets": 300}, 1)]
    return jobs


@click.command()
@click.option("--meshes", default="2x3,1x1", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="build/coverage",
              show_default=True)
def main(meshes, out):
    from sparktile.cosim.sim import coverage
    from sparktile.cosim.sim.session import BenchError, run_job
    from sparktile.hdl.mesh import parse_mesh

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shapes = [parse_mesh(m) for m in meshes.split(",")]
    files, failed, stress_bins = [], [], []
    t0 = time.perf_counter()
    for shape in shapes:
        for k, (bench, args, seed) in enumerate(_jobs()):
            path = out / f"{shape}_{k:02d}_{bench.__name__}.dat"
            try:
                result = run_job(shape, bench, args, seed=seed, coverage=str(path))
            except BenchError as exc:       # reported at the end; the others still merge
                failed.append(f"{shape} {bench.__name__} {args}: {str(exc).splitlines()[0]}")
                continue
            files.append(path)
            stress_bins.append(getattr(result, "coverage", {}))
            click.echo(f"  {shape} {bench.__name__} {args}: {path.name}")
    points = coverage.merge(*(coverage.read(p) for p in files))
    report = coverage.write_report(out / "report.md", points, [p.name for p in files])
    from sparktile.cosim.benches import coverage_bins
    functional = coverage_bins.merge_bins(coverage.rtl_bins(points), *stress_bins)
    freport = coverage_bins.write_functional_report(out / "functional.md", functional,
                                                    [p.name for p in files])
    summary = json.loads(freport.with_suffix(".json").read_text())
    click.echo(f"{len(files)} runs in {time.perf_counter() - t0:.0f} s; merged reports "
               f"{report}, {freport} (+ .json)")
    click.echo(f"  functional: {summary['hit']} of {summary['total']} bins hit; never hit: "
               f"{', '.join(summary['never_hit']) or 'none'}")
    for line in coverage.summary_lines(points):
        click.echo(f"  {line}")
    for f in failed:
        click.echo(f"FAILED: {f}", err=True)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
