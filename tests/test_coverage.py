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
    run_job(shape, gemv, {"m": 8, "n": 16, "batch": 2, "seed": 1}, coverage=str(d / "gemv.dat"))
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
