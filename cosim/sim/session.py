"""Running a bench in the Verilated harness from the host (pytest, the CLI)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

from ...hdl.mesh import MeshShape
from ...toolchain import apply_verilator_env
from .build import Build, build_mesh
from .harness import HARNESS_TOP

__all__ = ["run_job", "BenchError", "reproduce_command"]


def _shape_fields(shape: MeshShape) -> dict:
    return {"rows": shape.rows, "cols": shape.cols, "sram_kb": shape.sram_kb,
            "acc_depth": shape.acc_depth, **shape.options()}


def reproduce_command(shape: MeshShape, bench, args: dict | None, seed: int,
                      waves: str = "fail.vcd") -> str:
    """A shell command that reruns bench ``bench`` as the call did, dumping ``waves``."""
    from .registry import name_of
    module, func = name_of(bench).split(":")
    code = (f"from {module} import {func}; from sparktile.cosim.sim.session import run_job; "
            f"from sparktile.hdl.mesh import MeshShape; "
            f"print(run_job(MeshShape(**{_shape_fields(shape)!r}), {func}, {dict(args or {})!r}, "
            f"seed={seed}, waves={waves!r}))")
    return f".venv/bin/python -c {json.dumps(code)}"


class BenchError(RuntimeError):
    """A bench failed inside the simulator; the message carries its error and log.

    ``info`` holds the bench's structured description of the failure, when it gave one.
    """

    def __init__(self, message: str, info: dict | None = None):
        super().__init__(message)
        self.info = info


def cocotb_library_path() -> str:
    """``LD_LIBRARY_PATH`` for a cached simulator: this environment's cocotb libraries first.

    A Verilated executable finds ``libcocotbvpi_verilator.so`` through the RUNPATH of the
    virtual environment that built it, which the cache key does not name (the cocotb version
    is in it, the folder is not): a build made by a clone's ``.venv`` that has since been
    deleted would fail to start. The loader searches ``LD_LIBRARY_PATH`` before a RUNPATH, so
    every run uses the running cocotb's own copy of the same library.
    """
    from cocotb_tools.config import libs_dir
    rest = os.environ.get("LD_LIBRARY_PATH", "")
    return os.pathsep.join([str(libs_dir)] + ([rest] if rest else []))


def run_job(shape: MeshShape, bench, args: dict | None = None, *, seed: int = 1,
            waves: str | None = None, build: Build | None = None, quiet: bool = True,
            threads: int = 1, waves_window: bool = False, progress=None,
            waves_limit: int = 0, coverage: str | None = None):
    """Run the registered async ``bench`` (the function itself, see
    :mod:`sparktile.cosim.sim.registry`) on a mesh of ``shape``.

    ``waves`` names a VCD file to dump (the build then includes tracing); with
    ``waves_window`` the bench enables dumping itself; ``waves_limit`` (bytes, 0 for none)
    closes the dump once the file reaches it (the result's ``waves_stopped`` then says at
    which cycle). ``progress(dict)`` is called, from this
    thread, with each JSON line the bench appends to the file passed to it as ``progress``.
    ``coverage`` names a file for the run's line and toggle coverage counts (the build
    then has Verilator's coverage; :mod:`.coverage` merges and reports them).
    Returns the bench's result dataclass; its ``job``
    (:class:`~sparktile.cosim.sim.registry.JobInfo`) holds the end cycle, the build and
    process times.
    """
    from cocotb_tools.runner import get_runner  # noqa: F401 - ensure cocotb is importable

    from .registry import JobInfo, decode, name_of
    entry = name_of(bench)   # before any build: not a bench is the caller's bug, named now
    apply_verilator_env()
    build = build or build_mesh(shape, waves=bool(waves), threads=threads,
                                coverage=bool(coverage))
    from .build import _runner
    with tempfile.TemporaryDirectory(prefix="sparktile-") as tmp:
        tmp = Path(tmp)
        result_path = tmp / "result.json"
        job = {"shape": _shape_fields(shape),
               "entry": entry, "args": dict(args or {}), "seed": seed,
               "result": str(result_path), "waves": bool(waves), "waves_window": waves_window,
               "waves_limit": int(waves_limit) if waves else 0}
        progress_path = tmp / "progress.jsonl"
        if progress is not None:
            progress_path.touch()
            job["args"]["progress"] = str(progress_path)
        job_path = tmp / "job.json"
        job_path.write_text(json.dumps(job))
        runner = _runner()
        runner.hdl_toplevel = HARNESS_TOP
        plusargs = [f"+waves={os.path.abspath(waves)}"] if waves else []
        if coverage:
            plusargs.append(f"+verilator+coverage+file+{os.path.abspath(coverage)}")
        log = tmp / "sim.log"
        t0 = time.perf_counter()
        # (Not with a progress callback: redirecting stdout is process-wide and would swallow
        # what the callback prints while the simulator thread runs.)
        quieted = contextlib.redirect_stdout(io.StringIO()) if quiet and not progress else None

        def simulate():
            with quieted or contextlib.nullcontext():
                runner.test(
                    test_module="sparktile.cosim.sim.job",
                    hdl_toplevel=HARNESS_TOP,
                    hdl_toplevel_lang="verilog",
                    build_dir=build.directory,
                    test_dir=tmp,
                    extra_env={"SPARKTILE_JOB": str(job_path),
                               "COCOTB_RANDOM_SEED": str(seed), "PYTHONWARNINGS": "default",
                               "LD_LIBRARY_PATH": cocotb_library_path()},
                    plusargs=plusargs,
                    log_file=log if quiet else None,
                    seed=seed,
                )

        try:
            if progress is None:
                simulate()
            else:
                _with_progress(simulate, progress_path, progress)
        except (RuntimeError, SystemExit) as exc:
            tail = log.read_text()[-4000:] if log.exists() else ""
            raise BenchError(f"the simulator failed running {entry} (seed {seed}): "
                             f"{_describe_exit(exc)} (if the simulator itself crashed, delete "
                             f"its cache entry {build.directory} to rebuild it)\n{tail}") from None
        wall = time.perf_counter() - t0
        if not result_path.exists():
            tail = log.read_text()[-4000:] if log.exists() else ""
            raise BenchError(f"the simulator ended without a result for {entry}:\n{tail}")
        out = json.loads(result_path.read_text())
    if not out.get("ok"):
        raise BenchError(f"{entry} failed in the simulator (seed {seed}): {out['error']}\n"
                         f"{out.get('traceback', '')}"
                         f"reproduce with waves: "
                         f"{reproduce_command(shape, bench, args, seed)}", out.get("error_info"))
    job = JobInfo(**out["job"], build_s=build.seconds, process_wall_s=wall)
    return decode(entry, out["result"], job)


def _describe_exit(exc: BaseException) -> str:
    """The runner's failure, with a negative return code named as the signal that killed the
    simulator (``-11`` -> ``killed by SIGSEGV``)."""
    import re

    from .build_progress import exit_description
    text = str(exc)
    m = re.search(r"return code:? (-\d+)", text)
    return f"{text} ({exit_description(int(m.group(1)))})" if m else text


def _with_progress(simulate, path: Path, callback) -> None:
    """Run ``simulate`` in a thread while feeding ``callback`` the lines appended to ``path``."""
    import threading
    error: list[BaseException] = []

    def target():
        try:
            simulate()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    with open(path) as f:
        pending = ""
        while True:
            alive = thread.is_alive()
            pending += f.read()
            *lines, pending = pending.split("\n")
            for line in lines:
                if line.strip():
                    callback(json.loads(line))
            if not alive:
                break
            thread.join(0.1)
    if error:
        raise error[0]
