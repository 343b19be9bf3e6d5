"""The time of one matrix-vector product on a region of the wafer, by where it goes.

:func:`gemv_breakdown` is the compiler's cycle model
(:func:`~sparktile.compiler.cycle_model.gemv_cycles`) generalised to a wafer preset: MAC
lanes per data type, SRAM read bandwidth, cycles per hop, and a chained or tree reduction of
the partial sums. Its parts are the :data:`CATEGORIES` that the estimate reports.
"""

from __future__ import annotations

import math

from ...compiler.cycle_model import GemvTiming
from .models import DTYPES

__all__ = ["CATEGORIES", "accumulator_passes", "gemv_breakdown", "per_vector_cycles",
           "reduction_cycles"]

#: Where decode time goes (the report's ``bound`` is the largest).
CATEGORIES = ("compute", "sram_bandwidth", "reduction", "task_overhead", "pipeline")


def accumulator_passes(m_pe: int, acc_depth: int) -> list[int]:
    """Rows of each accumulator pass of a PE holding ``m_pe`` rows (``acc_depth`` a pass)."""
    return [min(acc_depth, m_pe - p * acc_depth) for p in range(math.ceil(m_pe / acc_depth))]


def gemv_breakdown(m: int, n: int, rows: int, cols: int, hw, dtype: str, timing: GemvTiming,
                   *, batch: int = 1, reduce: str = "chain") -> dict:
    """Cycles of an M x N GEMV on a rows x cols region, split by :data:`CATEGORIES`.

    With ``reduce="chain"`` and 4 int8 lanes fed by a 4 B/cycle SRAM this is exactly
    :func:`~sparktile.compiler.cycle_model.gemv_cycles` (a test checks it).
    """
    b = DTYPES[dtype]
    lanes = hw.lanes(dtype)
    eff = min(float(lanes), hw.sram_read_bytes_per_cycle / b)
    n_compute = math.ceil(n * 4 / lanes)       # int8-equivalent columns of the RTL's 4-lane PE
    n_eff = math.ceil(n * 4 / eff)
    nw_c = math.ceil(math.ceil(n_compute / 4) / cols)
    nw_e = math.ceil(math.ceil(n_eff / 4) / cols)
    m_pe = math.ceil(m / rows)
    ps = accumulator_passes(m_pe, hw.acc_depth)
    hop = hw.hop_cycles
    x_hop = timing.x_hop * hop
    p_hop = timing.p_hop - 1.0 + hop
    if reduce == "tree":
        chain = (p_hop - hop) * math.ceil(math.log2(cols)) + hop * (cols - 1) if cols > 1 else 0
    else:
        chain = p_hop * (cols - 1)
    out = {
        "compute": float(sum(batch * r * nw_c for r in ps)),
        "sram_bandwidth": float(sum(batch * r * (nw_e - nw_c) for r in ps)),
        "reduction": float(sum(batch * r for r in ps) + chain + x_hop * (rows - 1)
                           + timing.fill + timing.drain + timing.requant),
        "task_overhead": float(sum(timing.desc + batch * timing.vec for _ in ps)),
        "pipeline": 0.0,
    }
    return out


def per_vector_cycles(m, n, rows, cols, hw, dtype, timing) -> float:
    """Extra cycles per additional vector (the stage time when pipelining a prompt)."""
    a = gemv_breakdown(m, n, rows, cols, hw, dtype, timing, batch=1)
    b = gemv_breakdown(m, n, rows, cols, hw, dtype, timing, batch=2)
    return sum(b.values()) - sum(a.values())


def reduction_cycles(side: float, hw, timing, reduce) -> float:
    """Cycles to reduce partial sums across ``side`` PEs (chained, or as a tree)."""
    p_hop = timing.p_hop - 1.0 + hw.hop_cycles
    if side <= 1:
        return 0.0
    if reduce == "tree":
        return (p_hop - hw.hop_cycles) * math.ceil(math.log2(side)) + hw.hop_cycles * (side - 1)
    return p_hop * (side - 1)
