"""Benchmarks (``pytest -m bench``): simulation speed, printed as ratios from one run."""

import pytest
from sparktile.cosim.build import build_mesh
from sparktile.cosim.session import run_job
from sparktile.hdl.mesh import MeshShape

pytestmark = pytest.mark.bench


def test_public_flat_rw_cost():
    """cocotb's --public-flat-rw against sparktile's control file (only done/cycle public)."""
    shape = MeshShape(2, 3)
    args = {"m": 64, "n": 512, "batch": 4, "seed": 1}
    speeds = {}
    for public in (False, True):
        build = build_mesh(shape, public_flat_rw=public)
        r = run_job(shape, "sparktile.cosim.gemv:gemv", args, build=build)
        assert r["match"]
        speeds[public] = r["sim_cycles_per_s"]
    print(f"\n2x3 GEMV sim speed: control file {speeds[False]:.3g} cycles/s, "
          f"--public-flat-rw {speeds[True]:.3g} cycles/s, ratio {speeds[False] / speeds[True]:.2f}")
