"""``sparktile regress``: a seeded regression as independent jobs on a Dask cluster.

Each job is one bench run (stress, GEMV, or a short LLM generation) on one mesh with one seed,
submitted to :mod:`dask.distributed`: a :class:`~distributed.LocalCluster` of worker
processes by default, or an existing cluster with ``--scheduler tcp://HOST:PORT``, through
the same code path. Workers share the Verilator build cache, which is locked per entry (two
workers that want one configuration build it once). Results come back as JSON; the summary
gives jobs per minute, the failures with the command that reproduces each with waves, and the
stress runs' merged functional coverage (:mod:`.benches.coverage_bins`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import click

from ..errors import UserError

__all__ = ["regress_command", "plan_jobs", "run_one", "Job"]

KINDS = ("stress", "gemv", "llm")


@dataclass(frozen=True)
class Job:
    """One bench run of the regression."""

    kind: str
    mesh: str
    seed: int

    def args(self) -> dict:
        if self.kind == "stress":
            return {"wavelets": 1500, "seed": self.seed, "max_stall": 0.7}
        if self.kind == "gemv":
            rows, cols = (int(v) for v in self.mesh.split("x"))
            # both layouts (chain, strips), each with and without stalls, by the seed
            return {"m": 8 * rows + self.seed % 13, "n": 12 * cols + self.seed % 17,
                    "batch": 1 + self.seed % 3, "seed": self.seed,
                    "stall": 0.3 if self.seed % 2 else 0.0,
                    "layout": "strips" if self.seed % 4 >= 2 else "chain"}
        return {"prompt": "def f(x):", "max_tokens": 2, "seed": self.seed}


def plan_jobs(seeds: int, meshes: list[str], kinds: list[str]) -> list[Job]:
    """``seeds`` seeds of every kind on every mesh (seeds 1..N)."""
    return [Job(k, m, s) for m in meshes for k in kinds for s in range(1, seeds + 1)]


def run_one(job: Job) -> dict:
    """Run ``job`` in this process (a Dask worker); never raises: a failure is a result."""
    from ..hdl.mesh import parse_mesh
    from .benches.gemv import gemv
    from .benches.llm import llm_run
    from .benches.stress import stress
    from .sim.session import BenchError, reproduce_command, run_job

    bench = {"stress": stress, "gemv": gemv, "llm": llm_run}[job.kind]
    shape = parse_mesh(job.mesh)
    t0 = time.perf_counter()
    out = {"kind": job.kind, "mesh": job.mesh, "seed": job.seed,
           "reproduce": reproduce_command(shape, bench, job.args(), job.seed)}
    try:
        r = run_job(shape, bench, job.args(), seed=job.seed)
    except BenchError as exc:
        return {**out, "ok": False, "error": str(exc).splitlines()[0],
                "wall_s": time.perf_counter() - t0}
    if job.kind == "stress":
        ok = r.clean
        out["coverage"] = r.coverage
    elif job.kind == "gemv":
        ok = bool(r.match)
    else:
        ok = bool(r.match_golden)
    return {**out, "ok": ok, "error": None if ok else "result differs from the golden model",
            "cycles": getattr(r, "cycles", None) or getattr(r, "sim_cycles", None),
            "wall_s": time.perf_counter() - t0}


def _client(scheduler: str | None, workers: int):
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise UserError("sparktile regress needs Dask: pip install -e '.[regress]'") from None
    if scheduler:
        try:
            return Client(scheduler, timeout="5s"), None
        except OSError as exc:
            raise UserError(f"cannot reach the Dask scheduler {scheduler}: {exc}") from None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    return Client(cluster), cluster


@click.command("regress")
@click.option("--seeds", type=click.IntRange(1, 100_000), default=4, show_default=True,
              help="Seeds per kind and mesh.")
@click.option("--meshes", default="2x3,1x1", show_default=True, help="Comma-separated.")
@click.option("--kinds", default="stress,gemv", show_default=True,
              help=f"Comma-separated among {', '.join(KINDS)}.")
@click.option("--scheduler", default=None,
              help="An existing Dask scheduler (tcp://HOST:PORT); default: a local cluster.")
@click.option("--workers", type=click.IntRange(1, 1024), default=2, show_default=True,
              help="Worker processes of the local cluster.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
def regress_command(seeds, meshes, kinds, scheduler, workers, json_path):
    """Run a seeded regression as independent jobs on Dask; report failures and coverage."""
    from ..hdl.mesh import parse_mesh
    from ..report import check_output, save_json
    from .benches import coverage_bins

    mesh_list = [m.strip() for m in meshes.split(",") if m.strip()]
    if not mesh_list:
        raise UserError(f"--meshes must list at least one ROWSxCOLS mesh, not {meshes!r}")
    for m in mesh_list:
        try:
            parse_mesh(m)                   # a bad shape is a one-line error, before Dask
        except ValueError as exc:
            raise UserError(f"--meshes: {exc}") from None
    kind_list = [k.strip() for k in kinds.split(",") if k.strip()]
    bad = sorted(set(kind_list) - set(KINDS))
    if bad or not kind_list:
        raise UserError(f"--kinds must be among {', '.join(KINDS)}, not {kinds!r}")
    json_path = check_output(json_path, "--json") if json_path else None
    jobs = plan_jobs(seeds, mesh_list, kind_list)
    client, cluster = _client(scheduler, workers)
    t0 = time.perf_counter()
    results = []
    try:
        from distributed import as_completed
        futures = client.map(run_one, jobs, pure=False)
        for fut in as_completed(futures):
            r = fut.result()
            results.append(r)
            click.echo(f"[{len(results)}/{len(jobs)}] {r['kind']} {r['mesh']} seed {r['seed']}: "
                       f"{'ok' if r['ok'] else 'FAIL'} ({r['wall_s']:.1f} s)", err=True)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    wall = time.perf_counter() - t0
    failures = [r for r in results if not r["ok"]]
    cov = coverage_bins.merge_bins(*(r.get("coverage", {}) for r in results))
    hit = coverage_bins.hit_count(cov)
    summary = {"jobs": len(results), "failures": len(failures), "wall_s": wall,
               "jobs_per_minute": 60.0 * len(results) / wall if wall else 0.0,
               "coverage_bins_hit": hit, "coverage_bins": len(coverage_bins.ALL_BINS),
               "coverage": dict(cov),
               "results": sorted(results, key=lambda r: (r["kind"], r["mesh"], r["seed"]))}
    click.echo(f"{len(results)} jobs in {wall:.0f} s ({summary['jobs_per_minute']:.1f} jobs/min), "
               f"{len(failures)} failed; stress coverage {hit} of "
               f"{len(coverage_bins.ALL_BINS)} bins")
    for r in failures:
        click.echo(f"FAIL {r['kind']} {r['mesh']} seed {r['seed']}: {r['error']}\n"
                   f"  reproduce: {r['reproduce']}", err=True)
    if json_path:
        save_json(json_path, summary)
    if failures:
        raise SystemExit(1)
