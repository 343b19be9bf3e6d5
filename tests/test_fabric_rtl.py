"""System tier: the mesh fabric's generated Verilog in Verilator, driven by cocotb benches."""

import numpy as np
import pytest
from sparktile.cosim.benches.stress import (
    bad_config,
    latency,
    malformed_config,
    stray_wavelets,
    stress,
    throughput,
)


@pytest.mark.parametrize("rows,cols,seed", [(2, 3, 11), (3, 2, 12), (1, 1, 13), (4, 4, 14)])
def test_random_multicast_traffic_is_exact(run_bench, rows, cols, seed):
    r = run_bench(rows, cols, stress, {"wavelets": 3000, "seed": seed, "max_stall": 0.6},
                  seed=seed)
    assert r.status == "complete", r
    assert (r.lost, r.duplicated, r.out_of_order) == (0, 0, 0), \
        f"seed {seed}: {r.first_error}"
    assert r.delivered == r.expected_deliveries
    assert r.route_drops == 0 and r.cfg_errors == 0


def test_straight_streams_sustain_one_wavelet_per_cycle_per_link(run_bench):
    r = run_bench(2, 3, throughput, {"wavelets": 800})
    assert r.status == "complete"
    assert len(r.streams) == 2 + 3
    for s in r.streams:
        assert s["in_order"], s
        assert s["wavelets"] == 800
        # 800 wavelets delivered in 800 consecutive cycles on every link at once.
        assert s["span_cycles"] == 800, s


def test_latency_is_one_cycle_per_hop(run_bench):
    r = run_bench(4, 4, latency)
    hops = np.array([s["hops"] for s in r.samples])
    lat = np.array([s["latency"] for s in r.samples])
    assert all(s["ok"] for s in r.samples)
    slope, intercept = np.polyfit(hops, lat, 1)
    assert np.allclose(lat, hops * 1 + 0), list(zip(hops, lat, strict=True))
    assert round(slope, 6) == 1.0 and round(intercept, 6) == 0.0


def test_malformed_config_is_dropped_counted_and_harmless(run_bench):
    r = run_bench(2, 3, bad_config, seed=3)
    assert r.counted == r.sent_malformed, r
    assert r.stress_after == {"lost": 0, "duplicated": 0, "out_of_order": 0,
                                 "status": "complete"}


@pytest.mark.parametrize("rows,cols,seed", [(1, 1, 4), (2, 3, 5)])
def test_stray_data_is_dropped_and_counted_where_it_enters_and_harmless(run_bench, rows, cols,
                                                                        seed):
    r = run_bench(rows, cols, stray_wavelets, {"seed": seed, "per_port": 5}, seed=seed)
    assert r.delivered == 0, f"seed {seed}: {r.delivered} stray wavelets left the mesh"
    assert r.counted == r.expected, f"seed {seed}: route drops {r.counted}, sent {r.expected}"
    assert sum(map(sum, r.expected)) == r.sent == 5 * 2 * (rows + cols)
    assert r.stress_after == {"lost": 0, "duplicated": 0, "out_of_order": 0,
                              "status": "complete"}
    assert r.clean


def test_malformed_config_cases_cover_every_check():
    from sparktile.hdl.mesh import MeshShape
    names = [c[0] for c in malformed_config(MeshShape(2, 3))]
    assert len(names) == len(set(names)) >= 10


def test_the_reproduce_command_of_a_run_reruns_it_with_waves(tmp_path, monkeypatch):
    # What a failing system-tier test prints (tests/conftest.py) and a failing bench's
    # BenchError ends with: rerun as a shell command, it must dump the waveform it names.
    import shlex
    import subprocess
    import sys

    from sparktile.cosim.sim.session import reproduce_command
    from sparktile.hdl.mesh import MeshShape

    waves = tmp_path / "fail.vcd"
    cmd = reproduce_command(MeshShape(1, 1), stress, {"wavelets": 20, "seed": 2,
                                                      "max_stall": 0.3}, 2, waves=str(waves))
    argv = shlex.split(cmd)
    assert argv[0] == ".venv/bin/python" and argv[1] == "-c"
    out = subprocess.run([sys.executable, "-c", argv[2]], capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "StressResult(" in out.stdout and "lost=0" in out.stdout
    assert waves.stat().st_size > 0


def test_functional_coverage_of_a_stress_run_counts_every_delivery(run_bench):
    from sparktile.cosim.benches import coverage_bins
    r = run_bench(2, 3, stress, {"wavelets": 1500, "seed": 9, "max_stall": 0.6}, seed=9)
    assert r.lost == 0
    stalls = {k: v for k, v in r.coverage.items() if k.startswith("stall:")}
    hops = {k: v for k, v in r.coverage.items() if k.startswith("hop:")}
    # One stall bin per delivery (source pause x destination stall of that delivery).
    assert sum(stalls.values()) == r.delivered
    assert set(r.coverage) <= coverage_bins.ALL_BINS and hops
    # A hop bin counts each wavelet once per hop it made, so at least once per wavelet sent
    # through a router, never more than deliveries x the mesh's tiles.
    assert r.sent <= sum(hops.values()) <= r.delivered * 6


def test_coverage_driven_stress_stops_at_its_goal(tmp_path):
    from click.testing import CliRunner

    from sparktile.cli import main
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["stress", "--mesh", "2x2", "--wavelets", "300",
                                    "--cover-goal", "50", "--max-runs", "5",
                                    "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "bins hit:" in res.output and "PASS" in res.output
    import json
    cov = json.loads(out.read_text())["coverage"]
    from sparktile.cosim.benches import coverage_bins
    hit = len(coverage_bins.ALL_BINS) - len(coverage_bins.missing(cov))
    assert hit >= 0.5 * len(coverage_bins.ALL_BINS)
