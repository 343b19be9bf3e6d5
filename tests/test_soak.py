"""Soak (``pytest -m soak``, not in the default tier): a million wavelets through the 4x4 and
3x5 meshes with every edge stalling up to 90 % of the time on both sides; nothing lost,
duplicated or reordered. Prints each run's cycles and wall time."""

import pytest
from sparktile.cosim.benches.stress import stress

pytestmark = pytest.mark.soak


@pytest.mark.parametrize("rows, cols, seed", [(4, 4, 101), (3, 5, 202)])
def test_a_million_wavelets_with_stalls_up_to_90_percent(run_bench, rows, cols, seed):
    r = run_bench(rows, cols, stress, {"wavelets": 1_000_000, "seed": seed, "max_stall": 0.9},
                  seed=seed)
    print(f"\n{rows}x{cols} seed {seed}: {r.sent} wavelets, {r.delivered} deliveries, "
          f"{r.cycles} cycles, link utilization {r.link_utilization:.3f}, "
          f"{r.job.process_wall_s:.0f} s")
    assert r.status == "complete", r.first_error
    assert (r.lost, r.duplicated, r.out_of_order) == (0, 0, 0), r.first_error
    assert r.delivered == r.expected_deliveries
    assert r.route_drops == 0 and r.cfg_errors == 0
