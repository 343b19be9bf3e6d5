"""The one cocotb test every sparktile simulation runs: load a job, run its bench, report.

The host (:func:`sparktile.cosim.session.run_job`) writes a JSON job naming an async bench
function (``module:function``) and its arguments, and sets ``SPARKTILE_JOB`` to its path. The
bench receives a :class:`~sparktile.cosim.fabric.Fabric` and returns a JSON-serialisable dict,
written next to the job. One Verilator build serves every kind of bench.
"""

import importlib
import json
import os
import time
import traceback

import cocotb
from sparktile.cosim.fabric import Fabric
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
        module, func = job["entry"].split(":")
        bench = getattr(importlib.import_module(module), func)
        fabric = Fabric(dut, shape, seed=job.get("seed", 1))
        # Benches that choose their own waveform window say so; the others dump everything.
        fabric.waves(bool(job.get("waves")) and not job.get("waves_window"))
        fabric.wave_limit(int(job.get("waves_limit") or 0))
        result = await bench(fabric, **job.get("args", {}))
        result = {"ok": True, **result, "waves_stopped": fabric.wave_stopped(),
                  "end_cycle": fabric.cycle}
    except Exception as exc:  # noqa: BLE001 - reported to the host, which re-raises
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                  "error_info": getattr(exc, "info", None),
                  "traceback": traceback.format_exc()}
    result["bench_wall_s"] = time.perf_counter() - t0
    with open(result_path, "w") as f:
        json.dump(result, f)
