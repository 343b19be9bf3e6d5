"""The measurement scripts (``python -m sparktile.scripts.NAME``): bad input ends in one clear
line naming the value (exit 1 or 2), never a traceback, and before any long run: an
impossible mesh, a context beyond what the mesh holds, an SRAM size no PE takes, an output path
whose folder does not exist. The measurements themselves are run by hand for the README's
tables; what they read (the mesh ISS, the Verilator build, Yosys) is tested elsewhere."""

import pytest
from click.testing import CliRunner
from sparktile.scripts import bench_mesh_scaling, fabric_cycles, synth_pe_cost


@pytest.mark.parametrize("args,says", [
    (["--mesh", "0x3"], "not 0"),
    (["--mesh", "2x2", "--contexts", "500"], "2x2"),
    (["--mesh", "2x2", "--contexts", "100000"], "100000"),
    (["--mesh", "2x2", "--sram-kb", "3"], "3"),
    (["--plot", "/no/such/folder/cycles.png"], "/no/such/folder"),
])
def test_fabric_cycles_bad_input_is_one_clear_error(args, says):
    r = CliRunner().invoke(fabric_cycles.main, args)
    assert r.exit_code == 1, r.output
    assert "Error:" in r.output and says in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


@pytest.mark.parametrize("sizes,says", [("0x0", "not 0"), ("2y2", "2y2"), ("2x2,40x1", "40"),
                                        ("", "ROWSxCOLS")])
def test_bench_mesh_scaling_names_a_bad_size(sizes, says):
    r = CliRunner().invoke(bench_mesh_scaling.main, ["--sizes", sizes])
    assert r.exit_code == 2, r.output
    assert "--sizes" in r.output and says in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


@pytest.mark.parametrize("argv,says", [(["100"], "not 100"), (["--sizes"], "--sizes"),
                                       (["4096", "2"], "4096 2"), (["0"], "not 0"),
                                       (["131072"], "not 131072")])
def test_synth_pe_cost_names_a_bad_sram_size_before_building_a_design(monkeypatch, argv, says):
    """... and builds no design first: an Amaranth elaboratable whose constructor raised
    still warns, when collected, that it was never used (under the tests' warnings-as-errors
    that once failed another test's setup, wherever the collection happened)."""
    built = []
    monkeypatch.setattr(synth_pe_cost, "PE", lambda **kw: built.append(("pe", kw)))
    monkeypatch.setattr(synth_pe_cost, "Core", lambda **kw: built.append(("core", kw)))
    with pytest.raises(SystemExit) as exc:
        synth_pe_cost.main(argv)
    assert says in str(exc.value.code), exc.value.code
    assert built == []


@pytest.mark.parametrize("args,says", [
    (["--configs", "2x2/gemv"], "'gemv'"),
    (["--configs", "2x2,0x3"], "not 0"),
    (["--configs", "2x2/core/abc"], "'abc'"),
    (["--configs", "2y2"], "2y2"),
    (["--configs", ", ,"], "at least one"),
    (["--json", "/no/such/folder/b.json"], "/no/such/folder"),
])
def test_bench_ccache_bad_input_is_one_clear_error_before_any_build(monkeypatch, args, says):
    from sparktile.scripts import bench_ccache
    monkeypatch.setattr(bench_ccache, "measure", lambda *a: pytest.fail("a build started"))
    r = CliRunner().invoke(bench_ccache.main, args)
    assert r.exit_code == 2, r.output
    assert "Error" in r.output and says in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
