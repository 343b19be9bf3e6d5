"""Benchmarks (``pytest -m bench``): simulation speed, printed as ratios from one run."""

import pytest
from sparktile.cosim.benches.gemv import gemv
from sparktile.cosim.benches.llm import llm_run
from sparktile.cosim.sim.build import build_mesh
from sparktile.cosim.sim.session import run_job
from sparktile.hdl.mesh import MeshShape

pytestmark = pytest.mark.bench


def test_public_flat_rw_cost():
    """cocotb's --public-flat-rw against sparktile's control file (only done/cycle public)."""
    shape = MeshShape(2, 3)
    args = {"m": 64, "n": 512, "batch": 4, "seed": 1}
    speeds = {}
    for public in (False, True):
        build = build_mesh(shape, public_flat_rw=public)
        r = run_job(shape, gemv, args, build=build)
        assert r.match
        speeds[public] = r.sim_cycles_per_s
    print(f"\n2x3 GEMV sim speed: control file {speeds[False]:.3g} cycles/s, "
          f"--public-flat-rw {speeds[True]:.3g} cycles/s, ratio {speeds[False] / speeds[True]:.2f}")


def _ratio(shape, entry, args, tmp_path):
    from sparktile.cosim.sim.build import run_plain
    replay = tmp_path / "replay.bin"
    r = run_job(shape, entry, {**args, "record": str(replay)})
    plain = run_plain(shape, replay)
    mine = r.recorded
    assert plain["cycles"] == mine["cycles"], (plain, mine)  # the same workload
    print(f"\n  by CPU time: cocotb {mine['cycles_per_cpu_s']:.3g}, plain "
          f"{plain['cycles_per_cpu_s']:.3g} cycles per CPU-second, ratio "
          f"{mine['cycles_per_cpu_s'] / plain['cycles_per_cpu_s']:.2f}", end="")
    return r, mine["cycles_per_s"], plain["cycles_per_s"]


def test_gemv_speed_against_plain_cpp_harness(tmp_path):
    shape = MeshShape(4, 4)
    r, mine, plain = _ratio(shape, gemv,
                            {"m": 256, "n": 992, "batch": 1, "seed": 3}, tmp_path)
    assert r.match
    print(f"\n4x4 GEMV 256x992 (configuration + compute + counter reads): cocotb {mine:.3g} "
          f"cycles/s, plain C++ harness {plain:.3g} cycles/s, ratio {mine / plain:.2f}")


def test_llm_speed_against_plain_cpp_harness(tmp_path):
    shape = MeshShape(2, 3)
    r, mine, plain = _ratio(shape, llm_run,
                            {"prompt": "def f(x):", "max_tokens": 4, "seed": 1}, tmp_path)
    assert r.match_golden
    print(f"\n2x3 sparktile run (shipped model, {r.weights_mode} weights, 4 tokens): cocotb "
          f"{mine:.3g} cycles/s, plain C++ harness {plain:.3g} cycles/s, ratio "
          f"{mine / plain:.2f}")


def test_decoder_speed_against_plain_cpp_harness(tmp_path):
    """The whole decoder on a 2x3 mesh of cores (a random small model): the recorded workload
    (configuration, every token, the counter reads) replayed on the same cycles."""
    from sparktile.cosim.benches.decode import decode_run
    shape = MeshShape(2, 3, pe="core", sram_kb=16)
    model = {"seed": 1, "num_layers": 1, "hidden_size": 32, "num_heads": 2,
             "num_kv_heads": 1, "head_dim": 8, "intermediate_size": 32, "vocab_size": 32}
    r, mine, plain = _ratio(shape, decode_run, {"ids": [1, 2, 3], "max_tokens": 4,
                                                "random": model, "seed": 1}, tmp_path)
    assert r.match_golden, r.first_diff
    print(f"\n2x3 whole decoder (random 1-layer model, 6 positions): cocotb {mine:.3g} "
          f"cycles/s, plain C++ harness {plain:.3g} cycles/s, ratio {mine / plain:.2f}")
