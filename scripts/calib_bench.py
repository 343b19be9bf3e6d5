"""Calibration bench: several GEMVs in one simulator run (one cocotb start per mesh shape).

Runs inside the Verilated harness through :func:`sparktile.cosim.session.run_job`; each case is
the project's own GEMV bench (:func:`sparktile.cosim.gemv.gemv`), so every cycle count used for
calibration comes from a bit-exact checked run.
"""

from __future__ import annotations

__all__ = ["gemv_sweep"]

#: Fields of each GEMV result kept for the fit.
KEEP = ("mesh", "m", "n", "batch", "seed", "match", "status", "cycles", "model_cycles",
        "m_pe", "nw_pe", "mac_utilization", "task_errors")


async def gemv_sweep(fabric, cases: list[dict]) -> dict:
    """Run ``cases`` (each ``{"m", "n", "batch", "seed"}``) one after the other."""
    from ..cosim.gemv import gemv

    runs = []
    for case in cases:
        r = await gemv(fabric, **case)
        runs.append({k: r[k] for k in KEEP})
    return {"runs": runs}
