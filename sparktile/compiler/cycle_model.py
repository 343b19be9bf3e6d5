"""Analytic cycle model of a GEMV/GEMM on the mesh, derived from the RTL's pipeline.

For one pass of ``rows`` accumulator rows per PE and ``nw`` packed activation words per PE,
a batch of ``B`` vectors takes ::

    T = FILL + X_HOP * (R - 1) + sum over passes [DESC + B * (rows * nw + rows + VEC)]
             + P_HOP * (C - 1) + DRAIN [+ REQUANT for int8 results]
             [+ LINK * (R + C - 1) + RAMP * C with link registers]

* ``rows * nw`` — the MAC task: one weight row (4 MACs) per cycle per activation word;
* ``rows`` — the reduce task: one accumulator per cycle (partial sum in, sum or result out);
* ``VEC`` — per-vector task switches: IDLE to MAC (1), waiting for the MAC pipeline (weight
  register, products, sum) to drain before the first accumulator read (3), and the reduce
  stage's register (1);
* ``X_HOP`` — one cycle per router to multicast ``x`` down a column;
* ``P_HOP`` — four cycles per PE along the reduction chain: the PE's output register, the
  router's ramp FIFO, the neighbour's west FIFO and the partial-sum queue;
* ``DESC`` — the descriptor fetch at the start of each pass (selector pop + three SRAM reads);
* ``FILL`` — source register, first router FIFO and the x queue;
* ``DRAIN`` — the last PE's output register, its router's ramp FIFO and the edge sink;
* ``LINK`` — with registered router outputs (``MeshShape.link_regs``, the FPGA builds), one
  more cycle on each router-to-router link a result crosses: ``R - 1`` down the column for
  ``x``, ``C - 1`` along the chain and one into the edge sink; and ``RAMP``, the PE's
  ramp register that comes with them: once for ``x`` and once per PE of the chain;
* ``REQUANT`` — the four registered stages of the requantization pipeline that int8 results
  pass through (int32 results and partial sums leave the reduce stage directly).

Each pass streams ``x`` again, so passes add; the fill, the chain and the drain overlap with
the neighbouring passes and are paid once. The constants are read off the RTL, not fitted
to its results; tests compare this model with the cycle counts the RTL reports.
"""

from __future__ import annotations

__all__ = ["gemv_cycles", "GemvTiming", "DEFAULT_TIMING", "timing_for"]

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class GemvTiming:
    """The model's per-event costs in cycles (see the module docstring)."""

    fill: float = 3.0
    desc: float = 4.0
    x_hop: float = 1.0
    vec: float = 5.0
    p_hop: float = 4.0
    drain: float = 3.0
    requant: float = 4.0
    link: float = 0.0
    ramp: float = 0.0

    def as_dict(self):
        return asdict(self)


DEFAULT_TIMING = GemvTiming()


def timing_for(shape) -> GemvTiming:
    """The RTL's timing for a :class:`~sparktile.hdl.mesh.MeshShape` (its link registers)."""
    return replace(DEFAULT_TIMING, link=1.0, ramp=1.0) if shape.link_regs else DEFAULT_TIMING


def gemv_cycles(m: int, n: int, batch: int, rows: int, cols: int, *, acc_depth: int = 256,
                out_int32: bool = False, timing: GemvTiming = DEFAULT_TIMING) -> float:
    """Predicted cycles of an M x N GEMV (``batch`` vectors) on a ``rows`` x ``cols`` region."""
    if min(m, n, batch, rows, cols, acc_depth) < 1:
        raise ValueError("gemv_cycles needs positive sizes")
    from .mapping import Region, gemv_words  # the compiler's placement, one definition
    geo = gemv_words(m, n, Region(0, 0, rows, cols), acc_depth)
    m_pe, nw = geo["m_pe"], geo["nw_pe"]
    total = timing.fill + timing.x_hop * (rows - 1) + timing.p_hop * (cols - 1) + timing.drain
    if not out_int32:
        total += timing.requant
    total += timing.link * (rows + cols - 1) + timing.ramp * cols
    for p in range(geo["passes"]):
        r = min(acc_depth, m_pe - p * acc_depth)
        total += timing.desc + batch * (r * nw + r + timing.vec)
    return total
