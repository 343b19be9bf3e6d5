"""System tier: int8 gemv/GEMM on the RTL mesh, bit-exact against numpy, and the cycle model
checked against the RTL (as FINN checks its analytic model against RTL simulation)."""

import pytest
from sparktile.cosim.benches.gemv import gemv

CASES = [
    # rows, cols, m, n, batch, extra
    (1, 1, 1, 1, 1, {}),
    (1, 1, 300, 40, 2, {}),                      # two accumulator passes (m > acc_depth)
    (2, 2, 7, 13, 1, {}),                        # primes: padding in both dimensions
    (2, 2, 5, 9, 3, {"fill": "min"}),            # all -128
    (2, 2, 6, 10, 1, {"fill": "max"}),           # all 127
    (2, 3, 33, 70, 2, {"fill": "saturate"}),     # requantization saturates both ways
    (2, 3, 37, 91, 2, {"out_int32": True}),
    (2, 3, 20, 50, 2, {"stall": 0.6}),           # random stalls on every edge stream
    (4, 4, 64, 200, 3, {}),
    (4, 4, 1, 333, 1, {}),
]


@pytest.mark.parametrize("rows,cols,m,n,batch,extra", CASES)
def test_gemv_bit_exact(run_bench, rows, cols, m, n, batch, extra):
    seed = 100 + m + n + batch
    r = run_bench(rows, cols, gemv, {"m": m, "n": n, "batch": batch, "seed": seed, **extra},
                  seed=seed)
    assert r.status == "complete", r
    assert r.match, f"seed {seed}: first difference {r.first_diff}"
    assert r.task_errors == 0
    # Every PE ran `batch` vectors per pass; the busiest did m_pe * nw_pe MAC rows per vector.
    passes = -(-r.m_pe // 256)
    assert r.mac_busy_cycles == r.m_pe * r.nw_pe * batch
    assert all(v == batch * passes for row in r.vectors_per_pe for v in row)
    if "stall" in extra:
        assert r.cycles >= r.model_cycles
    else:
        # The analytic model (sparktile.compiler.cycle_model) against the RTL's cycle count.
        assert abs(r.cycles - r.model_cycles) <= 2, (r.cycles, r.model_cycles)


@pytest.mark.parametrize("extra", [{}, {"out_int32": True}, {"stall": 0.5}],
                         ids=["int8", "int32", "stalls"])
def test_gemv_with_link_registers(run_bench, extra):
    # The FPGA configuration: registered router outputs, two cycles per hop. Same results,
    # and the cycle model's LINK term accounts for the extra cycle on every link crossed.
    seed = 400 + len(extra)
    r = run_bench(2, 3, gemv, {"m": 29, "n": 75, "batch": 2, "seed": seed, **extra},
                  seed=seed, link_regs=True)
    assert r.status == "complete", r
    assert r.match, f"seed {seed}: first difference {r.first_diff}"
    if "stall" in extra:
        assert r.cycles >= r.model_cycles
    else:
        assert abs(r.cycles - r.model_cycles) <= 2, (r.cycles, r.model_cycles)


def test_gemv_on_the_small_fpga_tile(run_bench):
    # The iCEBreaker's tile: 4 KiB SRAM, 64 accumulators, an 8-entry route table, 16-bit
    # counters. Two accumulator passes; bit-exact and on the model.
    seed = 450
    r = run_bench(1, 1, gemv, {"m": 100, "n": 36, "batch": 2, "seed": seed}, seed=seed,
                  sram_kb=4, acc_depth=64, route_colors=8, counter_bits=16)
    assert r.status == "complete", r
    assert r.match, f"seed {seed}: first difference {r.first_diff}"
    assert abs(r.cycles - r.model_cycles) <= 2, (r.cycles, r.model_cycles)


@pytest.mark.parametrize("pe", ["gemv", "core"])
@pytest.mark.parametrize("out_int32", [True, False])
def test_a_wrong_result_is_caught_and_named(run_bench, out_int32, pe):
    """The check can fail: the mesh (fixed-function PEs or programmable cores) is given W
    with one weight of row 5 changed, and the report must name y[0][5] (row-major first), the
    golden and RTL values, a cycle and the mesh row it came from."""
    m, n, row = 7, 13, 5
    r = run_bench(2, 2, gemv, {"m": m, "n": n, "batch": 2, "seed": 17,
                               "out_int32": out_int32, "fault_row": row}, seed=17, pe=pe)
    assert r.status == "complete"
    assert not r.match
    d = r.first_diff
    assert (d["vector"], d["index"]) == (0, row), d
    assert d["got"] != d["expected"]
    assert d["mesh_row"] == row // r.m_pe and d["cycle"] > 0


@pytest.mark.parametrize("rows,cols,seed", [(1, 1, 5), (2, 3, 6)])
def test_malformed_task_input_is_counted_where_it_arrived_and_the_pes_still_compute(
        run_bench, rows, cols, seed):
    from sparktile.cosim.benches.gemv import bad_task
    r = run_bench(rows, cols, bad_task, {"seed": seed}, seed=seed)
    assert r.counted == r.expected, f"seed {seed}: task errors {r.counted}, sent {r.expected}"
    assert r.expected[0][0] == 4 and sum(map(sum, r.expected)) == 4 + 3 * (rows - 1)
    assert r.gemv_after == {"match": True, "status": "complete", "task_errors": 0}
    assert r.clean
