# amaranth: UnusedElaboratable=no
"""Parameter validation: impossible mesh shapes give a ValueError naming the value.

Mesh objects built only to check their signature, or abandoned by a constructor error, are
never elaborated; the file-level pragma above keeps Amaranth from warning about them at
garbage collection (an error under ``filterwarnings = error``)."""

import pytest
from click.testing import CliRunner
from sparktile.hdl.mesh import Mesh, MeshShape, parse_mesh

from sparktile.cli import main


@pytest.mark.parametrize("rows,cols,bad", [(0, 4, "0"), (4, 33, "33"), (-1, 2, "-1"),
                                           (2.5, 2, "2.5"), (True, 2, "True")])
def test_bad_shape_names_value_and_range(rows, cols, bad):
    with pytest.raises(ValueError, match=rf"not {bad}.*|.*\[1, 32\], not {bad}"):
        MeshShape(rows, cols)


@pytest.mark.parametrize("text", ["4", "4x", "x4", "4x4x4", "ax4", ""])
def test_bad_mesh_text(text):
    with pytest.raises(ValueError, match="ROWSxCOLS"):
        parse_mesh(text)


def test_sram_range():
    with pytest.raises(ValueError, match=r"sram_kb must be an integer in \[1, 256\], not 0"):
        MeshShape(2, 2, sram_kb=0)


def test_mesh_needs_shape():
    with pytest.raises(TypeError, match="MeshShape"):
        Mesh((2, 2))


@pytest.mark.parametrize("rows,cols", [(1, 1), (1, 32), (32, 1), (3, 5)])
def test_valid_shapes(rows, cols):
    s = parse_mesh(f"{rows}x{cols}")
    assert (s.rows, s.cols, s.pes) == (rows, cols, rows * cols)
    m = Mesh(s)
    assert len(m.north_in) == cols and len(m.west_in) == rows


def test_cli_rejects_bad_mesh_without_traceback():
    r = CliRunner().invoke(main, ["stress", "--mesh", "0x3"])
    assert r.exit_code == 2
    assert "mesh rows must be an integer in [1, 32], not 0" in r.output
    assert "Traceback" not in r.output


def test_the_tiled_verilog_holds_one_tile_module_whatever_the_mesh():
    """The Verilator builds' Verilog: one tile module, instantiated at every position with
    its column on a port, so the C++ of a tile is generated and compiled once."""
    import re

    from sparktile.cosim.sim.build import TILE_MODULE, tiled_mesh_verilog
    text = tiled_mesh_verilog(MeshShape(2, 3))
    assert len(re.findall(rf"^module {TILE_MODULE}\(", text, re.M)) == 1
    instances = re.findall(rf"^\s*{TILE_MODULE} (\S+) \(", text, re.M)
    assert sorted(instances) == sorted(f"tile_{r}_{c}" for r in range(2) for c in range(3))
    i = text.index(f"{TILE_MODULE} tile_1_2 (")
    assert ".col(5'h02)" in text[i:i + 2000] and ".last_col(1'h1)" in text[i:i + 2000]


@pytest.mark.parametrize("kwargs,match", [
    ({"col": 1, "last_col": None}, "both be given or both be None"),
    ({"col": None, "last_col": False}, "both be given or both be None"),
])
def test_tile_coordinates_are_both_constants_or_both_ports(kwargs, match):
    from sparktile.hdl.tile import Tile
    with pytest.raises(ValueError, match=match):
        Tile(**kwargs)


def test_tile_with_coordinate_ports_has_them_in_its_signature():
    from sparktile.hdl.tile import Tile
    t = Tile(col=None, last_col=None)
    assert len(t.col) == 5 and len(t.last_col) == 1


@pytest.mark.parametrize("col", [-1, 32, True, 2.0])
def test_router_column_range(col):
    from sparktile.hdl.router import Router
    with pytest.raises(ValueError, match=r"\[0, 31\]"):
        Router(col=col, last_col=False)


def test_mesh_tile_module_must_be_an_identifier():
    with pytest.raises(ValueError, match="Verilog identifier"):
        Mesh(MeshShape(1, 1), tile_module="no such")
