"""Each reproducer of issue 17 that the simulation commands own gives exit 2 and one error
line naming the bad value, and a bad output path stops the command before any simulation."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from sparktile.cli import main


@pytest.fixture
def no_sim(monkeypatch):
    """Fail the test if a simulation is started."""
    def boom(*a, **k):
        raise AssertionError("a simulation started")
    monkeypatch.setattr("sparktile.cosim.sim.session.run_job", boom)


def _run(args):
    r = CliRunner().invoke(main, args)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r


@pytest.mark.parametrize("args, bad", [
    (["gemv", "--mesh", "2x2", "--stall", "nan"], "nan"),
    (["stress", "--mesh", "2x2", "--max-stall", "nan"], "nan"),
    (["gemv", "--mesh", "2x2", "--stall", "inf"], "inf"),
    (["gemv", "--mesh", "2x2", "--seed", "-1"], "-1"),
    (["stress", "--mesh", "2x2", "--seed", "-1"], "-1"),
    (["stress", "--mesh", "2x2", "--seed", str(2**32)], str(2**32)),
    (["run", "--seed", "-1"], "-1"),
    (["run", "--temperature", "nan"], "nan"),
    (["gemv", "--mesh", "2x2", "--waves-limit", "-1"], "-1"),
    (["gemv", "--mesh", "2x2", "--pe", "cpu"], "cpu"),
    (["gemv", "--mesh", "2x2", "--pe", "core", "--sram-kb", "3"], "3"),
    (["gemv", "--mesh", "1x1", "--pe", "core", "--m", "4", "--n", "1200"], "1200"),
])
def test_bad_numbers_are_refused_at_parse_time(no_sim, args, bad):
    r = _run(args)
    assert r.exit_code == 2
    assert "Traceback" not in r.output
    assert any(bad in line and "rror" in line for line in r.output.splitlines()), r.output


@pytest.mark.parametrize("cmd", [["gemv", "--mesh", "2x2", "--m", "4", "--n", "4"],
                                 ["stress", "--mesh", "2x2"], ["run", "--max-tokens", "1"]])
@pytest.mark.parametrize("opt", ["--json", "--waves"])
def test_an_unwritable_output_stops_before_the_simulation(no_sim, tmp_path, cmd, opt):
    path = tmp_path / "nodir" / "sub" / "r.out"
    r = _run(cmd + [opt, str(path)])
    assert r.exit_code == 2, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(tmp_path / "nodir" / "sub") in errors[0], r.output
    r = _run(cmd + [opt, str(tmp_path)])            # a folder, not a file
    assert r.exit_code == 2 and ("is a folder" in r.output or "is a directory" in r.output)


def test_verilog_to_a_missing_folder_is_one_line(tmp_path):
    r = _run(["verilog", "--mesh", "1x1", "-o", str(tmp_path / "nodir" / "x.v")])
    assert r.exit_code == 2 and "does not exist" in r.output and "Traceback" not in r.output


def test_a_report_that_cannot_be_written_is_saved_elsewhere(tmp_path, monkeypatch):
    from sparktile import report
    target = tmp_path / "gone" / "r.json"
    with pytest.raises(report.UserError, match="saved to") as err:
        report.save_json(target, {"cycles": 5})
    saved = str(err.value).split("saved to '")[1].split("'")[0]
    assert '"cycles": 5' in Path(saved).read_text()
    Path(saved).unlink()


def test_reports_are_replaced_atomically(tmp_path):
    from sparktile import report
    p = tmp_path / "r.json"
    report.save_json(p, {"a": 1})
    report.save_json(p, {"a": 2})
    assert '"a": 2' in p.read_text() and [f.name for f in tmp_path.iterdir()] == ["r.json"]


def test_missing_waves_after_a_run_is_an_error(tmp_path):
    from sparktile.cosim import waves
    from sparktile.hdl.mesh import MeshShape

    from sparktile.errors import UserError
    with pytest.raises(UserError, match="no waveform was written"):
        waves.check_written(tmp_path / "w.vcd", {}, MeshShape(2, 2), 256)
    (tmp_path / "w.vcd").write_text("")
    with pytest.raises(UserError, match="empty"):
        waves.check_written(tmp_path / "w.vcd", {}, MeshShape(2, 2), 256)


@pytest.mark.parametrize("cmd", [["fpga", "demo", "--port", "sim"],
                                 ["fpga", "build"], ["extrapolate"], ["calibrate", "--out"]])
def test_other_reports_are_checked_before_the_work(monkeypatch, tmp_path, cmd):
    """fpga demo ran 145 s on the virtual board, then lost its --json report."""
    def boom(*a, **k):
        raise AssertionError("the work started")
    for target in ("sparktile.cosim.board.host.open_transport",
                   "sparktile.scripts.fpga_build.build_board",
                   "sparktile.scripts.extrapolate.run_calibration"):
        monkeypatch.setattr(target, boom)
    path = str(tmp_path / "nodir" / "r.json")
    args = cmd + [path] if cmd[-1] == "--out" else cmd + ["--json", path]
    r = _run(args)
    assert r.exit_code == 2, r.output
    assert "does not exist" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("args, bad", [
    (["--sizes", "0x4"], "0"), (["--sizes", "8by8"], "8by8"), (["--threads", "2,1"], "2,1"),
    (["--threads", "1,x"], "1,x"), (["--threads", "1,0"], "1,0"),
])
def test_the_threads_benchmark_refuses_bad_sizes_and_thread_counts_before_any_build(
        monkeypatch, args, bad):
    from sparktile.scripts import bench_threads

    def boom(*a, **k):
        raise AssertionError("a measurement started")
    monkeypatch.setattr(bench_threads, "measure", boom)
    r = CliRunner().invoke(bench_threads.main, args)
    assert r.exit_code == 2, r.output
    assert bad in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("args, needle", [
    # sampling runs on the fabric too: these reach the fit check, which refuses the mesh
    (["run", "--on-fabric", "all", "--temperature", "0.7", "--top-k", "5", "--top-p", "0.9",
      "--mesh", "2x2"], "does not fit the 2x2 mesh"),
    (["run", "--mesh", "2x2", "--weights", "streaming"], "--weights is for --on-fabric matmuls"),
    (["run", "--on-fabric", "matmuls", "--context", "8"], "--context is for --on-fabric all"),
    (["run", "--layout", "chain"], "--layout is for --on-fabric matmuls"),
    (["run", "--on-fabric", "matmuls", "--layout", "tree"], "'tree' is not one of"),
    (["gemv", "--pe", "core", "--layout", "strips"], "--layout strips is a mapping of --pe gemv"),
    (["run", "--on-fabric", "matmuls", "--mesh", "1x1", "--sram-kb", "1",
      "--weights", "stationary"], "stationary weights need"),
    (["run", "--on-fabric", "matmuls", "--check", "every-op"],
     "--check every-op is for --on-fabric all"),
    (["run", "--mesh", "1x1"], "at least 2 PEs"),                     # all: the default
    (["run", "--on-fabric", "all", "--mesh", "2x2"], "does not fit the 2x2 mesh"),
    (["run", "--on-fabric", "all", "--mesh", "8x8", "--sram-kb", "48"], "power-of-two"),
    (["run", "--on-fabric", "all", "--mesh", "8x8", "--context", "5000"],
     "exceeds the model's max_position_embeddings (512)"),
    (["run", "--on-fabric", "all", "--mesh", "8x8", "--max-tokens", "500"],
     "positions; the 8x8 mesh's KV cache holds"),
])
def test_on_fabric_errors_before_any_simulation(no_sim, args, needle):
    """``run --on-fabric all``: what cannot run is refused in one line before a build."""
    r = _run(args)
    assert r.exit_code == 2, r.output
    assert needle in r.output and "Traceback" not in r.output, r.output


@pytest.mark.parametrize("temperature,top_k,top_p,model", [
    (0.0, 40, None, None), (0.7, 5, 0.9, None), (1.3, 40, None, "dir with space/model.gguf"),
    (0.25, None, 0.5, None)])
def test_a_reproducing_command_keeps_the_sampling_and_the_model(temperature, top_k, top_p,
                                                               model):
    """A mismatch's 'Reproduce:' line must draw the same tokens: its sampling options and the
    model parse back to what the failed run had (greedy stays greedy)."""
    import shlex

    from sparktile.cosim.cli import _sampling_flags, run_command
    argv = shlex.split(_sampling_flags(temperature, top_k, top_p, model))
    ctx = run_command.make_context("run", argv)
    assert ctx.params["temperature"] == temperature and ctx.params["model"] == model
    if temperature:
        assert ctx.params["top_p"] == top_p
        assert ctx.params["top_k"] == (top_k or 40)
