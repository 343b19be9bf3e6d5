"""The build cache verifies what it reuses, and a build shows its progress.

These run without Verilator: ``cached_build`` and ``cached_text`` are driven with stand-in
builds, so each corruption the cache must survive is cheap to make.
"""

import io
import json
import sys

import pytest
from sparktile.cosim.sim.build_cache import cached_build, cached_text
from sparktile.cosim.sim.build_progress import BuildCommandError, count_units, run_build


def _builder(calls, payload=b"\x7fELF-simulator" * 100):
    def build(directory):
        calls.append(directory)
        (directory / "sim").write_bytes(payload)
    return build


def test_a_verified_entry_is_reused(tmp_path):
    calls = []
    entry = tmp_path / "entry"
    assert cached_build(entry, "sim", "the test sim", _builder(calls)) >= 0.0
    assert cached_build(entry, "sim", "the test sim", _builder(calls)) == 0.0
    assert len(calls) == 1


@pytest.mark.parametrize("corrupt", ["truncate", "empty", "overwrite", "delete", "stamp"])
def test_a_corrupt_entry_is_rebuilt_with_a_notice(tmp_path, capsys, corrupt):
    calls = []
    entry = tmp_path / "entry"
    cached_build(entry, "sim", "the test sim", _builder(calls))
    exe = entry / "sim"
    if corrupt == "truncate":
        exe.write_bytes(exe.read_bytes()[:10])
    elif corrupt == "empty":
        exe.write_bytes(b"")
    elif corrupt == "overwrite":
        exe.write_bytes(b"#!/bin/sh\nexit 139\n")
    elif corrupt == "delete":
        exe.unlink()
    else:
        (entry / ".built").write_text("12.5\n")          # an old-style or garbled stamp
    capsys.readouterr()
    cached_build(entry, "sim", "the test sim", _builder(calls))
    assert len(calls) == 2
    assert "corrupt" in capsys.readouterr().err
    assert exe.read_bytes() == b"\x7fELF-simulator" * 100
    assert json.loads((entry / ".built").read_text())["artifact"] == "sim"


def test_a_failed_build_leaves_no_entry_to_trust(tmp_path):
    entry = tmp_path / "entry"

    def broken(directory):
        (directory / "half").write_text("x")
        raise RuntimeError("compiler died")

    with pytest.raises(RuntimeError, match="compiler died"):
        cached_build(entry, "sim", "the test sim", broken)
    calls = []
    cached_build(entry, "sim", "the test sim", _builder(calls))
    assert len(calls) == 1


def test_a_build_without_its_artifact_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="produced no sim"):
        cached_build(tmp_path / "e", "sim", "the test sim", lambda d: None)


@pytest.mark.parametrize("corrupt", ["truncate", "edit", "sidecar"])
def test_a_corrupt_cached_text_is_regenerated(tmp_path, capsys, corrupt):
    path = tmp_path / "mesh.v"
    made = []

    def produce():
        made.append(1)
        return "module m;\nendmodule\n" * 50

    first = cached_text(path, produce)
    assert cached_text(path, produce) == first and len(made) == 1
    if corrupt == "truncate":
        path.write_text(first[:17])
    elif corrupt == "edit":
        path.write_text(first.replace("m;", "n;", 1))
    else:
        (tmp_path / "mesh.v.sha256").write_text("0" * 64)
    capsys.readouterr()
    assert cached_text(path, produce) == first
    assert len(made) == 2
    assert "does not match" in capsys.readouterr().err


def _fake_verilator_output(directory, parallel, done):
    (directory / "Vtop_classes.mk").write_text(
        f"VM_PARALLEL_BUILDS = {parallel}\n"
        "VM_CLASSES_FAST += \\\n  Vtop \\\n  Vtop___024root__0 \\\n\n"
        "VM_CLASSES_SLOW += \\\n  Vtop___024root__Slow \\\n\n"
        "VM_SUPPORT_FAST += \\\n  Vtop__Dpi \\\n\n"
        "VM_GLOBAL_FAST += \\\n  verilated \\\n  verilated_dpi \\\n\n")
    (directory / "Vtop.mk").write_text("VM_USER_CLASSES = \\\n  bfm \\\n\n")
    for name in ("Vtop", "Vtop___024root__0", "Vtop___024root__Slow", "Vtop__Dpi",
                 "Vtop__ALL", "verilated", "verilated_dpi", "bfm"):
        (directory / f"{name}.cpp").write_text("x" * 100)
    for name in done:
        (directory / f"{name}.o").write_text("")


