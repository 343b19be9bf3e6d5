"""Shared fixtures. Verilator builds are cached by a hash of their Verilog (see
sparktile.cosim.sim.build), so every test of a run — and every later run — shares them.

A failing test that ran a bench on the RTL reports, under "reproduce", the seed and the
command that reruns that bench with a waveform (also in CI's JUnit XML, with the output).
"""

import pytest
from sparktile.hdl.mesh import MeshShape


@pytest.fixture
def run_bench(request):
    """Run a cocotb bench on a mesh, building (once per configuration) what it needs."""
    from sparktile.cosim.sim.session import reproduce_command, run_job

    def run(rows, cols, entry, args=None, seed=1, **kw):
        shape = MeshShape(rows, cols, **kw)
        command = reproduce_command(shape, entry, args, seed)
        request.node.sparktile_runs = [*getattr(request.node, "sparktile_runs", []),
                                       f"seed {seed}: {command}"]
        return run_job(shape, entry, args or {}, seed=seed)

    return run


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    runs = getattr(item, "sparktile_runs", None)
    if report.failed and runs:
        report.sections.append(("Captured stdout reproduce",
                                "\n".join(f"reproduce ({r})" for r in runs) + "\n"))
    return report
