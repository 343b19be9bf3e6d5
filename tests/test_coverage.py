"""Code coverage (cosim/sim/coverage.py): a coverage build's counts, merged over runs of
different benches, reported per module; corrupt files are named by line."""

import json

import pytest
from sparktile.cosim.benches.gemv import gemv
from sparktile.cosim.benches.stress import stress
from sparktile.cosim.sim import coverage
from sparktile.cosim.sim.session import run_job
from sparktile.hdl.mesh import MeshShape


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("coverage")
    shape = MeshShape(1, 2)
    run_job(shape, stress, {"wavelets": 300, "seed": 3, "max_stall": 0.5},
            coverage=str(d / "stress.dat"))
    r = run_job(shape, gemv, {"m": 8, "n": 16, "batch": 3, "seed": 1, "stall": 0.6},
                coverage=str(d / "gemv.dat"))
    (d / "gemv.json").write_text(json.dumps({k: getattr(r, k) for k in (
        "mac_busy_per_pe", "stall_in_cycles", "stall_out_cycles", "vectors_per_pe", "m_pe",
        "match")}))
    return d


def test_merged_coverage_is_at_least_each_run_and_gemv_adds_the_mac(runs, tmp_path):
    s, g = coverage.read(runs / "stress.dat"), coverage.read(runs / "gemv.dat")
    merged = coverage.merge(s, g)
    assert set(merged) == set(s) | set(g)
    for key, count in merged.items():
        assert count == s.get(key, 0) + g.get(key, 0)
    hit = {name: coverage.summary(p) for name, p in (("s", s), ("g", g), ("m", merged))}
    mac = "sparktile_tile.pe.mac"
    # Stress traffic never runs a task; the GEMV does: the MAC's toggles come from it.
    assert hit["g"][mac]["toggle"][0] > hit["s"][mac]["toggle"][0]
    for module, kinds in hit["m"].items():
        for kind, (h, total) in kinds.items():
            assert h >= max(hit[x].get(module, {}).get(kind, (0, 0))[0] for x in "sg")
            assert 0 <= h <= total
    assert {"sparktile_tile.router", "sparktile_tile.pe", "sparktile_tile.agent"} <= set(hit["m"])
    report = coverage.write_report(tmp_path / "cov.md", merged, ["stress", "gemv"])
    text = report.read_text()
    assert "| sparktile_tile.router |" in text and "## Lines never hit" in text
    data = json.loads(report.with_suffix(".json").read_text())
    assert data["summary"][mac]["toggle"][0] == hit["m"][mac]["toggle"][0]


@pytest.mark.parametrize("text, words", [
    ("", "not a Verilator coverage file"), ("# SystemC::Coverage-3\nX 'a' 1\n", ":2: not a"),
    ("# SystemC::Coverage-3\nC '\x01f\x02a.v' 1\n", ":2: not a coverage point"),
])
def test_a_corrupt_coverage_file_is_named_by_line(tmp_path, text, words):
    path = tmp_path / "c.dat"
    path.write_text(text)
    with pytest.raises(coverage.CoverageError, match=words):
        coverage.read(path)


def test_the_rtl_coverage_points_count_what_the_pe_counters_count(runs):
    # The coverage points are separate flip-flops from the PE's performance counters; on a
    # 1x2 GEMV (column 0 FIRST with partial sums, column 1 LAST with int8 results) each bin
    # must count exactly the events its counter counted.
    from sparktile.hdl.cover import ALL_RTL_BINS
    g = json.loads((runs / "gemv.json").read_text())
    assert g["match"]
    bins = coverage.rtl_bins(coverage.read(runs / "gemv.dat"))
    assert set(bins) == ALL_RTL_BINS        # every point is in the build, hit or not
    (mac0, mac1), = g["mac_busy_per_pe"]
    (stall_in0, stall_in1), = g["stall_in_cycles"]
    (stall_out0, stall_out1), = g["stall_out_cycles"]
    (vec0, vec1), = g["vectors_per_pe"]
    p0, p1 = "first=1,out=partial,bp=", "first=0,out=int8,bp="
    assert bins[f"pe:mac:{p0}flowing"] == mac0 > 0
    assert bins[f"pe:mac:{p1}flowing"] == mac1 > 0
    assert bins[f"pe:mac:{p0}starved"] == stall_in0
    assert bins[f"pe:mac:{p1}starved"] + bins[f"pe:reduce:{p1}psum_wait"] == stall_in1
    assert bins[f"pe:reduce:{p0}out_stalled"] == stall_out0
    assert bins[f"pe:reduce:{p1}out_stalled"] == stall_out1
    assert bins[f"pe:reduce:{p0}flowing"] == vec0 * g["m_pe"]
    assert bins[f"pe:reduce:{p1}flowing"] == vec1 * g["m_pe"]
    # No other flags ran, and the GEMV made no task error.
    others = [b for b in bins if b.startswith("pe:") and p0 not in b and p1 not in b]
    assert all(bins[b] == 0 for b in others), {b: bins[b] for b in others if bins[b]}


def test_the_functional_report_merges_stress_and_rtl_bins_and_lists_the_never_hit(runs,
                                                                                  tmp_path):
    from sparktile.cosim.benches import coverage_bins
    from sparktile.hdl.cover import ALL_RTL_BINS
    rtl = coverage.rtl_bins(coverage.merge(coverage.read(runs / "stress.dat"),
                                           coverage.read(runs / "gemv.dat")))
    stress_bins = {"hop:W>E:fanout=1": 5, "stall:src=none,dst=high": 2}
    merged = coverage_bins.merge_bins(rtl, stress_bins)
    report = coverage_bins.write_functional_report(tmp_path / "f.md", merged, ["a", "b"])
    data = json.loads(report.with_suffix(".json").read_text())
    every = coverage_bins.ALL_BINS | ALL_RTL_BINS
    assert data["total"] == len(every) and set(data["bins"]) == every
    assert set(data["never_hit"]) == {b for b in every if not merged.get(b)}
    assert data["hit"] == len(every) - len(data["never_hit"]) > 2
    text = report.read_text()
    assert "## pe:" in text and "## router:" in text and "## hop:" in text
    assert f"## Never hit ({len(data['never_hit'])})" in text
    assert "| W>E:fanout=1 | 5 |" in text