@pytest.mark.parametrize("parallel,total", [(1, 7), (0, 4)])
def test_units_are_counted_from_the_generated_makefiles(tmp_path, parallel, total):
    _fake_verilator_output(tmp_path, parallel, ["verilated", "bfm"])
    hier = tmp_path / "Vsparktile_tile"
    hier.mkdir()
    (hier / "Vsparktile_tile_classes.mk").write_text(
        "VM_PARALLEL_BUILDS = 0\nVM_CLASSES_FAST += \\\n  Vsparktile_tile \\\n\n")
    (hier / "Vsparktile_tile__ALL.cpp").write_text("y" * 300)
    (hier / "Vsparktile_tile__ALL.o").write_text("")
    units = count_units(tmp_path)
    assert (units.total, units.done) == (total + 1, 3)
    assert units.bytes_done == 500


def test_run_build_reports_progress_and_names_a_failing_command(tmp_path):
    out = io.StringIO()
    script = ("import pathlib, time\n"
              f"d = pathlib.Path({str(tmp_path)!r})\n"
              "(d / 'Vtop_classes.mk').write_text('VM_PARALLEL_BUILDS = 0\\n"
              "VM_CLASSES_FAST += \\\\\\n  Vtop \\\\\\n\\n')\n"
              "(d / 'Vtop__ALL.cpp').write_text('x')\n"
              "time.sleep(1.5)\n(d / 'Vtop__ALL.o').write_text('')\n")
    import sparktile.cosim.sim.build_progress as bp
    old = bp.PLAIN_INTERVAL_S
    bp.PLAIN_INTERVAL_S = 0.0
    try:
        run_build([[sys.executable, "-c", script]], cwd=tmp_path, env=None,
                  log=tmp_path / "log", what="the fake model", directory=tmp_path, stream=out)
    finally:
        bp.PLAIN_INTERVAL_S = old
    text = out.getvalue()
    assert "the fake model: compiled 0 of 1 C++ units" in text
    assert text.rstrip().splitlines()[-1].startswith(
        "[sparktile] the fake model: compiled 1 of 1 C++ units")
    with pytest.raises(BuildCommandError, match=r"exited with 3 .*see .*log2"):
        run_build([[sys.executable, "-c", "raise SystemExit(3)"]], cwd=tmp_path, env=None,
                  log=tmp_path / "log2", what="x", directory=tmp_path, show=False)


