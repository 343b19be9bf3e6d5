"""`sparktile regress` on a local Dask cluster (the 'regress' extra): jobs run, results and
merged coverage come back, bad options are one-line errors."""

import json

import pytest
from click.testing import CliRunner

from sparktile.cli import main

pytest.importorskip("distributed", reason="sparktile regress needs the 'regress' extra")


def test_a_small_regression_on_a_local_cluster(tmp_path):
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["regress", "--seeds", "2", "--meshes", "1x1",
                                  "--kinds", "stress,gemv", "--workers", "2",
                                  "--json", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["jobs"] == 4 and data["failures"] == 0
    assert {(j["kind"], j["seed"]) for j in data["results"]} == \
        {("stress", 1), ("stress", 2), ("gemv", 1), ("gemv", 2)}
    assert all(j["ok"] and "run_job(" in j["reproduce"] for j in data["results"])
    assert data["coverage_bins_hit"] > 0 and data["jobs_per_minute"] > 0


@pytest.mark.parametrize("args, words", [
    (["--kinds", "stress,nope"], "--kinds must be among"),
    (["--meshes", "0x3"], "mesh rows must be an integer in [1, 32], not 0"),
    (["--scheduler", "tcp://127.0.0.1:1"], "cannot reach the Dask scheduler"),
])
def test_bad_regress_options_are_one_line_errors(args, words):
    r = CliRunner().invoke(main, ["regress", "--seeds", "1", *args])
    assert r.exit_code == 2, r.output
    assert words in r.output and "Traceback" not in r.output
