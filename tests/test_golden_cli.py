"""``sparktile generate`` and ``sparktile eval`` (click's runner, in process)."""

import json
import re

from click.testing import CliRunner

from sparktile.cli import main


def test_generate_default_model():
    r = CliRunner().invoke(main, ["generate", "--prompt", "def f(x):", "--max-tokens", "8",
                                  "--mode", "int8"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("def f(x):")
    assert re.search(r"int8: \d+ tokens, .* [\d.]+ tokens/s", r.output)


def test_generate_seeded_sampling_is_reproducible():
    args = ["generate", "--prompt", "import ", "--max-tokens", "12", "--seed", "3"]
    a, b = CliRunner().invoke(main, args), CliRunner().invoke(main, args)
    assert a.exit_code == b.exit_code == 0
    assert a.output.splitlines()[0] == b.output.splitlines()[0]


def test_generate_rejects_bad_mode():
    r = CliRunner().invoke(main, ["generate", "--prompt", "x", "--mode", "fp4"])
    assert r.exit_code == 2 and "'fp4' is not one of 'float', 'int8', 'int'" in r.output


def test_eval(tmp_path):
    (tmp_path / "a.py").write_text("def add(a, b):\n    return a + b\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("import os\nprint(os.getcwd())\n")
    r = CliRunner().invoke(main, ["eval", "--data", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert re.search(r"float: \d\.\d+ bits/byte  \(2 files, 61 bytes, 61 tokens", r.output)
    assert re.search(r"int8 : \d\.\d+ bits/byte", r.output)
    assert "int8 - float:" in r.output


def test_eval_empty_folder(tmp_path):
    # A user error: one line on stderr, exit 2, no traceback.
    r = CliRunner().invoke(main, ["eval", "--data", str(tmp_path), "--mode", "float"])
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith(f"error: no .py files under {tmp_path}")
    assert len(r.stderr.splitlines()) == 1


def test_generate_int_mode():
    r = CliRunner().invoke(main, ["generate", "--prompt", "def f(x):", "--max-tokens", "8",
                                  "--mode", "int"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("def f(x):")
    assert re.search(r"int: 8 tokens, .* [\d.]+ tokens/s", r.output)


def test_eval_int_mode_and_json(tmp_path):
    (tmp_path / "a.py").write_text("def add(a, b):\n    return a + b\n")
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["eval", "--data", str(tmp_path), "--mode", "float",
                                  "--mode", "int", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert re.search(r"int  : \d\.\d+ bits/byte  \(1 files, 32 bytes, 32 tokens", r.output)
    assert "int - float:" in r.output and "int8" not in r.output
    rep = json.loads(out.read_text())
    assert set(rep) == {"float", "int"}
    for v in rep.values():
        assert set(v) == {"bits_per_byte", "n_bytes", "n_tokens"}
        assert v["n_bytes"] == 32 and v["n_tokens"] == 32 and 0 < v["bits_per_byte"] < 8
    text_bpb = float(re.search(r"int  : (\d\.\d+)", r.output).group(1))
    assert abs(rep["int"]["bits_per_byte"] - text_bpb) < 1e-4
