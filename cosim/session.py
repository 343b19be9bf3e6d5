"""Running a bench in the Verilated harness from the host (pytest, the CLI)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

from ..hdl.mesh import MeshShape
from ..toolchain import apply_verilator_env
from .build import Build, build_mesh
from .harness import HARNESS_TOP

__all__ = ["run_job", "BenchError"]


class BenchError(RuntimeError):
    """A bench failed inside the simulator; the message carries its error and log."""


def run_job(shape: MeshShape, entry: str, args: dict | None = None, *, seed: int = 1,
            waves: str | None = None, build: Build | None = None, quiet: bool = True,
            threads: int = 1) -> dict:
    """Run the async bench ``entry`` (``"module:function"``) on a mesh of ``shape``.

    ``waves`` names a VCD file to dump (the build then includes tracing). Returns the bench's
    result dict with ``sim_wall_s`` (time inside the simulator) and ``build_s`` added.
    """
    from cocotb_tools.runner import get_runner  # noqa: F401 - ensure cocotb is importable

    apply_verilator_env()
    build = build or build_mesh(shape, waves=bool(waves), threads=threads)
    from .build import _runner
    with tempfile.TemporaryDirectory(prefix="sparktile-") as tmp:
        tmp = Path(tmp)
        result_path = tmp / "result.json"
        job = {"shape": {"rows": shape.rows, "cols": shape.cols, "sram_kb": shape.sram_kb,
                         "acc_depth": shape.acc_depth},
               "entry": entry, "args": args or {}, "seed": seed, "result": str(result_path)}
        job_path = tmp / "job.json"
        job_path.write_text(json.dumps(job))
        runner = _runner()
        runner.hdl_toplevel = HARNESS_TOP
        plusargs = [f"+waves={os.path.abspath(waves)}"] if waves else []
        log = tmp / "sim.log"
        t0 = time.perf_counter()
        quieted = contextlib.redirect_stdout(io.StringIO()) if quiet else None
        try:
            with quieted or contextlib.nullcontext():
                runner.test(
                    test_module="sparktile.cosim.benches.job",
                    hdl_toplevel=HARNESS_TOP,
                    hdl_toplevel_lang="verilog",
                    build_dir=build.directory,
                    test_dir=tmp,
                    extra_env={"SPARKTILE_JOB": str(job_path),
                               "COCOTB_RANDOM_SEED": str(seed), "PYTHONWARNINGS": "default"},
                    plusargs=plusargs,
                    log_file=log if quiet else None,
                    seed=seed,
                )
        except (RuntimeError, SystemExit) as exc:
            tail = log.read_text()[-4000:] if log.exists() else ""
            raise BenchError(f"the simulator failed running {entry} (seed {seed}): {exc}\n"
                             f"{tail}") from None
        wall = time.perf_counter() - t0
        if not result_path.exists():
            tail = log.read_text()[-4000:] if log.exists() else ""
            raise BenchError(f"the simulator ended without a result for {entry}:\n{tail}")
        result = json.loads(result_path.read_text())
    if not result.get("ok"):
        raise BenchError(f"{entry} failed in the simulator (seed {seed}): {result['error']}\n"
                         f"{result.get('traceback', '')}")
    result["build_s"] = build.seconds
    result["process_wall_s"] = wall
    return result
