"""issue 17: random ``--set field=value`` overrides give a report or one clean error line."""

import json
import math
import re
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from fuzzing import run_long, time_limit
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sparktile.scripts.perf.hardware import FIELDS

from sparktile.cli import main

FUZZ_EXAMPLES = 100_000
#: The long tier runs beside other jobs: a wall-clock bound per example, not a deadline.
LONG = settings(deadline=None, database=None)
LONG_TIME_LIMIT_S = 30.0

_values = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e30", "1e-30", "abc", "", "1e6", "8"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(1 << 70), 1 << 70).map(str),
    st.text(max_size=8),
)
_names = st.one_of(st.sampled_from(sorted(FIELDS)), st.text(max_size=6))
_sets = st.lists(st.tuples(_names, _values).map(lambda kv: f"{kv[0]}={kv[1]}"), max_size=3)


def _check(sets, extra: bool = False):
    args = ["extrapolate"]
    if extra:
        args += sets
    else:
        for s in sets:
            args += ["--set", s]
    res = CliRunner().invoke(main, args)
    assert res.exit_code in (0, 2), (args, res.output, res.exception)
    if res.exit_code == 2:
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].lower().startswith("error:"), (args, res.stderr)
    else:
        assert "-0 tokens" not in res.output, res.output
        # The preset's name is the user's text, printed as given ("name=-0.0" is a label, not
        # a figure: found by the long run).
        out = res.output
        names = [v.strip() for k, _, v in (item.partition("=") for item in sets)
                 if k.strip() == "name"]
        if names and names[-1]:                  # the last --set of a field wins
            out = out.replace(names[-1], "<name>")
        for num in re.findall(r"(?:^|[\s(=])-\d", out):
            pytest.fail(f"negative figure {num!r} in {res.output}")
        assert all(math.isfinite(float(x)) for x in re.findall(r"\d+\.\d+", res.output))


@settings(max_examples=200, derandomize=True, database=None, deadline=2000)
@given(_sets)
@example(["acc_depth=inf"])  # found by the fuzz run: int() of inf raised OverflowError
@example(["grid_rows=nan"])
@example(["e_link_fj_per_bit_mm=-0.0"])  # long fuzz run: accepted, printed "fabric -0.00"
@example(["name=-0.0"])                   # long fuzz run: a label, not a figure
@example(["name=8", "name=-138"])         # the last one is the name
def test_random_overrides(sets):
    _check(sets)


def _bounded(check):
    def run(x):
        with time_limit(LONG_TIME_LIMIT_S):
            check(x)
    return run


@pytest.mark.fuzz
def test_random_overrides_long():
    run_long(_bounded(_check), _sets, settings_=LONG, total=FUZZ_EXAMPLES)


# -------- model fields: a Hugging Face config.json with each field near or past its limits

_HF = {"model_type": "llama", "vocab_size": 32000, "hidden_size": 4096,
       "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
       "num_key_value_heads": 8, "rope_theta": 5e5, "rms_norm_eps": 1e-5,
       "max_position_embeddings": 8192, "tie_word_embeddings": False}
_EDGE = st.sampled_from([0, 1, 2, 3, 7, 64, 4096, 4097, 1 << 20, 1 << 31, (1 << 31) + 1,
                         -1, 1.5, float("nan"), float("inf"), "8", None, True, [], {}])
_WORK = Path(tempfile.mkdtemp(prefix="sparktile-fuzz-model-"))


@st.composite
def _model_config(draw):
    cfg = dict(_HF)
    for key in draw(st.lists(st.sampled_from(sorted(_HF)), min_size=1, max_size=3,
                             unique=True)):
        cfg[key] = draw(_EDGE)
    return cfg


def _check_model(cfg):
    path = _WORK / "config.json"
    path.write_text(json.dumps(cfg))     # NaN and Infinity as Python's json writes them
    _check(["--model", str(path)], extra=True)


@settings(max_examples=200, derandomize=True, database=None, deadline=10_000)
@example({**_HF, "vocab_size": 1})   # found by this test: a 0-PE share, ZeroDivisionError
@given(_model_config())
def test_random_model_fields(cfg):
    _check_model(cfg)


@pytest.mark.fuzz
def test_random_model_fields_long():
    run_long(_bounded(_check_model), _model_config(), settings_=LONG, total=FUZZ_EXAMPLES)
