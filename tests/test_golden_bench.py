"""Decode-speed benchmark (``pytest -m bench -s``): prints tokens/s and ratios in one run."""

import pytest
from sparktile.scripts import bench_golden_decode


@pytest.mark.bench
def test_decode_speed(capsys):
    res = bench_golden_decode.main(["--tokens", "32"])
    with capsys.disabled():
        print("\n" + capsys.readouterr().out)
    for r in res.values():
        assert r["float"] > 0 and r["int8"] > 0


@pytest.mark.bench
def test_int_path_quality_and_speed(capsys):
    """Bits per byte, top-1 agreement and tokens/s of float/int8/int (a measurement)."""
    from sparktile.scripts import bench_golden_int

    res = bench_golden_int.main(["--max-bytes", "30000", "--ablation"])
    with capsys.disabled():
        print("\n" + capsys.readouterr().out)
    assert set(res["quality"]) >= {"float", "int8", "int"}
