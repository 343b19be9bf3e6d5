"""GEMV/GEMM bench: a random int8 matrix on the mesh, checked bit-exactly against numpy.

Driver: the mapping compiler's configuration stream (west edges) and ``x`` streams (north
edges). Monitor: the east-edge sinks. Model: :mod:`sparktile.golden_model.arith`. Scoreboard:
element-wise equality, reporting the first differing element, the cycle its wavelet left the
mesh, and the seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ...compiler.core_mapping import compile_core_gemv, core_gemv_bound, core_gemv_cycles
from ...compiler.mapping import compile_gemv
from ...compiler.strips import LAYOUTS, compile_gemv_strips, layout_cycles
from ...golden_model.arith import first_difference, gemv_golden, requant_params
from ...hdl.formats import Counter
from ..sim.fabric import STATUS, Fabric, Recording
from ..sim.registry import BenchResult, bench

__all__ = ["gemv", "random_problem", "GemvResult", "bad_task", "BadTaskResult"]


@dataclass
class GemvResult(BenchResult):
    """One GEMV/GEMM on the mesh, checked against the golden model.

    ``match``: every element equal; ``first_diff`` (when not): the element, both values, the
    mesh row and the cycle its wavelet left the mesh. Cycle figures come from the harness's
    cycle counter; ``mac_busy_*``, ``stall_*``, ``task_errors`` and ``vectors_per_pe`` from
    the PEs' own counters, read back over the fabric before and after the run.

    ``pe``: the mesh's PE kind (``gemv`` or ``core``, see :class:`~sparktile.hdl.mesh.
    MeshShape`). On a core mesh ``model_cycles`` is the estimate of
    :func:`~sparktile.compiler.core_mapping.core_gemv_cycles`, ``task_cycles_bound`` the hard
    lower bound (``batch`` runs of the east-most PE's program without stalls),
    ``vectors_per_pe`` the tasks each core completed and ``nw_pe`` the widest column.
    """

    mesh: str
    m: int
    n: int
    batch: int
    seed: int
    fill: str
    out: str                    # "int8" or "int32"
    match: bool
    status: str                 # "complete", "hang", ...
    first_diff: dict | None
    cycles: int                 # first x wavelet in to last y wavelet out
    config_cycles: int
    macs: int
    mac_utilization: float      # macs / (PEs x 4 lanes x cycles)
    ideal_cycles: int           # macs / (PEs x 4 lanes)
    model_cycles: float         # the compiler's cycle model
    m_pe: int
    nw_pe: int
    sram_words_per_pe: int
    mac_busy_cycles: int
    mac_busy_per_pe: list
    stall_in_cycles: list
    stall_out_cycles: list
    task_errors: int
    vectors_per_pe: list
    sim_cycles_per_s: float
    recorded: dict | None       # the replay file's figures when ``record`` was given
    # Filled by the CLI's ``--compare-plain``: the plain C++ harness's replay of ``recorded``.
    plain_harness: dict | None = None
    speed_ratio_vs_plain: float | None = None
    pe: str = "gemv"
    task_cycles_bound: int | None = None
    layout: str = "chain"


def random_problem(m: int, n: int, batch: int, seed: int, *, fill: str = "random"):
    """``(W, X, mult, shift)`` for a seeded test problem.

    ``fill``: ``random``; ``min`` (every W and x element -128); ``max`` (127); ``saturate``
    (random data with scales large enough that most outputs saturate both ways).
    """
    rng = np.random.default_rng(seed)
    if fill == "min":
        w = np.full((m, n), -128, np.int8)
        x = np.full((batch, n), -128, np.int8)
    elif fill == "max":
        w = np.full((m, n), 127, np.int8)
        x = np.full((batch, n), 127, np.int8)
    else:
        w = rng.integers(-128, 128, (m, n), dtype=np.int8)
        x = rng.integers(-128, 128, (batch, n), dtype=np.int8)
    # Scales that map a typical |acc| ~ 128 * 128 * sqrt(n) / 2 to ~ 64, varied per channel.
    typical = 128.0 * 128.0 * np.sqrt(n) / 2
    scale = rng.uniform(0.25, 2.0, m) * 64.0 / typical
    if fill == "saturate":
        scale *= 64.0
    if fill in ("min", "max"):
        scale = np.full(m, 100.0 / (128.0 * 128.0 * n))
    mult, shift = requant_params(scale)
    return w, x, mult, shift


@bench(GemvResult)
async def gemv(fabric: Fabric, m: int, n: int, batch: int = 1, seed: int = 1,
               out_int32: bool = False, fill: str = "random", stall: float = 0.0,
               record: str | None = None, fault_row: int | None = None,
               layout: str = "chain") -> GemvResult:
    """Run ``y = requantize(W @ x)`` for a batch of vectors and compare with numpy.

    ``layout`` (fixed-function PEs): ``chain``, the whole mesh as one region whose partial
    sums run along every column (:func:`~sparktile.compiler.mapping.compile_gemv`), or
    ``strips``, the rows of ``W`` over the mesh's column strips
    (:mod:`~sparktile.compiler.strips`).

    ``record`` names a file to which the whole workload (configuration included) is written
    for replay in the plain C++ harness (:func:`sparktile.cosim.sim.build.run_plain`).

    ``fault_row`` (for the tests that prove the check can fail) gives the mesh a ``W`` with
    one weight of that row moved to the far end of the int8 range, at the column where the
    first vector is largest, so the RTL's answer differs from the golden one there (by at
    least 128 x that input, more than requantization rounds away); the report must name that
    element.
    """
    shape = fabric.shape
    rec = Recording(fabric, record)
    w, x, mult, shift = random_problem(m, n, batch, seed, fill=fill)
    w_rtl = w
    if fault_row is not None:
        if not 0 <= fault_row < m:
            raise ValueError(f"fault_row must be in [0, {m}), not {fault_row}")
        col = int(np.argmax(np.abs(x[0].astype(np.int32))))
        w_rtl = w.copy()
        w_rtl[fault_row, col] = 127 if w[fault_row, col] < 0 else -128
    core = shape.pe == "core"
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    strips = layout == "strips"
    if core and strips:
        raise ValueError("layout 'strips' is a mapping of the fixed-function PE; a core mesh "
                         "has its own GEMV mapping")
    if core:
        mapping = compile_core_gemv(shape, w_rtl, mult, shift, out_int32=out_int32)
    elif strips:
        mapping = compile_gemv_strips(shape, w_rtl, mult, shift, out_int32=out_int32)
    else:
        mapping = compile_gemv(shape, w_rtl, mult, shift, out_int32=out_int32)
    cfg_cycles = await fabric.configure(mapping.program)
    counters = (Counter.MAC_BUSY, Counter.STALL_IN, Counter.STALL_OUT, Counter.FORWARDED,
                Counter.TASK_ERRORS, Counter.VECTORS)
    before = await fabric.read_counters(counters)

    if strips:
        for (side, col), (pay, ccs) in mapping.x_ports(x).items():
            fabric.send(fabric.port(side, col), pay, ccs)
    else:
        for col, (pay, ccs) in mapping.x_streams(x).items():
            fabric.send(fabric.port("N", col), pay, ccs)
    if stall:
        rng = np.random.default_rng(seed + 7919)
        for p in fabric.ports:
            fabric.set_pauses(p.index, float(rng.uniform(0, stall)), float(rng.uniform(0, stall)))
    if core:
        # y leaves east (each row's eastward chain) and west (its westward chain).
        want = mapping.y_wavelets(batch)
        expect = sum(want.values())
    else:
        expect = mapping.expected(batch)
    t0 = time.perf_counter()
    res = await fabric.run(expect, idle_limit=50_000)
    wall = time.perf_counter() - t0
    for p in fabric.ports:
        fabric.set_pauses(p.index, 0.0, 0.0)
    per_row, cycles_of = {}, {}
    if core:
        for side, r in want:
            pay, _, t = fabric.receive(fabric.port(side, r))
            per_row[side, r] = pay
            cycles_of[r] = np.concatenate([cycles_of.get(r, np.zeros(0, np.uint64)), t])
    elif strips:
        for r in range(shape.rows):
            for side in ("E", "W"):
                pay, ccs, t = fabric.receive(fabric.port(side, r))
                per_row[side, r] = (pay, ccs)
                cycles_of[r] = np.concatenate([cycles_of.get(r, np.zeros(0, np.uint64)), t])
    else:
        for r in range(mapping.region.rows):
            pay, _, t = fabric.receive(fabric.port("E", mapping.region.row + r))
            per_row[mapping.region.row + r] = pay
            cycles_of[mapping.region.row + r] = t
    after = await fabric.read_counters(counters)
    delta = fabric.counter_delta(after, before)

    recorded = rec.finish()
    golden = gemv_golden(w, x, mult, shift, out_int32=out_int32)
    if core:
        complete = res.ok and all(len(per_row[k]) == v for k, v in want.items())
    elif strips:
        complete = res.ok and sum(len(p) for p, _ in per_row.values()) == expect
    else:
        complete = res.ok and all(len(v) == mapping.y_wavelets_per_row(batch)
                                  for v in per_row.values())
    first_diff = None
    match = False
    if complete:
        if core:
            y = mapping.decode_y_ports(per_row, batch)
        elif strips:
            y = mapping.decode_edge(per_row, batch)
        else:
            y = mapping.decode_y(per_row, batch)
        first_diff = first_difference(y, golden)
        match = first_diff is None
        if not match:
            r = mapping.row_of(first_diff["index"]) if strips else \
                first_diff["index"] // mapping.m_pe
            first_diff.update(mesh_row=r,
                              cycle=int(cycles_of[r].max()) if len(cycles_of[r]) else None)
    pes = shape.pes
    macs = m * n * batch
    bound = None
    if core:
        model = core_gemv_cycles(mapping, batch)
        bound = core_gemv_bound(mapping, batch)
    else:
        model = layout_cycles(shape, m, n, batch, out_int32=out_int32, layout=layout)
    return GemvResult(
        mesh=str(shape), m=m, n=n, batch=batch, seed=seed, fill=fill,
        out="int32" if out_int32 else "int8", match=bool(match),
        status=STATUS[res.status], first_diff=first_diff,
        cycles=res.cycles, config_cycles=cfg_cycles, macs=macs,
        mac_utilization=macs / (pes * 4 * max(res.cycles, 1)),
        ideal_cycles=int(np.ceil(macs / (pes * 4))),
        model_cycles=model,
        m_pe=mapping.m_pe, nw_pe=mapping.nw_pe, sram_words_per_pe=mapping.words,
        mac_busy_cycles=int(delta["mac_busy"].max()),
        mac_busy_per_pe=delta["mac_busy"].tolist(),
        stall_in_cycles=delta["stall_in"].tolist(),
        stall_out_cycles=delta["stall_out"].tolist(),
        task_errors=int(delta["task_errors"].sum()),
        vectors_per_pe=delta["vectors"].tolist(),
        sim_cycles_per_s=res.cycles / wall if wall > 0 else 0.0,
        recorded=recorded, pe=shape.pe, task_cycles_bound=bound, layout=layout,
    )


@dataclass
class BadTaskResult(BenchResult):
    """Malformed task input to the PEs: each kind dropped and counted where it arrived.

    ``expected`` and ``counted`` are the task-error counts per PE (rows x cols): what the
    bench sent to each PE and what its ``task_errors`` counter says; ``gemv_after`` the
    GEMV that runs afterwards on the same mapping (its match, status and task errors).
    """

    mesh: str
    seed: int
    kinds: list
    expected: list
    counted: list
    gemv_after: dict

    @property
    def clean(self) -> bool:
        return (self.expected == self.counted and self.gemv_after["match"]
                and self.gemv_after["task_errors"] == 0)


@bench(BadTaskResult)
async def bad_task(fabric: Fabric, seed: int = 1) -> BadTaskResult:
    """Every kind of malformed task input is dropped and counted, and the PEs still compute.

    On a GEMV mapping (two data words per PE and vector), the north stream of the region's
    first column carries, before the real vectors: a data wavelet before any descriptor; a
    descriptor selector, one data wavelet and a second selector (a vector abandoned
    half-way); a selector of an all-zero descriptor (no rows); and, routed to the region's
    first PE only, a wavelet on a color no task is bound to. Each PE of that column must count
    three task errors, the first PE four, every other PE none; then a GEMV on the same
    mapping must still match the golden model with no task error.
    """
    from ...compiler.program import ConfigProgram
    from ...hdl.formats import CFG_COLOR, RSP_COLOR, Port, cc

    shape = fabric.shape
    if shape.pe != "gemv":
        raise ValueError(f"bad_task sends the fixed-function PE's malformed descriptors; the "
                         f"mesh has pe={shape.pe!r} (the core's task errors are tested in "
                         f"tests/test_core_sim.py)")
    m, n = 4 * shape.rows, 8 * shape.cols          # two data words per PE and vector
    w, _x, mult, shift = random_problem(m, n, 1, seed)
    mapping = compile_gemv(shape, w, mult, shift)
    region, colors = mapping.region, mapping.colors
    bad_desc = shape.sram_words - 3                # zeros: rows == 0
    if mapping.base + mapping.words > bad_desc:
        raise ValueError(f"a {shape} mesh's SRAM has no room for the all-zero descriptor")
    used = {colors.x, colors.p0, colors.p1, colors.y, CFG_COLOR, RSP_COLOR}
    spare = next(c for c in range(shape.route_colors) if c not in used)
    top = (region.row, region.col)
    await fabric.configure(mapping.program)
    unbound = ConfigProgram(shape)
    unbound.add_route(*top, spare, Port.N, [Port.RAMP])
    await fabric.configure(unbound)
    before = await fabric.read_counters((Counter.TASK_ERRORS,))

    desc = mapping.passes[0][0]
    x, sel = cc(colors.x), cc(colors.x, 1)
    kinds = ["data_without_descriptor", "selector_mid_vector", "bad_descriptor",
             "unbound_color"]
    fabric.send(fabric.port("N", region.col),
                [0x01020304, desc, 0x05060708, desc, bad_desc, 0x99],
                [x, sel, x, sel, sel, cc(spare)])
    await fabric.settle(200 + 20 * shape.rows)
    after = await fabric.read_counters((Counter.TASK_ERRORS,))
    counted = fabric.counter_delta(after, before)["task_errors"].astype(int)
    expected = np.zeros((shape.rows, shape.cols), dtype=int)
    expected[region.row:region.row + region.rows, region.col] = 3
    expected[top] += 1
    g = await gemv(fabric, m=m, n=n, batch=2, seed=seed)
    return BadTaskResult(mesh=str(shape), seed=seed, kinds=kinds, expected=expected.tolist(),
                         counted=counted.tolist(),
                         gemv_after={"match": g.match, "status": g.status,
                                     "task_errors": g.task_errors})
