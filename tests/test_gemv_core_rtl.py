"""System tier: the GEMV program on a mesh of programmable cores (``MeshShape(pe="core")``,
``sparktile.compiler.core_mapping``), bit-exact against numpy on the Verilator mesh, with the
cores' own counters read back over the fabric. Small meshes: every shape is a Verilator build
(cached by a hash of the Verilog)."""

import pytest
from sparktile.cosim.benches.gemv import gemv

CASES = [
    # rows, cols, m, n, batch, extra
    (1, 1, 1, 1, 1, {}),
    (1, 1, 40, 36, 2, {}),
    (2, 2, 7, 13, 1, {}),                        # primes: padding in both dimensions
    (2, 2, 5, 9, 3, {"fill": "min"}),            # all -128
    (2, 2, 6, 10, 2, {"out_int32": True}),
    (2, 3, 33, 70, 2, {"fill": "saturate"}),     # requantization saturates both ways
    (2, 3, 37, 91, 2, {"out_int32": True}),
    (2, 3, 20, 50, 2, {"stall": 0.6}),           # random stalls on every edge stream
    (3, 1, 30, 40, 2, {}),                       # a single column: no chain, VREQ in every PE
    (3, 1, 9, 20, 1, {"out_int32": True}),
]


@pytest.mark.parametrize("rows,cols,m,n,batch,extra", CASES)
def test_core_gemv_bit_exact(run_bench, rows, cols, m, n, batch, extra):
    seed = 200 + m + n + batch
    r = run_bench(rows, cols, gemv, {"m": m, "n": n, "batch": batch, "seed": seed, **extra},
                  seed=seed, pe="core")
    assert r.status == "complete", r
    assert r.match, f"seed {seed}: first difference {r.first_diff}"
    assert r.pe == "core" and r.task_errors == 0
    # Every core ran its program once per vector; the widest did m_pe * nw_pe GEMV words each.
    assert all(v == batch for row in r.vectors_per_pe for v in row), r.vectors_per_pe
    assert r.mac_busy_cycles == r.m_pe * r.nw_pe * batch
    # The east-most core's programs, without stalls, are a hard lower bound of the run.
    assert r.cycles >= r.task_cycles_bound

