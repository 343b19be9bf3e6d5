"""``python -m sparktile.scripts.fabric_cycles``: bad input ends in one clear line (exit 1),
never a traceback: an impossible mesh, a context beyond what the mesh holds, an output path
whose folder does not exist. The measurement itself is run by hand for the README's table
(``docs/architecture.md``); the mesh ISS it reads is tested in ``test_decoder_mapping.py``."""

import pytest
from click.testing import CliRunner
from sparktile.scripts.fabric_cycles import main


@pytest.mark.parametrize("args,says", [
    (["--mesh", "0x3"], "not 0"),
    (["--mesh", "2x2", "--contexts", "500"], "2x2"),
    (["--mesh", "2x2", "--contexts", "100000"], "100000"),
    (["--mesh", "2x2", "--sram-kb", "3"], "3"),
    (["--plot", "/no/such/folder/cycles.png"], "/no/such/folder"),
])
def test_bad_input_is_one_clear_error(args, says):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1, r.output
    assert "Error:" in r.output and says in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert "Traceback" not in r.output