def test_a_crashing_cached_simulator_names_the_entry_to_delete(tmp_path):
    """A cached simulator whose hash matches but that crashes (a miscompile, a bad host
    library) must say which cache entry to delete, not only that the run failed."""
    import os
    import stat

    from sparktile.cosim.sim.build import Build
    from sparktile.cosim.sim.harness import HARNESS_TOP
    from sparktile.cosim.sim.session import BenchError, run_job
    from sparktile.hdl.mesh import MeshShape

    entry = tmp_path / "entry"
    entry.mkdir()
    exe = entry / HARNESS_TOP
    exe.write_text("#!/bin/sh\nkill -SEGV $$\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    shape = MeshShape(1, 1)
    build = Build(shape=shape, directory=entry, key="fake", waves=False, seconds=0.0)
    env = dict(os.environ)
    from sparktile.cosim.benches.stress import stress
    with pytest.raises(BenchError) as e:
        run_job(shape, stress, {"wavelets": 1, "seed": 1,
                                                           "max_stall": 0.0}, build=build)
    os.environ.clear()
    os.environ.update(env)
    first = str(e.value).splitlines()[0]
    assert f"delete its cache entry {entry}" in first, first
    assert "killed by SIGSEGV" in first, first


def test_a_crashing_plain_harness_names_the_entry_to_delete(tmp_path, monkeypatch):
    import stat

    from sparktile.cosim.sim import build as b
    from sparktile.hdl.mesh import MeshShape

    exe = tmp_path / "entry" / "plain_harness"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\nkill -SEGV $$\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(b, "build_plain", lambda shape, threads=1: exe)
    with pytest.raises(b.BuildError, match=f"killed by SIGSEGV.*delete its cache entry "
                                           f"{exe.parent}"):
        b.run_plain(MeshShape(1, 1), tmp_path / "replay.bin")


def test_run_plain_reports_the_harness_cpu_time(tmp_path, monkeypatch):
    """The plain harness's speed by CPU time: its process's CPU seconds, start-up included,
    divided into the cycles it reports (a stand-in that burns CPU and prints the JSON line)."""
    import stat
    import sys

    from sparktile.cosim.sim import build as b
    from sparktile.hdl.mesh import MeshShape

    exe = tmp_path / "entry" / "plain_harness"
    exe.parent.mkdir()
    exe.write_text(f"#!{sys.executable}\n"
                   "import time\n"
                   "t = time.process_time()\n"
                   "while time.process_time() - t < 0.05: pass\n"
                   "print('{\"phases\": 1, \"cycles\": 1000, \"wall_s\": 0.05, '\n"
                   "      '\"cycles_per_s\": 2e4}')\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(b, "build_plain", lambda shape, threads=1: exe)
    r = b.run_plain(MeshShape(1, 1), tmp_path / "replay.bin")
    assert r["cycles"] == 1000 and r["cycles_per_s"] == 2e4
    assert r["cpu_s"] >= 0.05, r
    assert r["cycles_per_cpu_s"] == pytest.approx(1000 / r["cpu_s"])


def test_a_cached_simulator_runs_after_the_venv_that_built_it_is_gone(tmp_path):
    """A Verilated harness finds cocotb's VPI library through the RUNPATH of the virtual
    environment that built it; the cache key does not name that folder, so a build made by a
    since-deleted clone's .venv must still start (this failed in a clean clone: 'error while
    loading shared libraries: libcocotbvpi_verilator.so'). A copy of the 1x1 build whose
    RUNPATH names a folder that does not exist stands in for it."""
    import os
    import re
    import shutil

    from sparktile.cosim.benches.stress import stress
    from sparktile.cosim.sim.build import Build, build_mesh
    from sparktile.cosim.sim.harness import HARNESS_TOP
    from sparktile.cosim.sim.session import run_job
    from sparktile.hdl.mesh import MeshShape

    shape = MeshShape(1, 1)
    built = build_mesh(shape)
    entry = tmp_path / "entry"
    shutil.copytree(built.directory, entry)
    exe = entry / HARNESS_TOP
    image = exe.read_bytes()
    # the RUNPATH of whichever venv built the cached entry (this one's or another clone's)
    found = re.findall(rb"/[^\x00:]*/cocotb/libs", image)
    assert found, "the harness no longer names a cocotb folder: revisit this test"
    for runpath in set(found):
        gone = (b"/gone" * len(runpath))[:len(runpath)]
        assert not os.path.exists(gone)
        image = image.replace(runpath, gone)
    exe.write_bytes(image)
    build = Build(shape=shape, directory=entry, key="moved", waves=False, seconds=0.0)
    result = run_job(shape, stress, {"wavelets": 20, "seed": 1, "max_stall": 0.0},
                     build=build)
    assert result.delivered > 0 and result.clean


def test_the_build_style_follows_the_mesh_and_the_environment(monkeypatch):
    from sparktile.cosim.sim.build import SHARED_MAX_PES, build_style
    from sparktile.hdl.mesh import MeshShape

    from sparktile.toolchain import ToolchainError
    monkeypatch.delenv("SPARKTILE_BUILD", raising=False)
    assert build_style(MeshShape(8, 8)) == "shared" and SHARED_MAX_PES == 64
    assert build_style(MeshShape(8, 9)) == "tiled"
    assert build_style(MeshShape(2, 2, pe="core")) == "tiled"     # cores: tiled at any size
    monkeypatch.setenv("SPARKTILE_BUILD", "flat")
    assert build_style(MeshShape(2, 2, pe="core")) == "flat"
    monkeypatch.setenv("SPARKTILE_BUILD", "fastest")
    with pytest.raises(ToolchainError, match="'fastest'"):
        build_style(MeshShape(2, 2))


def _tile_module(verilog_text: str) -> str:
    from sparktile.cosim.sim.build import TILE_MODULE
    from sparktile.cosim.sim.harness import MESH_MODULE
    start = verilog_text.index(f"module {TILE_MODULE}(")
    return verilog_text[start:verilog_text.index(f"module {MESH_MODULE}(")]


def _comb_blocks(text: str) -> list[str]:
    """The ``always @*`` blocks of Yosys's Verilog (each ends at its first ``end`` line at
    the block's indentation)."""
    blocks, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "always @* begin":
            indent = line[:len(line) - len(line.lstrip())]
            j = next(k for k in range(i + 1, len(lines)) if lines[k] == indent + "end")
            blocks.append("\n".join(lines[i:j + 1]))
    return blocks


def test_the_tile_module_resets_asynchronously_so_no_logic_between_edges_reads_rst(monkeypatch):
    """The one tile module of the Verilator builds: with Amaranth's synchronous reset every
    register's next state is an ``always @*`` block that ends ``if (rst) ...``, which makes
    it depend on the tile's ``rst`` port (Verilator then evaluates it at every call of the
    hierarchical block); the default wraps the tile in an asynchronous-reset domain, whose
    flip-flops take ``rst`` themselves. Both modules have the same ports and submodules; the
    cache keys differ; a bad value is named."""
    import os
    import re

    from sparktile.cosim.sim.build import tile_reset, tiled_mesh_verilog
    from sparktile.hdl.mesh import MeshShape

    from sparktile.toolchain import ToolchainError

    def ports(text):
        header = re.search(r"module \w+\(([^;]*)\);", text).group(1)
        return sorted(p.strip() for p in header.split(","))

    shape = MeshShape(1, 2, pe="core", sram_kb=4)
    monkeypatch.delenv("SPARKTILE_TILE_RESET", raising=False)
    assert tile_reset() == "async"
    fast = _tile_module(tiled_mesh_verilog(shape))
    monkeypatch.setenv("SPARKTILE_TILE_RESET", "sync")
    slow = _tile_module(tiled_mesh_verilog(shape))
    assert ports(fast) == ports(slow) and {"clk", "rst", "col"} <= set(ports(fast))
    # the same module hierarchy (the coverage points are named by it)
    modules = re.compile(r"^module \\?([^\s(]+)", re.M)
    assert modules.findall(fast) == modules.findall(slow)
    assert any(m.endswith("pe.q0") for m in modules.findall(fast))
    reads_rst = re.compile(r"\bif \(rst\)")
    assert sum(bool(reads_rst.search(b)) for b in _comb_blocks(slow)) > 100
    assert not any(reads_rst.search(b) for b in _comb_blocks(fast))
    assert fast.count("always @(posedge clk, posedge rst)") > 100
    from sparktile.cosim.sim import build
    paths = {}
    monkeypatch.setattr(build, "cached_text", lambda path, produce: paths.setdefault(
        os.environ["SPARKTILE_TILE_RESET"], path.name))
    for value in ("sync", "async"):
        monkeypatch.setenv("SPARKTILE_TILE_RESET", value)
        build.mesh_verilog(shape, "tiled")
    assert paths["sync"] != paths["async"]          # each its own cached Verilog
    monkeypatch.setenv("SPARKTILE_TILE_RESET", "asynchronous")
    with pytest.raises(ToolchainError, match="one of async, sync, not 'asynchronous'"):
        tile_reset()
