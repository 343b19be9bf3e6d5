"""The shipped model, sparktile-code-tiny: size budget, Python completions in both paths."""

import os

import numpy as np
import pytest
from sparktile.golden_model import load_model
from sparktile.golden_model.corpus import is_heldout, split_files, stdlib_root
from sparktile.golden_model.evaluate import bits_per_byte
from sparktile.golden_model.load import DATA_DIR

#: Default mesh: 8 x 8 PEs x 16 KiB SRAM; 768 KiB of it may hold matmul weights.
WEIGHT_BUDGET = 768 * 1024


@pytest.fixture(scope="module")
def model():
    return load_model()


def test_default_names(model):
    assert model.config.name == "sparktile-code-tiny"
    assert load_model("default").config == load_model("sparktile-code-tiny").config


def test_fits_default_mesh(model):
    ops = model.matmul_ops()
    assert sum(op.w_q.nbytes for op in ops) <= WEIGHT_BUDGET
    for op in ops:
        m, n = op.shape
        assert m % 32 == 0 and n % 32 == 0, op
    assert os.path.getsize(DATA_DIR / "model.safetensors") < 10 * 2**20


def test_split_is_by_whole_file():
    train, held = split_files()
    assert held and not set(train) & set(held)
    assert all(is_heldout(f) for f in held)
    assert len(held) / (len(train) + len(held)) < 0.1


@pytest.mark.parametrize("mode", ["float", "int8"])
@pytest.mark.parametrize("prompt", ["def fibonacci(n):\n", "class Stack:\n    def __init__(self"])
def test_writes_recognizable_python(model, mode, prompt):
    text = model.generate(prompt, 80, mode=mode).text
    # Indented block, Python vocabulary, only printable ASCII.
    assert "\n    " in text, text
    assert any(w in text for w in ("return", "self", "def ", '"""', "if ")), text
    assert all(c == "\n" or 32 <= ord(c) < 127 for c in text), text


def test_int8_costs_little_on_heldout(model):
    """A held-out file (never trained on): int8 within 3 % of float in bits per byte."""
    path = stdlib_root() / "string.py"
    assert is_heldout("string.py")
    text = path.read_text()[:6000]
    f = bits_per_byte(model, [text], "float").bpb
    q = bits_per_byte(model, [text], "int8").bpb
    assert f < 2.5 and q < f * 1.03, (f, q)


def test_int8_top1_agrees_with_float(model):
    ids = model.tokenizer.prompt_ids((stdlib_root() / "timeit.py").read_text()[:400])
    f, q = model.logits(ids), model.logits(ids, mode="int8")
    assert (f.argmax(1) == q.argmax(1)).mean() > 0.85
    assert np.isfinite(q).all()
