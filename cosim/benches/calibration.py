"""Calibration bench: several GEMVs in one simulator run (one cocotb start per mesh shape).

Runs inside the Verilated harness through :func:`sparktile.cosim.sim.session.run_job`; each
case is the project's own GEMV bench (:func:`sparktile.cosim.benches.gemv.gemv`), so every
cycle count used for calibration comes from a bit-exact checked run. The fit itself is
:mod:`sparktile.scripts.perf.calibration`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..sim.registry import BenchResult, JobInfo, bench
from .gemv import GemvResult, gemv

__all__ = ["gemv_sweep", "SweepResult"]


@dataclass
class SweepResult(BenchResult):
    """``runs``: each case's whole :class:`~.gemv.GemvResult`, in order."""

    runs: list[GemvResult]

    @classmethod
    def from_json(cls, data: dict, job: JobInfo) -> SweepResult:
        # Each run's own (empty) job part is dropped: the sweep's job is the one that ran.
        return cls(runs=[GemvResult(**{k: v for k, v in r.items() if k != "job"})
                         for r in data["runs"]], job=job)


@bench(SweepResult)
async def gemv_sweep(fabric, cases: list[dict]) -> SweepResult:
    """Run ``cases`` (each ``{"m", "n", "batch", "seed"}``) one after the other."""
    return SweepResult(runs=[await gemv(fabric, **case) for case in cases])
