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
