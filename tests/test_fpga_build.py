"""FPGA builds with the YoWASP toolchain (``pytest -m fpga``; not in CI).

A place-and-route run of the ULX3S (ECP5-85F) takes several minutes on two cores, and the
first run also compiles YoWASP's WebAssembly tools into ``~/.cache/YoWASP``, so CI leaves
these out (the ``fpga`` marker is deselected by default). The virtual-board tests
(``test_fpga_vboard.py``) exercise the same FPGA top in CI.
"""

from __future__ import annotations

import pathlib

import pytest
from sparktile.scripts.fpga_build import FpgaBuildError

pytestmark = pytest.mark.fpga


def _have_tools(family):
    from sparktile.scripts.fpga_build import FpgaBuildError, toolchain_env
    try:
        toolchain_env(family)
        import amaranth_boards  # noqa: F401
    except (FpgaBuildError, ImportError) as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("board,mesh,family", [
    ("ulx3s-85f", "1x1", "ecp5"),
    ("icebreaker", "1x1", "ice40"),      # the small-FPGA tile: 99 % of the UP5K's cells
])
def test_fpga_build_produces_a_bitstream_and_a_report(tmp_path, board, mesh, family):
    missing = _have_tools(family)
    if missing:
        pytest.skip(f"FPGA toolchain not installed (pip install 'sparktile[fpga]'): {missing}")
    from sparktile.scripts.fpga_build import build_board
    r = build_board(board, mesh, build_dir=tmp_path)
    assert pathlib.Path(r["bitstream"]).stat().st_size > 0
    for kind in ("luts", "dsps", "brams"):
        assert r["resources"][kind]["used"] > 0, kind
    assert r["fmax"] and all(v["achieved_mhz"] > 0 for v in r["fmax"].values())


def test_a_mesh_too_big_for_the_board_names_the_resource(tmp_path):
    # A 1x2 mesh cannot fit the iCE40UP5K: the error names the resource and the numbers.
    missing = _have_tools("ice40")
    if missing:
        pytest.skip(f"FPGA toolchain not installed (pip install 'sparktile[fpga]'): {missing}")
    from sparktile.scripts.fpga_build import build_board
    with pytest.raises(FpgaBuildError, match=r"does not fit: ICESTORM_LC \d+/5280"):
        build_board("icebreaker", "1x2", build_dir=tmp_path)
