"""Shared fixtures. Verilator builds are cached by a hash of their Verilog (see
sparktile.cosim.sim.build), so every test of a run — and every later run — shares them."""

import pytest
from sparktile.hdl.mesh import MeshShape


@pytest.fixture(scope="session")
def run_bench():
    """Run a cocotb bench on a mesh, building (once) what it needs."""
    from sparktile.cosim.sim.session import run_job

    def run(rows, cols, entry, args=None, seed=1, **kw):
        return run_job(MeshShape(rows, cols, **kw), entry, args or {}, seed=seed)

    return run
