"""The one cocotb test every sparktile simulation runs: load a job, run its bench, report.

The host (:func:`sparktile.cosim.sim.session.run_job`) writes a JSON job naming a registered
bench (:mod:`.registry`) and its arguments, and sets ``SPARKTILE_JOB`` to its path. The bench
receives a :class:`~sparktile.cosim.sim.fabric.Fabric` and returns its result dataclass,
written as JSON next to the job. One Verilator build serves every kind of bench.
"""

import json
import os
import time
import traceback

import cocotb
from sparktile.cosim.sim import registry
from sparktile.cosim.sim.fabric import Fabric
from sparktile.hdl.mesh import MeshShape


@cocotb.test()
async def sparktile_job(dut):
    job_path = os.environ["SPARKTILE_JOB"]
    with open(job_path) as f:
        job = json.load(f)
    shape = MeshShape(**job["shape"])
    result_path = job["result"]
    t0 = time.perf_counter()
    try:
        bench = registry.lookup(job["entry"]).function
        fabric = Fabric(dut, shape, seed=job.get("seed", 1))
        # Benches that choose their own waveform window say so; the others dump everything.
        fabric.waves(bool(job.get("waves")) and not job.get("waves_window"))
        fabric.wave_limit(int(job.get("waves_limit") or 0))
        result = registry.encode(await bench(fabric, **job.get("args", {})))
        out = {"ok": True, "result": result,
               "job": {"waves_stopped": fabric.wave_stopped(), "end_cycle": fabric.cycle}}
    except Exception as exc:  # noqa: BLE001 - reported to the host, which re-raises
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
               "error_info": getattr(exc, "info", None),
               "traceback": traceback.format_exc(), "job": {}}
    out["job"]["bench_wall_s"] = time.perf_counter() - t0
    with open(result_path, "w") as f:
        json.dump(out, f)
