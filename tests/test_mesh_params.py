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
